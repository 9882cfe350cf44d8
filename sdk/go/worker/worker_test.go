package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/worker"
)

// newWorker returns a worker on the agent at url with short retry delays.
func newWorker(t *testing.T, url string, opts worker.Options) *worker.Worker {
	opts.Addr = url
	if opts.Logger == nil {
		opts.Logger, _ = testLogger(t)
	}
	w := worker.New(opts)
	worker.SetDelays(w, 10*time.Millisecond, 100*time.Millisecond, 2*time.Second)
	return w
}

func echo(_ context.Context, s *worker.Step) (any, error) { return s.Input, nil }

func TestRegistrationCarriesCapabilities(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{WorkerID: "app-7"})
	w.Handle("payments.charge", echo,
		worker.Concurrency(8),
		worker.Schemas(`{"type":"object"}`, `{"type":"object","required":["id"]}`),
		worker.Version("1.2.0"),
		worker.Description("Charges a card"))
	w.Handle("payments.refund", echo)
	run(t, w)

	waitFor(t, "a poll", func() (ok bool) { fa.with(func() { ok = len(fa.polls) == 1 }); return })
	fa.with(func() {
		reg := fa.registrations[0]
		if reg.GetWorkerId() != "app-7" || fa.polls[0] != "app-7" {
			t.Errorf("worker id: registered %q, polled %q, want app-7", reg.GetWorkerId(), fa.polls[0])
		}
		caps := reg.GetCapabilities()
		if len(caps) != 2 {
			t.Fatalf("registered %d capabilities, want 2", len(caps))
		}
		c := caps[0]
		if c.GetName() != "payments.charge" || c.GetMaxConcurrency() != 8 || c.GetVersion() != "1.2.0" ||
			c.GetDescription() != "Charges a card" || c.GetInputSchemaJson() != `{"type":"object"}` ||
			c.GetOutputSchemaJson() != `{"type":"object","required":["id"]}` {
			t.Errorf("first capability = %v", c)
		}
		if c := caps[1]; c.GetName() != "payments.refund" || c.GetMaxConcurrency() != worker.DefaultConcurrency {
			t.Errorf("second capability = %v, want payments.refund with concurrency %d", c, worker.DefaultConcurrency)
		}
	})
}

func TestCompletesAssignmentWithItsAttempt(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	type seen struct {
		step     worker.Step
		deadline time.Time
	}
	got := make(chan seen, 1)
	w.Handle("inventory.reserve", func(ctx context.Context, s *worker.Step) (any, error) {
		d, _ := ctx.Deadline()
		got <- seen{*s, d}
		return map[string]any{"reservation": "r-1", "note": "<&>"}, nil
	})
	run(t, w)

	a := step("t1", "reserve", "inventory.reserve", `{"sku":"A-1","qty":2}`)
	a.Attempt = 3
	a.WorkflowVersion = "1.0.0"
	fa.assign <- a

	s := receive(t, "the handler", got)
	want := worker.Step{
		TaskID: "t1", Name: "reserve", Capability: "inventory.reserve", Attempt: 3,
		IdempotencyKey: "t1/reserve", Deadline: a.GetDeadline().AsTime(),
		Workflow: "order-fulfilment", WorkflowVersion: "1.0.0", Input: json.RawMessage(`{"sku":"A-1","qty":2}`),
	}
	if fmt.Sprint(s.step) != fmt.Sprint(want) {
		t.Errorf("step = %+v\nwant   %+v", s.step, want)
	}
	if !s.deadline.Equal(want.Deadline) {
		t.Errorf("ctx deadline = %v, want the step deadline %v", s.deadline, want.Deadline)
	}
	// The worker learned its id from the sidecar and polls with it.
	waitFor(t, "the result", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 1 }); return })
	fa.with(func() {
		c := fa.completed[0]
		if c.GetTaskId() != "t1" || c.GetStep() != "reserve" || c.GetAttempt() != 3 {
			t.Errorf("completed %v, want t1/reserve attempt 3", c)
		}
		if c.GetResultJson() != `{"note":"<&>","reservation":"r-1"}` {
			t.Errorf("result_json = %s", c.GetResultJson())
		}
		if fa.polls[0] != "worker-1" {
			t.Errorf("polled as %q, want the id the sidecar assigned", fa.polls[0])
		}
	})
}

func TestConcurrencyLimitRespected(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	var active, peak, calls atomic.Int64
	release := make(chan struct{})
	w.Handle("email.send", func(ctx context.Context, s *worker.Step) (any, error) {
		calls.Add(1)
		n := active.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		defer active.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}, worker.Concurrency(3))
	w.Handle("other", echo) // its own limit: does not share slots
	run(t, w)

	const steps = 10
	for i := range steps {
		fa.assign <- step(fmt.Sprintf("t%d", i), "send", "email.send", `{}`)
	}
	waitFor(t, "every assignment sent", func() (ok bool) { fa.with(func() { ok = fa.sent == steps }); return })
	waitFor(t, "3 steps running", func() bool { return active.Load() == 3 })
	// A capability with free slots is not held up by the full one.
	fa.assign <- step("x", "other", "other", `{"ok":true}`)
	waitFor(t, "the other capability", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 1 }); return })
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d handler calls with a limit of 3 while all block", n)
	}
	close(release)
	waitFor(t, "every step completed", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == steps+1 }); return })
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrency = %d, want 3", p)
	}
}

func TestFailuresMapToFailStep(t *testing.T) {
	type details struct {
		Decline string `json:"decline"`
	}
	cases := []struct {
		name    string
		handler worker.Handler
		want    *taskerv1.FailStepRequest
	}{{
		name: "permanent",
		handler: func(context.Context, *worker.Step) (any, error) {
			return nil, worker.Permanent("card_declined", "insufficient funds")
		},
		want: &taskerv1.FailStepRequest{Code: "card_declined", Message: "insufficient funds"},
	}, {
		name: "retryable with retry_after",
		handler: func(context.Context, *worker.Step) (any, error) {
			return nil, worker.Retryable("rate_limited", "slow down", 1500*time.Millisecond)
		},
		want: &taskerv1.FailStepRequest{Code: "rate_limited", Message: "slow down", Retryable: true},
	}, {
		name: "wrapped permanent",
		handler: func(context.Context, *worker.Step) (any, error) {
			return nil, fmt.Errorf("charge order 42: %w", worker.Permanent("card_declined", "stolen card"))
		},
		want: &taskerv1.FailStepRequest{Code: "card_declined", Message: "stolen card"},
	}, {
		name: "plain error",
		handler: func(context.Context, *worker.Step) (any, error) {
			return nil, errors.New("connection reset")
		},
		want: &taskerv1.FailStepRequest{Code: "error", Message: "connection reset", Retryable: true},
	}, {
		name: "details",
		handler: func(context.Context, *worker.Step) (any, error) {
			return nil, &worker.Error{Code: "card_declined", Message: "no", Details: details{"do_not_honor"}}
		},
		want: &taskerv1.FailStepRequest{Code: "card_declined", Message: "no", DetailsJson: `{"decline":"do_not_honor"}`},
	}, {
		name: "panic",
		handler: func(context.Context, *worker.Step) (any, error) {
			panic("card processor exploded")
		},
		want: &taskerv1.FailStepRequest{Code: "panic", Message: "card processor exploded"},
	}, {
		name: "result not JSON",
		handler: func(context.Context, *worker.Step) (any, error) {
			return make(chan int), nil
		},
		want: &taskerv1.FailStepRequest{Code: "invalid_result", Message: "encode result: json: unsupported type: chan int"},
	}, {
		name: "raw result not JSON",
		handler: func(context.Context, *worker.Step) (any, error) {
			return json.RawMessage(`{"a":`), nil
		},
		want: &taskerv1.FailStepRequest{Code: "invalid_result", Message: "the result is a json.RawMessage that is not valid JSON"},
	}}
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	for _, c := range cases {
		w.Handle(c.name, c.handler)
	}
	run(t, w)
	for i, c := range cases {
		a := step(fmt.Sprintf("t%d", i), "s", c.name, `{}`)
		a.Attempt = 2
		fa.assign <- a
	}
	fa.assign <- step("tu", "s", "no.such.capability", `{}`)
	waitFor(t, "every failure", func() (ok bool) { fa.with(func() { ok = len(fa.failed) == len(cases)+1 }); return })

	fa.with(func() {
		byTask := map[string]*taskerv1.FailStepRequest{}
		for _, f := range fa.failed {
			byTask[f.GetTaskId()] = f
		}
		for i, c := range cases {
			got := byTask[fmt.Sprintf("t%d", i)]
			if got.GetAttempt() != 2 || got.GetStep() != "s" || got.GetCode() != c.want.GetCode() ||
				got.GetMessage() != c.want.GetMessage() || got.GetRetryable() != c.want.GetRetryable() ||
				got.GetDetailsJson() != c.want.GetDetailsJson() {
				t.Errorf("%s: FailStep = %v\nwant code %q message %q retryable %v details %q attempt 2", c.name, got,
					c.want.GetCode(), c.want.GetMessage(), c.want.GetRetryable(), c.want.GetDetailsJson())
			}
		}
		if ra := byTask["t1"].GetRetryAfter(); ra.AsDuration() != 1500*time.Millisecond {
			t.Errorf("retry_after = %v, want 1.5s", ra.AsDuration())
		}
		if ra := byTask["t0"].GetRetryAfter(); ra != nil {
			t.Errorf("permanent failure has retry_after %v", ra.AsDuration())
		}
		if u := byTask["tu"]; u.GetCode() != "unknown_capability" || !u.GetRetryable() {
			t.Errorf("unknown capability: FailStep = %v", u)
		}
	})
}

func TestResultEncoding(t *testing.T) {
	cases := map[string]struct {
		result any
		want   string
	}{
		"raw message passes through": {json.RawMessage(`{ "id" : 12345678901234567890 }`), `{ "id" : 12345678901234567890 }`},
		"nil is an empty object":     {nil, `{}`},
		"struct":                     {struct{ ID int }{7}, `{"ID":7}`},
		"string":                     {"done", `"done"`},
	}
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	for name, c := range cases {
		w.Handle(name, func(context.Context, *worker.Step) (any, error) { return c.result, nil })
	}
	run(t, w)
	for name := range cases {
		fa.assign <- step(name, "s", name, `{}`)
	}
	waitFor(t, "every result", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == len(cases) }); return })
	fa.with(func() {
		for _, c := range fa.completed {
			if want := cases[c.GetTaskId()].want; c.GetResultJson() != want {
				t.Errorf("%s: result_json = %s, want %s", c.GetTaskId(), c.GetResultJson(), want)
			}
		}
	})
}

func TestHeartbeatExtendsLongStep(t *testing.T) {
	fa := newFakeAgent()
	fa.leaseFor = 300 * time.Millisecond
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	type outcome struct {
		err      error
		deadline time.Time
	}
	got := make(chan outcome, 1)
	w.Handle("reports.build", func(ctx context.Context, s *worker.Step) (any, error) {
		// Outlive the first deadline several times over; the lease keeps
		// the context alive.
		for {
			var n int
			fa.with(func() { n = len(fa.extended) })
			if n >= 3 || ctx.Err() != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		d, _ := ctx.Deadline()
		got <- outcome{ctx.Err(), d}
		return map[string]int{"rows": 3}, nil
	})
	run(t, w)

	a := step("t1", "build", "reports.build", `{}`)
	a.Deadline = timestamppb.New(time.Now().Add(300 * time.Millisecond))
	fa.assign <- a
	o := receive(t, "the handler", got)
	if o.err != nil {
		t.Fatalf("handler context ended despite heartbeats: %v", o.err)
	}
	if !o.deadline.After(a.GetDeadline().AsTime()) {
		t.Errorf("ctx deadline %v did not move past the first deadline %v", o.deadline, a.GetDeadline().AsTime())
	}
	waitFor(t, "the result", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 1 }); return })
	fa.with(func() {
		for _, e := range fa.extended {
			if e.GetTaskId() != "t1" || e.GetStep() != "build" || e.GetAttempt() != 1 {
				t.Errorf("ExtendLease %v, want t1/build attempt 1", e)
			}
		}
		if last := fa.events[len(fa.events)-1]; last != "complete t1/build" {
			t.Errorf("events %v: a heartbeat came after the result", fa.events)
		}
	})
}

func TestLeaseLostCancelsStepAndReportsNothing(t *testing.T) {
	fa := newFakeAgent()
	fa.extendErr = connect.NewError(connect.CodeFailedPrecondition, errors.New("attempt 1 is not current"))
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	cause := make(chan error, 1)
	w.Handle("slow", func(ctx context.Context, s *worker.Step) (any, error) {
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	r := run(t, w)
	a := step("t1", "s", "slow", `{}`)
	a.Deadline = timestamppb.New(time.Now().Add(150 * time.Millisecond))
	fa.assign <- a
	if got := receive(t, "the handler to be cancelled", cause); !errors.Is(got, worker.ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	fa.with(func() {
		if len(fa.completed)+len(fa.failed) != 0 {
			t.Errorf("a lost attempt was reported: %v", fa.events)
		}
	})
}

func TestLeaseLapsesWhenSidecarCannotExtend(t *testing.T) {
	fa := newFakeAgent()
	fa.extendErr = connect.NewError(connect.CodeUnavailable, errors.New("no leader"))
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	got := make(chan error, 1)
	w.Handle("slow", func(ctx context.Context, s *worker.Step) (any, error) {
		<-ctx.Done()
		got <- ctx.Err()
		return nil, ctx.Err()
	})
	run(t, w)
	a := step("t1", "s", "slow", `{}`)
	a.Deadline = timestamppb.New(time.Now().Add(100 * time.Millisecond))
	fa.assign <- a
	if err := receive(t, "the deadline", got); err != context.DeadlineExceeded {
		t.Fatalf("ctx.Err() = %v, want context.DeadlineExceeded", err)
	}
	waitFor(t, "the failure", func() (ok bool) { fa.with(func() { ok = len(fa.failed) == 1 }); return })
	fa.with(func() {
		if len(fa.extended) < 1 {
			t.Errorf("%d lease extensions tried before the deadline, want some", len(fa.extended))
		}
		if f := fa.failed[0]; f.GetCode() != "error" || !f.GetRetryable() {
			t.Errorf("FailStep = %v", f)
		}
	})
}

func TestStreamBreakReRegistersAndResumes(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	w.Handle("echo", echo)
	run(t, w)

	fa.assign <- step("t1", "a", "echo", `{"n":1}`)
	waitFor(t, "the first result", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 1 }); return })
	fa.breakPoll()
	waitFor(t, "a second poll", func() (ok bool) { fa.with(func() { ok = len(fa.polls) == 2 && fa.open == 1 }); return })
	fa.assign <- step("t2", "b", "echo", `{"n":2}`)
	waitFor(t, "the second result", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 2 }); return })
	fa.with(func() {
		if len(fa.registrations) != 2 {
			t.Errorf("%d registrations, want 2 (one per stream)", len(fa.registrations))
		}
		if id := fa.registrations[1].GetWorkerId(); id != "worker-1" {
			t.Errorf("re-registered as %q, want the assigned id worker-1", id)
		}
		if fa.polls[1] != "worker-1" {
			t.Errorf("re-polled as %q", fa.polls[1])
		}
	})
}

func TestSidecarRestart(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	w.Handle("work", func(ctx context.Context, s *worker.Step) (any, error) {
		if s.TaskID == "t1" {
			started <- struct{}{}
			<-gate
		}
		return map[string]string{"task": s.TaskID}, nil
	})
	r := run(t, w)
	fa.assign <- step("t1", "s", "work", `{}`)
	receive(t, "the step to start", started)

	// The sidecar dies while the step runs; the step finishes while it is
	// down, and its result waits for the new sidecar.
	addr := srv.Listener.Addr().String()
	srv.Kill()
	close(gate)
	fb := newFakeAgent()
	fb.assignedID = "worker-2"
	t.Cleanup(fb.serve(addr).Kill)

	waitFor(t, "a poll on the new sidecar", func() (ok bool) { fb.with(func() { ok = len(fb.polls) == 1 }); return })
	fb.assign <- step("t2", "s", "work", `{}`)
	waitFor(t, "both results on the new sidecar", func() (ok bool) { fb.with(func() { ok = len(fb.completed) == 2 }); return })
	fb.with(func() {
		if got := fb.registrations[0].GetWorkerId(); got != "worker-1" {
			t.Errorf("registered with the new sidecar as %q, want the id it had, worker-1", got)
		}
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDrainFinishesInFlightAndTakesNoNewSteps(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	var mu sync.Mutex
	var handled []string
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	w.Handle("work", func(ctx context.Context, s *worker.Step) (any, error) {
		mu.Lock()
		handled = append(handled, s.TaskID)
		mu.Unlock()
		started <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, nil
	}, worker.Concurrency(1))
	r := run(t, w)

	fa.assign <- step("t1", "s", "work", `{}`)
	fa.assign <- step("t2", "s", "work", `{}`) // one of the two waits for a slot
	receive(t, "the first step", started)
	waitFor(t, "both assignments sent", func() (ok bool) { fa.with(func() { ok = fa.sent == 2 }); return })
	r.cancel()
	fa.assign <- step("t3", "s", "work", `{}`) // arrives while draining
	waitFor(t, "the third assignment sent", func() (ok bool) { fa.with(func() { ok = fa.sent == 3 }); return })
	close(gate)
	if err := receive(t, "Run to return", r.done); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	r.done <- nil

	// Which of t1 and t2 got the slot first is up to the scheduler.
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0] == "t3" {
		t.Fatalf("handled %v, want one of t1 and t2", handled)
	}
	fa.with(func() {
		if len(fa.completed) != 1 || fa.completed[0].GetTaskId() != handled[0] || len(fa.failed) != 0 {
			t.Errorf("reports %v, want only %s completed", fa.events, handled[0])
		}
		if fa.openAtReport[0] != 1 {
			t.Errorf("the poll stream was closed before the in-flight step reported; the sidecar would have taken it back")
		}
	})
	waitFor(t, "the poll stream to close", func() (ok bool) { fa.with(func() { ok = fa.open == 0 }); return })
}

func TestDrainTimeoutCancelsSteps(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{DrainTimeout: 50 * time.Millisecond})
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	w.Handle("stuck", func(ctx context.Context, s *worker.Step) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	r := run(t, w)
	fa.assign <- step("t1", "s", "stuck", `{}`)
	receive(t, "the step to start", started)
	if err := r.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if got := receive(t, "the cause", cause); !errors.Is(got, worker.ErrDrainTimeout) {
		t.Errorf("cause = %v, want ErrDrainTimeout", got)
	}
	fa.with(func() {
		if len(fa.failed)+len(fa.completed) != 0 {
			t.Errorf("a step cancelled by the drain was reported (%v); it should be handed back", fa.events)
		}
	})
}

type chargeIn struct {
	OrderID string `json:"order_id"`
	Amount  int64  `json:"amount"`
}

type chargeOut struct {
	ChargeID string `json:"charge_id"`
	Amount   int64  `json:"amount"`
}

func TestTypedBindsInputAndRefusesInvalidInput(t *testing.T) {
	fa := newFakeAgent()
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	var calls atomic.Int64
	w.Handle("payments.charge", worker.Typed(func(ctx context.Context, s *worker.Step, in chargeIn) (chargeOut, error) {
		calls.Add(1)
		return chargeOut{ChargeID: "ch_" + in.OrderID, Amount: in.Amount}, nil
	}))
	run(t, w)
	fa.assign <- step("good", "charge", "payments.charge", `{"order_id":"42","amount":9007199254740993,"extra":true}`)
	fa.assign <- step("bad", "charge", "payments.charge", `{"order_id":"43","amount":"ten"}`)
	waitFor(t, "both reports", func() (ok bool) { fa.with(func() { ok = len(fa.completed) == 1 && len(fa.failed) == 1 }); return })
	fa.with(func() {
		if got := fa.completed[0].GetResultJson(); got != `{"charge_id":"ch_42","amount":9007199254740993}` {
			t.Errorf("result = %s", got)
		}
		f := fa.failed[0]
		if f.GetTaskId() != "bad" || f.GetCode() != "invalid_input" || f.GetRetryable() || !strings.Contains(f.GetMessage(), "amount") {
			t.Errorf("FailStep = %v, want permanent invalid_input naming the field", f)
		}
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("typed function called %d times, want 1 (not for invalid input)", n)
	}
}

func TestBind(t *testing.T) {
	var m map[string]any
	s := &worker.Step{Input: json.RawMessage(`{"n": 12345678901234567890, "f": 1.5}`)}
	if err := s.Bind(&m); err != nil {
		t.Fatal(err)
	}
	if n, ok := m["n"].(json.Number); !ok || n.String() != "12345678901234567890" {
		t.Errorf("n = %#v, want json.Number 12345678901234567890", m["n"])
	}

	var in chargeIn
	if err := (&worker.Step{}).Bind(&in); err != nil {
		t.Errorf("empty input: %v", err)
	}

	for _, input := range []string{`{"amount": "x"}`, `{"amount": 1} {}`, `[1,`} {
		err := (&worker.Step{Input: json.RawMessage(input)}).Bind(&in)
		var we *worker.Error
		if !errors.As(err, &we) || we.Code != "invalid_input" || we.Retryable {
			t.Errorf("Bind(%s) = %v, want a permanent invalid_input *worker.Error", input, err)
		}
	}
	var te *json.UnmarshalTypeError
	if err := (&worker.Step{Input: json.RawMessage(`{"amount": "x"}`)}).Bind(&in); !errors.As(err, &te) {
		t.Errorf("Bind error %v does not wrap the decoder's error", err)
	}
}

func TestContractViolationIsLoggedClearly(t *testing.T) {
	fa := newFakeAgent()
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("result of step charge breaks its contract"))
	detail, err := connect.NewErrorDetail(&taskerv1.ContractFailure{
		Contract:   "result of step charge",
		Violations: []*taskerv1.Violation{{Pointer: "/id", Message: "required"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(detail)
	fa.completeErr = cerr
	srv := fa.start(t)
	log, logs := testLogger(t)
	w := newWorker(t, srv.URL, worker.Options{Logger: log})
	w.Handle("payments.charge", echo)
	run(t, w)
	fa.assign <- step("t1", "charge", "payments.charge", `{}`)
	waitFor(t, "the contract violation to be logged", func() bool {
		return strings.Contains(logs.String(), "result contract")
	})
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "/id: required") {
		t.Errorf("log does not show an error with the violation:\n%s", l)
	}
}

// An error the agent refuses for breaking the step's error contract is
// logged as what it is, not as a failure to report.
func TestErrorContractViolationIsLoggedClearly(t *testing.T) {
	fa := newFakeAgent()
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("error of step charge breaks its contract"))
	detail, err := connect.NewErrorDetail(&taskerv1.ContractFailure{
		Contract:   "error of step charge",
		Violations: []*taskerv1.Violation{{Pointer: "/code", Message: "value must be one of 'declined'"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(detail)
	fa.failErr = cerr
	srv := fa.start(t)
	log, logs := testLogger(t)
	w := newWorker(t, srv.URL, worker.Options{Logger: log})
	w.Handle("payments.charge", func(context.Context, *worker.Step) (any, error) {
		return nil, worker.Permanent("oops", "not a listed code")
	})
	run(t, w)
	fa.assign <- step("t1", "charge", "payments.charge", `{}`)
	waitFor(t, "the error contract violation to be logged", func() bool {
		return strings.Contains(logs.String(), "error contract")
	})
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "/code: value must be one of") || strings.Contains(l, "cannot report the step failure") {
		t.Errorf("log does not show the error contract violation as such:\n%s", l)
	}
}

func TestRegistrationRefusedEndsRun(t *testing.T) {
	fa := newFakeAgent()
	fa.registerErr = connect.NewError(connect.CodeInvalidArgument, errors.New("capabilities[0].input_schema_json: not a JSON Schema"))
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	w.Handle("x", echo)
	err := worker.New(worker.Options{}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Handle") {
		t.Errorf("Run without handlers = %v, want an error saying to call Handle", err)
	}
	r := run(t, w)
	err = receive(t, "Run to return", r.done)
	r.done <- err
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("Run = %v, want the InvalidArgument registration error", err)
	}
}

func TestRegistrationRetriedWhileSidecarUnavailable(t *testing.T) {
	fa := newFakeAgent()
	fa.registerErr = connect.NewError(connect.CodeUnavailable, errors.New("starting"))
	srv := fa.start(t)
	w := newWorker(t, srv.URL, worker.Options{})
	w.Handle("x", echo)
	run(t, w)
	waitFor(t, "a few attempts", func() (ok bool) { fa.with(func() { ok = len(fa.registrations) >= 3 }); return })
	fa.with(func() { fa.registerErr = nil })
	waitFor(t, "a poll", func() (ok bool) { fa.with(func() { ok = len(fa.polls) == 1 }); return })
}

func TestHandleMisuse(t *testing.T) {
	mustPanic := func(what string, fn func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		fn()
	}
	w := worker.New(worker.Options{})
	w.Handle("a", echo)
	mustPanic("duplicate", func() { w.Handle("a", echo) })
	mustPanic("empty name", func() { w.Handle("", echo) })
	mustPanic("nil handler", func() { w.Handle("b", nil) })
	mustPanic("invalid schema", func() { w.Handle("c", echo, worker.Schemas(`{`, "")) })
}

func TestErrorString(t *testing.T) {
	if got := worker.Permanent("card_declined", "insufficient funds").Error(); got != "card_declined: insufficient funds" {
		t.Errorf("Error() = %q", got)
	}
	if got := worker.Retryable("busy", "", 0).Error(); got != "busy" {
		t.Errorf("Error() = %q", got)
	}
}
