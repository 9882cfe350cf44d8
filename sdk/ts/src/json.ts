// JSON as the API carries it: payloads (task inputs, step results) travel as
// JSON text, and numbers in them may be integers beyond what a JavaScript
// number holds exactly. These functions keep every digit of those.

import { isInteger, isSafeNumber, parse, stringify } from "lossless-json";

/** A JSON value as the SDK decodes it: integers beyond Number.MAX_SAFE_INTEGER are bigints. */
export type JsonValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/**
 * Decodes numbers: an integer that a number holds exactly is a number, a
 * larger one (beyond ±2^53-1) a bigint with every digit; any other number
 * (with a fraction or an exponent) is a number, as JSON.parse makes it.
 */
function parseNumber(text: string): number | bigint {
  if (isInteger(text) && !isSafeNumber(text)) {
    return BigInt(text);
  }
  return parseFloat(text);
}

/**
 * Parses JSON text like JSON.parse, except that integers beyond
 * Number.MAX_SAFE_INTEGER become bigints instead of losing digits. Throws
 * a SyntaxError for text that is not valid JSON.
 */
export function parseJson(text: string): JsonValue {
  return parse(text, null, parseNumber) as JsonValue;
}

/**
 * JSON text to send as it is, like Go's json.RawMessage: a handler that
 * returns rawJson(text) has text reported byte for byte (after checking it
 * is valid JSON; blank text is {}).
 */
export class RawJson {
  constructor(readonly text: string) {}
}

/** Wraps JSON text to be sent as it is; see RawJson. */
export function rawJson(text: string): RawJson {
  return new RawJson(text);
}

/**
 * Encodes a value as JSON text like JSON.stringify, except that a bigint is
 * written as a plain JSON integer with every digit (JSON.stringify throws
 * on bigints). undefined (and a value that encodes to nothing) is "{}", as
 * the API takes an empty payload to be. Throws a TypeError for a value
 * that cannot be encoded (a cycle, a non-finite number).
 */
export function stringifyJson(value: unknown): string {
  if (value === undefined) {
    return "{}";
  }
  if (value instanceof RawJson) {
    if (value.text.trim() === "") {
      return "{}";
    }
    parseJson(value.text); // throws a SyntaxError when it is not JSON
    return value.text;
  }
  const seen = new Set<object>();
  check(value, seen, "");
  const text = stringify(value);
  return text === undefined ? "{}" : text;
}

/** check rejects what JSON cannot represent faithfully: cycles and non-finite numbers. */
function check(v: unknown, stack: Set<object>, path: string): void {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) {
      throw new TypeError(`the number at ${path === "" ? "the root" : JSON.stringify(path)} is ${v}, which JSON cannot represent`);
    }
    return;
  }
  if (v === null || typeof v !== "object") {
    return;
  }
  if (typeof (v as { toJSON?: unknown }).toJSON === "function") {
    return; // Date and friends encode themselves
  }
  if (stack.has(v)) {
    throw new TypeError(`the value has a cycle at ${path === "" ? "the root" : JSON.stringify(path)}`);
  }
  stack.add(v);
  if (Array.isArray(v)) {
    v.forEach((e, i) => check(e, stack, `${path}/${i}`));
  } else {
    for (const [k, e] of Object.entries(v)) {
      check(e, stack, `${path}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`);
    }
  }
  stack.delete(v);
}
