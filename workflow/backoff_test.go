package workflow

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	exp := Backoff{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2}
	tests := []struct {
		name       string
		b          Backoff
		attempt    int
		u          float64
		retryAfter time.Duration
		want       time.Duration
	}{
		{"first retry waits initial", exp, 1, 0.5, 0, time.Second},
		{"grows by the multiplier", exp, 3, 0.5, 0, 4 * time.Second},
		{"is capped at max", exp, 10, 0.5, 0, 30 * time.Second},
		{"huge attempt numbers stay capped", exp, 10000, 0.5, 0, 30 * time.Second},
		{"attempt below 1 counts as 1", exp, 0, 0.5, 0, time.Second},
		{"multiplier 1 is constant", Backoff{Initial: 2 * time.Second, Max: time.Minute, Multiplier: 1}, 5, 0, 0, 2 * time.Second},
		{"jitter low end", Backoff{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}, 1, 0, 0, 8 * time.Second},
		{"jitter middle is exact", Backoff{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}, 1, 0.5, 0, 10 * time.Second},
		{"jitter high end", Backoff{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}, 1, 1, 0, 12 * time.Second},
		{"jitter never exceeds max", Backoff{Initial: time.Minute, Max: time.Minute, Multiplier: 2, Jitter: 1}, 3, 0.99, 0, time.Minute},
		{"retry_after above the backoff wins", exp, 1, 0.5, 45 * time.Second, 45 * time.Second},
		{"retry_after is honoured above max", exp, 10, 0.5, 5 * time.Minute, 5 * time.Minute},
		{"retry_after below the backoff does not shorten it", exp, 3, 0.5, time.Second, 4 * time.Second},
		{"out-of-range random draws are clamped", Backoff{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.5}, 1, 7, 0, 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt, tt.u, tt.retryAfter); got != tt.want {
				t.Fatalf("Delay(%d, %v, %v) = %v, want %v", tt.attempt, tt.u, tt.retryAfter, got, tt.want)
			}
		})
	}
}

// TestBackoffDeterministic: the same inputs give the same delay, so every
// Raft replica that applies a recorded draw computes the same retry time.
func TestBackoffDeterministic(t *testing.T) {
	b := DefaultBackoff()
	for attempt := 1; attempt <= 10; attempt++ {
		for _, u := range []float64{0, 0.1, 0.37, 0.5, 0.9999} {
			d1, d2 := b.Delay(attempt, u, 0), b.Delay(attempt, u, 0)
			if d1 != d2 {
				t.Fatalf("Delay(%d, %v) not deterministic: %v vs %v", attempt, u, d1, d2)
			}
			if d1 < 0 || d1 > b.Max {
				t.Fatalf("Delay(%d, %v) = %v outside [0, %v]", attempt, u, d1, b.Max)
			}
		}
	}
}
