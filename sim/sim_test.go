package sim_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/sim"
	"github.com/tasker-run/tasker/workflow"
)

func plan(t *testing.T, src string) *workflow.Plan {
	t.Helper()
	p, err := workflow.Load([]byte(src), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func example(t *testing.T, name string) *workflow.Plan {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "examples", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return plan(t, string(src))
}

// ok is a handler that succeeds with result after d.
func ok(result any, d time.Duration) sim.Handler {
	return func(any, int) (any, time.Duration, *workflow.Failure) { return result, d, nil }
}

// failing is a handler whose attempts up to upTo fail with f after d, and
// whose later attempts succeed with result.
func failing(upTo int, f workflow.Failure, d time.Duration, result any) sim.Handler {
	return func(_ any, attempt int) (any, time.Duration, *workflow.Failure) {
		if attempt <= upTo {
			return nil, d, &f
		}
		return result, d, nil
	}
}

// lines renders a log as "AT STEP FROM→TO", with "#N" on dispatches and
// the code on failures, so that expected sequences read like the log.
func lines(log []sim.Record) []string {
	out := make([]string, len(log))
	for i, r := range log {
		who := r.Step
		if who == "" {
			who = "task"
		}
		s := fmt.Sprintf("%v %s %s→%s", r.At, who, r.From, r.To)
		if r.To == "enqueued" {
			s += fmt.Sprintf(" #%d", r.Attempt)
		}
		if r.Code != "" {
			s += " " + r.Code
		}
		out[i] = s
	}
	return out
}

func run(t *testing.T, p *workflow.Plan, cfg sim.Config, input any) (*sim.Sim, workflow.TaskRef) {
	t.Helper()
	s, err := sim.New(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	task, err := s.AddTask(input)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	return s, task
}

func orderInput() map[string]any {
	return map[string]any{
		"order_id": "ord_42",
		"customer": map[string]any{"id": "c1", "email": "ada@example.com"},
		"items":    []any{map[string]any{"sku": "tea", "quantity": 2}},
		"payment":  map[string]any{"token": "tok", "amount_cents": 1200, "currency": "EUR"},
	}
}

// orderHandlers are well-behaved apps for the order-fulfilment example;
// inputs records what each capability was sent.
func orderHandlers(inputs map[string]any) map[string]sim.Handler {
	rec := func(capability string, h sim.Handler) sim.Handler {
		return func(in any, attempt int) (any, time.Duration, *workflow.Failure) {
			inputs[capability] = in
			return h(in, attempt)
		}
	}
	return map[string]sim.Handler{
		"orders.validate":     rec("orders.validate", ok(map[string]any{"valid": true, "risk_score": 0.1}, 100*time.Millisecond)),
		"inventory.reserve":   rec("inventory.reserve", ok(map[string]any{"reservation_id": "r1", "expires_at": "2025-01-01T10:00:00Z"}, 300*time.Millisecond)),
		"payments.charge":     rec("payments.charge", ok(map[string]any{"charge_id": "ch1", "status": "captured"}, 200*time.Millisecond)),
		"shipping.book":       rec("shipping.book", ok(map[string]any{"tracking_number": "TN1", "carrier": "dhl"}, 500*time.Millisecond)),
		"notifications.email": rec("notifications.email", ok(map[string]any{}, 50*time.Millisecond)),
	}
}

// The example runs as the coordinator would run it: roots first, the two
// branches in parallel, ship when both are done, the task complete with
// its last step.
func TestRunOrderFulfilment(t *testing.T) {
	inputs := map[string]any{}
	s, task := run(t, example(t, "order-fulfilment"), sim.Config{Handlers: orderHandlers(inputs)}, orderInput())
	want := []string{
		"0s task pending→in_progress",
		"0s validate pending→enqueued #1",
		"0s validate enqueued→in_progress",
		"100ms validate in_progress→complete",
		"100ms reserve pending→enqueued #1",
		"100ms charge pending→enqueued #1",
		"100ms reserve enqueued→in_progress",
		"100ms charge enqueued→in_progress",
		"300ms charge in_progress→complete",
		"400ms reserve in_progress→complete",
		"400ms ship pending→enqueued #1",
		"400ms ship enqueued→in_progress",
		"900ms ship in_progress→complete",
		"900ms notify pending→enqueued #1",
		"900ms notify enqueued→in_progress",
		"950ms notify in_progress→complete",
		"950ms task in_progress→complete",
	}
	if got := lines(s.Log()); !reflect.DeepEqual(got, want) {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rep, err := s.Report(task)
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != workflow.TaskComplete || rep.Elapsed != 950*time.Millisecond {
		t.Errorf("task %v after %v, want complete after 950ms", rep.State, rep.Elapsed)
	}
	for _, st := range rep.Steps {
		if st.State != workflow.StepComplete || st.Attempts != 1 || st.Result == nil {
			t.Errorf("step %s: %v after %d attempts, result %v", st.Name, st.State, st.Attempts, st.Result)
		}
	}
	if s.Elapsed() != 950*time.Millisecond {
		t.Errorf("virtual clock at %v, want 950ms", s.Elapsed())
	}

	// Inputs are built from the task input and upstream results by the
	// mappings; a field absent at run time (shipping_address) is left out.
	ship, _ := json.Marshal(inputs["shipping.book"])
	if want := `{"charge":"ch1","order_id":"ord_42","reservation":"r1","service":"standard"}`; string(ship) != want {
		t.Errorf("ship input = %s, want %s", ship, want)
	}
	charge, _ := json.Marshal(inputs["payments.charge"])
	if want := `{"amount_cents":1200,"currency":"EUR","order_id":"ord_42","risk_score":0.1,"token":"tok"}`; string(charge) != want {
		t.Errorf("charge input = %s, want %s", charge, want)
	}
}

// Latency separates a dispatch from the app's start, as a network would.
func TestLatency(t *testing.T) {
	p := plan(t, "name: l\nversion: 1.0.0\nsteps: [{name: a, capability: x.a}]\n")
	s, _ := run(t, p, sim.Config{Latency: 5 * time.Millisecond, Handlers: map[string]sim.Handler{"x.a": ok(nil, time.Second)}}, nil)
	want := []string{"0s task pending→in_progress", "0s a pending→enqueued #1", "5ms a enqueued→in_progress", "1.005s a in_progress→complete", "1.005s task in_progress→complete"}
	if got := lines(s.Log()); !reflect.DeepEqual(got, want) {
		t.Errorf("log %q, want %q", got, want)
	}
}

// A failure that is not retried blocks the task: the steps after it are
// never dispatched, while the independent branch still finishes.
func TestPermanentFailureBlocksTask(t *testing.T) {
	hs := orderHandlers(map[string]any{})
	hs["payments.charge"] = failing(99, workflow.Failure{Code: "card_declined"}, 200*time.Millisecond, nil)
	s, task := run(t, example(t, "order-fulfilment"), sim.Config{Handlers: hs}, orderInput())

	rep, err := s.Report(task)
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != workflow.TaskError {
		t.Errorf("task %v, want error", rep.State)
	}
	byName := map[string]sim.StepReport{}
	for _, st := range rep.Steps {
		byName[st.Name] = st
	}
	if st := byName["charge"]; st.State != workflow.StepError || st.Attempts != 1 {
		t.Errorf("charge %v after %d attempts, want error after 1 (card_declined is not retryable)", st.State, st.Attempts)
	}
	if st := byName["reserve"]; st.State != workflow.StepComplete {
		t.Errorf("reserve %v, want complete: it does not depend on charge", st.State)
	}
	for _, name := range []string{"ship", "notify"} {
		if st := byName[name]; st.State != workflow.StepPending || st.Attempts != 0 {
			t.Errorf("%s %v after %d attempts, want never dispatched", name, st.State, st.Attempts)
		}
	}
	for _, r := range s.Log() {
		if r.Step == "ship" || r.Step == "notify" {
			t.Errorf("downstream step dispatched: %+v", r)
		}
	}
	got := lines(s.Log())
	wantTail := []string{"300ms charge in_progress→error card_declined", "300ms task in_progress→error", "400ms reserve in_progress→complete"}
	if tail := got[len(got)-3:]; !reflect.DeepEqual(tail, wantTail) {
		t.Errorf("log ends %q, want %q", tail, wantTail)
	}
	for _, r := range s.Log() {
		if r.Code == "card_declined" && r.Retry {
			t.Errorf("a permanent failure was scheduled for retry: %+v", r)
		}
	}
}

const retryManifest = `
name: retry
version: 1.0.0
steps:
  - name: a
    capability: x.a
    error_schema:
      type: object
      properties: {code: {enum: [busy, broken]}}
    retry:
      max_attempts: 4
      retryable: [busy, timeout]
      backoff: {initial: 1s, max: 3s, multiplier: 2, jitter: %s}
`

// Retries wait their backoff on the virtual clock: 1s, 2s, then capped at 3s.
func TestRetriesFollowBackoff(t *testing.T) {
	p := plan(t, fmt.Sprintf(retryManifest, "0"))
	h := failing(3, workflow.Failure{Code: "busy"}, 100*time.Millisecond, map[string]any{"ok": true})
	s, task := run(t, p, sim.Config{Handlers: map[string]sim.Handler{"x.a": h}}, nil)
	want := []string{
		"0s task pending→in_progress",
		"0s a pending→enqueued #1",
		"0s a enqueued→in_progress",
		"100ms a in_progress→error busy",
		"1.1s a error→enqueued #2",
		"1.1s a enqueued→in_progress",
		"1.2s a in_progress→error busy",
		"3.2s a error→enqueued #3",
		"3.2s a enqueued→in_progress",
		"3.3s a in_progress→error busy",
		"6.3s a error→enqueued #4",
		"6.3s a enqueued→in_progress",
		"6.4s a in_progress→complete",
		"6.4s task in_progress→complete",
	}
	if got := lines(s.Log()); !reflect.DeepEqual(got, want) {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range s.Log() {
		if r.To == "error" && (!r.Retry || r.RetryAt <= r.At) {
			t.Errorf("failure without a later retry time: %+v", r)
		}
	}
	if rep, _ := s.Report(task); rep.Steps[0].Attempts != 4 {
		t.Errorf("%d attempts, want 4", rep.Steps[0].Attempts)
	}
}

// With jitter, each retry lands within ±jitter of the nominal delay, and
// exactly when the failure record said it would.
func TestRetriesJitterWithinBounds(t *testing.T) {
	p := plan(t, fmt.Sprintf(retryManifest, "0.5"))
	h := failing(3, workflow.Failure{Code: "busy"}, 100*time.Millisecond, nil)
	nominal := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
	for seed := range uint64(50) {
		s, _ := run(t, p, sim.Config{Seed: seed, Handlers: map[string]sim.Handler{"x.a": h}}, nil)
		var failedAt, retryAt []time.Duration
		var dispatchedAt []time.Duration
		for _, r := range s.Log() {
			switch {
			case r.To == "error" && r.Step != "":
				failedAt, retryAt = append(failedAt, r.At), append(retryAt, r.RetryAt)
			case r.From == "error" && r.To == "enqueued":
				dispatchedAt = append(dispatchedAt, r.At)
			}
		}
		if len(dispatchedAt) != 3 {
			t.Fatalf("seed %d: %d retries, want 3", seed, len(dispatchedAt))
		}
		for i, d := range nominal {
			wait := dispatchedAt[i] - failedAt[i]
			// The engine keeps retry times in whole milliseconds.
			lo, hi := d/2-time.Millisecond, min(d*3/2, 3*time.Second)
			if wait < lo || wait > hi {
				t.Errorf("seed %d: retry %d after %v, want within [%v, %v]", seed, i+1, wait, lo, hi)
			}
			if dispatchedAt[i] != retryAt[i] {
				t.Errorf("seed %d: retry %d dispatched at %v, announced for %v", seed, i+1, dispatchedAt[i], retryAt[i])
			}
		}
	}
}

// An app's retry_after is honoured even above the backoff's cap.
func TestRetryAfterHonoured(t *testing.T) {
	p := plan(t, fmt.Sprintf(retryManifest, "0"))
	h := failing(1, workflow.Failure{Code: "busy", RetryAfter: time.Minute}, 0, nil)
	s, _ := run(t, p, sim.Config{Handlers: map[string]sim.Handler{"x.a": h}}, nil)
	for _, r := range s.Log() {
		if r.To == "error" && r.Step == "a" && r.RetryAt != time.Minute {
			t.Errorf("retry at %v, want 1m (retry_after)", r.RetryAt)
		}
	}
}

// When the attempts run out, the step fails for good and blocks the task.
func TestAttemptsExhausted(t *testing.T) {
	p := plan(t, fmt.Sprintf(retryManifest, "0"))
	h := failing(99, workflow.Failure{Code: "busy"}, 10*time.Millisecond, nil)
	s, task := run(t, p, sim.Config{Handlers: map[string]sim.Handler{"x.a": h}}, nil)
	rep, _ := s.Report(task)
	if rep.State != workflow.TaskError || rep.Steps[0].Attempts != 4 {
		t.Errorf("task %v after %d attempts, want error after 4", rep.State, rep.Steps[0].Attempts)
	}
	last := s.Log()[len(s.Log())-2]
	if last.Retry || last.Code != "busy" {
		t.Errorf("last failure %+v, want busy and not retried", last)
	}
}

// The failures the simulator assigns itself, each with whether it is
// retried under a policy that retries busy and timeout.
func TestAssignedFailures(t *testing.T) {
	tests := []struct {
		name     string
		handler  sim.Handler
		input    any
		manifest string
		code     string
		retried  bool
		detail   string
	}{
		{
			name:    "an attempt longer than the timeout times out",
			handler: ok(nil, time.Hour),
			code:    workflow.CodeTimeout,
			retried: true,
		},
		{
			name:     "a result that breaks the result contract",
			manifest: "    result_schema: {type: object, required: [id]}\n",
			handler:  ok(map[string]any{"other": 1}, time.Second),
			code:     workflow.CodeContractViolation,
			detail:   "/id",
		},
		{
			name:    "an error code outside the error contract",
			handler: failing(1, workflow.Failure{Code: "weird", Retryable: true}, time.Second, nil),
			code:    workflow.CodeContractViolation,
			detail:  `"weird"`,
		},
		{
			name:    "a result that is not JSON",
			handler: ok(func() {}, time.Second),
			code:    workflow.CodeContractViolation,
			detail:  "not JSON",
		},
		{
			name:     "an input mapping that reads through a string",
			manifest: "    input: {x: $.input.a.b}\n",
			input:    map[string]any{"a": "text"},
			handler:  ok(nil, time.Second),
			code:     workflow.CodeContractViolation,
			detail:   "input mapping",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf(retryManifest, "0") + "    timeout: 10s\n" + tt.manifest
			s, _ := run(t, plan(t, src), sim.Config{Handlers: map[string]sim.Handler{"x.a": tt.handler}}, tt.input)
			var first *sim.Record
			for i, r := range s.Log() {
				if r.To == "error" && r.Step == "a" {
					first = &s.Log()[i]
					break
				}
			}
			if first == nil {
				t.Fatalf("no failure in log %q", lines(s.Log()))
			}
			if first.Code != tt.code || first.Retry != tt.retried || !strings.Contains(first.Detail, tt.detail) {
				t.Errorf("failure %+v, want code %s, retried %v, detail containing %q", *first, tt.code, tt.retried, tt.detail)
			}
			if tt.code == workflow.CodeTimeout && first.At != 10*time.Second {
				t.Errorf("timed out at %v, want at the 10s timeout", first.At)
			}
		})
	}
}

// A task whose input breaks the input contract is refused before it exists.
func TestInputRefused(t *testing.T) {
	s, err := sim.New(example(t, "order-fulfilment"), sim.Config{Handlers: orderHandlers(map[string]any{})})
	if err != nil {
		t.Fatal(err)
	}
	in := orderInput()
	in["order_id"] = "42"
	_, err = s.AddTask(in)
	var ce *workflow.ContractError
	if !errors.As(err, &ce) || len(ce.Violations) != 1 || ce.Violations[0].Pointer != "/order_id" {
		t.Fatalf("AddTask error = %v, want one violation at /order_id", err)
	}
	if err := s.Run(); err != nil || len(s.Log()) != 0 {
		t.Errorf("refused task left a log %q (err %v)", lines(s.Log()), err)
	}
}

// Two tasks share one coordinator and keep separate logs and results.
func TestTasksInterleave(t *testing.T) {
	s, err := sim.New(example(t, "order-fulfilment"), sim.Config{Handlers: orderHandlers(map[string]any{})})
	if err != nil {
		t.Fatal(err)
	}
	a, errA := s.AddTask(orderInput())
	b, errB := s.AddTask(orderInput())
	if err := errors.Join(errA, errB, s.Run()); err != nil {
		t.Fatal(err)
	}
	seen := map[workflow.TaskRef]int{}
	for _, r := range s.Log() {
		seen[r.Task]++
	}
	for _, task := range []workflow.TaskRef{a, b} {
		rep, _ := s.Report(task)
		if rep.State != workflow.TaskComplete || seen[task] != 17 {
			t.Errorf("task %d: %v with %d records, want complete with 17", task, rep.State, seen[task])
		}
	}
}

func TestNewNeedsEveryHandler(t *testing.T) {
	hs := orderHandlers(map[string]any{})
	delete(hs, "shipping.book")
	delete(hs, "payments.charge")
	_, err := sim.New(example(t, "order-fulfilment"), sim.Config{Handlers: hs})
	if err == nil || err.Error() != "no handler for payments.charge, shipping.book" {
		t.Errorf("New error = %v, want it to name both missing capabilities", err)
	}
	// A step handler stands in for its capability's.
	_, err = sim.New(example(t, "order-fulfilment"), sim.Config{Handlers: hs, Steps: map[string]sim.Handler{
		"charge": ok(nil, 0), "ship": ok(nil, 0),
	}})
	if err != nil {
		t.Errorf("New with step handlers: %v", err)
	}
}

// The same seed gives the same log, to the nanosecond; the seed is the
// only source of variation.
func TestDeterminism(t *testing.T) {
	p := example(t, "order-fulfilment")
	once := func(seed uint64) []sim.Record {
		hs := orderHandlers(map[string]any{})
		hs["payments.charge"] = failing(2, workflow.Failure{Code: "gateway_unavailable"}, 150*time.Millisecond, map[string]any{"charge_id": "c", "status": "captured"})
		hs["inventory.reserve"] = failing(1, workflow.Failure{Code: "warehouse_unavailable"}, 80*time.Millisecond, map[string]any{"reservation_id": "r", "expires_at": "2025-01-01T10:00:00Z"})
		s, _ := run(t, p, sim.Config{Seed: seed, Latency: time.Millisecond, Handlers: hs}, orderInput())
		return s.Log()
	}
	first := once(7)
	for range 10 {
		if again := once(7); !reflect.DeepEqual(first, again) {
			t.Fatalf("seed 7 gave two logs:\n%s\n---\n%s", strings.Join(lines(first), "\n"), strings.Join(lines(again), "\n"))
		}
	}
	if other := once(8); reflect.DeepEqual(first, other) {
		t.Error("seeds 7 and 8 gave the same log: the jitter ignores the seed")
	}
}
