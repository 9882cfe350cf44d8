// Unit tests of what needs no agent: JSON with large numbers, the error
// mapping, and FromSchema's types.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Codes, failureOf, parseJson, permanent, retryable, stringifyJson, TaskerStepError, type FromSchema } from "../index.js";

test("parseJson: safe integers are numbers, larger ones bigints, every digit kept", () => {
  const v = parseJson('{"small": 42, "max": 9007199254740991, "big": 9007199254740993, "neg": -12345678901234567890, "f": 1.5, "e": 1e3}') as Record<string, unknown>;
  assert.equal(v.small, 42);
  assert.equal(v.max, 9007199254740991);
  assert.equal(v.big, 9007199254740993n);
  assert.equal(v.neg, -12345678901234567890n);
  assert.equal(v.f, 1.5);
  assert.equal(v.e, 1000);
});

test("stringifyJson writes bigints as plain integers and round-trips", () => {
  const text = '{"big":9007199254740993,"s":"héllo ✓ 🚀 \\"q\\"","a":[1,null,true,{"b":-0.25}]}';
  assert.equal(stringifyJson(parseJson(text)), text);
  assert.equal(stringifyJson({ n: 123456789012345678901234567890n }), '{"n":123456789012345678901234567890}');
});

test("stringifyJson: undefined is {}; cycles and non-finite numbers throw", () => {
  assert.equal(stringifyJson(undefined), "{}");
  const cyc: Record<string, unknown> = {};
  cyc.self = cyc;
  assert.throws(() => stringifyJson(cyc), /cycle/);
  assert.throws(() => stringifyJson({ x: NaN }), /NaN/);
  assert.throws(() => stringifyJson({ x: [Infinity] }), /Infinity/);
});

test("parseJson rejects text that is not JSON", () => {
  assert.throws(() => parseJson("{nope"));
});

test("failureOf maps thrown values to FailStep fields", () => {
  const p = failureOf(permanent("card_declined", "declined", { details: { x: 1 } }));
  assert.deepEqual([p.code, p.retryable, p.details], ["card_declined", false, { x: 1 }]);
  const r = failureOf(retryable("rate_limited", "slow down", { retryAfterMs: 1500 }));
  assert.deepEqual([r.code, r.retryable, r.retryAfterMs], ["rate_limited", true, 1500]);
  const wrapped = failureOf(new Error("outer", { cause: permanent("inner", "m") }));
  assert.equal(wrapped.code, "inner");
  const plain = failureOf(new TypeError("boom"));
  assert.deepEqual([plain.code, plain.retryable, plain.message], [Codes.error, true, "boom"]);
  const str = failureOf("a string");
  assert.deepEqual([str.code, str.message], [Codes.error, "a string"]);
  assert.ok(TaskerStepError.is(p));
});

test("FromSchema types a handler's input from a schema declared as const", () => {
  const schema = {
    type: "object",
    required: ["order_id", "amount_cents"],
    properties: {
      order_id: { type: "string" },
      amount_cents: { type: "integer" },
      currency: { enum: ["EUR", "USD"] },
      tags: { type: "array", items: { type: "string" } },
    },
  } as const;
  type In = FromSchema<typeof schema>;
  const v: In = { order_id: "o1", amount_cents: 5n, currency: "EUR", tags: ["a"] };
  // @ts-expect-error order_id is required
  const missing: In = { amount_cents: 1 };
  // @ts-expect-error currency is an enum
  const wrong: In = { order_id: "o", amount_cents: 1, currency: "JPY" };
  assert.ok(v && missing && wrong);
});

test("rawJson is sent as it is, after checking it is JSON", async () => {
  const { rawJson } = await import("../index.js");
  assert.equal(stringifyJson(rawJson('{"a": 1,  "b":2}')), '{"a": 1,  "b":2}');
  assert.equal(stringifyJson(rawJson("  ")), "{}");
  assert.throws(() => stringifyJson(rawJson("{nope")));
});
