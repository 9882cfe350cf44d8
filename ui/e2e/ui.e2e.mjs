// The web UI in a real browser: Debian's Chromium, headless, driven by
// playwright-core against a running agent (e2e/ui_test.go's TestWebUI
// starts one with the example services and the order workflow applied).
//
//   node ui/e2e/ui.e2e.mjs http://127.0.0.1:7420
//
// Env: CHROMIUM (default /usr/bin/chromium); DECLINED_ORDER, the input of an
// order-fulfilment task whose card is declined; SCREENSHOTS_DIR, where to
// write build.png, watch.png, diagnosis.png and cluster.png (1280×800).
// Every wait is bounded; any failure exits 1 with what was being waited for.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { parse } from "yaml";

const base = (process.argv[2] ?? "").replace(/\/+$/, "");
if (!base) {
  console.error("usage: node ui/e2e/ui.e2e.mjs <agent base URL>");
  process.exit(2);
}
const WAIT = 20_000;
const shots = process.env.SCREENSHOTS_DIR ?? "";
if (shots) mkdirSync(shots, { recursive: true });
const declined = process.env.DECLINED_ORDER ?? "";

// The workflow built on the canvas: four steps in a diamond, every input a
// literal, so a task needs no input.
const wf = { name: "ui-order", namespace: "ui", version: "1.0.0" };
// at: where each is dropped, relative to the first one dropped (reserve),
// which the canvas centres (fitView) when it is the only node.
const steps = [
  { cap: "inventory.reserve", name: "reserve", at: { x: 0, y: 0 }, input: { order_id: "ord_ui1", items: '[{"sku":"TEE-M","quantity":1}]' } },
  { cap: "orders.validate", name: "validate", at: { x: -235, y: 90 }, input: { order_id: "ord_ui1", customer_id: "cus_ui1", items: '[{"sku":"TEE-M","quantity":1}]' } },
  { cap: "payments.charge", name: "charge", at: { x: 0, y: 180 }, input: { order_id: "ord_ui1", token: "tok_visa", amount_cents: "1200", currency: "EUR" } },
  { cap: "notifications.email", name: "email", at: { x: 235, y: 90 }, input: { to: "ui@example.com", template: "order_shipped" } },
];
const edges = [
  ["validate", "reserve"],
  ["validate", "charge"],
  ["reserve", "email"],
  ["charge", "email"],
];

let step = "starting";
const log = (s) => {
  step = s;
  console.log(`· ${s}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(WAIT);
  page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const nav = (name) => page.getByRole("navigation", { name: "Screens" }).getByRole("button", { name, exact: true }).click();
  const shot = async (name) => {
    if (!shots) return;
    await page.screenshot({ path: path.join(shots, `${name}.png`) });
    console.log(`  wrote ${path.join(shots, `${name}.png`)}`);
  };

  // a. Build: drag four capabilities onto the canvas, connect them, name
  // the workflow, wait for the validation, save.
  log("open /ui/ and the Build screen");
  await page.goto(`${base}/ui/`);
  await nav("Build");
  const palette = page.getByRole("complementary", { name: "Capabilities" });
  const cap = (name) => palette.locator("li.cap").filter({ has: page.locator("strong", { hasText: new RegExp(`^${name.replace(/\./g, "\\.")}$`) }) });
  log("wait for the palette to list the capabilities");
  const until = Date.now() + WAIT;
  for (;;) {
    const counts = await Promise.all(steps.map((s) => cap(s.cap).count()));
    if (counts.every((n) => n === 1)) break;
    if (Date.now() > until) throw new Error(`the palette lacks ${steps.filter((_, i) => counts[i] !== 1).map((s) => s.cap).join(", ")}`);
    // The palette loads the capabilities once: reload until the services
    // have registered them all.
    await page.waitForTimeout(500);
    await page.reload();
  }
  const pane = page.locator(".canvas .react-flow__pane");
  let origin = { x: 0, y: 0 };
  for (const [i, s] of steps.entries()) {
    log(`drag ${s.cap} from the palette onto the canvas`);
    // A real HTML5 drag: mouse down on the palette item, moves, mouse up
    // on the React Flow pane at the given point.
    const box = await pane.boundingBox();
    const to = i === 0 ? { x: box.width / 2 - 95, y: box.height / 2 - 120 } : { x: origin.x + s.at.x, y: origin.y + s.at.y };
    await cap(s.cap).dragTo(pane, { targetPosition: to });
    const node = page.getByTestId(`node-${s.name}`);
    await node.waitFor();
    if (i === 0) {
      // Where the canvas put it once it settled (it fits the view to the
      // first node), relative to the pane.
      let prev = "";
      for (let n = 0; n < 40; n++) {
        const b = await node.boundingBox();
        const now = JSON.stringify(b);
        if (now === prev) break;
        prev = now;
        await page.waitForTimeout(100);
      }
      const b = await node.boundingBox();
      origin = { x: b.x - box.x, y: b.y - box.y };
    }
  }
  for (const [from, to] of edges) {
    log(`drag an edge ${from} → ${to}`);
    // A real mouse drag from the source handle (right) to the target
    // handle (left): every edge is made this way, none by the checklist.
    const src = await page.getByTestId(`node-${from}`).locator(".react-flow__handle.source").boundingBox();
    const dst = await page.getByTestId(`node-${to}`).locator(".react-flow__handle.target").boundingBox();
    if (!src || !dst) throw new Error("a handle is not on screen");
    await page.mouse.move(src.x + src.width / 2, src.y + src.height / 2);
    await page.mouse.down();
    await page.mouse.move(dst.x + dst.width / 2, dst.y + dst.height / 2, { steps: 12 });
    await page.mouse.up();
    await page.waitForFunction((n) => document.querySelectorAll(".canvas .react-flow__edge").length >= n, edges.findIndex((e) => e[0] === from && e[1] === to) + 1, { timeout: WAIT });
  }
  const edgeCount = await page.locator(".canvas .react-flow__edge").count();
  if (edgeCount !== edges.length) throw new Error(`${edgeCount} edges on the canvas, want ${edges.length}`);

  for (const s of steps) {
    log(`select ${s.name} and map its input`);
    await page.getByTestId(`node-${s.name}`).click();
    const editor = page.getByRole("region", { name: `Step ${s.name}` });
    await editor.waitFor();
    for (const [k, v] of Object.entries(s.input)) {
      await editor.getByLabel("New input field").fill(k);
      await editor.getByRole("button", { name: "Add input" }).click();
      const field = editor.getByLabel(k, { exact: true });
      await field.fill(v);
      await field.blur();
    }
  }
  log("name the workflow");
  const toolbar = page.locator(".canvas .toolbar");
  for (const [k, v] of Object.entries(wf)) await toolbar.getByLabel(k, { exact: true }).fill(v);
  // Deselect, so the side panel shows the workflow.
  await pane.click({ position: { x: 650, y: 20 } });
  log("wait for the validation to find no problem");
  const status = toolbar.getByRole("status");
  await page.waitForFunction(() => /^valid/.test(document.querySelector(".canvas .toolbar [role=status]")?.textContent ?? ""), null, { timeout: WAIT }).catch(async () => {
    throw new Error(`validation: ${await status.textContent()} (${await page.locator(".side").innerText()})`);
  });
  await shot("build");
  log("save");
  await toolbar.getByRole("button", { name: "Save" }).click();
  await status.filter({ hasText: `Saved ${wf.name} ${wf.version}` }).waitFor().catch(async () => {
    throw new Error(`save: ${await status.textContent()}`);
  });

  // b. YAML: export, import, export again: the same text.
  log("export the manifest in the YAML view, import it back");
  await toolbar.getByRole("button", { name: "YAML" }).click();
  const yaml = page.getByLabel("Manifest (YAML)");
  const exported = await yaml.inputValue();
  for (const want of [`name: ${wf.name}`, "depends_on", "capability: payments.charge", "token: tok_visa"]) {
    if (!exported.includes(want)) throw new Error(`the exported manifest lacks ${JSON.stringify(want)}:\n${exported}`);
  }
  // The dragged edges are the manifest's depends_on, exactly.
  const deps = Object.fromEntries((parse(exported).steps ?? []).map((s) => [s.name, [...(s.depends_on ?? [])].sort().join(",")]));
  const want = Object.fromEntries(steps.map((s) => [s.name, edges.filter((e) => e[1] === s.name).map((e) => e[0]).sort().join(",")]));
  if (JSON.stringify(deps, Object.keys(want).sort()) !== JSON.stringify(want, Object.keys(want).sort())) {
    throw new Error(`depends_on ${JSON.stringify(deps)}, want ${JSON.stringify(want)}`);
  }
  await page.getByRole("button", { name: "Import" }).click();
  if (await page.getByRole("alert").count()) throw new Error(`import: ${await page.getByRole("alert").first().textContent()}`);
  await page.getByRole("button", { name: "Revert to canvas" }).click();
  const again = await yaml.inputValue();
  if (again !== exported) throw new Error(`the manifest changed in the round trip:\n--- exported\n${exported}\n--- after import\n${again}`);
  await toolbar.getByRole("button", { name: "YAML" }).click();

  // c. Start a task of the saved workflow and watch every step complete.
  const startTask = async (workflow, namespace, input) => {
    await nav("Watch");
    const form = page.getByRole("form", { name: "Start a task" });
    await page.locator("details.start-task > summary").click();
    await form.getByLabel("Workflow to start", { exact: true }).fill(workflow);
    await form.getByLabel("Namespace of the workflow to start", { exact: true }).fill(namespace);
    await form.getByLabel("Task input JSON", { exact: true }).fill(input);
    await form.getByRole("button", { name: "Start task" }).click();
    await page.waitForURL(/#\/watch\/tsk_/, { timeout: WAIT }).catch(async () => {
      throw new Error(`start ${workflow}: ${(await form.getByRole("alert").count()) ? await form.getByRole("alert").textContent() : "no task opened"}`);
    });
    return decodeURIComponent(page.url().split("/").pop());
  };
  log(`start a task of ${wf.name} from the Watch screen`);
  const id = await startTask(wf.name, wf.namespace, "{}");
  log(`wait for every step of ${id} to show complete`);
  const dag = page.getByLabel("Task steps graph");
  await page
    .waitForFunction(
      (names) => names.every((n) => document.querySelector(`.task-dag [data-testid="node-${n}"]`)?.getAttribute("data-state") === "COMPLETE"),
      steps.map((s) => s.name),
      { timeout: WAIT },
    )
    .catch(async () => {
      const states = await dag.locator("[data-testid^=node-]").evaluateAll((ns) => ns.map((n) => `${n.dataset.testid}=${n.dataset.state}`));
      throw new Error(`steps: ${states.join(" ")}`);
    });
  await page.locator(".task-view .badge.task-COMPLETE").first().waitFor();
  await shot("watch");

  // d. A declined order: the diagnosis names charge as the root cause.
  if (!declined) throw new Error("DECLINED_ORDER is not set");
  log("start a declined order-fulfilment task");
  const bad = await startTask("order-fulfilment", "shop", declined);
  log(`wait for the diagnosis of ${bad}`);
  const diagnosis = page.getByRole("region", { name: "Diagnosis" });
  const root = diagnosis.locator("ul > li > strong").first();
  await root.waitFor();
  const rootText = await root.textContent();
  if (rootText !== "charge") throw new Error(`the first finding is ${rootText}, want charge:\n${await diagnosis.innerText()}`);
  const finding = await diagnosis.locator("ul > li").first().innerText();
  if (!finding.includes("card_declined")) throw new Error(`the root cause finding does not cite card_declined: ${finding}`);
  await diagnosis.scrollIntoViewIfNeeded();
  await page.getByRole("heading", { name: "Diagnosis" }).evaluate((h) => h.scrollIntoView({ block: "start" }));
  await shot("diagnosis");

  // e. Cluster.
  log("open the Cluster screen");
  await nav("Cluster");
  await page.getByText("payments.charge").first().waitFor();
  await page.waitForLoadState("networkidle", { timeout: WAIT }).catch(() => {});
  await shot("cluster");

  if (errors.length) throw new Error(`errors on the page: ${errors.join("; ")}`);
  console.log("ok: built, saved and round-tripped a workflow, watched a task complete, diagnosed a declined order");
} catch (e) {
  console.error(`FAIL while trying to ${step}: ${e instanceof Error ? e.message : e}`);
  if (page && shots) await page.screenshot({ path: path.join(shots, "failure.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
