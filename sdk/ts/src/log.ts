// Logging: the worker logs through a tiny interface, so that an app can
// plug in pino, winston or console; the default writes JSON lines to stderr.

/** Attributes of a log record. */
export type LogAttrs = Record<string, unknown>;

/** What the SDK logs through. pino and similar loggers fit with a small adapter. */
export interface Logger {
  debug(msg: string, attrs?: LogAttrs): void;
  info(msg: string, attrs?: LogAttrs): void;
  warn(msg: string, attrs?: LogAttrs): void;
  error(msg: string, attrs?: LogAttrs): void;
}

export type LogLevel = "debug" | "info" | "warn" | "error";

const rank: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Whether s names a level. */
export function isLogLevel(s: string): s is LogLevel {
  return Object.hasOwn(rank, s);
}

/** A JSON-safe copy of an attribute: errors as their message, bigints as digits. */
function plain(v: unknown): unknown {
  if (v instanceof Error) {
    return v.message;
  }
  if (typeof v === "bigint") {
    return v.toString();
  }
  return v;
}

/**
 * A logger that writes one JSON object per line ({"time", "level", "msg",
 * ...attrs}) to a stream, stderr by default, dropping records below level.
 * `with` adds attributes to every record.
 */
export function jsonLogger(
  opts: { level?: LogLevel; write?: (line: string) => void; with?: LogAttrs } = {},
): Logger {
  const min = rank[opts.level ?? "info"];
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const base = opts.with ?? {};
  const emit = (level: LogLevel) => (msg: string, attrs?: LogAttrs) => {
    if (rank[level] < min) {
      return;
    }
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level, msg };
    for (const [k, v] of Object.entries({ ...base, ...attrs })) {
      if (v !== undefined) {
        rec[k] = plain(v);
      }
    }
    let line: string;
    try {
      line = JSON.stringify(rec, (_k, v) => plain(v));
    } catch {
      line = JSON.stringify({ time: rec.time, level, msg });
    }
    write(line + "\n");
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/** A logger that drops everything. */
export const discardLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/** withAttrs returns a logger that adds attrs to every record of log. */
export function withAttrs(log: Logger, attrs: LogAttrs): Logger {
  return {
    debug: (m, a) => log.debug(m, { ...attrs, ...a }),
    info: (m, a) => log.info(m, { ...attrs, ...a }),
    warn: (m, a) => log.warn(m, { ...attrs, ...a }),
    error: (m, a) => log.error(m, { ...attrs, ...a }),
  };
}
