// Conformance fixture of the TypeScript SDK for the polyglot e2e tests:
//
//   node e2e/testdata/polyglot/echo.mjs --addr URL
//
// Registers capability echo.ts (no schemas). Input: {"value": <any JSON>,
// "break_contract": <bool, optional>}. Result: {"lang": "ts", "value": <the
// value as decoded, re-encoded>, "kinds": {<JSON pointer of every node of
// value, "" for the root>: "object" | "array" | "string" | "integer" |
// "number" | "boolean" | "null"}}, the kind from the decoded JavaScript type
// (a bigint or an integral number is "integer"). With break_contract true
// the result is {"lang": "ts"} only, which breaks a result_schema that
// requires value. SIGTERM or SIGINT drains, then exits 0.
//
// Plain JavaScript (ESM): @tasker-run/sdk resolves through the repository's
// node_modules (npm ci, then npm run build --workspaces, at the root).

import { Worker, jsonLogger } from "@tasker-run/sdk";

function parseArgs(argv) {
  const out = { addr: "" };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/s.exec(argv[i]);
    if (!m || m[1] !== "addr") {
      process.stderr.write(`echo.mjs: unexpected argument ${JSON.stringify(argv[i])}\nusage: node echo.mjs --addr URL\n`);
      process.exit(2);
    }
    out.addr = m[2] ?? argv[++i] ?? "";
  }
  return out;
}

/** The JSON pointer token of a key (RFC 6901). */
const token = (k) => String(k).replace(/~/g, "~0").replace(/\//g, "~1");

/** kindOf names a decoded value's JSON kind from its JavaScript type. */
function kindOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  switch (typeof v) {
    case "bigint":
      return "integer";
    case "number":
      return Number.isInteger(v) ? "integer" : "number";
    case "string":
      return "string";
    case "boolean":
      return "boolean";
    case "object":
      return "object";
  }
  return typeof v;
}

/** kinds maps the pointer of every node of v to its kind. */
function kinds(v, pointer = "", out = {}) {
  out[pointer] = kindOf(v);
  if (Array.isArray(v)) {
    v.forEach((e, i) => kinds(e, `${pointer}/${i}`, out));
  } else if (v !== null && typeof v === "object") {
    for (const [k, e] of Object.entries(v)) kinds(e, `${pointer}/${token(k)}`, out);
  }
  return out;
}

const { addr } = parseArgs(process.argv.slice(2));
const log = jsonLogger({ level: "info", with: { app: "echo.ts" } });
const worker = new Worker({ addr: addr || undefined, logger: log, drainTimeoutMs: 10_000 });
worker.handle(
  "echo.ts",
  async (input) => {
    if (input.break_contract === true) {
      return { lang: "ts" };
    }
    return { lang: "ts", value: input.value ?? null, kinds: kinds(input.value ?? null) };
  },
  { version: "1.0.0", description: "Echoes its input's value with the JSON kind of every node, as the TypeScript SDK decodes it" },
);

const stop = new AbortController();
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    log.info("signal received; draining", { signal: sig });
    stop.abort();
  });
}
try {
  await worker.run(stop.signal);
  log.info("echo.ts drained; exiting");
} catch (err) {
  log.error("echo.ts stopped", { error: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
}
