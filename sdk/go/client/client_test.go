package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

const (
	pending    = taskerv1.TaskState_TASK_STATE_PENDING
	inProgress = taskerv1.TaskState_TASK_STATE_IN_PROGRESS
	complete   = taskerv1.TaskState_TASK_STATE_COMPLETE
	failed     = taskerv1.TaskState_TASK_STATE_ERROR
)

func newClient(t *testing.T) (*client.Client, *fakeWorkflows) {
	f := newFakeWorkflows()
	srv := f.start(t)
	c := client.New(client.Options{Addr: srv.URL})
	client.SetDelays(c, 5*time.Millisecond, 50*time.Millisecond)
	return c, f
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartTaskPassesOptionsAndIdempotency(t *testing.T) {
	c, f := newClient(t)
	ctx := ctxFor(t)
	type order struct {
		ID     string `json:"id"`
		Amount int64  `json:"amount"`
		Note   string `json:"note"`
	}
	in := order{ID: "42", Amount: 1999, Note: "<gift>"}
	opts := []client.StartOption{client.Namespace("shop"), client.Version("1.0.0"), client.IdempotencyKey("order-42")}

	first, created, err := c.StartTask(ctx, "order-fulfilment", in, opts...)
	if err != nil || !created {
		t.Fatalf("StartTask = %v, created %v, %v", first, created, err)
	}
	again, created, err := c.StartTask(ctx, "order-fulfilment", in, opts...)
	if err != nil || created || again.GetId() != first.GetId() {
		t.Fatalf("second StartTask = %s, created %v, %v; want the same task %s, not created", again.GetId(), created, err, first.GetId())
	}
	f.with(func() {
		r := f.starts[0]
		if r.GetNamespace() != "shop" || r.GetWorkflow() != "order-fulfilment" || r.GetVersion() != "1.0.0" ||
			r.GetIdempotencyKey() != "order-42" || r.GetInputJson() != `{"id":"42","amount":1999,"note":"<gift>"}` {
			t.Errorf("StartTask request = %v", r)
		}
		if len(f.tasks) != 1 {
			t.Errorf("%d tasks started, want 1", len(f.tasks))
		}
	})
}

func TestStartTaskInputEncoding(t *testing.T) {
	c, f := newClient(t)
	ctx := ctxFor(t)
	for _, in := range []any{nil, json.RawMessage(`{"n": 12345678901234567890}`), map[string]int{"a": 1}} {
		if _, _, err := c.StartTask(ctx, "wf", in); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.StartTask(ctx, "wf", json.RawMessage(`{`)); err == nil {
		t.Error("invalid raw JSON input was sent")
	}
	f.with(func() {
		var got []string
		for _, s := range f.starts {
			got = append(got, s.GetInputJson())
		}
		want := []string{`{}`, `{"n": 12345678901234567890}`, `{"a":1}`}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("inputs sent = %q, want %q", got, want)
		}
	})
}

func TestStartTaskContractError(t *testing.T) {
	c, f := newClient(t)
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("input breaks the contract"))
	d, err := connect.NewErrorDetail(&taskerv1.ContractFailure{
		Contract: "input",
		Violations: []*taskerv1.Violation{
			{Pointer: "/items/0/quantity", Message: "minimum: got 0, want 1"},
			{Pointer: "", Message: "missing property customer"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(d)
	f.startErr = cerr

	_, _, err = c.StartTask(ctxFor(t), "order-fulfilment", map[string]any{})
	var ce *client.ContractError
	if !errors.As(err, &ce) {
		t.Fatalf("StartTask error %v is not a *ContractError", err)
	}
	if ce.Contract != "input" || len(ce.Violations) != 2 || ce.Violations[0] != (client.Violation{Pointer: "/items/0/quantity", Message: "minimum: got 0, want 1"}) {
		t.Errorf("ContractError = %+v", ce)
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("code = %v, want InvalidArgument kept", connect.CodeOf(err))
	}
	if !strings.Contains(err.Error(), "/items/0/quantity: minimum: got 0, want 1") {
		t.Errorf("message %q does not list the violation", err)
	}
}

func TestApplyWorkflow(t *testing.T) {
	c, f := newClient(t)
	ctx := ctxFor(t)
	res, err := c.ApplyWorkflow(ctx, []byte("name: order-fulfilment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.GetWorkflow().GetName() != "order-fulfilment" || !res.GetCreated() {
		t.Errorf("ApplyWorkflow = %v", res)
	}
	f.with(func() {
		if f.applied[0] != "name: order-fulfilment\n" {
			t.Errorf("manifest sent = %q", f.applied[0])
		}
	})
}

func TestApplyWorkflowValidationError(t *testing.T) {
	withDetail := connect.NewError(connect.CodeInvalidArgument, errors.New("2 problems"))
	d, err := connect.NewErrorDetail(&taskerv1.ValidationFailure{Problems: []*taskerv1.Problem{
		{Path: "steps[1].depends_on[0]", Line: 12, Message: `unknown step "reserv"; did you mean "reserve"?`},
		{Path: "steps", Line: 3, Message: "cycle: a -> b -> a"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	withDetail.AddDetail(d)
	cases := []struct {
		name string
		err  error
		want []client.Problem
	}{
		{"detail", withDetail, []client.Problem{
			{Path: "steps[1].depends_on[0]", Line: 12, Message: `unknown step "reserv"; did you mean "reserve"?`},
			{Path: "steps", Line: 3, Message: "cycle: a -> b -> a"},
		}},
		{"message only", connect.NewError(connect.CodeInvalidArgument, errors.New("manifest is empty")),
			[]client.Problem{{Message: "manifest is empty"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, f := newClient(t)
			f.applyErr = tc.err
			_, err := c.ApplyWorkflow(ctxFor(t), []byte("x"))
			var ve *client.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			if fmt.Sprint(ve.Problems) != fmt.Sprint(tc.want) {
				t.Errorf("problems = %v\nwant       %v", ve.Problems, tc.want)
			}
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("code = %v", connect.CodeOf(err))
			}
		})
	}
	if got := (&client.ValidationError{Problems: cases[0].want}).Error(); got != "apply workflow: invalid manifest: 2 problems:\n"+
		"\tline 12: steps[1].depends_on[0]: unknown step \"reserv\"; did you mean \"reserve\"?\n\tline 3: steps: cycle: a -> b -> a" {
		t.Errorf("Error() = %q", got)
	}
}

func TestApplyWorkflowOtherErrorsKeepTheirCode(t *testing.T) {
	c, f := newClient(t)
	f.applyErr = connect.NewError(connect.CodeFailedPrecondition, errors.New("version 1.0.0 exists with other content"))
	_, err := c.ApplyWorkflow(ctxFor(t), []byte("x"))
	var ve *client.ValidationError
	if errors.As(err, &ve) || connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("ApplyWorkflow = %v, want a FailedPrecondition error that is not a ValidationError", err)
	}
}

func TestWatchDeliversEventsUntilTerminal(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{
		{Task: task("t1", inProgress)},
		event("t1", 4, "step.completed", "reserve", inProgress),
		event("t1", 5, "task.completed", "", complete),
		event("t1", 6, "never.sent", "", complete), // after the end: not read
	}, hang: true}}
	var got []string
	err := c.Watch(ctxFor(t), "t1", func(ev *taskerv1.TaskEvent, tk *taskerv1.Task) error {
		if ev == nil {
			got = append(got, "start "+tk.GetState().String())
			return nil
		}
		got = append(got, fmt.Sprintf("%d %s %s", ev.GetSequence(), ev.GetType(), tk.GetState()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"start TASK_STATE_IN_PROGRESS", "4 step.completed TASK_STATE_IN_PROGRESS", "5 task.completed TASK_STATE_COMPLETE"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("watched %q\nwant    %q", got, want)
	}
}

func TestWatchStopsWhenFnFails(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", inProgress)}}, hang: true}}
	stop := errors.New("seen enough")
	if err := c.Watch(ctxFor(t), "t1", func(*taskerv1.TaskEvent, *taskerv1.Task) error { return stop }); err != stop {
		t.Errorf("Watch = %v, want fn's error as it is", err)
	}
}

func TestWatchReportsEarlyEnd(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", inProgress)}}}}
	err := c.Watch(ctxFor(t), "t1", func(*taskerv1.TaskEvent, *taskerv1.Task) error { return nil })
	if !errors.Is(err, client.ErrStreamEnded) {
		t.Errorf("Watch = %v, want ErrStreamEnded", err)
	}
}

func TestWaitReturnsOnTerminalState(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{
		{Task: task("t1", pending)},
		event("t1", 2, "step.dispatched", "reserve", inProgress),
		event("t1", 3, "task.completed", "", complete),
	}, hang: true}}
	got, err := c.Wait(ctxFor(t), "t1")
	if err != nil || got.GetState() != complete {
		t.Errorf("Wait = %v, %v; want the complete task", got, err)
	}
}

func TestWaitReturnsBlockedTask(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{
		{Task: task("t1", inProgress)},
		event("t1", 7, "task.failed", "charge", failed),
	}, hang: true}}
	got, err := c.Wait(ctxFor(t), "t1")
	if err != nil || got.GetState() != failed {
		t.Errorf("Wait = %v, %v; want the task in error", got, err)
	}
}

func TestWaitRewatchesAfterBreak(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{
		{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", inProgress)}}, end: connect.NewError(connect.CodeUnavailable, errors.New("leader lost"))},
		{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", inProgress)}}}, // ends early
		{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", complete)}}},
	}
	got, err := c.Wait(ctxFor(t), "t1")
	if err != nil || got.GetState() != complete {
		t.Fatalf("Wait = %v, %v; want the complete task", got, err)
	}
	f.with(func() {
		if f.watches != 3 {
			t.Errorf("%d watches, want 3", f.watches)
		}
	})
}

func TestWaitStopsOnPermanentErrorAndContext(t *testing.T) {
	c, f := newClient(t)
	f.scripts = []watchScript{{end: connect.NewError(connect.CodeNotFound, errors.New("no task t9"))}}
	if _, err := c.Wait(ctxFor(t), "t9"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("Wait = %v, want NotFound", err)
	}

	f.with(func() {
		f.watches = 0
		f.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{{Task: task("t1", inProgress)}}, hang: true}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Wait(ctx, "t1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want the context's deadline", err)
	}
}

func TestTaskCalls(t *testing.T) {
	c, f := newClient(t)
	ctx := ctxFor(t)
	started, _, err := c.StartTask(ctx, "wf", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetTask(ctx, started.GetId()); err != nil || got.GetId() != started.GetId() {
		t.Errorf("GetTask = %v, %v", got, err)
	}
	if _, err := c.GetTask(ctx, "nope"); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "get task nope") {
		t.Errorf("GetTask(nope) = %v, want a NotFound error naming the task", err)
	}
	if got, err := c.CancelTask(ctx, "t1", "customer asked"); err != nil || got.GetState() != taskerv1.TaskState_TASK_STATE_CANCELLED {
		t.Errorf("CancelTask = %v, %v", got, err)
	}
	if _, err := c.RetryStep(ctx, "t1", "charge"); err != nil {
		t.Error(err)
	}
	if _, err := c.ResolveStep(ctx, "t1", "charge", map[string]string{"id": "manual-1"}, "charged by phone"); err != nil {
		t.Error(err)
	}
	f.with(func() {
		if r := f.cancels[0]; r.GetId() != "t1" || r.GetReason() != "customer asked" {
			t.Errorf("CancelTask request = %v", r)
		}
		if r := f.retries[0]; r.GetTaskId() != "t1" || r.GetStep() != "charge" {
			t.Errorf("RetryStep request = %v", r)
		}
		if r := f.resolves[0]; r.GetTaskId() != "t1" || r.GetStep() != "charge" || r.GetResultJson() != `{"id":"manual-1"}` || r.GetReason() != "charged by phone" {
			t.Errorf("ResolveStep request = %v", r)
		}
	})
}

func TestTerminal(t *testing.T) {
	for s, want := range map[taskerv1.TaskState]bool{
		taskerv1.TaskState_TASK_STATE_UNSPECIFIED: false,
		pending:                                 false,
		inProgress:                              false,
		complete:                                true,
		failed:                                  false,
		taskerv1.TaskState_TASK_STATE_CANCELLED: true,
		taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY: true,
	} {
		if got := client.Terminal(s); got != want {
			t.Errorf("Terminal(%v) = %v, want %v", s, got, want)
		}
	}
}
