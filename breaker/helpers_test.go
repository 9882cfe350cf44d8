package breaker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

// configFor is a Config whose defaults are p.
func configFor(p Policy) Config {
	return Config{
		Policies: Policies{
			Timeouts:        map[string]time.Duration{"t": p.Timeout},
			Retries:         map[string]Retry{"r": p.Retry},
			CircuitBreakers: map[string]CircuitBreaker{"cb": p.CircuitBreaker},
		},
		Defaults: Binding{Timeout: "t", Retry: "r", CircuitBreaker: "cb"},
	}
}

// noRetry is a retry policy that never retries.
func noRetry() Retry {
	return Retry{InitialInterval: time.Millisecond, Multiplier: 2}
}

// sleeps records the retry layer's waits instead of waiting.
type sleeps struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

// newSet returns a Set whose every target has policy p, with recorded
// sleeps and a fixed jitter draw of 0.5 (no jitter).
func newSet(t *testing.T, p Policy, opts ...Option) (*Set, *sleeps) {
	t.Helper()
	sl := &sleeps{}
	opts = append([]Option{WithSleep(sl.sleep), WithRand(func() float64 { return 0.5 })}, opts...)
	s, err := NewSet(configFor(p), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, sl
}

// counter is a call function that counts its calls and returns the next
// error from errs (nil once they are used up).
type counter struct {
	mu    sync.Mutex
	calls int
	errs  []error
}

func (c *counter) call(context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if len(c.errs) == 0 {
		return c.calls, nil
	}
	err := c.errs[0]
	c.errs = c.errs[1:]
	return c.calls, err
}

func (c *counter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func fail(context.Context) (int, error)    { return 0, errBoom }
func succeed(context.Context) (int, error) { return 1, nil }

// waitState polls b until it is in state want, failing the test after 2 s.
func waitState(t *testing.T, b *Breaker, want State) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %v, want %v within 2s", b.Target(), b.State(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
