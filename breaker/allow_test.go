package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// allowPolicy trips after more than two consecutive failures and stays
// open for open.
func allowPolicy(open time.Duration) Policy {
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker.Trip = "consecutiveFailures > 2"
	p.CircuitBreaker.Timeout = open
	p.CircuitBreaker.Interval = 0
	return p
}

// allowed calls Allow and fails the test if the breaker refuses.
func allowed(t *testing.T, b *Breaker) func(error) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("%s: Allow: %v (state %v)", b.Target(), err, b.State())
	}
	return done
}

func TestAllowCountsOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		outcome   error
		successes uint32
		failures  uint32
		excluded  uint32
	}{
		{"success", nil, 1, 0, 0},
		{"failure", errBoom, 0, 1, 0},
		{"permanent", MarkPermanent(errBoom), 0, 0, 1},
		{"not counted", ErrNotCounted, 0, 0, 1},
		{"wrapped not counted", fmt.Errorf("released: %w", ErrNotCounted), 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSet(t, allowPolicy(time.Minute))
			b := s.Get("a/x")
			done := allowed(t, b)
			done(tc.outcome)
			c := b.Status().Counts
			if c.Requests != 1 || c.Successes != tc.successes || c.Failures != tc.failures || c.Excluded != tc.excluded {
				t.Fatalf("counts %+v, want 1 request, %d successes, %d failures, %d excluded", c, tc.successes, tc.failures, tc.excluded)
			}
		})
	}
}

func TestAllowClassifierDecidesPermanent(t *testing.T) {
	errDeclined := errors.New("declined")
	s, _ := newSet(t, allowPolicy(time.Minute), WithClassifier(func(err error) Class {
		if errors.Is(err, errDeclined) {
			return Permanent
		}
		return Transient
	}))
	b := s.Get("a/x")
	for range 5 {
		allowed(t, b)(errDeclined)
	}
	if st := b.State(); st != Closed {
		t.Fatalf("after 5 permanent failures: %v, want closed", st)
	}
}

func TestAllowDoneIsIdempotent(t *testing.T) {
	s, _ := newSet(t, allowPolicy(time.Minute))
	b := s.Get("a/x")
	done := allowed(t, b)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); done(errBoom) }()
	}
	wg.Wait()
	done(nil)
	if c := b.Status().Counts; c.Failures != 1 || c.Successes != 0 {
		t.Fatalf("counts %+v, want exactly the first outcome (1 failure)", c)
	}
}

// TestAllowLifecycle walks a breaker through closed → open → half-open →
// open → half-open → closed with Allow alone, checking what a refused
// call learns at each stage.
func TestAllowLifecycle(t *testing.T) {
	const open = 50 * time.Millisecond
	var mu sync.Mutex
	var changes []string
	s, _ := newSet(t, allowPolicy(open), WithStateChange(func(c StateChange) {
		mu.Lock()
		changes = append(changes, c.From.String()+"→"+c.To.String())
		mu.Unlock()
	}))
	b := s.Get("a/x")

	// Calls in flight together; their failures arrive later, in any order.
	var dones []func(error)
	for range 3 {
		dones = append(dones, allowed(t, b))
	}
	for _, d := range dones {
		d(errBoom)
	}
	if st := b.State(); st != Open {
		t.Fatalf("after 3 failures: %v, want open", st)
	}
	before := time.Now()
	_, err := b.Allow()
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrOpen) {
		t.Fatalf("open breaker: Allow error %v, want *OpenError", err)
	}
	if oe.Target != "a/x" || oe.Until.Before(before) || oe.Until.After(before.Add(open)) {
		t.Fatalf("OpenError %+v: want target a/x, until within %v of now", oe, open)
	}
	if got := b.Status().OpenUntil; !got.Equal(oe.Until) {
		t.Fatalf("Status.OpenUntil %v, OpenError.Until %v: want equal", got, oe.Until)
	}

	// Half-open: one trial call (maxRequests 1); a second is refused until
	// the trial reports, with Until = now ("try again shortly").
	waitState(t, b, HalfOpen)
	trial := allowed(t, b)
	_, err = b.Allow()
	if !errors.As(err, &oe) || time.Since(oe.Until) > time.Second || oe.Until.After(time.Now()) {
		t.Fatalf("half-open with its trial in flight: %v, want *OpenError until about now", err)
	}
	// A trial that is not counted frees the slot without a verdict.
	trial(ErrNotCounted)
	if st := b.State(); st != HalfOpen {
		t.Fatalf("after an uncounted trial: %v, want half_open", st)
	}
	// A failed trial opens it again.
	allowed(t, b)(errBoom)
	if st := b.State(); st != Open {
		t.Fatalf("after a failed trial: %v, want open", st)
	}
	waitState(t, b, HalfOpen)
	allowed(t, b)(nil)
	if st := b.State(); st != Closed {
		t.Fatalf("after a successful trial: %v, want closed", st)
	}

	want := []string{"closed→open", "open→half_open", "half_open→open", "open→half_open", "half_open→closed"}
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		got := fmt.Sprint(changes)
		mu.Unlock()
		if got == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state changes %s, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAllowIgnoresOutcomesFromAnEarlierState: a call allowed while closed
// that reports after the breaker opened (because of other calls) does not
// count in the new state.
func TestAllowIgnoresOutcomesFromAnEarlierState(t *testing.T) {
	s, _ := newSet(t, allowPolicy(time.Minute))
	b := s.Get("a/x")
	slow := allowed(t, b)
	for range 3 {
		allowed(t, b)(errBoom)
	}
	if st := b.State(); st != Open {
		t.Fatalf("%v, want open", st)
	}
	slow(nil)
	if c := b.Status().Counts; c != (Counts{}) {
		t.Fatalf("counts in the open state %+v, want none", c)
	}
}

// TestAllowAndDoShareTheBreaker: both forms feed the same counts.
func TestAllowAndDoShareTheBreaker(t *testing.T) {
	s, _ := newSet(t, allowPolicy(time.Minute))
	allowed(t, s.Get("a/x"))(errBoom)
	Do(context.Background(), s, "a/x", fail)
	allowed(t, s.Get("a/x"))(errBoom)
	if st := s.Get("a/x").State(); st != Open {
		t.Fatalf("%v, want open after 3 failures through Allow and Do", st)
	}
	if _, err := Do(context.Background(), s, "a/x", succeed); !errors.Is(err, ErrOpen) {
		t.Fatalf("Do on a breaker Allow opened: %v, want ErrOpen", err)
	}
}
