// Package breaker guards calls to other agents with per-target circuit
// breakers, timeouts and retries, configured with Dapr's resiliency
// vocabulary. It knows nothing about workflows: a target is a name, usually
// [Target](agent, capability).
//
// Every call through [Do] is composed as
//
//	retry( breaker( timeout( fn ) ) )
//
//	for attempt := 1; ; attempt++ {
//		if breaker is open          → return *OpenError (fn not called, no retry)
//		err := fn(ctx with timeout) // one attempt
//		breaker records: success | permanent error → success,
//		                 transient error | timeout → failure,
//		                 caller's context ended    → not counted
//		if success, permanent, caller gone or retries used up → return
//		sleep(backoff(attempt, jitter) or the error's RetryAfter, if longer)
//	}
//
// so a timeout counts against the breaker and is retried, a permanent error
// (see [MarkPermanent] and [WithClassifier]) is neither counted nor retried,
// and an open breaker never burns a retry: the caller gets [ErrOpen] with
// the time it will let a trial call through, and can route the work to
// another agent or defer it.
//
// Use:
//
//	cfg, err := breaker.ParseConfig(yamlOrJSON) // validated; names the bad field
//	set, err := breaker.NewSet(cfg, breaker.WithStateChange(publish))
//	res, err := breaker.Do(ctx, set, breaker.Target(agent, capability),
//		func(ctx context.Context) (*Result, error) { return send(ctx, step) })
//	if errors.Is(err, breaker.ErrOpen) { /* pick another agent, or defer */ }
//
// Work whose outcome arrives later, by another path (a step dispatched to
// an agent reports when its app finishes), uses the asynchronous two-step
// form instead: [Breaker.Allow] takes a slot now and returns the done
// function that reports the outcome whenever it is known; the step's own
// timeout and the workflow's retries are then the caller's:
//
//	done, err := set.Get(breaker.Target(agent, capability)).Allow()
//	if errors.Is(err, breaker.ErrOpen) { /* pick another agent, or defer */ }
//	...
//	done(nil)                   // completed
//	done(err)                   // failed transiently or timed out
//	done(breaker.ErrNotCounted) // handed back, cancelled: says nothing
//
// [Set.Snapshot] lists every breaker's state and counts; state changes reach
// the [WithStateChange] callback in order, off the call path.
//
// The breakers are sony/gobreaker v2 [TwoStepCircuitBreaker]s. The two-step
// form is used because one breaker guards calls of every result type (Do is
// generic; a CircuitBreaker[T] would fix T per breaker), and because Do
// decides itself what an outcome means (success, failure, or not counted)
// before reporting it. gobreaker reads the real clock, so breaker timeouts
// are real time; the retry layer's waits and jitter are injectable
// ([WithSleep], [WithRand]).
//
// [TwoStepCircuitBreaker]: https://pkg.go.dev/github.com/sony/gobreaker/v2#TwoStepCircuitBreaker
package breaker
