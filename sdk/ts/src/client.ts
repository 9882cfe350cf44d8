// The client: applies workflows and starts, reads, watches and operates
// tasks through the sidecar's WorkflowService.

import { Code, ConnectError, createClient, type Client as ConnectClient } from "@connectrpc/connect";

import { ContractError, ValidationError } from "./errors.js";
import {
  TaskState,
  WorkflowService,
  type ApplyWorkflowResponse,
  type Task,
  type TaskEvent,
} from "./gen/tasker/v1/workflow_pb.js";
import { parseJson, stringifyJson, type JsonValue } from "./json.js";
import { Backoff, createSidecarTransport, sleep, transient, type ConnectionOptions } from "./transport.js";

/** Options of a Client. All are optional. */
export type ClientOptions = ConnectionOptions;

/** Optional fields of startTask(). */
export interface StartOptions {
  /** The workflow's namespace; "default" when absent. */
  namespace?: string;
  /** A version of the workflow instead of the latest. */
  version?: string;
  /** Requests with the same key start one task: later ones return it. One key per business event. */
  idempotencyKey?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Call options of the client's unary calls. */
export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** One message of a watch: the first carries the task as it is (no event); each later one an event and the task after it. */
export interface WatchMessage {
  event?: TaskEvent;
  task: Task;
}

/** Whether a task in state s has ended for good: complete, cancelled or resolved manually (error is not: an operator can still act). */
export function isTerminal(s: TaskState): boolean {
  return s === TaskState.COMPLETE || s === TaskState.CANCELLED || s === TaskState.RESOLVED_MANUALLY;
}

/** The thrown error when a watch ended before the task did (the sidecar closed it). */
export class StreamEndedError extends Error {
  constructor(id: string) {
    super(`watch task ${id}: the watch ended before the task did`);
    this.name = "StreamEndedError";
  }
}

/** The task's input, decoded with the SDK's large-number rules. */
export function taskInput(task: Task): JsonValue {
  return parseJson(task.inputJson || "{}");
}

/** The result of a task's step, decoded with the SDK's large-number rules; undefined while it has none. */
export function stepResult(task: Task, step: string): JsonValue | undefined {
  const s = task.steps.find((x) => x.name === step);
  return s && s.resultJson ? parseJson(s.resultJson) : undefined;
}

/**
 * Client calls the sidecar's WorkflowService. Share one: it keeps one
 * HTTP/2 connection. Errors are ConnectErrors with the sidecar's code;
 * invalid manifests are ValidationErrors, and values that break a
 * contract ContractErrors (both ConnectErrors too).
 */
export class Client {
  /** The generated WorkflowService client, for the calls this class does not wrap (listTasks, listWorkflows, watchEvents, dead letters...). */
  readonly service: ConnectClient<typeof WorkflowService>;

  constructor(opts: ClientOptions = {}) {
    this.service = createClient(WorkflowService, createSidecarTransport(opts));
  }

  /**
   * Validates a manifest (YAML or JSON, as written) and stores it as a new
   * workflow version; `created` is false when this exact version and
   * content were stored already. An invalid manifest throws a
   * ValidationError listing every problem.
   */
  async applyWorkflow(manifest: string, opts: CallOptions = {}): Promise<ApplyWorkflowResponse> {
    try {
      return await this.service.applyWorkflow({ manifest }, opts);
    } catch (err) {
      throw ValidationError.fromError(err) ?? err;
    }
  }

  /**
   * Starts a run of workflow with input, encoded as JSON (bigints keep
   * every digit; undefined is {}; a string is sent as it is only when you
   * pass `rawJson`). An input that breaks the input_schema throws a
   * ContractError.
   */
  async startTask(
    workflow: string,
    input?: unknown,
    opts: StartOptions & { rawJson?: boolean } = {},
  ): Promise<{ task: Task; created: boolean }> {
    const inputJson = opts.rawJson && typeof input === "string" ? input : stringifyJson(input);
    try {
      const res = await this.service.startTask(
        {
          workflow,
          inputJson,
          namespace: opts.namespace ?? "",
          version: opts.version ?? "",
          idempotencyKey: opts.idempotencyKey ?? "",
        },
        { signal: opts.signal, timeoutMs: opts.timeoutMs },
      );
      if (!res.task) {
        throw new ConnectError("start task: the sidecar returned no task", Code.Internal);
      }
      return { task: res.task, created: res.created };
    } catch (err) {
      throw ContractError.fromError(err) ?? err;
    }
  }

  /** A task with every step's state, attempts, timings, result and last error; NotFound for an unknown id. */
  async getTask(id: string, opts: CallOptions = {}): Promise<Task> {
    const res = await this.service.getTask({ id }, opts);
    return mustTask(res.task, id);
  }

  /** Cancels a task and its unfinished steps; FailedPrecondition when it has ended. */
  async cancelTask(id: string, reason = "", opts: CallOptions = {}): Promise<Task> {
    const res = await this.service.cancelTask({ id, reason }, opts);
    return mustTask(res.task, id);
  }

  /** Gives a step that failed for good a fresh round of attempts. */
  async retryStep(taskId: string, step: string, reason = "", opts: CallOptions = {}): Promise<Task> {
    const res = await this.service.retryStep({ taskId, step, reason }, opts);
    return mustTask(res.task, taskId);
  }

  /** Completes a pending or failed step by hand; a result that breaks the result_schema throws a ContractError. */
  async resolveStep(taskId: string, step: string, result: unknown, reason = "", opts: CallOptions = {}): Promise<Task> {
    try {
      const res = await this.service.resolveStep({ taskId, step, resultJson: stringifyJson(result), reason }, opts);
      return mustTask(res.task, taskId);
    } catch (err) {
      throw ContractError.fromError(err) ?? err;
    }
  }

  /**
   * Watches a task: yields the task as it is now (no event), then each of
   * its events with the task after it, and returns once the task is
   * terminal (see isTerminal). A task in error is watched for as long as
   * the sidecar streams it. Breaking out of the loop or aborting signal
   * closes the stream. It does not reconnect: a broken stream throws, and
   * a StreamEndedError when the sidecar closed it early.
   */
  async *watchTask(id: string, opts: { signal?: AbortSignal; afterSequence?: bigint } = {}): AsyncGenerator<WatchMessage> {
    const ctl = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, ctl.signal]) : ctl.signal;
    let state = TaskState.UNSPECIFIED;
    const it = this.service.watchTask({ id, afterSequence: opts.afterSequence ?? 0n }, { signal })[Symbol.asyncIterator]();
    try {
      for (;;) {
        const { done, value: msg } = await it.next();
        if (done) {
          break;
        }
        if (!msg.task) {
          continue;
        }
        // Set before yielding: a consumer that stops at this message
        // still lets closeStream know whether the task ended.
        state = msg.task.state;
        yield msg.event ? { event: msg.event, task: msg.task } : { task: msg.task };
        if (isTerminal(state)) {
          return;
        }
      }
    } finally {
      await closeStream(it, ctl, isTerminal(state));
    }
    if (state === TaskState.ERROR) {
      return; // the sidecar ended the watch of a blocked task
    }
    throw new StreamEndedError(id);
  }

  /**
   * Waits until the task is terminal, or in TaskState.ERROR (a step failed
   * for good; nothing happens without an operator), and returns it. If the
   * connection breaks it watches again with backoff until signal aborts
   * or timeoutMs passes (then it throws the abort reason).
   */
  async wait(id: string, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Task> {
    const signals = [opts.signal, opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined;
    const b = new Backoff(100, 5_000);
    for (;;) {
      let last: Task | undefined;
      try {
        for await (const { task } of this.watchTask(id, { signal })) {
          last = task;
          if (task.state === TaskState.ERROR || isTerminal(task.state)) {
            return task;
          }
        }
        if (last) {
          return last;
        }
      } catch (err) {
        if (signal?.aborted) {
          throw signal.reason ?? err;
        }
        if (!transient(err) && !(err instanceof StreamEndedError)) {
          throw err;
        }
      }
      if (last) {
        b.reset();
      }
      if (!(await sleep(b.next(), signal))) {
        throw signal?.reason ?? new Error(`wait for task ${id}: aborted`);
      }
    }
  }
}

/**
 * closeStream ends a watch. Aborting a stream that the sidecar has already
 * ended, with unread data left, leaves the Node.js HTTP/2 stream open for
 * good (connect-node sees stream.closed and does not destroy it), and the
 * session then keeps the process from exiting. So when the task ended (the
 * sidecar closes the stream itself) read the stream to its end, for at
 * most a second; otherwise abort, then end the iterator.
 */
async function closeStream(it: AsyncIterator<unknown>, ctl: AbortController, ended: boolean): Promise<void> {
  if (ended) {
    const t = setTimeout(() => ctl.abort(), 1_000);
    try {
      while (!(await it.next()).done) {
        // discard: nothing follows the end of a task
      }
      return;
    } catch {
      // aborted, or the stream broke: fall through
    } finally {
      clearTimeout(t);
    }
  }
  ctl.abort();
  await it.return?.().catch(() => {});
}

function mustTask(t: Task | undefined, id: string): Task {
  if (!t) {
    throw new ConnectError(`task ${id}: the sidecar returned no task`, Code.Internal);
  }
  return t;
}
