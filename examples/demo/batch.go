package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

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

// batch runs orders with a bounded number in flight and shows progress.
type batch struct {
	c             *client.Client
	namespace, wf string
	opts          options
	out           io.Writer
	wall          time.Duration

	mu       sync.Mutex
	started  int
	complete int
	failed   int
	retries  map[string]int // by task: attempts beyond the first, so far
}

func newBatch(c *client.Client, namespace, wf string, o options, out io.Writer) *batch {
	return &batch{c: c, namespace: namespace, wf: wf, opts: o, out: out, retries: map[string]int{}}
}

// run starts every order, at most opts.inflight at a time, follows each to
// its end and returns how each ended, in order. It returns an error only
// when ctx ends or the time limit passes.
func (b *batch) run(ctx context.Context) ([]result, error) {
	orders := makeOrders(b.opts.tasks, b.opts.seed)
	fmt.Fprintf(b.out, "Running %d orders, at most %d in flight:\n", len(orders), b.opts.inflight)
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

// follow starts one order's task and watches it until it ends.
func (b *batch) follow(ctx context.Context, o order) result {
	t, _, err := b.c.StartTask(ctx, b.wf, o, client.Namespace(b.namespace), client.IdempotencyKey(o.OrderID))
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
	b.mu.Unlock()
	last := t
	err = b.c.Watch(ctx, t.GetId(), func(_ *taskerv1.TaskEvent, t *taskerv1.Task) error {
		last = t
		b.observe(t)
		if t.GetState() == taskerv1.TaskState_TASK_STATE_ERROR {
			return errBlocked
		}
		return nil
	})
	if err != nil && !errors.Is(err, errBlocked) && ctx.Err() == nil {
		// The watch broke off: wait for the end, re-watching as needed.
		if t, werr := b.c.Wait(ctx, t.GetId()); werr == nil {
			last, err = t, nil
			b.observe(t)
		}
	}
	b.mu.Lock()
	switch last.GetState() {
	case taskerv1.TaskState_TASK_STATE_COMPLETE:
		b.complete++
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

// showProgress keeps one line up to date while the batch runs: rewritten
// in place on a terminal, else printed every few seconds. The returned
// function prints the final state and stops.
func (b *batch) showProgress(start time.Time) func() {
	tty := isTerminal(b.out)
	period := progressPeriod
	if !tty {
		period = 2 * time.Second
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
				if tty {
					fmt.Fprintf(b.out, "\r%s\x1b[K\n", b.line(start))
				} else {
					fmt.Fprintln(b.out, b.line(start))
				}
				return
			case <-t.C:
				if tty {
					fmt.Fprintf(b.out, "\r%s\x1b[K", b.line(start))
				} else {
					fmt.Fprintln(b.out, b.line(start))
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// line is the progress line: a bar, then completed, in flight, failed,
// retries so far and the time since the start.
func (b *batch) line(start time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	retries := 0
	for _, n := range b.retries {
		retries += n
	}
	total := b.opts.tasks
	const width = 24
	filled := b.complete * width / total
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	inflight := b.started - b.complete - b.failed
	return fmt.Sprintf("  %s %3d/%d complete │ %2d in flight │ %d failed │ %3d retries │ %5.1fs",
		bar, b.complete, total, inflight, b.failed, retries, time.Since(start).Seconds())
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
