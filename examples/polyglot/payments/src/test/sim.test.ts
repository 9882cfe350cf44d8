// The simulation's arithmetic against values computed once with the Go
// implementation (examples/services/services.go: unit, idFor).

import assert from "node:assert/strict";
import { test } from "node:test";

import { idFor, parseDelay, parseDuration, unit } from "../sim.js";

test("unit matches the Go services bit for bit", () => {
  assert.equal(unit(1n, "payments.charge", "ord_1", "1"), 0.3615013537296543);
  assert.equal(unit(42n, "payments.charge", "ord_42", "2"), 0.22126233038008525);
  assert.equal(unit(18446744073709551615n, "payments.charge", "ord_ünï", "3"), 0.7117680259999721);
  assert.equal(unit(7n, "payments.charge", "", "1"), 0.6626232304842394);
});

test("idFor matches the Go services", () => {
  assert.equal(idFor("ch_", "tsk_06h2h3x6h29cwz7t1p87fnqff8/charge"), "ch_1pjs84hqwrx5f");
  assert.equal(idFor("ch_", ""), "ch_3q7u2yo2e2k63");
  assert.equal(idFor("ch_", "ключ/charge"), "ch_5virj4aw3ue9");
});

test("Go durations and --delay ranges parse", () => {
  assert.equal(parseDuration("20ms"), 20);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration("250us"), 0.25);
  assert.throws(() => parseDuration("5"));
  assert.throws(() => parseDuration("ms"));
  assert.deepEqual(parseDelay("20ms-80ms"), { minMs: 20, maxMs: 80 });
  assert.deepEqual(parseDelay("10ms"), { minMs: 10, maxMs: 10 });
  assert.throws(() => parseDelay("80ms-20ms"));
  assert.throws(() => parseDelay("x-20ms"));
});
