package consensus

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// harness applies commands to an FSM the way Raft would, one log entry each.
type harness struct {
	t   *testing.T
	fsm *FSM
	now time.Time
	fx  []*Effects
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, now: t0}
	h.fsm = NewFSM(NewState(workflow.Limits{}), nil, func(fx *Effects) { h.fx = append(h.fx, fx) })
	return h
}

func (h *harness) do(c *fsmv1.Command) *Result {
	h.t.Helper()
	h.now = h.now.Add(10 * time.Millisecond)
	c.Now = timestamppb.New(h.now)
	return h.fsm.ApplyCommand(c)
}

func (h *harness) ok(c *fsmv1.Command) *Result {
	h.t.Helper()
	r := h.do(c)
	if r.Err != nil {
		h.t.Fatalf("%v: %v", c.Kind, r.Err)
	}
	return r
}

func (h *harness) lastEffects() *Effects { return h.fx[len(h.fx)-1] }

func manifest(t *testing.T) string {
	b, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const orderInput = `{"order_id":"ord_1","customer":{"id":"c1","email":"a@example.com"},"items":[{"sku":"sku-1","quantity":2}],"payment":{"token":"tok","amount_cents":123456789012345678,"currency":"EUR"}}`

func put(m string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_PutWorkflow{PutWorkflow: &fsmv1.PutWorkflow{Manifest: m}}}
}

func create(id, key, input string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{
		TaskId: id, Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", InputJson: input, IdempotencyKey: key,
	}}}
}

func dispatch(id, step string, attempt int32) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{
		TaskId: id, Step: step, Attempt: attempt, Agent: "a1", Worker: "w1", Deadline: timestamppb.New(t0.Add(time.Hour)),
	}}}
}

func complete(id, step string, attempt int32, result string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_CompleteStep{CompleteStep: &fsmv1.CompleteStep{TaskId: id, Step: step, Attempt: attempt, ResultJson: result}}}
}

func failCmd(id, step string, attempt int32, code string, retryable bool) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{TaskId: id, Step: step, Attempt: attempt, Code: code, Message: "boom", Retryable: retryable, Rand: 0.5}}}
}

var results = map[string]string{
	"validate": `{"valid":true,"risk_score":0.1}`,
	"reserve":  `{"reservation_id":"r1","expires_at":"2026-05-01T11:00:00Z"}`,
	"charge":   `{"charge_id":"ch_1","status":"captured"}`,
	"ship":     `{"tracking_number":"TN1","carrier":"DHL"}`,
	"notify":   `{}`,
}

// runToCompletion drives a task through every step in dependency order.
func (h *harness) runToCompletion(id string) {
	h.t.Helper()
	for _, step := range []string{"validate", "reserve", "charge", "ship", "notify"} {
		h.ok(dispatch(id, step, 1))
		h.ok(complete(id, step, 1, results[step]))
	}
}

func TestFSMTaskLifecycle(t *testing.T) {
	h := newHarness(t)
	if r := h.ok(put(manifest(t))); !r.Created {
		t.Fatal("first apply not created")
	}
	if r := h.ok(put(manifest(t))); r.Created {
		t.Fatal("re-applying the same version created it again")
	}
	changed := strings.Replace(manifest(t), "Reserve stock and charge", "Charge and reserve", 1)
	if r := h.do(put(changed)); !errors.Is(r.Err, ErrVersionExists) {
		t.Fatalf("same version, other content: %v, want ErrVersionExists", r.Err)
	}
	r := h.ok(create("t1", "order-1", orderInput))
	if !r.Created || r.TaskID != "t1" {
		t.Fatalf("create: %+v", r)
	}
	if got := h.lastEffects().Ready; len(got) != 1 || got[0] != (StepRef{"t1", 0, "validate"}) {
		t.Fatalf("ready after create = %v, want validate", got)
	}
	h.runToCompletion("t1")
	v, err := h.fsm.State().Task("t1")
	if err != nil {
		t.Fatal(err)
	}
	if v.State != workflow.TaskComplete || v.EndedAt.IsZero() {
		t.Fatalf("task %s, ended %v", v.State, v.EndedAt)
	}
	for _, st := range v.Steps {
		if st.State != workflow.StepComplete || st.Attempts != 1 || st.ResultJSON != results[st.Name] {
			t.Errorf("step %s: %s attempts %d result %s", st.Name, st.State, st.Attempts, st.ResultJSON)
		}
	}
	evs, _ := h.fsm.State().Events("t1", 0)
	if evs[0].Type != EventTaskCreated || evs[len(evs)-1].Type != EventTaskCompleted {
		t.Fatalf("history from %s to %s", evs[0].Type, evs[len(evs)-1].Type)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: history must be gap-free", i, e.Seq)
		}
	}
	// The same idempotency key never creates a second task.
	if r := h.ok(create("t2", "order-1", orderInput)); r.Created || r.TaskID != "t1" {
		t.Fatalf("second create with the same key: %+v", r)
	}
	if _, err := h.fsm.State().Task("t2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a task t2 exists: %v", err)
	}
	// Nothing can happen to an ended task.
	if r := h.do(dispatch("t1", "notify", 2)); !errors.Is(r.Err, ErrTaskEnded) {
		t.Fatalf("dispatch on an ended task: %v", r.Err)
	}
}

func TestFSMStepInputsComeFromUpstream(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	for _, step := range []string{"validate", "reserve", "charge"} {
		h.ok(dispatch("t1", step, 1))
		h.ok(complete("t1", step, 1, results[step]))
	}
	h.ok(dispatch("t1", "ship", 1))
	a, err := h.fsm.State().Assignment(StepRef{TaskID: "t1", Step: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"charge":"ch_1","order_id":"ord_1","reservation":"r1","service":"standard"}`
	if a.InputJSON != want || a.Attempt != 1 || a.IdempotencyKey != "t1/ship" || a.Capability != "shipping.book" {
		t.Fatalf("assignment %+v\nwant input %s", a, want)
	}
	if r := h.do(dispatch("t1", "reserve", 1)); !errors.Is(r.Err, ErrStaleAttempt) {
		t.Fatalf("dispatching a completed step again: %v", r.Err)
	}
}

func TestFSMRefusesBadCommandsAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	tests := []struct {
		name string
		cmd  *fsmv1.Command
		want error
	}{
		{"invalid manifest", put("name: x\nversion: 1\n"), ErrInvalid},
		{"unknown workflow", &fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{TaskId: "t9", Workflow: "nope", Version: "1.0.0"}}}, ErrNotFound},
		{"input violating input_schema", create("t9", "", `{"order_id":"bad"}`), ErrInvalid},
		{"input that is not JSON", create("t9", "", `{`), ErrInvalid},
		{"duplicate task id, other input", create("t1", "", `{"order_id":"ord_other"}`), ErrInvalid},
		{"unknown task", dispatch("nope", "validate", 1), ErrNotFound},
		{"unknown step", dispatch("t1", "nope", 1), ErrNotFound},
		{"dispatch out of turn", dispatch("t1", "validate", 3), ErrStaleAttempt},
		{"result for a stale attempt", complete("t1", "validate", 2, `{"valid":true}`), ErrStaleAttempt},
		{"result violating result_schema", complete("t1", "validate", 1, `{"valid":"yes"}`), ErrInvalid},
		{"result that is not JSON", complete("t1", "validate", 1, `nope`), ErrInvalid},
		{"failure for a stale attempt", failCmd("t1", "validate", 7, "x", true), ErrStaleAttempt},
		{"resolve with a bad result", &fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{TaskId: "t1", Step: "reserve", ResultJson: `{}`}}}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := h.fsm.State().Task("t1")
			vb, tb := h.fsm.State().Counts()
			r := h.do(tt.cmd)
			if !errors.Is(r.Err, tt.want) {
				t.Fatalf("err = %v, want %v", r.Err, tt.want)
			}
			after, _ := h.fsm.State().Task("t1")
			va, ta := h.fsm.State().Counts()
			if !reflect.DeepEqual(before, after) || va != vb || ta != tb {
				t.Fatalf("a refused command changed the state")
			}
		})
	}
	// Illegal transitions from the workflow rules are refused too.
	r := h.do(&fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: "t1", Step: "validate"}}})
	var te *workflow.TransitionError
	if !errors.As(r.Err, &te) {
		t.Fatalf("retrying an in-flight step: %v, want a TransitionError", r.Err)
	}
}

func TestFSMRetriesAndDeadLetters(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	h.ok(complete("t1", "validate", 1, results["validate"]))
	// charge: gateway_unavailable is retryable by policy (5 attempts).
	h.ok(dispatch("t1", "charge", 1))
	r := h.ok(failCmd("t1", "charge", 1, "gateway_unavailable", false))
	if !r.Retry || !r.RetryAt.After(h.now) {
		t.Fatalf("charge not retried: %+v", r)
	}
	if fx := h.lastEffects(); len(fx.Retries) != 1 || !fx.Retries[0].Deadline.Equal(r.RetryAt) {
		t.Fatalf("retry timer effect %+v", fx.Retries)
	}
	// card_declined is not in the retryable list: dead letter, task error.
	h.now = r.RetryAt
	h.ok(dispatch("t1", "charge", 2))
	r = h.ok(failCmd("t1", "charge", 2, "card_declined", true))
	if r.Retry {
		t.Fatal("card_declined was retried")
	}
	v, _ := h.fsm.State().Task("t1")
	if v.State != workflow.TaskError || v.Steps[2].LastError.Code != "card_declined" || !v.Steps[2].Blocked {
		t.Fatalf("task %s, charge %+v", v.State, v.Steps[2])
	}
	types := map[string]bool{}
	for _, e := range h.lastEffects().Events {
		types[e.Type] = true
	}
	if !types[EventStepDeadLettered] || !types[EventTaskFailed] {
		t.Fatalf("events %v lack a dead letter and task.failed", types)
	}
	// An operator resolves charge by hand; the task goes on and ends resolved_manually.
	h.ok(&fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{TaskId: "t1", Step: "charge", ResultJson: results["charge"], Reason: "charged by phone"}}})
	for _, step := range []string{"reserve", "ship", "notify"} {
		h.ok(dispatch("t1", step, 1))
		h.ok(complete("t1", step, 1, results[step]))
	}
	v, _ = h.fsm.State().Task("t1")
	if v.State != workflow.TaskResolvedManually {
		t.Fatalf("task %s, want resolved_manually", v.State)
	}
}

func TestFSMCancelReleasesInFlight(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	h.ok(&fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: "t1", Reason: "customer changed their mind"}}})
	fx := h.lastEffects()
	if len(fx.Released) != 1 || fx.Released[0].StepRef != (StepRef{"t1", 0, "validate"}) {
		t.Fatalf("released %v, want validate", fx.Released)
	}
	last := fx.Events[len(fx.Events)-1]
	if last.Type != EventTaskCancelled || last.Message != "customer changed their mind" {
		t.Fatalf("last event %+v", last)
	}
	// Cancelling again is acknowledged and changes nothing: a retried
	// CancelTask must not be told it failed.
	n := len(h.fx)
	if r := h.do(&fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: "t1"}}}); r.Err != nil || len(h.fx) != n {
		t.Fatalf("cancelling twice: %v, %d new effects; want nil and none", r.Err, len(h.fx)-n)
	}
}

// TestFSMSnapshotRoundTrip: a state restored from a snapshot reads the same
// and goes on the same: nothing is lost across a restart.
func TestFSMSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("done", "k-done", orderInput))
	h.runToCompletion("done")
	h.ok(create("mid", "k-mid", orderInput))
	h.ok(dispatch("mid", "validate", 1))
	h.ok(complete("mid", "validate", 1, results["validate"]))
	h.ok(dispatch("mid", "charge", 1))
	h.ok(failCmd("mid", "charge", 1, "gateway_unavailable", true))
	h.ok(dispatch("mid", "reserve", 1))

	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(snap.(snapshot))
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"done", "mid"} {
		a, _ := h.fsm.State().Task(id)
		b, err := restored.State().Task(id)
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("task %s differs after restore (%v)\n%+v\n%+v", id, err, a, b)
		}
		ea, _ := h.fsm.State().Events(id, 0)
		eb, _ := restored.State().Events(id, 0)
		if !reflect.DeepEqual(ea, eb) {
			t.Fatalf("history of %s differs after restore", id)
		}
	}
	if v, ok := restored.State().TaskByKey("shop", "k-mid"); !ok || v.ID != "mid" {
		t.Fatal("idempotency key lost in the snapshot")
	}
	// The restored state schedules the same work: reserve in flight, charge waiting.
	later := h.now.Add(time.Hour)
	if a, b := h.fsm.State().ScanActive(later), restored.State().ScanActive(later); !reflect.DeepEqual(a, b) {
		t.Fatalf("scheduling differs after restore:\n%+v\n%+v", a, b)
	}
	// Two replicas applying the same commands write identical snapshots.
	again, _ := restored.Snapshot()
	if !bytes.Equal(data, []byte(again.(snapshot))) {
		t.Fatal("snapshot of the restored state differs from the original")
	}
	// A truncated snapshot is refused and leaves the state as it was.
	fresh := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := fresh.Restore(nopCloser{bytes.NewReader(data[:len(data)/2])}); err == nil {
		t.Fatal("a truncated snapshot was restored")
	}
	if v, tk := fresh.State().Counts(); v != 0 || tk != 0 {
		t.Fatal("a failed restore changed the state")
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// TestFSMUnknownCommand: an entry written by a newer leader (a command kind
// this server does not know) is refused, not a crash.
func TestFSMUnknownCommand(t *testing.T) {
	h := newHarness(t)
	var b []byte
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("future"))
	r := h.fsm.Apply(rawLog(b)).(*Result)
	if !errors.Is(r.Err, ErrUnknownCommand) {
		t.Fatalf("unknown kind: %v", r.Err)
	}
	r = h.fsm.Apply(rawLog([]byte{0xff, 0xff, 0xff})).(*Result)
	if !errors.Is(r.Err, ErrUnknownCommand) {
		t.Fatalf("garbage: %v", r.Err)
	}
}

func TestListTasksPages(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	for i := range 25 {
		h.ok(create(string(rune('a'+i)), "", orderInput))
	}
	var got []string
	before := uint64(0)
	for range 10 {
		page, next := h.fsm.State().ListTasks(TaskFilter{Limit: 10, Before: before})
		for _, v := range page {
			got = append(got, v.ID)
			if v.InputJSON != "" {
				t.Fatal("list includes payloads")
			}
		}
		if next == 0 {
			break
		}
		before = next
	}
	if len(got) != 25 || got[0] != "y" || got[24] != "a" {
		t.Fatalf("pages gave %v", got)
	}
}

func rawLog(b []byte) *raft.Log { return &raft.Log{Type: raft.LogCommand, Data: b} }

// TestFSMResentResultIsAcknowledged: a worker that lost the acknowledgement
// of a committed result (the agent crashed) and sends it again is told
// "ok", and nothing changes; a different result for that attempt is refused.
func TestFSMResentResultIsAcknowledged(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.runToCompletion("t1")
	before, _ := h.fsm.State().Task("t1")
	if r := h.do(complete("t1", "notify", 1, results["notify"])); r.Err != nil {
		t.Fatalf("re-sent result of the last step: %v", r.Err)
	}
	if r := h.do(complete("t1", "ship", 1, `{"tracking_number":"other","carrier":"UPS"}`)); !errors.Is(r.Err, ErrTaskEnded) {
		t.Fatalf("a different result for a completed attempt: %v", r.Err)
	}
	after, _ := h.fsm.State().Task("t1")
	if !reflect.DeepEqual(before, after) {
		t.Fatal("a re-sent result changed the task")
	}
}

// TestFSMOnlyTheHolderReports: a handed-back attempt is dispatched again
// under the same number; the worker that gave it up cannot report for the
// one that holds it now, and reports without a worker are not checked.
func TestFSMOnlyTheHolderReports(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1)) // to a1/w1
	h.ok(&fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{TaskId: "t1", Step: "validate", Attempt: 1}}})
	h.ok(&fsmv1.Command{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{
		TaskId: "t1", Step: "validate", Attempt: 1, Agent: "a1", Worker: "w2", Deadline: timestamppb.New(t0.Add(time.Hour)),
	}}})
	late := complete("t1", "validate", 1, results["validate"])
	late.GetCompleteStep().Worker = "w1"
	if r := h.do(late); !errors.Is(r.Err, ErrStaleAttempt) || !strings.Contains(r.Err.Error(), "held by worker w2") {
		t.Fatalf("report from the previous holder: %v", r.Err)
	}
	fail := failCmd("t1", "validate", 1, "x", true)
	fail.GetFailStep().Worker = "w1"
	if r := h.do(fail); !errors.Is(r.Err, ErrStaleAttempt) {
		t.Fatalf("failure from the previous holder: %v", r.Err)
	}
	ok := complete("t1", "validate", 1, results["validate"])
	ok.GetCompleteStep().Worker = "w2"
	h.ok(ok)
}

// TestFSMResentCreateIsAcknowledged: a forwarded StartTask retried after a
// leader change applies the same CreateTask twice; the second application
// answers as the first did (created, the same task) without creating
// another, while a different task under the same id is still refused, and
// another call with the same idempotency key learns it did not create it.
func TestFSMResentCreateIsAcknowledged(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	first := h.ok(create("t1", "", orderInput))
	if !first.Created {
		t.Fatal("first CreateTask did not create")
	}
	again := h.do(create("t1", "", orderInput))
	if again.Err != nil || !again.Created || again.TaskID != "t1" {
		t.Fatalf("re-sent CreateTask = %+v, want t1, created (the first apply's answer)", again)
	}
	if _, n := h.fsm.State().Counts(); n != 1 {
		t.Fatalf("tasks after re-sent create = %d, want 1", n)
	}
	if r := h.do(create("t1", "", `{"other":true}`)); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("a different task under a taken id: %v, want ErrInvalid", r.Err)
	}
	// With an idempotency key: the same call again is told it created the
	// task; another call (another id) with the key is told it did not.
	h.ok(create("t2", "k", orderInput))
	if r := h.do(create("t2", "k", orderInput)); r.Err != nil || !r.Created || r.TaskID != "t2" {
		t.Fatalf("re-sent keyed CreateTask = %+v, want t2, created", r)
	}
	if r := h.do(create("t3", "k", orderInput)); r.Err != nil || r.Created || r.TaskID != "t2" {
		t.Fatalf("another call with the key = %+v, want t2, not created", r)
	}
}

// TestFSMClusterID: the cluster is named once; the name survives a
// snapshot; naming it differently is refused and changes nothing.
func TestFSMClusterID(t *testing.T) {
	h := newHarness(t)
	initCmd := func(id string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: id}}}
	}
	if r := h.do(initCmd("")); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("empty cluster id: %v", r.Err)
	}
	if r := h.ok(initCmd("c-1")); !r.Created {
		t.Fatal("first InitCluster did not name the cluster")
	}
	if r := h.do(initCmd("c-1")); r.Err != nil || r.Created {
		t.Fatalf("InitCluster again with the same id = %+v, want acknowledged", r)
	}
	if r := h.do(initCmd("c-2")); !errors.Is(r.Err, ErrInvalid) || h.fsm.State().ClusterID() != "c-1" {
		t.Fatalf("renaming the cluster = %v, id now %q", r.Err, h.fsm.State().ClusterID())
	}
	b, err := h.fsm.State().encode()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(h.fsm.State().limits), nil, nil)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if got := restored.State().ClusterID(); got != "c-1" {
		t.Fatalf("cluster id after a snapshot round trip = %q", got)
	}
}

// TestFSMLateReportIsRecordedNotApplied: attempt 1 timed out and attempt 2
// runs; attempt 1's result arrives anyway. It is refused — the step does
// not complete twice — and the history records it once.
func TestFSMLateReportIsRecordedNotApplied(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	if r := h.ok(failCmd("t1", "validate", 1, "timeout", true)); r.Retry {
		h.now = r.RetryAt
	}
	h.ok(dispatch("t1", "validate", 2))
	for range 2 { // the second late copy adds nothing
		if r := h.do(complete("t1", "validate", 1, results["validate"])); !errors.Is(r.Err, ErrStaleAttempt) {
			t.Fatalf("late result of attempt 1 = %v, want ErrStaleAttempt", r.Err)
		}
	}
	task, _ := h.fsm.State().Task("t1")
	if st := task.Steps[0]; st.State == workflow.StepComplete || st.Attempts != 2 {
		t.Fatalf("validate after a late result: %s at attempt %d, want still running attempt 2", st.State, st.Attempts)
	}
	events, _ := h.fsm.State().Events("t1", 0)
	late := 0
	for _, e := range events {
		if e.Type == EventStepLateReport {
			late++
			if e.Attempt != 1 || !strings.Contains(e.Message, "attempt 2 superseded") {
				t.Fatalf("late report event %+v", e)
			}
		}
	}
	if late != 1 {
		t.Fatalf("%d late report events, want 1", late)
	}
	h.ok(complete("t1", "validate", 2, results["validate"]))
}

// TestFSMStartNamesTheWorker: a dispatch to another agent names no
// worker; the start that agent records does, and from then on only that
// worker may report for the attempt.
func TestFSMStartNamesTheWorker(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	d := dispatch("t1", "validate", 1)
	d.GetDispatchStep().Agent, d.GetDispatchStep().Worker = "payments-1", ""
	h.ok(d)
	h.ok(&fsmv1.Command{Kind: &fsmv1.Command_StartStep{StartStep: &fsmv1.StartStep{TaskId: "t1", Step: "validate", Attempt: 1, Worker: "w-7"}}})
	other := complete("t1", "validate", 1, results["validate"])
	other.GetCompleteStep().Worker = "w-8"
	if r := h.do(other); !errors.Is(r.Err, ErrStaleAttempt) {
		t.Fatalf("a report from another worker = %v, want ErrStaleAttempt", r.Err)
	}
	mine := complete("t1", "validate", 1, results["validate"])
	mine.GetCompleteStep().Worker = "w-7"
	h.ok(mine)
}

// A result that completed an attempt before its start was recorded (no
// worker held yet) is acknowledged when its worker sends it again: results
// are idempotent per attempt whatever the order the commits landed in.
func TestFSMResentResultBeforeStartIsAcknowledged(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	// Dispatched to another agent: its worker is recorded by StartStep,
	// which has not landed yet.
	d := dispatch("t1", "validate", 1)
	d.GetDispatchStep().Worker = ""
	h.ok(d)
	first := complete("t1", "validate", 1, results["validate"])
	first.GetCompleteStep().Worker = "w1"
	h.ok(first)
	again := complete("t1", "validate", 1, results["validate"])
	again.GetCompleteStep().Worker = "w1"
	if r := h.do(again); r.Err != nil {
		t.Fatalf("re-sent result from its worker: %v, want acknowledged", r.Err)
	}
	other := complete("t1", "validate", 1, `{"valid":false,"risk_score":0.9}`)
	if r := h.do(other); r.Err == nil {
		t.Fatal("a different result for a completed attempt was accepted")
	}
}
