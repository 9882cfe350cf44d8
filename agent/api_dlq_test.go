package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// dlqFlow's charge step has two attempts and fast retries.
const dlqFlow = `name: dlq-flow
version: 1.0.0
steps:
  - name: charge
    capability: test.charge
    timeout: 10s
    retry: {max_attempts: 2, backoff: {initial: 10ms, max: 10ms, jitter: 0}}
  - name: notify
    capability: test.notify
    depends_on: [charge]
    input: {charge: $.steps.charge.result.id}
`

// failTwice fails both attempts of a task's charge step with a retryable
// error, which makes it a dead letter; it returns the dead letter's id
// (the step.dead_lettered event's).
func failTwice(t *testing.T, ta *testAgent, p *poller, taskID string) string {
	t.Helper()
	for attempt := int32(1); attempt <= 2; attempt++ {
		a := p.next()
		if a.GetTaskId() != taskID || a.GetStep() != "charge" || a.GetAttempt() != attempt {
			t.Fatalf("assignment %+v, want charge attempt %d of %s", a, attempt, taskID)
		}
		if _, err := ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{
			TaskId: taskID, Step: "charge", Attempt: attempt, Code: "gateway_down", Message: "503 from the gateway", Retryable: true,
			DetailsJson: `{"status":503}`,
		})); err != nil {
			t.Fatal(err)
		}
	}
	waitTask(t, ta, taskID, taskerv1.TaskState_TASK_STATE_ERROR)
	evs, err := ta.state.Events(taskID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == "step.dead_lettered" {
			return e.ID()
		}
	}
	t.Fatalf("no step.dead_lettered event in %+v", evs)
	return ""
}

func listDLQ(t *testing.T, ta *testAgent, req *taskerv1.ListDeadLettersRequest) []*taskerv1.DeadLetter {
	t.Helper()
	r, err := ta.wf.ListDeadLetters(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetDeadLetters()
}

// TestDeadLetterReplay: a step whose worker always fails becomes a dead
// letter, listed and shown; replaying it gives it a new attempt, which now
// succeeds, and the task completes; replaying it again is refused.
func TestDeadLetterReplay(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: dlqFlow})); err != nil {
		t.Fatal(err)
	}
	p := newPoller(t, ta, "w1", "test.charge", "test.notify")
	start, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "dlq-flow"}))
	if err != nil {
		t.Fatal(err)
	}
	taskID := start.Msg.GetTask().GetId()
	id := failTwice(t, ta, p, taskID)

	// Listed, open, with the error and the attempts.
	open := listDLQ(t, ta, &taskerv1.ListDeadLettersRequest{Status: taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN})
	if len(open) != 1 {
		t.Fatalf("open dead letters %+v", open)
	}
	d := open[0]
	if d.GetId() != id || d.GetTaskId() != taskID || d.GetWorkflow() != "dlq-flow" || d.GetVersion() != "1.0.0" || d.GetNamespace() != "default" ||
		d.GetStep() != "charge" || d.GetCapability() != "test.charge" || d.GetAttempts() != 2 || d.GetMaxAttempts() != 2 ||
		d.GetCode() != "gateway_down" || d.GetMessage() != "503 from the gateway" || d.GetDetailsJson() != `{"status":503}` ||
		d.GetStatus() != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN || d.GetTaskState() != taskerv1.TaskState_TASK_STATE_ERROR || d.GetAt() == nil {
		t.Fatalf("dead letter %+v", d)
	}
	// The same id as the event in the cluster's event stream.
	w := watchEvents(t, ta, &taskerv1.WatchEventsRequest{Types: []string{"step.dead_lettered"}, TaskId: taskID, IncludeHistory: true}, 0)
	if len(w.events) != 1 || w.events[0].GetId() != id {
		t.Fatalf("step.dead_lettered events %+v, want id %s", w.events, id)
	}
	got, err := ta.wf.GetDeadLetter(ctx, connect.NewRequest(&taskerv1.GetDeadLetterRequest{Id: id}))
	if err != nil || got.Msg.GetDeadLetter().GetId() != id || got.Msg.GetInputJson() != `{}` {
		t.Fatalf("get: %v %+v", err, got)
	}

	// Replay: a new attempt, which now succeeds.
	rep, err := ta.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: id, Reason: "gateway fixed"}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Msg.GetDeadLetter(); r.GetStatus() != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED || r.GetClosedReason() != "replay of dead letter "+id+": gateway fixed" ||
		r.GetReplayAttempt() != 1 || rep.Msg.GetTask().GetState() != taskerv1.TaskState_TASK_STATE_IN_PROGRESS {
		t.Fatalf("replay: %+v", rep.Msg)
	}
	a := p.next()
	if a.GetStep() != "charge" || a.GetAttempt() != 1 {
		t.Fatalf("after the replay: %+v", a)
	}
	if err := p.complete(a, `{"id":"ch_1"}`); err != nil {
		t.Fatal(err)
	}
	if b := p.next(); b.GetStep() != "notify" || p.complete(b, `{}`) != nil {
		t.Fatalf("notify: %+v", b)
	}
	waitTask(t, ta, taskID, taskerv1.TaskState_TASK_STATE_COMPLETE)
	got, err = ta.wf.GetDeadLetter(ctx, connect.NewRequest(&taskerv1.GetDeadLetterRequest{Id: id}))
	if err != nil || got.Msg.GetDeadLetter().GetStatus() != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED || got.Msg.GetDeadLetter().GetTaskState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
		t.Fatalf("after the task completed: %v %+v", err, got.Msg)
	}
	if open := listDLQ(t, ta, &taskerv1.ListDeadLettersRequest{Status: taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN}); len(open) != 0 {
		t.Fatalf("open dead letters after the replay: %+v", open)
	}

	// Replaying it again is refused, naming the id and its status, and
	// changes nothing.
	before, _ := ta.state.Events(taskID, 0)
	_, err = ta.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: id}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "dead letter "+id+" is replayed") {
		t.Fatalf("second replay: %v", err)
	}
	if after, _ := ta.state.Events(taskID, 0); len(after) != len(before) {
		t.Fatal("a refused replay changed the task")
	}
}

// TestDeadLetterRefusals: a cancelled task's dead letter is not replayed;
// bad input is refused with the field and changes nothing; the calls work
// through a client agent, which forwards them to the leader.
func TestDeadLetterRefusals(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: dlqFlow})); err != nil {
		t.Fatal(err)
	}
	p := newPoller(t, ta, "w1", "test.charge", "test.notify")
	var ids, tasks []string
	for range 2 {
		start, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "dlq-flow"}))
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, start.Msg.GetTask().GetId())
		ids = append(ids, failTwice(t, ta, p, tasks[len(tasks)-1]))
	}
	if _, err := ta.wf.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: tasks[0], Reason: "customer called"})); err != nil {
		t.Fatal(err)
	}
	_, err := ta.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: ids[0]}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "dead letter "+ids[0]+" is cancelled: task "+tasks[0]+" was cancelled") {
		t.Fatalf("replay of a cancelled task's dead letter: %v", err)
	}

	for name, c := range map[string]struct {
		call func() error
		code connect.Code
		msg  string
	}{
		"unknown id": {func() error {
			_, err := ta.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: "99999-1"}))
			return err
		}, connect.CodeNotFound, "dead letter 99999-1"},
		"malformed id": {func() error {
			_, err := ta.wf.GetDeadLetter(ctx, connect.NewRequest(&taskerv1.GetDeadLetterRequest{Id: "nope"}))
			return err
		}, connect.CodeInvalidArgument, `id: "nope" is not a dead letter id`},
		"missing id": {func() error {
			_, err := ta.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{}))
			return err
		}, connect.CodeInvalidArgument, "id: required"},
		"page size": {func() error {
			_, err := ta.wf.ListDeadLetters(ctx, connect.NewRequest(&taskerv1.ListDeadLettersRequest{PageSize: 5000}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		"page token": {func() error {
			_, err := ta.wf.ListDeadLetters(ctx, connect.NewRequest(&taskerv1.ListDeadLettersRequest{PageToken: "x"}))
			return err
		}, connect.CodeInvalidArgument, `page_token: "x" is not a token`},
		"status": {func() error {
			_, err := ta.wf.ListDeadLetters(ctx, connect.NewRequest(&taskerv1.ListDeadLettersRequest{Status: 42}))
			return err
		}, connect.CodeInvalidArgument, "status"},
	} {
		before, _ := ta.state.Events(tasks[1], 0)
		err := c.call()
		if connect.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", name, err, c.code, c.msg)
		}
		if after, _ := ta.state.Events(tasks[1], 0); len(after) != len(before) {
			t.Errorf("%s: a refused call changed a task", name)
		}
	}

	// Through a client agent: pages of one, then the replay.
	cl := startClientAgent(t, "client", ta)
	var seen []string
	req := &taskerv1.ListDeadLettersRequest{PageSize: 1}
	for {
		r, err := cl.wf.ListDeadLetters(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range r.Msg.GetDeadLetters() {
			seen = append(seen, d.GetId()+"/"+strings.TrimPrefix(d.GetStatus().String(), "DEAD_LETTER_STATUS_"))
		}
		if req.PageToken = r.Msg.GetNextPageToken(); req.PageToken == "" || len(seen) > 2 {
			break
		}
	}
	if want := []string{ids[1] + "/OPEN", ids[0] + "/CANCELLED"}; strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Fatalf("listed through the client agent %v, want %v (newest first)", seen, want)
	}
	if _, err := cl.wf.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: ids[1]})); err != nil {
		t.Fatal(err)
	}
	if a := p.next(); a.GetTaskId() != tasks[1] || a.GetStep() != "charge" || a.GetAttempt() != 1 {
		t.Fatalf("after the replay through the client agent: %+v", a)
	}
	waitFor(t, 10*time.Second, "the dead letter replayed", func() bool {
		d, err := ta.state.DeadLetter(ids[1])
		return err == nil && d.Status.String() == "replayed"
	})
	// Cancelling the task now leaves the replayed dead letter replayed (and
	// nothing in flight for the agents' shutdown to wait for).
	if _, err := cl.wf.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: tasks[1]})); err != nil {
		t.Fatal(err)
	}
	if d, err := ta.state.DeadLetter(ids[1]); err != nil || d.Status.String() != "replayed" {
		t.Fatalf("after cancelling a replayed dead letter's task: %+v, %v", d, err)
	}
}
