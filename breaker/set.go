package breaker

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is the state of a breaker.
type State int

// The states of a breaker.
const (
	// Closed lets every call through and counts failures.
	Closed State = iota
	// HalfOpen lets up to maxRequests trial calls through.
	HalfOpen
	// Open refuses every call with an [*OpenError] until its timeout ends.
	Open
)

// String returns "closed", "half_open" or "open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half_open"
	case Open:
		return "open"
	default:
		return "unknown"
	}
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateOpen:
		return Open
	case gobreaker.StateHalfOpen:
		return HalfOpen
	default:
		return Closed
	}
}

// Counts are a breaker's counts since they were last cleared (at every state
// change, and every interval while closed).
type Counts struct {
	// Requests is the number of calls let through.
	Requests uint32
	// Successes counts calls that succeeded or failed permanently (the target
	// answered).
	Successes uint32
	// Failures counts calls that failed transiently or timed out.
	Failures uint32
	// Excluded counts calls abandoned by their caller, which say nothing
	// about the target.
	Excluded uint32
	// ConsecutiveSuccesses is the current run of successes.
	ConsecutiveSuccesses uint32
	// ConsecutiveFailures is the current run of failures.
	ConsecutiveFailures uint32
}

// StateChange is a breaker changing state: the events breaker.opened,
// breaker.half_opened and breaker.closed.
type StateChange struct {
	// Target is the breaker's target.
	Target string
	// From is the state before the change.
	From State
	// To is the state after the change.
	To State
	// At is when the change happened.
	At time.Time
	// Dropped is the number of changes dropped just before this one because
	// the callback fell more than 1024 changes behind.
	Dropped int
}

// Status is one breaker's state, for `tasker breakers`.
type Status struct {
	// Target is the breaker's target.
	Target string
	// State is its current state.
	State State
	// Counts are its counts in the current state.
	Counts Counts
	// Since is the last state change, or the breaker's creation.
	Since time.Time
	// OpenUntil is when an open breaker lets trial calls through; zero
	// unless State is Open.
	OpenUntil time.Time
}

// Class says what a failed call means.
type Class int

const (
	// Transient failures count against the target's breaker and are retried.
	Transient Class = iota
	// Permanent failures (the target answered, with an error that another
	// attempt would repeat) count as a success for the breaker and are
	// returned at once.
	Permanent
)

// Option configures a [Set].
type Option func(*options)

type options struct {
	classify func(error) Class
	onChange func(StateChange)
	rand     func() float64
	sleep    func(context.Context, time.Duration) error
}

// WithClassifier sets the predicate that classifies the errors returned by
// calls; the default treats errors made with [MarkPermanent] as permanent and
// every other error as transient. Timeouts of an attempt are always
// transient, and a call whose caller's context ended is neither counted
// nor retried, whatever the classifier says.
func WithClassifier(classify func(error) Class) Option {
	return func(o *options) { o.classify = classify }
}

// WithStateChange registers a callback for state changes. It is called from
// a goroutine of its own, one change at a time in the order they happened,
// and never blocks a call: if it falls more than 1024 changes behind, the
// oldest are dropped and counted in [StateChange.Dropped].
func WithStateChange(fn func(StateChange)) Option {
	return func(o *options) { o.onChange = fn }
}

// WithRand sets the source of uniform random numbers in [0, 1) for retry
// jitter; it must be safe for concurrent use. The default is
// math/rand/v2.Float64.
func WithRand(rand func() float64) Option {
	return func(o *options) { o.rand = rand }
}

// WithSleep sets how the retry layer waits between attempts; it must return
// early with the context's error when ctx ends. Tests use it to record the
// delays instead of waiting.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(o *options) { o.sleep = sleep }
}

// Set holds one breaker per target, created on first use with the target's
// policy from a [Config]. It is safe for concurrent use.
type Set struct {
	cfg      Config
	opts     options
	breakers sync.Map // target → *Breaker
	events   *notifier
}

// NewSet validates cfg and returns an empty Set that uses it.
func NewSet(cfg Config, opts ...Option) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Set{cfg: cfg, opts: options{
		classify: classifyDefault,
		rand:     rand.Float64,
		sleep:    sleepErr,
	}}
	for _, opt := range opts {
		opt(&s.opts)
	}
	if s.opts.onChange != nil {
		s.events = &notifier{fn: s.opts.onChange}
	}
	return s, nil
}

// Get returns target's breaker, creating it if needed.
func (s *Set) Get(target string) *Breaker {
	if b, ok := s.breakers.Load(target); ok {
		return b.(*Breaker)
	}
	b, _ := s.breakers.LoadOrStore(target, s.newBreaker(target))
	return b.(*Breaker)
}

// Snapshot returns the status of every breaker, sorted by target.
func (s *Set) Snapshot() []Status {
	var out []Status
	s.breakers.Range(func(_, b any) bool {
		out = append(out, b.(*Breaker).Status())
		return true
	})
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Target, b.Target) })
	return out
}

// Breaker is the circuit breaker of one target. Get one from [Set.Get].
type Breaker struct {
	target   string
	policy   Policy
	classify func(error) Class // the Set's classifier, for Allow
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	since    atomic.Int64 // unix nanoseconds of the last state change
	until    atomic.Int64 // unix nanoseconds when the last opening ends
}

// errExcluded is reported to gobreaker for calls that say nothing about the
// target; any other non-nil error is a failure.
var errExcluded = &excludedError{}

type excludedError struct{}

func (*excludedError) Error() string { return "excluded" }

func (s *Set) newBreaker(target string) *Breaker {
	p := s.cfg.Resolve(target)
	b := &Breaker{target: target, policy: p, classify: s.opts.classify}
	b.since.Store(time.Now().UnixNano())
	t, err := parseTrip(p.CircuitBreaker.Trip)
	if err != nil { // only a Policy built in code can get here
		t = trip{count: 5}
	}
	t.minRecent = p.CircuitBreaker.MinRequests
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        target,
		MaxRequests: p.CircuitBreaker.MaxRequests,
		Interval:    p.CircuitBreaker.Interval,
		Timeout:     p.CircuitBreaker.Timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return t.readyToTrip(c.TotalSuccesses+c.TotalFailures, c.TotalFailures, c.ConsecutiveFailures)
		},
		// Called with the breaker's lock held: record and hand off only.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			now := time.Now()
			b.since.Store(now.UnixNano())
			if to == gobreaker.StateOpen {
				b.until.Store(now.Add(b.openTimeout()).UnixNano())
			}
			if s.events != nil {
				s.events.push(StateChange{Target: target, From: fromGobreaker(from), To: fromGobreaker(to), At: now})
			}
		},
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return err == errExcluded },
	})
	return b
}

// openTimeout is how long the breaker stays open, as gobreaker applies it.
func (b *Breaker) openTimeout() time.Duration {
	if d := b.policy.CircuitBreaker.Timeout; d > 0 {
		return d
	}
	return 60 * time.Second
}

// Target returns the breaker's target.
func (b *Breaker) Target() string { return b.target }

// Policy returns the policy that applies to the breaker's target.
func (b *Breaker) Policy() Policy { return b.policy }

// State returns the breaker's current state. An open breaker whose timeout
// has ended becomes half-open when it is next looked at (by State, Status
// or a call).
func (b *Breaker) State() State { return fromGobreaker(b.cb.State()) }

// Status returns the breaker's current status.
func (b *Breaker) Status() Status {
	st := b.State()
	c := b.cb.Counts()
	s := Status{
		Target: b.target,
		State:  st,
		Counts: Counts{
			Requests:             c.Requests,
			Successes:            c.TotalSuccesses,
			Failures:             c.TotalFailures,
			Excluded:             c.TotalExclusions,
			ConsecutiveSuccesses: c.ConsecutiveSuccesses,
			ConsecutiveFailures:  c.ConsecutiveFailures,
		},
		Since: time.Unix(0, b.since.Load()),
	}
	if st == Open {
		s.OpenUntil = time.Unix(0, b.until.Load())
	}
	return s
}

// notifier delivers state changes to a callback in order, from one
// goroutine that exists only while there is something to deliver.
type notifier struct {
	fn      func(StateChange)
	mu      sync.Mutex
	queue   []StateChange
	running bool
}

const maxQueued = 1024

func (n *notifier) push(ev StateChange) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.queue) == maxQueued {
		n.queue[1].Dropped += n.queue[0].Dropped + 1
		n.queue = n.queue[1:]
	}
	n.queue = append(n.queue, ev)
	if !n.running {
		n.running = true
		go n.drain()
	}
}

func (n *notifier) drain() {
	for {
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		if len(batch) == 0 {
			n.running = false
		}
		n.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, ev := range batch {
			n.fn(ev)
		}
	}
}
