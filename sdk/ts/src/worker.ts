// The worker: offers capabilities to the sidecar and runs the steps it is
// assigned, with the semantics of the Go SDK's worker (sdk/go/worker).

import { setMaxListeners } from "node:events";

import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client as ConnectClient } from "@connectrpc/connect";

import { Codes, failureOf, permanent, TaskerStepError, violationsOf } from "./errors.js";
import {
  CapabilitySchema,
  WorkerService,
  type StepAssignment,
  type Capability,
} from "./gen/tasker/v1/worker_pb.js";
import { parseJson, stringifyJson } from "./json.js";
import { jsonLogger, withAttrs, type Logger } from "./log.js";
import { Backoff, codeOf, createSidecarTransport, sleep, transient, type ConnectionOptions } from "./transport.js";

/** How many steps of one capability run at once unless `concurrency` says otherwise; the sidecar's default too. */
export const DEFAULT_CONCURRENCY = 16;
/** How long run() waits for running steps at shutdown unless `drainTimeoutMs` says otherwise. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** Bounds one unary call to the sidecar. */
const CALL_TIMEOUT_MS = 10_000;
/** Bounds reporting one outcome, retries included. */
const REPORT_TIMEOUT_MS = 30_000;
/** The shortest wait between two lease extensions. */
const MIN_HEARTBEAT_MS = 10;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of a Worker. All are optional. */
export interface WorkerOptions extends ConnectionOptions {
  /** Names this app instance to the sidecar; empty lets the sidecar pick one, which the worker then keeps. */
  workerId?: string;
  /** Receives the worker's logs; default JSON lines on stderr at level info. */
  logger?: Logger;
  /** How long run() lets running steps finish once asked to stop, before aborting them; default 30 s. */
  drainTimeoutMs?: number;
  /** Delays between attempts to register and poll (tests shorten them); default 100 ms to 2 s. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** How long run() waits for aborted steps after the drain timeout; default 2 s. */
  drainGraceMs?: number;
}

/** The reason of a step's signal when the sidecar no longer holds the attempt for this worker: its outcome is not reported. */
export class LeaseLostError extends Error {
  constructor() {
    super("lease lost: the attempt is no longer this worker's");
    this.name = "LeaseLostError";
  }
}

/**
 * The reason of a step's signal when the worker was stopping and the step
 * did not finish within the drain timeout. If the handler then throws, the
 * attempt is not reported and the sidecar gives the step to another worker
 * without spending an attempt.
 */
export class DrainTimeoutError extends Error {
  constructor() {
    super("drain timeout: the worker is shutting down");
    this.name = "DrainTimeoutError";
  }
}

/** The reason of a step's signal when its deadline passed without the lease being extended. */
export class LeaseExpiredError extends Error {
  constructor() {
    super("the step's deadline passed");
    this.name = "LeaseExpiredError";
  }
}

/** One attempt of one step, as assigned to this worker. */
export interface Step {
  /** The task (workflow run) the step belongs to. */
  readonly taskId: string;
  /** The step's name in the workflow, such as "charge". */
  readonly name: string;
  /** What the step asks for, such as "payments.charge". */
  readonly capability: string;
  /** Counts from 1. */
  readonly attempt: number;
  /** Stable across the attempts of the step: make side effects happen once with it. */
  readonly idempotencyKey: string;
  /** When the attempt times out unless it finishes or its lease is extended; follows the heartbeats. Undefined when the sidecar set none. */
  readonly deadline: Date | undefined;
  /** The workflow the task runs, and its version. */
  readonly workflow: string;
  readonly workflowVersion: string;
  /** The W3C traceparent of the attempt when the cluster traces, "" otherwise. */
  readonly traceParent: string;
  /** The step's input as the JSON text the sidecar sent. */
  readonly rawInput: string;
  /**
   * Aborted when the attempt should stop: the lease was lost (reason
   * LeaseLostError: the outcome will not be reported), the deadline passed
   * unextended (LeaseExpiredError), or the worker's drain timed out
   * (DrainTimeoutError). Pass it to fetch() and friends.
   */
  readonly signal: AbortSignal;
}

/**
 * A step handler: a plain async function of the decoded input. Its
 * return value is the step's result (undefined is sent as {}); throw
 * permanent() or retryable() to fail the attempt, any other error fails it
 * retryably with code "error".
 */
export type Handler<In = any, Out = unknown> = (input: In, step: Step) => Out | Promise<Out>;

/** A JSON Schema, as an object or as JSON text. */
export type SchemaLike = string | object;

/** Options of Worker.handle(). */
export interface HandleOptions {
  /** Steps of this capability run at once; default 16. The sidecar is told, and the worker enforces it too. */
  concurrency?: number;
  /** JSON Schema of the input the capability accepts; gossiped so workflows can be checked against it. */
  inputSchema?: SchemaLike;
  /** JSON Schema of the result the capability returns. */
  outputSchema?: SchemaLike;
  /** The implementation's version, for operators. */
  version?: string;
  /** A line about the capability, for operators. */
  description?: string;
}

/** A counting semaphore whose waiters give up when a signal aborts. */
class Slots {
  private used = 0;
  private waiters: Array<(ok: boolean) => void> = [];
  constructor(readonly limit: number) {}

  acquire(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) {
      return Promise.resolve(false);
    }
    if (this.used < this.limit) {
      this.used++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter = (ok: boolean) => {
        signal.removeEventListener("abort", onAbort);
        resolve(ok);
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) {
      next(true); // the slot passes to the waiter
    } else {
      this.used--;
    }
  }
}

interface Cap {
  name: string;
  handler: Handler<any, any>;
  spec: Capability;
  slots: Slots;
}

function schemaText(name: string, what: string, s: SchemaLike | undefined): string {
  if (s === undefined || s === "") {
    return "";
  }
  if (typeof s === "string") {
    try {
      JSON.parse(s);
    } catch {
      throw new TypeError(`Worker.handle(${JSON.stringify(name)}): the ${what} schema is not valid JSON`);
    }
    return s;
  }
  return JSON.stringify(s);
}

/**
 * A Worker runs the steps of the capabilities it handles: configure it
 * with handle(), then await run().
 *
 * ```ts
 * const worker = new Worker();
 * worker.handle("payments.charge", async (input, step) => ({ charge_id: "ch_1" }), { concurrency: 8 });
 * const stop = new AbortController();
 * process.once("SIGTERM", () => stop.abort());
 * await worker.run(stop.signal);
 * ```
 */
export class Worker {
  readonly #opts: WorkerOptions;
  readonly #log: Logger;
  readonly #api: ConnectClient<typeof WorkerService>;
  readonly #caps = new Map<string, Cap>();
  #run: Run | undefined;

  constructor(opts: WorkerOptions = {}) {
    this.#opts = opts;
    this.#log = opts.logger ?? jsonLogger();
    this.#api = createClient(WorkerService, createSidecarTransport(opts));
  }

  /** The generated WorkerService client this worker calls the sidecar with. */
  get service(): ConnectClient<typeof WorkerService> {
    return this.#api;
  }

  /** The worker id the sidecar knows this worker by, once registered (else the one given in the options). */
  get workerId(): string {
    return this.#run?.workerId ?? this.#opts.workerId ?? "";
  }

  /**
   * Handles the capability name (such as "payments.charge") with fn. Call
   * it before run(). Throws when the name is empty or already handled, a
   * schema is not valid JSON, or run() is running: each is a mistake in
   * the program.
   */
  handle<In = any, Out = unknown>(name: string, fn: Handler<In, Out>, opts: HandleOptions = {}): this {
    if (!name) {
      throw new TypeError("Worker.handle: empty capability name");
    }
    if (typeof fn !== "function") {
      throw new TypeError(`Worker.handle(${JSON.stringify(name)}): the handler is not a function`);
    }
    if (this.#run) {
      throw new Error(`Worker.handle(${JSON.stringify(name)}) called while run() is running`);
    }
    if (this.#caps.has(name)) {
      throw new Error(`Worker.handle(${JSON.stringify(name)}): capability already handled`);
    }
    const limit = opts.concurrency && opts.concurrency > 0 ? Math.floor(opts.concurrency) : DEFAULT_CONCURRENCY;
    const spec = create(CapabilitySchema, {
      name,
      version: opts.version ?? "",
      description: opts.description ?? "",
      inputSchemaJson: schemaText(name, "input", opts.inputSchema),
      outputSchemaJson: schemaText(name, "output", opts.outputSchema),
      maxConcurrency: limit,
    });
    this.#caps.set(name, { name, handler: fn as Handler<any, any>, spec, slots: new Slots(limit) });
    return this;
  }

  /**
   * Registers the capabilities and runs the steps assigned to this worker
   * until signal aborts or stop() is called; then drains (no new step
   * starts, running ones get drainTimeoutMs to finish and report, then
   * their signals abort) and resolves. It keeps trying while the sidecar
   * is unreachable. It rejects when no capability is handled, run() is
   * already running, or the sidecar refuses the registration for good
   * (InvalidArgument, PermissionDenied, Unauthenticated, Unimplemented:
   * the ConnectError, after draining).
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.#run) {
      throw new Error("Worker.run is already running");
    }
    if (this.#caps.size === 0) {
      throw new Error("Worker.run: no capability to offer: call handle() before run()");
    }
    const r = new Run(this.#api, this.#log, this.#opts, this.#caps);
    this.#run = r;
    const onAbort = () => r.requestStop();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) {
      r.requestStop();
    }
    try {
      await r.run();
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#run = undefined;
    }
  }

  /** Asks a running run() to drain and resolve, like aborting its signal. */
  stop(): void {
    this.#run?.requestStop();
  }
}

/** refused reports whether a registration error will not go away by retrying. */
function refused(err: unknown): boolean {
  switch (codeOf(err)) {
    case Code.InvalidArgument:
    case Code.Unimplemented:
    case Code.PermissionDenied:
    case Code.Unauthenticated:
      return true;
  }
  return false;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Lease is the life of one attempt on this worker; its signal is the handler's. */
class Lease {
  readonly ctl = new AbortController();
  /** Aborted when the handler has returned: stops the heartbeat. */
  readonly done = new AbortController();
  readonly stopBeats: AbortSignal;
  private timer: NodeJS.Timeout | undefined;
  private readonly onParent: () => void;

  constructor(
    private readonly parent: AbortSignal,
    public deadline: number | undefined,
  ) {
    this.onParent = () => this.ctl.abort(parent.reason);
    if (parent.aborted) {
      this.ctl.abort(parent.reason);
    } else {
      parent.addEventListener("abort", this.onParent, { once: true });
    }
    this.stopBeats = AbortSignal.any([this.ctl.signal, this.done.signal]);
    this.schedule();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.deadline === undefined || this.done.signal.aborted) {
      return;
    }
    const left = Math.min(Math.max(this.deadline - Date.now(), 0), MAX_TIMER_MS);
    this.timer = setTimeout(() => this.expire(), left);
  }

  private expire(): void {
    if (this.deadline !== undefined && this.deadline - Date.now() > 0) {
      this.schedule();
      return;
    }
    this.ctl.abort(new LeaseExpiredError());
  }

  extend(deadline: number): void {
    this.deadline = deadline;
    this.schedule();
  }

  lose(): void {
    this.ctl.abort(new LeaseLostError());
  }

  end(): void {
    clearTimeout(this.timer);
    this.parent.removeEventListener("abort", this.onParent);
    this.done.abort();
  }
}

class StepImpl implements Step {
  readonly taskId: string;
  readonly name: string;
  readonly capability: string;
  readonly attempt: number;
  readonly idempotencyKey: string;
  readonly workflow: string;
  readonly workflowVersion: string;
  readonly traceParent: string;
  readonly rawInput: string;
  readonly signal: AbortSignal;

  constructor(
    a: StepAssignment,
    private readonly lease: Lease,
  ) {
    this.taskId = a.taskId;
    this.name = a.step;
    this.capability = a.capability;
    this.attempt = a.attempt;
    this.idempotencyKey = a.idempotencyKey;
    this.workflow = a.workflow;
    this.workflowVersion = a.workflowVersion;
    this.traceParent = a.traceParent;
    this.rawInput = a.inputJson;
    this.signal = lease.ctl.signal;
  }

  get deadline(): Date | undefined {
    return this.lease.deadline === undefined ? undefined : new Date(this.lease.deadline);
  }
}

type Outcome = { ok: true; result: unknown } | { ok: false; err: unknown };

/** Run is the state of one call to Worker.run(). */
class Run {
  workerId: string;
  private draining = false;
  /** Aborted when the drain begins: no new step starts, registering stops. */
  private readonly drainCtl = new AbortController();
  /** Closes the poll stream, once the running steps have reported. */
  private readonly streamCtl = new AbortController();
  /** The parent of every handler's signal; the drain timeout aborts it. */
  private readonly execCtl = new AbortController();
  /** Bounds reports; aborted when run() returns. */
  private readonly reportCtl = new AbortController();
  private readonly inflight = new Set<Promise<void>>();
  private running = 0;
  private stopRequested!: () => void;
  private readonly stopped: Promise<void>;
  private readonly register: Capability[];
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly drainTimeoutMs: number;
  private readonly drainGraceMs: number;

  constructor(
    private readonly api: ConnectClient<typeof WorkerService>,
    private readonly log: Logger,
    opts: WorkerOptions,
    private readonly caps: Map<string, Cap>,
  ) {
    this.workerId = opts.workerId ?? "";
    this.register = [...caps.values()].map((c) => c.spec);
    this.retryMinMs = opts.retryMinMs ?? 100;
    this.retryMaxMs = opts.retryMaxMs ?? 2_000;
    this.drainTimeoutMs = opts.drainTimeoutMs && opts.drainTimeoutMs > 0 ? opts.drainTimeoutMs : DEFAULT_DRAIN_TIMEOUT_MS;
    this.drainGraceMs = opts.drainGraceMs ?? 2_000;
    this.stopped = new Promise((resolve) => (this.stopRequested = resolve));
    // Every running step (and every step waiting for a slot) listens on
    // these: no MaxListenersExceededWarning at concurrency above 10.
    setMaxListeners(0, this.drainCtl.signal, this.execCtl.signal, this.reportCtl.signal, this.streamCtl.signal);
  }

  requestStop(): void {
    this.stopRequested();
  }

  async run(): Promise<void> {
    let fatal: unknown;
    const polled = this.poll().then(
      () => {},
      (err) => {
        fatal = err;
        this.log.error("worker stopping", { error: errText(err) });
        this.requestStop();
      },
    );
    await this.stopped;
    await this.drain();
    this.streamCtl.abort();
    await polled;
    this.reportCtl.abort();
    if (fatal !== undefined) {
      throw fatal;
    }
  }

  /**
   * poll registers and holds the stream of assignments open, again and
   * again with backoff, until the worker drains. It rejects only when the
   * sidecar refuses the registration for good.
   */
  private async poll(): Promise<void> {
    const b = new Backoff(this.retryMinMs, this.retryMaxMs);
    const drain = this.drainCtl.signal;
    while (!this.draining) {
      let workerId: string;
      try {
        const res = await this.api.registerCapabilities(
          { workerId: this.workerId, capabilities: this.register },
          { signal: drain, timeoutMs: CALL_TIMEOUT_MS },
        );
        workerId = res.workerId;
      } catch (err) {
        if (this.draining) {
          return;
        }
        if (refused(err)) {
          throw err;
        }
        const d = b.after(err);
        this.log.warn("cannot register with the sidecar; retrying", { error: errText(err), retry_in_ms: Math.round(d) });
        await sleep(d, drain);
        continue;
      }
      if (workerId) {
        this.workerId = workerId;
      }
      this.log.info("registered with the sidecar", { worker_id: this.workerId, capabilities: this.register.length });

      const opened = Date.now();
      const { n, err } = await this.receive();
      if (this.draining) {
        return;
      }
      if (n > 0 || Date.now() - opened > this.retryMaxMs) {
        b.reset();
      }
      const d = b.next();
      this.log.warn("step stream ended; registering again", { error: errText(err), retry_in_ms: Math.round(d) });
      await sleep(d, drain);
    }
  }

  /** receive holds one PollSteps stream open; it returns how many assignments came and why it ended. */
  private async receive(): Promise<{ n: number; err: unknown }> {
    let n = 0;
    try {
      for await (const msg of this.api.pollSteps({ workerId: this.workerId }, { signal: this.streamCtl.signal })) {
        if (msg.assignment) {
          n++;
          this.accept(msg.assignment);
        }
      }
      return { n, err: new Error("poll steps: the sidecar closed the stream") };
    } catch (err) {
      return { n, err };
    }
  }

  private track(p: Promise<void>): void {
    const q = p.catch((err) => this.log.error("internal error running a step", { error: errText(err) }));
    this.inflight.add(q);
    void q.finally(() => this.inflight.delete(q));
  }

  /** accept starts executing an assignment, unless the worker is draining. */
  private accept(a: StepAssignment): void {
    const log = withAttrs(this.log, { task_id: a.taskId, step: a.step, attempt: a.attempt, capability: a.capability });
    if (this.draining) {
      log.info("not starting step: the worker is draining; the sidecar takes it back when the stream closes");
      return;
    }
    const c = this.caps.get(a.capability);
    if (!c) {
      log.error("step assigned for a capability this worker does not handle");
      this.track(
        this.fail(
          a,
          new TaskerStepError(Codes.unknownCapability, `this worker does not handle capability ${JSON.stringify(a.capability)}`, {
            retryable: true,
          }),
          log,
        ),
      );
      return;
    }
    this.track(this.execute(c, a, log));
  }

  /** execute runs one assignment when a slot of its capability is free, and reports the outcome. */
  private async execute(c: Cap, a: StepAssignment, log: Logger): Promise<void> {
    const acquired = await c.slots.acquire(this.drainCtl.signal);
    if (!acquired || this.draining) {
      if (acquired) {
        c.slots.release();
      }
      log.info("not starting step: the worker is draining; the sidecar takes it back when the stream closes");
      return;
    }
    try {
      const lease = new Lease(this.execCtl.signal, a.deadline ? timestampMs(a.deadline) : undefined);
      const step = new StepImpl(a, lease);
      const beat = this.heartbeat(lease, a, log);
      this.running++;
      log.debug("step started", { deadline: step.deadline?.toISOString() });
      let outcome: Outcome;
      let input: unknown;
      try {
        input = parseJson(a.inputJson.trim() === "" ? "{}" : a.inputJson);
        outcome = { ok: true, result: undefined };
      } catch (err) {
        outcome = { ok: false, err: permanent(Codes.invalidInput, `decode step input: ${errText(err)}`, { cause: err }) };
      }
      if (outcome.ok) {
        try {
          outcome = { ok: true, result: await c.handler(input, step) };
        } catch (err) {
          outcome = { ok: false, err };
        }
      }
      this.running--;
      const cause: unknown = lease.ctl.signal.aborted ? lease.ctl.signal.reason : undefined;
      lease.end();
      await beat;

      if (cause instanceof LeaseLostError) {
        log.warn("step outcome not reported: the lease was lost", outcome.ok ? {} : { handler_error: errText(outcome.err) });
      } else if (cause instanceof DrainTimeoutError && !outcome.ok) {
        log.info("step aborted by the drain timeout; not reported, so the sidecar hands it back", {
          handler_error: errText(outcome.err),
        });
      } else if (!outcome.ok) {
        await this.fail(a, failureOf(outcome.err), log);
      } else {
        await this.complete(a, outcome.result, log);
      }
    } finally {
      c.slots.release();
    }
  }

  /** heartbeat extends the lease whenever a third of the time to its deadline remains, until the handler returns. */
  private async heartbeat(lease: Lease, a: StepAssignment, log: Logger): Promise<void> {
    if (lease.deadline === undefined) {
      return;
    }
    const stop = lease.stopBeats;
    let deadline = lease.deadline;
    let granted = Date.now();
    for (;;) {
      const wait = Math.max(deadline - Date.now() - (deadline - granted) / 3, MIN_HEARTBEAT_MS);
      if (!(await sleep(wait, stop))) {
        return;
      }
      try {
        const res = await this.api.extendLease(
          { taskId: a.taskId, step: a.step, attempt: a.attempt, workerId: this.workerId },
          { signal: stop, timeoutMs: CALL_TIMEOUT_MS },
        );
        if (stop.aborted) {
          return;
        }
        granted = Date.now();
        if (res.deadline) {
          deadline = timestampMs(res.deadline);
          lease.extend(deadline);
        }
        log.debug("lease extended", { deadline: new Date(deadline).toISOString() });
      } catch (err) {
        if (stop.aborted) {
          return;
        }
        granted = Date.now();
        const code = codeOf(err);
        if (code === Code.FailedPrecondition || code === Code.NotFound) {
          log.warn("lease lost: the sidecar no longer holds this attempt for this worker; aborting the step", {
            error: errText(err),
          });
          lease.lose();
          return;
        }
        log.warn("cannot extend the lease; trying again before the deadline", {
          error: errText(err),
          deadline: new Date(deadline).toISOString(),
        });
      }
    }
  }

  private headers(a: StepAssignment): Record<string, string> {
    return a.traceParent ? { traceparent: a.traceParent } : {};
  }

  /** complete reports a handler's result. */
  private async complete(a: StepAssignment, result: unknown, log: Logger): Promise<void> {
    let body: string;
    try {
      body = stringifyJson(result);
    } catch (err) {
      log.error("step result cannot be encoded as JSON", { error: errText(err) });
      await this.fail(a, permanent(Codes.invalidResult, `encode result: ${errText(err)}`, { cause: err }), log);
      return;
    }
    try {
      await this.retry((signal) =>
        this.api.completeStep(
          { taskId: a.taskId, step: a.step, attempt: a.attempt, resultJson: body, workerId: this.workerId },
          { signal, timeoutMs: CALL_TIMEOUT_MS, headers: this.headers(a) },
        ),
      );
      log.debug("step completed");
    } catch (err) {
      const code = codeOf(err);
      if (code === Code.InvalidArgument) {
        log.error(
          "step result REJECTED: it breaks the step's result contract, so the attempt failed with contract_violation and will not be retried; fix the handler or the workflow's result_schema",
          { error: errText(err), violations: violationLines(err) },
        );
      } else if (code === Code.FailedPrecondition) {
        log.warn("step result discarded: this attempt is no longer current", { error: errText(err) });
      } else {
        log.error("cannot report the step result", { error: errText(err) });
      }
    }
  }

  /** fail reports a failed attempt. */
  private async fail(a: StepAssignment, f: TaskerStepError, log: Logger): Promise<void> {
    let detailsJson = "";
    if (f.details !== undefined) {
      try {
        detailsJson = stringifyJson(f.details);
      } catch (err) {
        log.warn("failure details cannot be encoded as JSON; reporting without them", { error: errText(err) });
      }
    }
    try {
      const res = await this.retry((signal) =>
        this.api.failStep(
          {
            taskId: a.taskId,
            step: a.step,
            attempt: a.attempt,
            code: f.code,
            message: f.message,
            retryable: f.retryable,
            retryAfter: f.retryAfterMs > 0 ? durationFromMs(f.retryAfterMs) : undefined,
            detailsJson,
            workerId: this.workerId,
          },
          { signal, timeoutMs: CALL_TIMEOUT_MS, headers: this.headers(a) },
        ),
      );
      log.warn("step failed", {
        code: f.code,
        message: f.message,
        retryable: f.retryable,
        will_retry: res.willRetry,
        next_attempt_at: res.nextAttemptAt ? new Date(timestampMs(res.nextAttemptAt)).toISOString() : undefined,
      });
    } catch (err) {
      const code = codeOf(err);
      if (code === Code.FailedPrecondition) {
        log.warn("step failure discarded: this attempt is no longer current", { code: f.code, error: errText(err) });
      } else if (code === Code.InvalidArgument) {
        log.error(
          "step error REJECTED: it breaks the step's error contract, so the attempt failed with contract_violation and will not be retried; report one of the codes the workflow's error_schema lists",
          { code: f.code, error: errText(err), violations: violationLines(err) },
        );
      } else {
        log.error("cannot report the step failure", { code: f.code, message: f.message, error: errText(err) });
      }
    }
  }

  /** retry calls fn until it succeeds, fails for a reason repeating will not fix, or the report's time is up. */
  private async retry<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    // A signal of its own, linked to reportCtl by hand and unlinked at the
    // end, so that reports leave no listener behind on the run's signal.
    const ctl = new AbortController();
    const parent = this.reportCtl.signal;
    const onParent = () => ctl.abort(parent.reason);
    parent.addEventListener("abort", onParent, { once: true });
    const timer = setTimeout(() => ctl.abort(new Error("reporting took too long")), REPORT_TIMEOUT_MS);
    timer.unref();
    const signal = ctl.signal;
    const b = new Backoff(this.retryMinMs / 2, 2_000);
    try {
      for (;;) {
        try {
          return await fn(signal);
        } catch (err) {
          if (!transient(err) || signal.aborted) {
            throw err;
          }
          if (!(await sleep(b.after(err), signal))) {
            throw err;
          }
        }
      }
    } finally {
      clearTimeout(timer);
      parent.removeEventListener("abort", onParent);
    }
  }

  /** waitInflight resolves true once every step has finished and reported, or false after ms. */
  private async waitInflight(ms: number): Promise<boolean> {
    const timer = new AbortController();
    const all = (async () => {
      while (this.inflight.size > 0) {
        await Promise.all([...this.inflight]);
      }
      return true;
    })();
    try {
      return await Promise.race([all, sleep(ms, timer.signal).then(() => false)]);
    } finally {
      timer.abort();
    }
  }

  /** drain stops new steps, waits for running ones up to the drain timeout, then aborts them and waits a little longer. */
  private async drain(): Promise<void> {
    this.draining = true;
    this.drainCtl.abort();
    this.log.info("worker draining: taking no new steps", { running: this.running, timeout_ms: this.drainTimeoutMs });
    if (await this.waitInflight(this.drainTimeoutMs)) {
      this.log.info("worker drained");
      return;
    }
    this.log.warn("drain timeout: aborting the running steps", { running: this.running });
    this.execCtl.abort(new DrainTimeoutError());
    if (await this.waitInflight(this.drainGraceMs)) {
      this.log.info("worker drained");
    } else {
      this.log.error("steps still running or reporting after being aborted; abandoning them (the sidecar takes them back)", {
        running: this.running,
      });
    }
  }
}

/** violationLines lists a contract failure's violations as "pointer: message". */
function violationLines(err: unknown): string[] | undefined {
  return violationsOf(err)?.violations.map((v) => `${v.pointer}: ${v.message}`);
}

