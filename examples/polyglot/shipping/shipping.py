#!/usr/bin/env python3
"""The shipping service of the order workflow, in Python with the standard
library only: a Tasker app in push mode (docs/sdk.md, "Push mode").

It serves HTTP on --listen, registers capability shipping.book with its
sidecar (push_url and health_url on that server) and keeps registering
every few seconds, so a sidecar that restarted learns it again. The
sidecar POSTs each step to /steps and takes the response as the outcome.

The business logic is a port of ship() in examples/services/services.go:
the same carriers, ETAs and tracking numbers for the same idempotency key.

    python3 shipping.py --addr http://127.0.0.1:7420 --log executions.jsonl

SIGTERM or SIGINT drains it: /healthz answers 503 (the sidecar withdraws
the capability), new steps get 503 with Retry-After, running steps finish
(up to --drain) and it exits 0.
"""

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CAPABILITY = "shipping.book"
VERSION = "1.0.0"

# The same JSON Schemas as shipInputSchema and shipResultSchema in
# examples/services/schemas.go: what the capability accepts and returns.
INPUT_SCHEMA = {
    "type": "object",
    "required": ["order_id", "reservation", "charge"],
    "properties": {
        "order_id": {"type": "string"},
        "reservation": {"type": "string"},
        "charge": {"type": "string"},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "line1": {"type": "string"},
                "city": {"type": "string"},
                "postcode": {"type": "string"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
            },
        },
        "service": {"enum": ["standard", "express"]},
    },
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["tracking_number", "carrier"],
    "properties": {
        "tracking_number": {"type": "string"},
        "carrier": {"type": "string"},
        "eta_days": {"type": "integer"},
        "booked_at": {"type": "string", "format": "date-time"},
    },
}

# --- pure functions (test_shipping.py) --------------------------------------

MASK64 = (1 << 64) - 1
FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits: Go's hash/fnv New64a."""
    h = FNV64_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV64_PRIME) & MASK64
    return h


def mix(x: int) -> int:
    """SplitMix64's finaliser, as mix() in the Go services: it spreads
    FNV's bits. Python's integers are unbounded, so every product is cut
    back to 64 bits as Go's uint64 arithmetic does."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return x


def base36(n: int) -> str:
    """Go's strconv.FormatUint(n, 36): lower-case digits."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(reversed(out))


def id_for(prefix: str, key: str) -> str:
    """idFor in the Go services: an identifier derived from a step's
    idempotency key, so every attempt names the same parcel."""
    return prefix + base36(mix(fnv1a64(key.encode("utf-8"))))


CARRIERS = {"GB": "Royal Mail", "US": "UPS", "FR": "La Poste", "DE": "DHL", "NL": "PostNL"}


def choose_carrier(address, service):
    """The carrier and ETA in days: the destination country's carrier in
    2 days, else DHL in 5; express makes it 1 day."""
    carrier, eta = "DHL", 5
    if isinstance(address, dict):
        country = address.get("country")
        if isinstance(country, str) and country.upper() in CARRIERS:
            carrier, eta = CARRIERS[country.upper()], 2
    if service == "express":
        eta = 1
    return carrier, eta


class Permanent(Exception):
    """A failure another attempt would not fix: answered with 422."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def ship(input_, idempotency_key, now):
    """ship() of the Go services: books a parcel with the carrier of the
    destination country. input_ is the step's decoded input."""
    if not isinstance(input_, dict):
        raise Permanent("invalid_input", "the input must be a JSON object")
    for field in ("order_id", "reservation", "charge", "service"):
        if input_.get(field) is not None and not isinstance(input_[field], str):
            raise Permanent("invalid_input", f"{field} must be a string")
    address = input_.get("address")
    if address is not None and not isinstance(address, dict):
        raise Permanent("invalid_input", "address must be an object")
    if not input_.get("reservation") or not input_.get("charge"):
        raise Permanent("invalid_input", "a parcel needs a stock reservation and a charge")
    carrier, eta = choose_carrier(address, input_.get("service"))
    return {
        "tracking_number": id_for("trk", idempotency_key).upper(),
        "carrier": carrier,
        "eta_days": eta,
        "booked_at": rfc3339(now),
    }


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(s: str) -> float:
    """Go's time.ParseDuration, in seconds: "20ms", "1.5s", "1h30m", "0"."""
    text = s.strip()
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'invalid duration "{s}"')
    total, pos = 0.0, 0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m:
            raise ValueError(f'invalid duration "{s}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_delay(s: str):
    """--delay: a duration or MIN-MAX, as delayRange.Set in the Go
    services. Returns (min, max) in seconds."""
    lo, sep, hi = s.partition("-")
    if not sep:
        hi = lo
    try:
        dmin, dmax = parse_duration(lo), parse_duration(hi)
    except ValueError as e:
        raise ValueError(f"want a duration or MIN-MAX: {e}") from e
    if dmin < 0 or dmax < dmin:
        raise ValueError(f'"{s}": want 0 <= MIN <= MAX')
    return dmin, dmax


def rfc3339(t: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction
    dropped, "Z" for UTC."""
    t = t.astimezone(timezone.utc)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        s += ("." + f"{t.microsecond:06d}").rstrip("0")
    return s + "Z"


def parse_time(s: str) -> datetime:
    """An RFC 3339 time as Go writes it (up to nanoseconds; Python keeps
    microseconds)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {s!r}")
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + frac + zone)


def journal_line(began, task_id, step, capability, attempt, duration_ms, outcome, result_raw, error, pid):
    """One line of the --log journal, with the fields of execution in
    examples/services/journal.go in its order. result_raw is the result
    as sent (bytes), spliced in unchanged so the journal holds exactly
    what the sidecar received."""
    parts = [
        ("time", json.dumps(rfc3339(began))),
        ("task_id", json.dumps(task_id, ensure_ascii=False)),
        ("step", json.dumps(step, ensure_ascii=False)),
        ("capability", json.dumps(capability, ensure_ascii=False)),
        ("attempt", json.dumps(attempt)),
        ("duration_ms", json.dumps(duration_ms)),
        ("outcome", json.dumps(outcome, ensure_ascii=False)),
    ]
    if result_raw:
        parts.append(("result", result_raw.decode("utf-8")))
    if error:
        parts.append(("error", json.dumps(error, ensure_ascii=False)))
    parts.append(("pid", json.dumps(pid)))
    return "{" + ",".join(f'"{k}":{v}' for k, v in parts) + "}\n"


# --- the service -------------------------------------------------------------


def log(level, msg, **fields):
    """A JSON log line on stderr, like the Go services' slog output."""
    line = {"time": rfc3339(datetime.now(timezone.utc)), "level": level, "msg": msg}
    line.update(fields)
    sys.stderr.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
    sys.stderr.flush()


class Service:
    """State shared by the request threads."""

    def __init__(self, args):
        self.args = args
        if args.seed is None:
            args.seed = random.SystemRandom().randrange(1, 1 << 63)
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.journal_fd = None
        if args.log:
            # O_APPEND and one write per line: several processes may share
            # the file, as the Go services do.
            self.journal_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.draining = threading.Event()
        self.inflight = 0
        self.cond = threading.Condition()

    def work_time(self):
        lo, hi = self.args.delay
        if hi <= lo:
            return lo
        with self.rng_lock:
            return self.rng.uniform(lo, hi)

    def record(self, began, started, req, outcome, result_raw, error):
        if self.journal_fd is None:
            return
        duration_ms = round((time.monotonic() - started) * 1e6) / 1000
        line = journal_line(began, req.get("task_id", ""), req.get("step", ""), req.get("capability", ""),
                            req.get("attempt", 0), duration_ms, outcome, result_raw, error, os.getpid())
        try:
            os.write(self.journal_fd, line.encode("utf-8"))
        except OSError as e:
            log("ERROR", "cannot journal an execution", error=str(e))

    def enter(self):
        with self.cond:
            if self.draining.is_set():
                return False
            self.inflight += 1
            return True

    def leave(self):
        with self.cond:
            self.inflight -= 1
            self.cond.notify_all()

    def wait_idle(self, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while self.inflight > 0:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


class Handler(BaseHTTPRequestHandler):
    server_version = "tasker-shipping-py/" + VERSION
    protocol_version = "HTTP/1.1"
    service: Service = None  # set by main

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # requests are logged as JSON by the handlers

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body.startswith(b"{") else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/healthz":
            self.reply(404, b"not found\n")
        elif self.service.draining.is_set():
            # Failing health checks make the sidecar withdraw the capability.
            self.reply(503, b"draining\n")
        else:
            self.reply(200, b"ok\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/steps":
            self.reply(404, b"not found\n")
            return
        svc = self.service
        if not svc.enter():
            # A bare 503 (no JSON error object): retryable, and not checked
            # against the step's error_schema as an app's own code would be.
            self.reply(503, b"draining\n", {"Retry-After": "1"})
            return
        try:
            self.step(svc, raw)
        finally:
            svc.leave()

    def step(self, svc, raw):
        began, started = datetime.now(timezone.utc), time.monotonic()
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self.fail(400, "bad_request", f"step request: {e}", False)
            return
        fields = {"task_id": req.get("task_id"), "step": req.get("step"), "attempt": req.get("attempt")}
        log("DEBUG", "step started", **fields)
        # Honour the deadline: past it the sidecar has stopped waiting and
        # the attempt is retried elsewhere, so do not start work that
        # would end after it.
        left = None
        try:
            left = (parse_time(req["deadline"]) - datetime.now(timezone.utc)).total_seconds()
        except (KeyError, TypeError, ValueError):
            pass
        work = svc.work_time()
        if left is not None and work >= left:
            time.sleep(max(left, 0))
            msg = "shipping.book: interrupted before the work was done: the step's deadline passed"
            svc.record(began, started, req, "interrupted", None, msg)
            log("INFO", "step failed", code="interrupted", error=msg, **fields)
            self.fail(504, "timeout", msg, True)
            return
        time.sleep(work)
        try:
            result = ship(req.get("input"), str(req.get("idempotency_key", "")), datetime.now(timezone.utc))
        except Permanent as e:
            svc.record(began, started, req, e.code, None, e.message)
            log("INFO", "step failed", code=e.code, error=e.message, **fields)
            self.fail(422, e.code, e.message, False)
            return
        body = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        svc.record(began, started, req, "ok", body, None)
        log("DEBUG", "step done", result=result, **fields)
        self.reply(200, body)

    def fail(self, status, code, message, retryable):
        body = json.dumps({"code": code, "message": message, "retryable": retryable}, separators=(",", ":"), ensure_ascii=False)
        self.reply(status, body.encode("utf-8"))


def register_loop(args, base_url, stop):
    """Registers the capability every --refresh seconds with the same
    worker id: registering again replaces the registration, and a sidecar
    that restarted (and forgot its apps) learns it again. While the
    sidecar is down it retries with backoff, from 0.2s up to 5s."""
    body = json.dumps({
        "worker_id": args.worker_id,
        "push_url": base_url + "/steps",
        "health_url": base_url + "/healthz",
        "capabilities": [{
            "name": CAPABILITY, "version": VERSION, "description": "Books a parcel with a carrier",
            "input_schema_json": json.dumps(INPUT_SCHEMA), "output_schema_json": json.dumps(OUTPUT_SCHEMA),
            "max_concurrency": args.concurrency,
        }],
    }).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    url = args.addr.rstrip("/") + "/tasker.v1.WorkerService/RegisterCapabilities"
    backoff, registered, warned = 0.2, False, False
    while not stop.is_set():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=5) as resp:
                resp.read()
            if not registered:
                log("INFO", "registered", capability=CAPABILITY, worker_id=args.worker_id, push_url=base_url + "/steps", sidecar=args.addr)
            registered, backoff = True, 0.2
            stop.wait(args.refresh)
        except urllib.error.HTTPError as e:
            # The sidecar answered with a Connect error: {"code","message"}.
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            log("ERROR", "registration refused", status=e.code, error=detail)
            registered = False
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        except (OSError, urllib.error.URLError) as e:
            if registered or not warned:
                log("WARN", "sidecar unreachable; registering when it is back", sidecar=args.addr, error=str(e))
            registered, warned = False, True
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)


def parse_args(argv):
    def duration(s):
        try:
            d = parse_duration(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
        if d < 0:
            raise argparse.ArgumentTypeError(f'"{s}": want 0 or more')
        return d

    def delay(s):
        try:
            return parse_delay(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    def listen(s):
        host, sep, port = s.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(f'"{s}": want HOST:PORT, such as 127.0.0.1:8081 (port 0 picks a free one)')
        return host.strip("[]"), int(port)

    def positive(s):
        try:
            n = int(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f'"{s}": want a whole number') from e
        if n < 1 or n > 10000:
            raise argparse.ArgumentTypeError(f"{n}: want 1 to 10000")
        return n

    def url(s):
        if not re.match(r"^https?://[^/]+", s):
            raise argparse.ArgumentTypeError(f'"{s}": want an http:// URL, such as http://127.0.0.1:7420')
        return s

    p = argparse.ArgumentParser(prog="shipping.py", description="The shipping.book service, a Tasker app in push mode (stdlib Python).")
    p.add_argument("--listen", type=listen, default=("127.0.0.1", 0), metavar="HOST:PORT", help="where to serve the steps (default 127.0.0.1:0, a free port)")
    p.add_argument("--addr", type=url, default=os.environ.get("TASKER_ADDR") or "http://127.0.0.1:7420", metavar="URL", help="the sidecar (default $TASKER_ADDR, else http://127.0.0.1:7420)")
    p.add_argument("--token", default=os.environ.get("TASKER_TOKEN", ""), help="ACL token for the sidecar (default $TASKER_TOKEN)")
    p.add_argument("--worker-id", default=f"shipping-py-{os.getpid()}", help="the worker id to register as (default shipping-py-PID)")
    p.add_argument("--delay", type=delay, default=(0.02, 0.08), metavar="D|MIN-MAX", help="simulated work time: a Go duration or a range, such as 20ms-80ms (the default)")
    p.add_argument("--seed", type=int, default=None, help="random seed for the delays (default: a random one)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per execution to FILE")
    p.add_argument("--drain", type=duration, default=10.0, metavar="D", help="on SIGTERM or SIGINT, how long running steps get to finish (default 10s)")
    p.add_argument("--concurrency", type=positive, default=8, metavar="N", help="steps run at once, the registration's max_concurrency (default 8)")
    p.add_argument("--refresh", type=duration, default=5.0, metavar="D", help="how often to register again (default 5s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        svc = Service(args)
    except OSError as e:
        log("ERROR", f"--log {args.log}: {e}")
        return 2
    Handler.service = svc
    host, port = args.listen
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        log("ERROR", f"--listen {host}:{port}: {e}")
        return 2
    server.daemon_threads = True
    actual = server.server_address[1]
    # The sidecar runs on this host: a wildcard listen is reached on loopback.
    reach = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    base_url = f"http://{'[' + reach + ']' if ':' in reach else reach}:{actual}"
    log("INFO", "serving", listen=f"{host}:{actual}", push_url=base_url + "/steps", seed=args.seed, pid=os.getpid())

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    reg_stop = threading.Event()
    threading.Thread(target=register_loop, args=(args, base_url, reg_stop), name="register", daemon=True).start()

    while not stop.wait(0.5):
        pass
    log("INFO", "draining", drain_s=args.drain, running=svc.inflight)
    svc.draining.set()
    reg_stop.set()
    finished = svc.wait_idle(args.drain)
    server.shutdown()
    server.server_close()
    if not finished:
        log("WARN", "drain timed out; steps still running are retried after their deadline", running=svc.inflight)
    log("INFO", "drained; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
