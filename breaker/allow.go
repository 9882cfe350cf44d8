package breaker

import (
	"errors"
	"sync/atomic"
)

// ErrNotCounted marks the outcome of a call that says nothing about its
// target: pass it (or an error wrapping it) to the done function of
// [Breaker.Allow] for a call that was abandoned, handed back or never
// reached the target.
var ErrNotCounted = errors.New("breaker: outcome not counted")

// Allow is the asynchronous two-step form of a call: it asks the breaker
// to let one call through now and returns the function that reports the
// call's outcome later, from any goroutine. It is for work whose outcome
// arrives long after it was sent (a step dispatched to another agent
// reports minutes later, through another path), where [Do] cannot wrap
// the call in a function; timeouts and retries are then the caller's.
//
// When the breaker is open, or half-open with every trial call in
// flight, Allow returns an [*OpenError] (matched by [ErrOpen]) and the
// call must not be made.
//
// done must be called exactly once per allowed call, or a half-open
// breaker waits for its trial call forever; later calls are ignored, so a
// caller that may learn the outcome twice need not track it. done(nil)
// records a success and done(err) a failure, except that an err marked
// with [MarkPermanent] (or classified [Permanent] by [WithClassifier]) or
// wrapping [ErrNotCounted] is not counted at all: unlike [Do], which
// counts a permanent error as a success, Allow's callers learn a
// permanent error about the work (the input was refused), not about
// whether the target is healthy. A call not counted frees its half-open
// trial slot. An outcome reported after the breaker changed state (or
// cleared its counts at the end of an interval) is ignored, as gobreaker
// does for a call that straddles a generation.
func (b *Breaker) Allow() (done func(error), err error) {
	report, err := b.cb.Allow()
	if err != nil {
		return nil, b.openError(err)
	}
	var reported atomic.Bool
	return func(err error) {
		if !reported.CompareAndSwap(false, true) {
			return
		}
		switch {
		case err == nil:
			report(nil)
		case errors.Is(err, ErrNotCounted) || b.classify(err) == Permanent:
			report(errExcluded)
		default:
			report(err)
		}
	}, nil
}
