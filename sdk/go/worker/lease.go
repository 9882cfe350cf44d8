package worker

import (
	"context"
	"sync"
	"time"
)

// lease is the life of one attempt on this worker. Its context is the
// handler's: Deadline reports the lease's current deadline, which moves
// later each time the lease is extended, and the context is cancelled when
// the deadline passes unextended (Err is context.DeadlineExceeded), when
// the lease is lost, or when the worker's drain times out.
type lease struct {
	ctx    *leaseCtx
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
}

func newLease(parent context.Context, deadline time.Time) *lease {
	ctx, cancel := context.WithCancelCause(parent)
	l := &lease{cancel: cancel, deadline: deadline}
	l.ctx = &leaseCtx{Context: ctx, l: l}
	if !deadline.IsZero() {
		l.mu.Lock()
		l.timer = time.AfterFunc(time.Until(deadline), l.expire)
		l.mu.Unlock()
	}
	return l
}

// expire runs when the timer fires: it cancels the context unless the
// lease was extended in the meantime.
func (l *lease) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if left := time.Until(l.deadline); left > 0 {
		l.timer.Reset(left)
		return
	}
	l.cancel(context.DeadlineExceeded)
}

// Deadline returns the lease's current deadline.
func (l *lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// extend moves the deadline to d.
func (l *lease) extend(d time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = d
	if l.timer != nil {
		l.timer.Reset(time.Until(d))
	}
}

// end cancels the context with cause and stops the timer.
func (l *lease) end(cause error) {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.cancel(cause)
}

// leaseCtx is a cancellable context whose deadline is the lease's.
type leaseCtx struct {
	context.Context
	l *lease
}

// Deadline returns the lease's current deadline.
func (c *leaseCtx) Deadline() (time.Time, bool) {
	d := c.l.Deadline()
	return d, !d.IsZero()
}

// Err returns context.DeadlineExceeded when the lease ran out, as a context
// with a deadline does, and the usual error otherwise.
func (c *leaseCtx) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}
