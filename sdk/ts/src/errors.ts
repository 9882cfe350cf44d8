// Errors: the failures a step handler throws, and the errors the client
// returns for invalid manifests and broken contracts.

import { Code, ConnectError } from "@connectrpc/connect";
import { ContractFailureSchema, ValidationFailureSchema } from "./gen/tasker/v1/workflow_pb.js";

/** Error codes the worker reports on its own. */
export const Codes = {
  /** Any thrown error that is not a TaskerStepError. */
  error: "error",
  /** Step input that is not valid JSON. */
  invalidInput: "invalid_input",
  /** A handler result that cannot be encoded as JSON. */
  invalidResult: "invalid_result",
  /** A step assigned for a capability this worker does not handle. */
  unknownCapability: "unknown_capability",
} as const;

const brand = Symbol.for("@tasker-run/sdk.TaskerStepError");

/** Options of permanent() and retryable(). */
export interface StepErrorOptions {
  /** Structured details, encoded as JSON and reported with the failure. */
  details?: unknown;
  /** The error that caused this one. */
  cause?: unknown;
}

/**
 * A step failure with the fields FailStep reports. Throw one from a
 * handler, usually made with permanent() or retryable(). An error whose
 * `cause` chain holds one is reported as that one.
 */
export class TaskerStepError extends Error {
  /** Names the failure, such as "card_declined"; the workflow's error_schema lists the codes a step may report. */
  readonly code: string;
  /** Whether another attempt could succeed; the step's retry policy, when it lists retryable codes, decides instead. */
  readonly retryable: boolean;
  /** The earliest time worth retrying after, in milliseconds; 0 leaves it to the step's backoff. */
  readonly retryAfterMs: number;
  /** Structured details, encoded as JSON and reported with the failure. */
  readonly details: unknown;
  readonly [brand] = true;

  constructor(
    code: string,
    message: string,
    opts: { retryable?: boolean; retryAfterMs?: number; details?: unknown; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "TaskerStepError";
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.retryAfterMs = Math.max(0, opts.retryAfterMs ?? 0);
    this.details = opts.details;
  }

  /** Whether v is a TaskerStepError, even from another copy of the SDK. */
  static is(v: unknown): v is TaskerStepError {
    return typeof v === "object" && v !== null && (v as Record<symbol, unknown>)[brand] === true;
  }
}

/** A failure that asks for no further attempt: `throw permanent("card_declined", "the issuer declined")`. */
export function permanent(code: string, message: string, opts: StepErrorOptions = {}): TaskerStepError {
  return new TaskerStepError(code, message, { ...opts, retryable: false });
}

/**
 * A failure that asks for another attempt, no sooner than retryAfterMs
 * (0 or absent: the step's backoff decides).
 */
export function retryable(
  code: string,
  message: string,
  opts: StepErrorOptions & { retryAfterMs?: number } = {},
): TaskerStepError {
  return new TaskerStepError(code, message, { ...opts, retryable: true });
}

/** The failure to report for a thrown value: a TaskerStepError in its cause chain as it is, anything else as retryable "error". */
export function failureOf(err: unknown): TaskerStepError {
  for (let e: unknown = err, depth = 0; e != null && depth < 16; depth++) {
    if (TaskerStepError.is(e)) {
      return e.code === "" ? new TaskerStepError(Codes.error, e.message, e) : e;
    }
    e = (e as { cause?: unknown }).cause;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new TaskerStepError(Codes.error, message, { retryable: true, cause: err });
}

/** One way a value breaks a JSON Schema contract. */
export interface Violation {
  /** JSON pointer of the offending value, "" for the whole value. */
  pointer: string;
  message: string;
}

/** One thing wrong with a manifest. */
export interface Problem {
  /** The field, such as "steps[2].retry.max_attempts"; "" when not about one field. */
  path: string;
  /** 1-based line in the manifest, 0 when unknown. */
  line: number;
  message: string;
}

/** violationsOf lists the violations of an InvalidArgument error's ContractFailure detail. */
export function violationsOf(err: unknown): { contract: string; violations: Violation[] } | undefined {
  if (!(err instanceof ConnectError) || err.code !== Code.InvalidArgument) {
    return undefined;
  }
  const found = err.findDetails(ContractFailureSchema);
  if (found.length === 0) {
    return undefined;
  }
  const violations: Violation[] = [];
  for (const cf of found) {
    for (const v of cf.violations) {
      violations.push({ pointer: v.pointer, message: v.message });
    }
  }
  return { contract: found[0]!.contract, violations };
}

function violationText(v: Violation): string {
  return `${v.pointer === "" ? "(value)" : v.pointer}: ${v.message}`;
}

/**
 * A value (a task input, a resolved step result) that breaks its JSON
 * Schema contract. It is a ConnectError with code InvalidArgument, the
 * sidecar's own, with every violation's JSON pointer.
 */
export class ContractError extends ConnectError {
  /** Which contract: "input" or "result of step charge". */
  readonly contract: string;
  readonly violations: Violation[];

  constructor(err: ConnectError, contract: string, violations: Violation[]) {
    super(
      `value breaks the ${contract} contract: ${violations.map(violationText).join("; ")}`,
      err.code,
      err.metadata,
      undefined,
      err,
    );
    // name stays "ConnectError": ConnectError's instanceof check (which
    // works across copies of @connectrpc/connect) looks at it.
    (this as { details: ConnectError["details"] }).details = err.details;
    this.contract = contract;
    this.violations = violations;
  }

  /** A ContractError for err when it carries a ContractFailure detail, else undefined. */
  /** instanceof by prototype chain: ConnectError's own check would accept any ConnectError. */
  static override [Symbol.hasInstance](v: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, v);
  }

  static fromError(err: unknown): ContractError | undefined {
    const cf = violationsOf(err);
    return cf ? new ContractError(err as ConnectError, cf.contract, cf.violations) : undefined;
  }
}

/**
 * An invalid manifest: every problem ApplyWorkflow found. A ConnectError
 * with code InvalidArgument.
 */
export class ValidationError extends ConnectError {
  readonly problems: Problem[];

  constructor(err: ConnectError, problems: Problem[]) {
    const lines = problems.map((p) => `${p.line > 0 ? `line ${p.line}: ` : ""}${p.path ? `${p.path}: ` : ""}${p.message}`);
    super(
      `invalid manifest: ${lines.length === 1 ? lines[0] : `${lines.length} problems:\n\t${lines.join("\n\t")}`}`,
      err.code,
      err.metadata,
      undefined,
      err,
    );
    // name stays "ConnectError": ConnectError's instanceof check (which
    // works across copies of @connectrpc/connect) looks at it.
    (this as { details: ConnectError["details"] }).details = err.details;
    this.problems = problems;
  }

  /** A ValidationError for an InvalidArgument error, else undefined. */
  /** instanceof by prototype chain: ConnectError's own check would accept any ConnectError. */
  static override [Symbol.hasInstance](v: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, v);
  }

  static fromError(err: unknown): ValidationError | undefined {
    if (!(err instanceof ConnectError) || err.code !== Code.InvalidArgument) {
      return undefined;
    }
    const problems: Problem[] = [];
    for (const vf of err.findDetails(ValidationFailureSchema)) {
      for (const p of vf.problems) {
        problems.push({ path: p.path, line: p.line, message: p.message });
      }
    }
    if (problems.length === 0) {
      problems.push({ path: "", line: 0, message: err.rawMessage });
    }
    return new ValidationError(err, problems);
  }
}
