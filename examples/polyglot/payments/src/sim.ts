// The simulation's arithmetic, bit for bit the Go services'
// (examples/services/services.go): which attempts fail with --flaky, and
// the ids derived from idempotency keys. uint64 arithmetic in BigInt.

const MASK = (1n << 64n) - 1n;
const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;

/** FNV-1a 64 over bytes, continuing from h. */
function fnv1a(h: bigint, bytes: Uint8Array): bigint {
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * FNV_PRIME) & MASK;
  }
  return h;
}

const utf8 = new TextEncoder();

/** SplitMix64's finaliser: it spreads FNV's bits. */
export function mix(x: bigint): bigint {
  x &= MASK;
  x ^= x >> 30n;
  x = (x * 0xbf58476d1ce4e5b9n) & MASK;
  x ^= x >> 27n;
  x = (x * 0x94d049bb133111ebn) & MASK;
  x ^= x >> 31n;
  return x;
}

/**
 * unit maps the seed and parts to a number in [0, 1), the same in every
 * process, run and language: FNV-1a 64 over the seed in decimal, then for
 * each part a 0 byte and the part's UTF-8 bytes; mixed; the top 53 bits.
 */
export function unit(seed: bigint, ...parts: string[]): number {
  let h = fnv1a(FNV_OFFSET, utf8.encode(seed.toString(10)));
  for (const p of parts) {
    h = fnv1a(h, Uint8Array.of(0));
    h = fnv1a(h, utf8.encode(p));
  }
  return Number(mix(h) >> 11n) / 2 ** 53;
}

/** idFor derives an identifier from a step's idempotency key: every attempt of a step names the same charge. */
export function idFor(prefix: string, key: string): string {
  return prefix + mix(fnv1a(FNV_OFFSET, utf8.encode(key))).toString(36);
}

const units: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** parseDuration parses a Go duration ("1.5s", "20ms", "1m30s", "0") into milliseconds. */
export function parseDuration(s: string): number {
  const text = s.trim();
  let rest = text;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    sign = rest[0] === "-" ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "0") {
    return 0;
  }
  if (rest === "") {
    throw new Error(`invalid duration ${JSON.stringify(s)}`);
  }
  let total = 0;
  const re = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest !== "") {
    const m = re.exec(rest);
    if (!m) {
      throw new Error(`invalid duration ${JSON.stringify(s)}`);
    }
    total += parseFloat(m[1]!) * units[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}

/** A simulated work time: a fixed duration or a range, in milliseconds. */
export interface DelayRange {
  minMs: number;
  maxMs: number;
}

/** parseDelay parses --delay: a Go duration or MIN-MAX, such as 20ms-80ms. */
export function parseDelay(s: string): DelayRange {
  const i = s.indexOf("-");
  const lo = i < 0 ? s : s.slice(0, i);
  const hi = i < 0 ? s : s.slice(i + 1);
  let minMs: number;
  let maxMs: number;
  try {
    minMs = parseDuration(lo);
    maxMs = parseDuration(hi);
  } catch (err) {
    throw new Error(`want a duration or MIN-MAX: ${(err as Error).message}`);
  }
  if (minMs < 0 || maxMs < minMs) {
    throw new Error(`${JSON.stringify(s)}: want 0 <= MIN <= MAX`);
  }
  return { minMs, maxMs };
}

/** formatDelay writes a DelayRange back in Go's notation (ms). */
export function formatDelay(d: DelayRange): string {
  return d.minMs === d.maxMs ? `${d.minMs}ms` : `${d.minMs}ms-${d.maxMs}ms`;
}

/** A small seeded generator (SplitMix64) for the simulated work times. */
export class Rand {
  private state: bigint;
  constructor(seed: bigint) {
    this.state = seed & MASK;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK;
    return Number(mix(this.state) >> 11n) / 2 ** 53;
  }
}
