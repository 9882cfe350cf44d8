#!/usr/bin/env python3
"""Conformance fixture: capability echo.py in push mode, stdlib only.

    python3 echo.py --addr http://127.0.0.1:7420 [--worker-id ID]

It listens on a free loopback port and registers echo.py with the sidecar
at --addr (again every 5s, and with backoff while the sidecar is down).
For input {"value": V, "break_contract": B} it answers

    {"lang": "py", "value": V, "kinds": {POINTER: KIND, ...}}

where V is the value as Python's json module decoded it, re-encoded with
json.dumps(ensure_ascii=False), and kinds names the type Python gave every
node of V by its RFC 6901 JSON pointer ("" is V itself): object, array,
string, integer, number, boolean or null. With B true it answers
{"lang": "py"} alone, which breaks a result_schema that requires value.
SIGTERM or SIGINT stops it (exit 0).
"""

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def kind(v):
    # bool first: in Python True is an int too.
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "array"
    return "object"


def kinds(v, pointer="", out=None):
    """Every node of v by its JSON pointer (RFC 6901: ~ is ~0, / is ~1)."""
    out = {} if out is None else out
    out[pointer] = kind(v)
    if isinstance(v, dict):
        for k, child in v.items():
            kinds(child, pointer + "/" + k.replace("~", "~0").replace("/", "~1"), out)
    elif isinstance(v, list):
        for i, child in enumerate(v):
            kinds(child, f"{pointer}/{i}", out)
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def reply(self, status, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200 if self.path == "/healthz" else 404, "{}")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            inp = json.loads(raw)["input"]
            if not isinstance(inp, dict):
                raise ValueError("input is not an object")
        except (ValueError, KeyError, TypeError) as e:
            self.reply(422, json.dumps({"code": "invalid_input", "message": str(e), "retryable": False}))
            return
        if inp.get("break_contract") is True:
            self.reply(200, json.dumps({"lang": "py"}))
            return
        value = inp.get("value")
        self.reply(200, json.dumps({"lang": "py", "value": value, "kinds": kinds(value)}, ensure_ascii=False))


def register(addr, worker_id, base, stop):
    body = json.dumps({
        "worker_id": worker_id, "push_url": base + "/steps", "health_url": base + "/healthz",
        "capabilities": [{"name": "echo.py", "version": "1.0.0", "description": "Echoes a JSON value as Python sees it"}],
    }).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("TASKER_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["TASKER_TOKEN"]
    url = addr.rstrip("/") + "/tasker.v1.WorkerService/RegisterCapabilities"
    backoff = 0.2
    while not stop.is_set():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=5) as r:
                r.read()
            backoff = 0.2
            wait = 5.0
        except (OSError, urllib.error.URLError) as e:
            print(f"echo.py: register with {addr}: {e}", file=sys.stderr, flush=True)
            wait, backoff = backoff, min(backoff * 2, 5.0)
        stop.wait(wait)


def main():
    p = argparse.ArgumentParser(prog="echo.py", description="Tasker conformance fixture: capability echo.py, push mode.")
    p.add_argument("--addr", default=os.environ.get("TASKER_ADDR") or "http://127.0.0.1:7420", help="the sidecar's URL")
    p.add_argument("--worker-id", default=f"echo-py-{os.getpid()}")
    args = p.parse_args()
    if not args.addr.startswith(("http://", "https://")):
        p.error(f'--addr "{args.addr}": want an http:// URL, such as http://127.0.0.1:7420')
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"echo.py: serving {base}/steps as {args.worker_id}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=register, args=(args.addr, args.worker_id, base, stop), daemon=True).start()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
