// The connection to the local sidecar, shared by Worker and Client: where it
// is, the Connect transport (HTTP/2 without TLS, binary Protobuf), the ACL
// token, and the retry rules for calls that may succeed when repeated.

import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

/** The sidecar's local API when neither an address nor TASKER_ADDR is set. */
export const DEFAULT_ADDR = "http://127.0.0.1:7420";

/**
 * The sidecar's base URL: addr when given, else $TASKER_ADDR, else
 * http://127.0.0.1:7420. An address without a scheme means http://.
 */
export function baseUrl(addr?: string): string {
  let a = addr || process.env.TASKER_ADDR || DEFAULT_ADDR;
  if (!a.includes("://")) {
    a = "http://" + a;
  }
  return a.replace(/\/+$/, "");
}

/** The ACL token: token when given, else $TASKER_TOKEN, else none. */
export function tokenOf(token?: string): string | undefined {
  return token || process.env.TASKER_TOKEN || undefined;
}

/** Options shared by Worker and Client for reaching the sidecar. */
export interface ConnectionOptions {
  /** The sidecar's URL; default $TASKER_ADDR, else http://127.0.0.1:7420. */
  addr?: string;
  /** ACL token sent as "Authorization: Bearer"; default $TASKER_TOKEN. */
  token?: string;
  /** A transport to use instead of the SDK's own (tests, custom interceptors). */
  transport?: Transport;
}

/** bearer sends the ACL token on every call, streams included. */
function bearer(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
}

/**
 * Creates the Connect transport to the sidecar: the Connect protocol with
 * binary Protobuf over HTTP/2 without TLS (h2c, prior knowledge), so that
 * the poll stream, watches and unary calls share one connection. Pings
 * detect a sidecar that hangs without closing the connection.
 */
export function createSidecarTransport(opts: ConnectionOptions = {}): Transport {
  if (opts.transport) {
    return opts.transport;
  }
  const token = tokenOf(opts.token);
  return createConnectTransport({
    httpVersion: "2",
    baseUrl: baseUrl(opts.addr),
    useBinaryFormat: true,
    interceptors: token ? [bearer(token)] : [],
    pingIntervalMs: 30_000,
    pingTimeoutMs: 10_000,
  });
}

/**
 * transient reports whether a failed call may succeed when repeated: the
 * sidecar is unreachable or restarting, the connection broke, or one call
 * timed out. A call the caller cancelled is not.
 */
export function transient(err: unknown): boolean {
  if (err == null) {
    return false;
  }
  if (!(err instanceof ConnectError)) {
    return true; // a network error the transport did not wrap
  }
  switch (err.code) {
    case Code.Unavailable:
    case Code.Aborted:
    case Code.Unknown:
    case Code.ResourceExhausted:
    case Code.DeadlineExceeded:
    case Code.Internal: // connect-node reports some broken connections as internal
      return true;
  }
  return false;
}

/** The code of a Connect error, or undefined for any other value. */
export function codeOf(err: unknown): Code | undefined {
  return err instanceof ConnectError ? err.code : undefined;
}

/**
 * retryAfterMs is the wait a refusal asked for, from its Retry-After
 * header (whole seconds), bounded by five minutes; 0 when it names none.
 */
export function retryAfterMs(err: unknown): number {
  if (!(err instanceof ConnectError)) {
    return 0;
  }
  const h = err.metadata.get("retry-after");
  const s = h ? Number(h) : NaN;
  return Number.isFinite(s) && s > 0 ? Math.min(s * 1000, 5 * 60_000) : 0;
}

/**
 * Backoff yields exponentially growing delays with jitter: each delay is
 * drawn from [d/2, d], where d doubles from min up to max.
 */
export class Backoff {
  private nextMs = 0;
  constructor(
    readonly minMs: number,
    readonly maxMs: number,
  ) {}

  next(): number {
    if (this.nextMs < this.minMs) {
      this.nextMs = this.minMs;
    }
    const d = this.nextMs;
    this.nextMs = Math.min(2 * this.nextMs, this.maxMs);
    const half = d / 2;
    return half + Math.random() * (d - half);
  }

  /** The delay before retrying after err: the next delay, or the wait the sidecar asked for when longer. */
  after(err: unknown): number {
    return Math.max(this.next(), retryAfterMs(err));
  }

  reset(): void {
    this.nextMs = 0;
  }
}

/** sleep waits ms, or less if signal aborts; it resolves true when the whole time passed. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** withTimeout returns a signal that aborts when parent does or after ms. */
export function withTimeout(ms: number, parent?: AbortSignal): AbortSignal {
  const t = AbortSignal.timeout(ms);
  return parent ? AbortSignal.any([parent, t]) : t;
}
