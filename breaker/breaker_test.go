package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestTripsAfterConsecutiveFailures(t *testing.T) {
	for _, n := range []uint32{0, 1, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := DefaultPolicy()
			p.Retry = noRetry()
			p.CircuitBreaker.Trip = fmt.Sprintf("consecutiveFailures > %d", n)
			s, _ := newSet(t, p)
			ctx := context.Background()
			// A success in between resets the run.
			for range n {
				Do(ctx, s, "a", fail)
			}
			Do(ctx, s, "a", succeed)
			for i := range n + 1 {
				if st := s.Get("a").State(); st != Closed {
					t.Fatalf("after %d consecutive failures: %v, want closed", i, st)
				}
				Do(ctx, s, "a", fail)
			}
			if st := s.Get("a").State(); st != Open {
				t.Fatalf("after %d consecutive failures: %v, want open", n+1, st)
			}
			if st := s.Get("b").State(); st != Closed {
				t.Fatalf("other target: %v, want closed", st)
			}
		})
	}
}

func TestFailureRatioTripsOnlyAfterMinRequests(t *testing.T) {
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker.Trip = "failureRatio > 0.5"
	p.CircuitBreaker.MinRequests = 6
	s, _ := newSet(t, p)
	ctx := context.Background()
	b := s.Get("a")
	// 2 successes then failures: the ratio passes 0.5 at the 5th call, but
	// only the 6th call reaches minRequests.
	steps := []struct {
		fn   func(context.Context) (int, error)
		want State
	}{
		{succeed, Closed}, {succeed, Closed},
		{fail, Closed}, {fail, Closed}, {fail, Closed}, // 3/5 > 0.5, 5 < 6
		{fail, Open}, // 4/6
	}
	for i, st := range steps {
		Do(ctx, s, "a", st.fn)
		if got := b.State(); got != st.want {
			t.Fatalf("after call %d: %v, want %v (counts %+v)", i+1, got, st.want, b.Status().Counts)
		}
	}
}

func TestFailureRatioAtLimitDoesNotTrip(t *testing.T) {
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker.Trip = "failureRatio > 0.5"
	p.CircuitBreaker.MinRequests = 4
	s, _ := newSet(t, p)
	ctx := context.Background()
	for _, fn := range []func(context.Context) (int, error){succeed, fail, succeed, fail, succeed, fail} {
		Do(ctx, s, "a", fn)
	}
	if st := s.Get("a").State(); st != Closed {
		t.Fatalf("ratio 0.5: %v, want closed", st)
	}
}

func TestHalfOpen(t *testing.T) {
	tests := []struct {
		name  string
		calls []func(context.Context) (int, error)
		want  []State // state after each call
	}{
		{"closes after maxRequests successes", []func(context.Context) (int, error){succeed, succeed}, []State{HalfOpen, Closed}},
		{"reopens on a failure", []func(context.Context) (int, error){succeed, fail}, []State{HalfOpen, Open}},
		{"reopens on the first failure", []func(context.Context) (int, error){fail}, []State{Open}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			p.Retry = noRetry()
			p.CircuitBreaker = CircuitBreaker{MaxRequests: 2, Timeout: 20 * time.Millisecond, Trip: "consecutiveFailures > 0"}
			s, _ := newSet(t, p)
			ctx := context.Background()
			b := s.Get("a")
			Do(ctx, s, "a", fail)
			if st := b.State(); st != Open {
				t.Fatalf("after a failure: %v, want open", st)
			}
			waitState(t, b, HalfOpen)
			for i, fn := range tt.calls {
				if _, err := Do(ctx, s, "a", fn); errors.Is(err, ErrOpen) {
					t.Fatalf("call %d refused while half-open: %v", i+1, err)
				}
				if st := b.State(); st != tt.want[i] {
					t.Fatalf("after call %d: %v, want %v", i+1, st, tt.want[i])
				}
			}
		})
	}
}

func TestHalfOpenLimitsTrialCalls(t *testing.T) {
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker = CircuitBreaker{MaxRequests: 1, Timeout: 20 * time.Millisecond, Trip: "consecutiveFailures > 0"}
	s, _ := newSet(t, p)
	ctx := context.Background()
	b := s.Get("a")
	Do(ctx, s, "a", fail)
	waitState(t, b, HalfOpen)
	started, release := make(chan struct{}), make(chan struct{})
	go Do(ctx, s, "a", func(context.Context) (int, error) {
		close(started)
		<-release
		return 0, nil
	})
	<-started
	before := time.Now()
	_, err := Do(ctx, s, "a", succeed)
	var open *OpenError
	if !errors.As(err, &open) || open.Until.Before(before) {
		t.Fatalf("second trial call: %v, want *OpenError until now", err)
	}
	close(release)
	waitState(t, b, Closed)
}

func TestOpenRefusesWithoutCallingOrRetrying(t *testing.T) {
	p := DefaultPolicy()
	p.Retry.MaxRetries = 5
	p.CircuitBreaker = CircuitBreaker{MaxRequests: 1, Timeout: time.Minute, Trip: "consecutiveFailures > 0"}
	s, sl := newSet(t, p)
	ctx := context.Background()
	c := &counter{errs: []error{errBoom}}
	// The first attempt trips the breaker; the retry finds it open.
	opened := time.Now()
	_, err := Do(ctx, s, "a", c.call)
	var open *OpenError
	if !errors.As(err, &open) || !errors.Is(err, ErrOpen) {
		t.Fatalf("got %v, want *OpenError", err)
	}
	if open.Target != "a" || !errors.Is(open.Last, errBoom) {
		t.Fatalf("got %+v, want target a and last error boom", open)
	}
	if d := open.Until.Sub(opened); d < time.Minute || d > time.Minute+time.Second {
		t.Fatalf("until %v after opening, want the breaker timeout (1m)", d)
	}
	if c.n() != 1 || len(sl.got()) != 1 {
		t.Fatalf("calls %d, sleeps %v: want 1 call and 1 backoff before finding it open", c.n(), sl.got())
	}
	// Now open: refused at once, no call, no sleep.
	_, err = Do(ctx, s, "a", c.call)
	if !errors.As(err, &open) || open.Last != nil {
		t.Fatalf("got %v, want *OpenError without a last error", err)
	}
	if c.n() != 1 || len(sl.got()) != 1 {
		t.Fatalf("open breaker: calls %d, sleeps %v: want no call and no sleep", c.n(), sl.got())
	}
	if st := s.Get("a").Status(); st.State != Open || st.OpenUntil != open.Until || st.Counts.Requests != 0 {
		t.Fatalf("status %+v, want open until %v with no requests counted", st, open.Until)
	}
}

func TestTimeoutCountsAndIsRetried(t *testing.T) {
	p := DefaultPolicy()
	p.Timeout = 10 * time.Millisecond
	p.Retry.MaxRetries = 2
	p.CircuitBreaker.Trip = "consecutiveFailures > 10"
	s, sl := newSet(t, p)
	calls := 0
	_, err := Do(context.Background(), s, "a", func(ctx context.Context) (int, error) {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("attempt context has no deadline")
		}
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
	if calls != 3 || len(sl.got()) != 2 {
		t.Fatalf("calls %d, sleeps %d: want 3 and 2", calls, len(sl.got()))
	}
	if c := s.Get("a").Status().Counts; c.Failures != 3 || c.ConsecutiveFailures != 3 {
		t.Fatalf("counts %+v, want 3 failures", c)
	}
}

func TestRetryBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name  string
		retry Retry
		u     float64
		errs  []error
		want  []time.Duration // sleeps
		calls int
		ok    bool
	}{
		{"exponential, stops at maxRetries", Retry{InitialInterval: 10 * ms, MaxInterval: 50 * ms, Multiplier: 2, MaxRetries: 4},
			0.5, []error{errBoom, errBoom, errBoom, errBoom, errBoom, errBoom}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms}, 5, false},
		{"succeeds on the third attempt", Retry{InitialInterval: 10 * ms, Multiplier: 3, MaxRetries: 4},
			0.5, []error{errBoom, errBoom}, []time.Duration{10 * ms, 30 * ms}, 3, true},
		{"jitter low", Retry{InitialInterval: 100 * ms, Multiplier: 2, Jitter: 0.2, MaxRetries: 2},
			0, []error{errBoom, errBoom, errBoom}, []time.Duration{80 * ms, 160 * ms}, 3, false},
		{"jitter high, capped", Retry{InitialInterval: 100 * ms, MaxInterval: 150 * ms, Multiplier: 2, Jitter: 0.2, MaxRetries: 2},
			0.75, []error{errBoom, errBoom, errBoom}, []time.Duration{110 * ms, 150 * ms}, 3, false},
		{"constant", Retry{Policy: "constant", Duration: 7 * ms, MaxRetries: 2},
			0.5, []error{errBoom, errBoom, errBoom}, []time.Duration{7 * ms, 7 * ms}, 3, false},
		{"no retries", Retry{InitialInterval: ms, Multiplier: 1},
			0.5, []error{errBoom}, nil, 1, false},
		{"retry-after above the cap wins", Retry{InitialInterval: 10 * ms, MaxInterval: 20 * ms, Multiplier: 2, MaxRetries: 2},
			0.5, []error{RetryAfter(errBoom, time.Second), errBoom}, []time.Duration{time.Second, 20 * ms}, 3, true},
		{"shorter retry-after loses", Retry{InitialInterval: 10 * ms, Multiplier: 2, MaxRetries: 1},
			0.5, []error{RetryAfter(errBoom, ms)}, []time.Duration{10 * ms}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			p.Retry = tt.retry
			p.CircuitBreaker.Trip = "consecutiveFailures > 100"
			s, sl := newSet(t, p, WithRand(func() float64 { return tt.u }))
			c := &counter{errs: tt.errs}
			v, err := Do(context.Background(), s, "a", c.call)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, errBoom)) {
				t.Fatalf("got %v, %v; want ok=%v", v, err, tt.ok)
			}
			if tt.ok && v != tt.calls {
				t.Fatalf("got result %d, want the result of call %d", v, tt.calls)
			}
			if c.n() != tt.calls {
				t.Fatalf("calls %d, want %d", c.n(), tt.calls)
			}
			if got := sl.got(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("sleeps %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	p := DefaultPolicy()
	p.Retry.MaxRetries = -1
	p.CircuitBreaker.Trip = "consecutiveFailures > 100"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls int
	s, _ := newSet(t, p, WithSleep(func(ctx context.Context, d time.Duration) error {
		if calls == 7 {
			cancel()
		}
		return ctx.Err()
	}))
	_, err := Do(ctx, s, "a", func(context.Context) (int, error) { calls++; return 0, errBoom })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) || calls != 7 {
		t.Fatalf("got %v after %d calls, want Canceled and boom after 7", err, calls)
	}
}

func TestPermanentErrorsNeitherRetriedNorCounted(t *testing.T) {
	errBad := errors.New("invalid input")
	tests := []struct {
		name string
		opts []Option
		err  error
	}{
		{"marked", nil, MarkPermanent(errBad)},
		{"classifier", []Option{WithClassifier(func(err error) Class {
			if errors.Is(err, errBad) {
				return Permanent
			}
			return Transient
		})}, fmt.Errorf("charge: %w", errBad)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			p.Retry.MaxRetries = 3
			p.CircuitBreaker.Trip = "consecutiveFailures > 0"
			s, sl := newSet(t, p, tt.opts...)
			c := &counter{errs: []error{tt.err, tt.err, tt.err}}
			for range 3 {
				if _, err := Do(context.Background(), s, "a", c.call); err != tt.err {
					t.Fatalf("got %v, want the permanent error as is", err)
				}
			}
			st := s.Get("a").Status()
			if c.n() != 3 || len(sl.got()) != 0 || st.State != Closed || st.Counts.Failures != 0 {
				t.Fatalf("calls %d, sleeps %v, status %+v: want 3 calls, no retry, closed, no failures", c.n(), sl.got(), st)
			}
		})
	}
}

func TestCallerCancellationNotCounted(t *testing.T) {
	p := DefaultPolicy()
	p.Retry.MaxRetries = 3
	p.CircuitBreaker.Trip = "consecutiveFailures > 0"
	s, sl := newSet(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Do(ctx, s, "a", func(context.Context) (int, error) {
		cancel()
		return 0, context.Canceled
	})
	st := s.Get("a").Status()
	if !errors.Is(err, context.Canceled) || len(sl.got()) != 0 || st.State != Closed || st.Counts.Excluded != 1 {
		t.Fatalf("got %v, sleeps %v, status %+v: want Canceled, no retry, one excluded call", err, sl.got(), st)
	}
	// An already-ended context does not even reach the breaker.
	called := false
	if _, err := Do(ctx, s, "a", func(context.Context) (int, error) { called = true; return 0, nil }); !errors.Is(err, context.Canceled) || called {
		t.Fatalf("got %v, called %v: want Canceled without a call", err, called)
	}
}

func TestPanicCountsAsFailure(t *testing.T) {
	p := DefaultPolicy()
	p.CircuitBreaker.Trip = "consecutiveFailures > 0"
	s, _ := newSet(t, p)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		Do(context.Background(), s, "a", func(context.Context) (int, error) { panic("bug") })
	}()
	if st := s.Get("a").State(); st != Open {
		t.Fatalf("after a panic: %v, want open", st)
	}
}

func TestStateChanges(t *testing.T) {
	var mu sync.Mutex
	var got []StateChange
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker = CircuitBreaker{MaxRequests: 1, Timeout: 20 * time.Millisecond, Trip: "consecutiveFailures > 0"}
	block := make(chan struct{})
	s, _ := newSet(t, p, WithStateChange(func(c StateChange) {
		<-block // a slow consumer must not hold up calls
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
	}))
	ctx := context.Background()
	start := time.Now()
	Do(ctx, s, "a", fail)
	waitState(t, s.Get("a"), HalfOpen)
	Do(ctx, s, "a", succeed)
	if st := s.Get("a").State(); st != Closed {
		t.Fatalf("state %v, want closed (callback must not block calls)", st)
	}
	close(block)
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d state changes within 2s, want 3", n)
		}
		time.Sleep(time.Millisecond)
	}
	want := [][2]State{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Closed}}
	prev := start
	for i, c := range got {
		if c.Target != "a" || c.From != want[i][0] || c.To != want[i][1] || c.At.Before(prev) || c.Dropped != 0 {
			t.Fatalf("change %d: %+v, want a: %v → %v in order", i, c, want[i][0], want[i][1])
		}
		prev = c.At
	}
	if since := s.Get("a").Status().Since; !since.Equal(got[2].At) {
		t.Fatalf("status since %v, want the last change %v", since, got[2].At)
	}
}

func TestNotifierDropsOldestWhenFarBehind(t *testing.T) {
	block := make(chan struct{})
	var got []StateChange
	done := make(chan struct{})
	n := &notifier{fn: func(c StateChange) {
		<-block
		got = append(got, c)
		if c.Target == "last" {
			close(done)
		}
	}}
	n.push(StateChange{Target: "first"}) // taken by the drainer, which blocks
	deadline := time.Now().Add(2 * time.Second)
	for {
		n.mu.Lock()
		taken := len(n.queue) == 0
		n.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("drainer did not start")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range maxQueued + 10 {
		n.push(StateChange{Target: fmt.Sprint(i)})
	}
	n.push(StateChange{Target: "last"})
	close(block)
	<-done
	if len(got) != maxQueued+1 || got[1].Target != "11" || got[1].Dropped != 11 || got[2].Dropped != 0 {
		t.Fatalf("got %d changes, second %+v: want %d, the oldest 11 queued dropped", len(got), got[1], maxQueued+1)
	}
}

func TestSnapshot(t *testing.T) {
	p := DefaultPolicy()
	p.Retry = noRetry()
	p.CircuitBreaker.Trip = "consecutiveFailures > 0"
	s, _ := newSet(t, p)
	ctx := context.Background()
	Do(ctx, s, Target("b", "payments.charge"), succeed)
	Do(ctx, s, "a", fail)
	snap := s.Snapshot()
	if len(snap) != 2 || snap[0].Target != "a" || snap[1].Target != "b/payments.charge" {
		t.Fatalf("snapshot %+v, want a and b/payments.charge in order", snap)
	}
	if snap[0].State != Open || snap[0].OpenUntil.IsZero() || snap[0].Counts.Requests != 0 {
		t.Fatalf("a: %+v, want open with an end and cleared counts", snap[0])
	}
	if c := snap[1].Counts; snap[1].State != Closed || !snap[1].OpenUntil.IsZero() || c.Requests != 1 || c.Successes != 1 || c.ConsecutiveSuccesses != 1 {
		t.Fatalf("b: %+v, want closed with one success", snap[1])
	}
}

func TestConcurrentCalls(t *testing.T) {
	p := DefaultPolicy()
	p.Timeout = time.Second
	p.Retry = Retry{InitialInterval: time.Microsecond, Multiplier: 2, Jitter: 0.5, MaxRetries: 2}
	p.CircuitBreaker = CircuitBreaker{MaxRequests: 3, Interval: 5 * time.Millisecond, Timeout: 2 * time.Millisecond, Trip: "failureRatio > 0.3", MinRequests: 5}
	var changes sync.Map
	s, err := NewSet(configFor(p), WithStateChange(func(c StateChange) { changes.Store(c.Target, true) }))
	if err != nil {
		t.Fatal(err)
	}
	targets := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				target := targets[(g+i)%len(targets)]
				_, err := Do(context.Background(), s, target, func(context.Context) (int, error) {
					if (g*7+i)%3 == 0 {
						return 0, errBoom
					}
					return i, nil
				})
				if err != nil && !errors.Is(err, errBoom) && !errors.Is(err, ErrOpen) {
					t.Errorf("unexpected error %v", err)
				}
				if i%50 == 0 {
					s.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	if snap := s.Snapshot(); len(snap) != len(targets) {
		t.Fatalf("snapshot has %d breakers, want %d", len(snap), len(targets))
	}
}

func TestConcurrentGetCreatesOneBreaker(t *testing.T) {
	s, err := NewSet(Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]*Breaker, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = s.Get("x") })
	}
	wg.Wait()
	for _, b := range got[1:] {
		if b != got[0] {
			t.Fatal("Get returned two breakers for one target")
		}
	}
}
