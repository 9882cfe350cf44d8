// @tasker-run/sdk: run Tasker workflow steps from Node.js (Worker) and
// start, read and watch tasks (Client), through the local sidecar.

export {
  Worker,
  DEFAULT_CONCURRENCY,
  DEFAULT_DRAIN_TIMEOUT_MS,
  LeaseLostError,
  LeaseExpiredError,
  DrainTimeoutError,
  type WorkerOptions,
  type Step,
  type Handler,
  type HandleOptions,
  type SchemaLike,
} from "./worker.js";
export {
  Client,
  isTerminal,
  taskInput,
  stepResult,
  StreamEndedError,
  type ClientOptions,
  type StartOptions,
  type CallOptions,
  type WatchMessage,
} from "./client.js";
export {
  TaskerStepError,
  permanent,
  retryable,
  failureOf,
  violationsOf,
  ContractError,
  ValidationError,
  Codes,
  type StepErrorOptions,
  type Violation,
  type Problem,
} from "./errors.js";
export { parseJson, stringifyJson, rawJson, RawJson, type JsonValue } from "./json.js";
export { jsonLogger, discardLogger, isLogLevel, type Logger, type LogAttrs, type LogLevel } from "./log.js";
export { baseUrl, createSidecarTransport, DEFAULT_ADDR, type ConnectionOptions } from "./transport.js";
export type { FromSchema } from "./schema.js";
export { Code, ConnectError } from "@connectrpc/connect";

// The API's generated types and service descriptors (protoc-gen-es v2).
export * from "./gen/tasker/v1/workflow_pb.js";
export * from "./gen/tasker/v1/worker_pb.js";
