// Package worker executes the steps of Tasker workflows in an app.
//
// An app offers capabilities (such as "payments.charge") to its local
// sidecar and runs the steps the cluster assigns to it. The worker pulls:
// it holds a stream open to the sidecar, so the app needs no inbound port.
//
//	w := worker.New(worker.Options{Logger: slog.Default()})
//	w.Handle("payments.charge", worker.Typed(charge),
//		worker.Concurrency(8),
//		worker.Schemas(chargeInputSchema, chargeResultSchema),
//		worker.Version("1.2.0"))
//	if err := w.Run(ctx); err != nil { // until ctx is cancelled
//		log.Fatal(err)
//	}
//
// # What Run does
//
// Run registers the capabilities (RegisterCapabilities), opens the stream
// of assignments (PollSteps) and runs each assigned step in its own
// goroutine, at most [Concurrency] steps of a capability at once. A
// handler's result is reported with CompleteStep, its error with FailStep.
// While a step runs, the worker extends its lease (ExtendLease) whenever a
// third of the time to the deadline remains, so a long step is not timed
// out while the app is still working on it. When the stream breaks or the
// sidecar restarts, the worker registers again and re-opens the stream,
// with exponential backoff; steps already running carry on.
//
// When Run's context is cancelled, the worker drains: it starts no new step
// and waits for the running ones, up to [Options].DrainTimeout, then cancels
// their contexts. Steps it received but did not start, and steps cancelled
// by the drain that return an error, are not reported: the sidecar takes
// them back when the stream closes, without spending an attempt.
//
// # Handlers and errors
//
// A [Handler] receives the step's context, which carries the step's
// deadline (moved later as the lease is extended), and the [Step]. It
// returns a result, encoded as JSON (a [json.RawMessage] is sent as is), or
// an error:
//
//   - [Permanent] fails the attempt for good (unless the workflow's retry
//     policy names the code as retryable);
//   - [Retryable] asks for another attempt, no sooner than retryAfter;
//   - any other error is retryable with code "error";
//   - a panic is recovered and reported as a permanent failure with code
//     "panic"; it never crashes the app.
//
// Execution is at least once: use [Step].IdempotencyKey to make side effects
// happen once.
package worker
