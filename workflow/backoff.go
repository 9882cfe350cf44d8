package workflow

import (
	"math"
	"time"
)

// Backoff is an exponential backoff with a cap and jitter. It is a pure
// function of its inputs: the caller supplies the random draw, so a Raft
// leader can pick it once and every replica computes the same delay.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	// Jitter spreads each delay uniformly over ±Jitter of itself (0 to 1),
	// so that many tasks failing together do not retry together.
	Jitter float64
}

// Delay returns the wait before attempt+1, after attempt failed (attempt
// counts from 1). u is a uniform random number in [0, 1); retryAfter, when
// positive, is the earliest retry time the failing app asked for and is
// always honoured, even above Max.
func (b Backoff) Delay(attempt int, u float64, retryAfter time.Duration) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	mult := max(b.Multiplier, 1)
	d := float64(b.Initial) * math.Pow(mult, float64(attempt-1))
	if b.Max > 0 && (d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d)) {
		d = float64(b.Max)
	}
	if j := min(max(b.Jitter, 0), 1); j > 0 {
		u = min(max(u, 0), 1)
		d *= 1 + j*(2*u-1)
	}
	if b.Max > 0 && d > float64(b.Max) {
		d = float64(b.Max)
	}
	delay := time.Duration(max(d, 0))
	if retryAfter > delay {
		delay = retryAfter
	}
	return delay
}
