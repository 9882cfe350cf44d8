package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/internal/sleep"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// order is the input of an order-fulfilment task (its input_schema).
type order struct {
	OrderID  string   `json:"order_id"`
	Customer customer `json:"customer"`
	Items    []line   `json:"items"`
	Payment  payment  `json:"payment"`
	Address  address  `json:"shipping_address"`
}

type customer struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

type line struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type payment struct {
	Token       string `json:"token"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

type address struct {
	Line1    string `json:"line1"`
	City     string `json:"city"`
	Postcode string `json:"postcode"`
	Country  string `json:"country"`
}

var (
	customers = []string{"ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances"}
	catalogue = []struct {
		sku   string
		cents int64
	}{{"MUG-01", 1200}, {"TEE-M", 2500}, {"CAP-02", 1800}, {"BOOK-GO", 3900}, {"STICKERS", 400}}
	cities = []address{
		{"1 Main St", "London", "N1 9GU", "GB"}, {"2 Rue de Rivoli", "Paris", "75001", "FR"},
		{"3 Unter den Linden", "Berlin", "10117", "DE"}, {"4 Market St", "San Francisco", "94105", "US"},
		{"5 Damrak", "Amsterdam", "1012", "NL"},
	}
	currencies = []string{"EUR", "GBP", "USD"}
)

// makeOrders returns n orders, the same for the same seed: order ids are
// ord_0001, ord_0002, ... so that the services' simulated failures, which
// depend on the order id, repeat with the seed.
func makeOrders(n int, seed uint64) []order {
	rng := rand.New(rand.NewPCG(seed, 42))
	out := make([]order, n)
	for i := range out {
		name := customers[rng.IntN(len(customers))]
		o := order{
			OrderID:  fmt.Sprintf("ord_%04d", i+1),
			Customer: customer{ID: "cus_" + name, Email: name + "@example.com", Name: strings.ToUpper(name[:1]) + name[1:]},
			Payment:  payment{Token: "tok_visa_4242", Currency: currencies[rng.IntN(len(currencies))]},
			Address:  cities[rng.IntN(len(cities))],
		}
		for range 1 + rng.IntN(3) {
			item := catalogue[rng.IntN(len(catalogue))]
			q := 1 + rng.IntN(3)
			o.Items = append(o.Items, line{SKU: item.sku, Quantity: q})
			o.Payment.AmountCents += item.cents * int64(q)
		}
		out[i] = o
	}
	return out
}

// result is how one order's task ended.
type result struct {
	order string
	task  *taskerv1.Task // the last state seen; nil if it never started
	err   error          // why the demo stopped following it, if it did
}

// batch runs orders with a bounded number in flight through one sidecar
// and shows progress.
type batch struct {
	c             *client.Client
	namespace, wf string
	opts          options
	out           io.Writer
	tty           bool
	wall          time.Duration
	// leader names the current leader for the progress line.
	leader func() string
	// reached is closed once threshold orders are complete (never, if
	// threshold is 0).
	threshold int
	reached   chan struct{}

	outMu sync.Mutex // one writer at a time on out

	mu            sync.Mutex
	started       int
	complete      int
	failed        int
	retries       map[string]int  // by task: attempts beyond the first, so far
	running       map[string]bool // tasks started and not ended
	startRetries  int             // StartTask calls retried (same idempotency key)
	watchRetries  int             // watches that broke off and were resumed
	reachedClosed bool
}

func newBatch(c *client.Client, namespace, wf string, o options, out io.Writer, leader func() string) *batch {
	b := &batch{c: c, namespace: namespace, wf: wf, opts: o, out: out, tty: isTerminal(out), leader: leader,
		retries: map[string]int{}, running: map[string]bool{}, reached: make(chan struct{})}
	if o.killAt > 0 {
		b.threshold = max(1, int(math.Round(o.killAt*float64(o.tasks))))
	}
	return b
}

// run starts every order, at most opts.inflight at a time, follows each to
// its end and returns how each ended, in order. It returns an error only
// when ctx ends or the time limit passes.
func (b *batch) run(ctx context.Context) ([]result, error) {
	orders := makeOrders(b.opts.tasks, b.opts.seed)
	ctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
	defer cancel()

	start := time.Now()
	stopProgress := b.showProgress(start)
	results := make([]result, len(orders))
	slots := make(chan struct{}, b.opts.inflight)
	var wg sync.WaitGroup
	for i, o := range orders {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			results[i] = result{order: o.OrderID, err: ctx.Err()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			results[i] = b.follow(ctx, o)
		}()
	}
	wg.Wait()
	b.wall = time.Since(start)
	stopProgress()
	if err := context.Cause(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return results, fmt.Errorf("the batch did not finish within -timeout %s", b.opts.timeout)
		}
		return results, err
	}
	return results, nil
}

// errBlocked stops a watch when the task is in error: a step failed for
// good and nothing more happens without an operator.
var errBlocked = errors.New("task blocked in error")

// transient reports whether a call that failed may succeed if made again:
// the sidecar could not reach a leader (an election), or the stream to
// the leader broke when it died.
func transient(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal,
		connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeCanceled:
		return true
	}
	return errors.Is(err, client.ErrStreamEnded)
}

// follow starts one order's task and watches it until it ends. Calls that
// fail while the leader changes are made again: StartTask with the same
// idempotency key, which cannot start a second task.
func (b *batch) follow(ctx context.Context, o order) result {
	var t *taskerv1.Task
	var err error
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		t, _, err = b.c.StartTask(ctx, b.wf, o, client.Namespace(b.namespace), client.IdempotencyKey(o.OrderID))
		if err == nil || ctx.Err() != nil || !transient(err) || !sleep.For(ctx, wait) {
			break
		}
		b.mu.Lock()
		b.startRetries++
		b.mu.Unlock()
	}
	if err != nil {
		if ctx.Err() == nil {
			b.mu.Lock()
			b.failed++
			b.mu.Unlock()
		}
		return result{order: o.OrderID, err: err}
	}
	b.mu.Lock()
	b.started++
	b.running[t.GetId()] = true
	b.mu.Unlock()
	last := t
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		err = b.c.Watch(ctx, t.GetId(), func(_ *taskerv1.TaskEvent, t *taskerv1.Task) error {
			last = t
			b.observe(t)
			if t.GetState() == taskerv1.TaskState_TASK_STATE_ERROR {
				return errBlocked
			}
			return nil
		})
		if err == nil || errors.Is(err, errBlocked) || ctx.Err() != nil || !transient(err) {
			break
		}
		// The watch broke off (the leader it streamed from died): resume.
		b.mu.Lock()
		b.watchRetries++
		b.mu.Unlock()
		if !sleep.For(ctx, wait) {
			break
		}
	}
	b.mu.Lock()
	delete(b.running, t.GetId())
	switch last.GetState() {
	case taskerv1.TaskState_TASK_STATE_COMPLETE:
		b.complete++
		if b.threshold > 0 && b.complete >= b.threshold && !b.reachedClosed {
			b.reachedClosed = true
			close(b.reached)
		}
	case taskerv1.TaskState_TASK_STATE_IN_PROGRESS, taskerv1.TaskState_TASK_STATE_PENDING:
	default:
		b.failed++
	}
	b.mu.Unlock()
	if errors.Is(err, errBlocked) {
		err = nil
	}
	return result{order: o.OrderID, task: last, err: err}
}

// observe counts a task's retries so far.
func (b *batch) observe(t *taskerv1.Task) {
	n := 0
	for _, s := range t.GetSteps() {
		n += max(int(s.GetAttempts())-1, 0)
	}
	b.mu.Lock()
	b.retries[t.GetId()] = n
	b.mu.Unlock()
}

// completed returns how many orders are complete.
func (b *batch) completed() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.complete
}

// inFlight returns the ids of the tasks started and not ended.
func (b *batch) inFlight() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Collect(maps.Keys(b.running))
}

// note prints a line of its own above the progress line.
func (b *batch) note(format string, args ...any) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if b.tty {
		fmt.Fprint(b.out, "\r\x1b[K")
	}
	fmt.Fprintf(b.out, format+"\n", args...)
}

// showProgress keeps one line up to date while the batch runs: rewritten
// in place on a terminal, else printed every few seconds. The returned
// function prints the final state and stops.
func (b *batch) showProgress(start time.Time) func() {
	period := progressPeriod
	if !b.tty {
		period = 2 * time.Second
	}
	show := func(final bool) {
		b.outMu.Lock()
		defer b.outMu.Unlock()
		switch {
		case b.tty && final:
			fmt.Fprintf(b.out, "\r%s\x1b[K\n", b.line(start))
		case b.tty:
			fmt.Fprintf(b.out, "\r%s\x1b[K", b.line(start))
		default:
			fmt.Fprintln(b.out, b.line(start))
		}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				show(true)
				return
			case <-t.C:
				show(false)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// line is the progress line: a bar, then completed, running, failed,
// retries so far, the leader, and the time since the start.
func (b *batch) line(start time.Time) string {
	leader := b.leader()
	if leader == "" {
		leader = "(election)"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	retries := 0
	for _, n := range b.retries {
		retries += n
	}
	total := b.opts.tasks
	const width = 20
	filled := b.complete * width / total
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	running := b.started - b.complete - b.failed
	return fmt.Sprintf("  %s %3d/%d complete │ %2d running │ %d failed │ %3d retries │ leader %-10s │ %5.1fs",
		bar, b.complete, total, running, b.failed, retries, leader, time.Since(start).Seconds())
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
