package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tasker-run/tasker/internal/sleep"
)

// ErrOpen is matched (with [errors.Is]) by the [*OpenError] a call gets when
// its target's breaker refuses it.
var ErrOpen = errors.New("breaker: circuit open")

// ErrTimeout is matched (with [errors.Is]) by the error of an attempt that
// ran out of its policy's timeout.
var ErrTimeout = errors.New("breaker: attempt timed out")

// OpenError says that target's breaker refused the call, which did not run.
// The caller should route the work to another target or defer it until
// Until, without counting it as an attempt.
type OpenError struct {
	// Target is the target whose breaker is open.
	Target string
	// Until is when the breaker will let a trial call through. For a
	// half-open breaker whose trial calls are all in flight it is the time
	// of the refusal: try again shortly.
	Until time.Time
	// Last is the error of this call's previous attempt when the breaker
	// opened during its retries, or nil.
	Last error
}

func (e *OpenError) Error() string {
	msg := fmt.Sprintf("breaker: circuit open for %s until %s", e.Target, e.Until.Format(time.RFC3339Nano))
	if e.Last != nil {
		msg += " (last error: " + e.Last.Error() + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// MarkPermanent marks err as [Permanent] for the default classifier: the
// call is not retried and does not count against the target's breaker.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func classifyDefault(err error) Class {
	var p *permanentError
	if errors.As(err, &p) {
		return Permanent
	}
	return Transient
}

// RetryAfter attaches to err the earliest time the target will accept a
// retry, e.g. from an HTTP Retry-After header. The retry layer waits at least
// d before the next attempt, even above the policy's maxInterval. Any error
// in the chain with a method RetryAfter() time.Duration is honoured alike.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err, d}
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string             { return e.err.Error() }
func (e *retryAfterError) Unwrap() error             { return e.err }
func (e *retryAfterError) RetryAfter() time.Duration { return e.after }

func retryAfterOf(err error) time.Duration {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

type timeoutError struct {
	target string
	after  time.Duration
	err    error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("breaker: %s: no answer within %v: %v", e.target, e.after, e.err)
}
func (e *timeoutError) Unwrap() error        { return e.err }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// errPanicked is reported to the breaker when a call panics.
var errPanicked = errors.New("breaker: call panicked")

// Do calls fn for target through the target's policy, composed as
//
//	retry( breaker( timeout( fn ) ) )
//
// Each attempt asks the breaker first: an open breaker returns an
// [*OpenError] at once, without calling fn and without retrying. An allowed
// attempt runs fn with a context bounded by the policy's timeout; its
// outcome is recorded by the breaker: success, or a permanent error, counts
// as a success, a transient error or a timeout as a failure, and an attempt
// whose caller's context ended is not counted. Transient errors and
// timeouts are retried after the policy's backoff (or the error's
// [RetryAfter], if longer) until its maxRetries are used up. fn must return
// when its context ends.
func Do[T any](ctx context.Context, s *Set, target string, fn func(context.Context) (T, error)) (T, error) {
	b := s.Get(target)
	var last error
	for attempt := 1; ; attempt++ {
		v, err, retry := attemptOnce(ctx, s, b, fn)
		if err == nil {
			return v, nil
		}
		var open *OpenError
		if errors.As(err, &open) {
			open.Last = last
			return v, err
		}
		if !retry {
			return v, err
		}
		r := &b.policy.Retry
		if r.MaxRetries >= 0 && attempt > r.MaxRetries {
			if attempt > 1 {
				err = fmt.Errorf("breaker: %s: giving up after %d attempts: %w", target, attempt, err)
			}
			return v, err
		}
		if serr := s.opts.sleep(ctx, r.delay(attempt, s.opts.rand(), retryAfterOf(err))); serr != nil {
			return v, fmt.Errorf("breaker: %s: %w while waiting to retry after: %w", target, serr, err)
		}
		last = err
	}
}

// attemptOnce is one attempt: breaker around timeout around fn. retry says
// whether a failed attempt may be retried.
func attemptOnce[T any](ctx context.Context, s *Set, b *Breaker, fn func(context.Context) (T, error)) (v T, err error, retry bool) {
	if err := ctx.Err(); err != nil {
		return v, err, false
	}
	done, err := b.cb.Allow()
	if err != nil {
		return v, b.openError(err), false
	}
	reported := false
	defer func() {
		if !reported { // fn panicked
			done(errPanicked)
		}
	}()
	actx, cancel := ctx, context.CancelFunc(nil)
	if d := b.policy.Timeout; d > 0 {
		actx, cancel = context.WithTimeout(ctx, d)
	}
	v, err = fn(actx)
	timedOut := cancel != nil && actx.Err() != nil && ctx.Err() == nil
	if cancel != nil {
		cancel()
	}
	reported = true
	switch {
	case err == nil:
		done(nil)
		return v, nil, false
	case ctx.Err() != nil: // the caller gave up: says nothing about the target
		done(errExcluded)
		return v, err, false
	case timedOut:
		done(err)
		return v, &timeoutError{b.target, b.policy.Timeout, err}, true
	case s.opts.classify(err) == Permanent:
		done(nil)
		return v, err, false
	default:
		done(err)
		return v, err, true
	}
}

func (b *Breaker) openError(err error) *OpenError {
	e := &OpenError{Target: b.target, Until: time.Now()}
	if errors.Is(err, gobreaker.ErrOpenState) {
		e.Until = time.Unix(0, b.until.Load())
	}
	return e
}

// delay returns the wait after failed attempt (counting from 1). u is a
// uniform random number in [0, 1) for the jitter; retryAfter, when longer
// than the backoff, wins.
func (r *Retry) delay(attempt int, u float64, retryAfter time.Duration) time.Duration {
	var d float64
	if r.Policy == "constant" {
		d = float64(r.Duration)
	} else {
		d = float64(r.InitialInterval) * math.Pow(max(r.Multiplier, 1), float64(attempt-1))
		if r.MaxInterval > 0 && !(d <= float64(r.MaxInterval)) { // also catches +Inf
			d = float64(r.MaxInterval)
		}
	}
	if j := min(max(r.Jitter, 0), 1); j > 0 {
		d *= 1 + j*(2*min(max(u, 0), 1)-1)
	}
	if r.MaxInterval > 0 && d > float64(r.MaxInterval) {
		d = float64(r.MaxInterval)
	}
	delay := time.Duration(min(max(d, 0), math.MaxInt64/2))
	return max(delay, retryAfter)
}

// sleepErr waits d, or returns ctx's error as soon as it ends.
func sleepErr(ctx context.Context, d time.Duration) error {
	if !sleep.For(ctx, d) {
		return ctx.Err()
	}
	return nil
}
