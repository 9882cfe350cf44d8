package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// dlHarness applies commands as Raft log entries with indexes, as a
// server does, so events (and dead letters) get their "<index>-<position>" ids.
type dlHarness struct {
	t     testing.TB
	fsm   *FSM
	now   time.Time
	index uint64
	// events of every applied entry, in order
	events []Event
}

func newDLHarness(t testing.TB) *dlHarness {
	h := &dlHarness{t: t, now: t0, index: 10}
	h.fsm = NewFSM(NewState(workflow.Limits{}), nil, func(fx *Effects) { h.events = append(h.events, fx.Events...) })
	m, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h.ok(put(string(m)))
	return h
}

func (h *dlHarness) ok(c *fsmv1.Command) {
	h.t.Helper()
	h.now = h.now.Add(time.Second)
	h.index += 2 // Raft indexes skip entries that are not commands
	c.Now = timestamppb.New(h.now)
	b, err := Encode(c)
	if err != nil {
		h.t.Fatal(err)
	}
	if r := h.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: h.index, Data: b}).(*Result); r.Err != nil {
		h.t.Fatalf("index %d: %v", h.index, r.Err)
	}
}

// lastID is the id of the last event of a type.
func (h *dlHarness) lastID(typ string) string {
	h.t.Helper()
	for i := len(h.events) - 1; i >= 0; i-- {
		if h.events[i].Type == typ {
			return h.events[i].ID()
		}
	}
	h.t.Fatalf("no %s event", typ)
	return ""
}

func (h *dlHarness) list(f DeadLetterFilter) []DeadLetter {
	h.t.Helper()
	out, next, err := h.fsm.State().DeadLetters(f)
	if err != nil || next != "" {
		h.t.Fatalf("DeadLetters(%+v): next %q, %v", f, next, err)
	}
	return out
}

func (h *dlHarness) get(id string) *DeadLetter {
	h.t.Helper()
	d, err := h.fsm.State().DeadLetter(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func retryCmd(id, step, reason string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: id, Step: step, Reason: reason}}}
}

func resolveCmd(id, step, result string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{TaskId: id, Step: step, ResultJson: result, Reason: "by hand"}}}
}

func cancelCmd(id string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: id, Reason: "customer called"}}}
}

func statusOf(s DeadLetterStatus) *DeadLetterStatus { return &s }

// A dead letter from its failure to its replay, the replay failing for
// good again, and that one resolved by hand.
func TestDeadLetterLifecycle(t *testing.T) {
	h := newDLHarness(t)
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	fail := failCmd("t1", "validate", 1, "bad_order", false)
	fail.GetFailStep().DetailsJson = `{"field":"items"}`
	h.ok(fail)
	id1 := h.lastID(EventStepDeadLettered)

	open := h.list(DeadLetterFilter{})
	if len(open) != 1 {
		t.Fatalf("dead letters %+v", open)
	}
	d := open[0]
	want := DeadLetter{
		ID: id1, TaskID: "t1", Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", Step: "validate",
		Capability: "orders.validate", Attempts: 1, MaxAttempts: 3, Code: "bad_order", Message: "boom",
		DetailsJSON: `{"field":"items"}`, At: h.now, Seq: d.Seq, Status: DeadLetterOpen,
		TaskState: workflow.TaskError, StepState: workflow.StepError, key: d.key,
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("dead letter\n%+v\nwant\n%+v", d, want)
	}
	got := h.get(id1)
	if got.InputJSON != `{"customer_id":"c1","items":[{"quantity":2,"sku":"sku-1"}],"order_id":"ord_1"}` {
		t.Fatalf("input %s", got.InputJSON)
	}

	// Replay: a new round of attempts.
	h.ok(retryCmd("t1", "validate", "replay of dead letter "+id1))
	replayID := h.lastID(EventStepRetryRequested)
	d = *h.get(id1)
	if d.Status != DeadLetterReplayed || d.ClosedBy != replayID || d.ClosedReason != "replay of dead letter "+id1 ||
		d.ReplayAttempt != 1 || !d.ClosedAt.Equal(h.now) || d.TaskState != workflow.TaskInProgress || d.StepState != workflow.StepPending {
		t.Fatalf("after the replay %+v", d)
	}
	if d.DetailsJSON != `{"field":"items"}` {
		t.Fatalf("details gone before the step failed again: %+v", d)
	}
	if open := h.list(DeadLetterFilter{Status: statusOf(DeadLetterOpen)}); len(open) != 0 {
		t.Fatalf("open after the replay: %+v", open)
	}

	// The new round fails for good too: a second dead letter, newest first.
	h.ok(dispatch("t1", "validate", 1))
	h.ok(failCmd("t1", "validate", 1, "still_bad", false))
	id2 := h.lastID(EventStepDeadLettered)
	all := h.list(DeadLetterFilter{})
	if len(all) != 2 || all[0].ID != id2 || all[1].ID != id1 || all[1].NextID != id2 || all[0].Code != "still_bad" {
		t.Fatalf("dead letters %+v", all)
	}
	if all[1].DetailsJSON != "" || all[1].Code != "bad_order" || all[1].Message != "boom" {
		t.Fatalf("the first dead letter after the step failed again: %+v", all[1])
	}

	// Resolved by hand.
	h.ok(resolveCmd("t1", "validate", results["validate"]))
	d = *h.get(id2)
	if d.Status != DeadLetterResolved || d.ClosedBy != h.lastID(EventStepResolvedManually) || d.ClosedReason != "by hand" {
		t.Fatalf("after resolve %+v", d)
	}
	if r := h.list(DeadLetterFilter{Status: statusOf(DeadLetterResolved)}); len(r) != 1 || r[0].ID != id2 {
		t.Fatalf("resolved %+v", r)
	}
}

// Out of attempts, retryable errors; then the task is cancelled.
func TestDeadLetterExhaustedThenCancelled(t *testing.T) {
	h := newDLHarness(t)
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	h.ok(complete("t1", "validate", 1, results["validate"]))
	for n := int32(1); n <= 5; n++ {
		h.now = h.now.Add(time.Hour) // past any backoff
		h.ok(dispatch("t1", "charge", n))
		h.ok(failCmd("t1", "charge", n, "gateway_unavailable", true))
	}
	open := h.list(DeadLetterFilter{})
	if len(open) != 1 || open[0].Attempts != 5 || open[0].MaxAttempts != 5 || open[0].Step != "charge" || open[0].Capability != "payments.charge" {
		t.Fatalf("dead letters %+v", open)
	}
	h.ok(cancelCmd("t1"))
	d := h.get(open[0].ID)
	if d.Status != DeadLetterCancelled || d.ClosedBy != h.lastID(EventTaskCancelled) || d.ClosedReason != "customer called" || d.TaskState != workflow.TaskCancelled {
		t.Fatalf("after cancel %+v", d)
	}
}

func TestDeadLettersFilterAndPages(t *testing.T) {
	h := newDLHarness(t)
	second := `name: second
namespace: other
version: 1.0.0
steps:
  - {name: only, capability: x.only, retry: {max_attempts: 1}}
`
	h.ok(put(second))
	// A task that never fails has none.
	h.ok(create("ok", "", orderInput))
	h.ok(dispatch("ok", "validate", 1))
	h.ok(complete("ok", "validate", 1, results["validate"]))
	var ids []string // oldest first
	for i := range 7 {
		id := fmt.Sprintf("t%d", i)
		if i%2 == 0 {
			h.ok(create(id, "", orderInput))
			h.ok(dispatch(id, "validate", 1))
			h.ok(failCmd(id, "validate", 1, "bad", false))
		} else {
			h.ok(&fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{TaskId: id, Namespace: "other", Workflow: "second"}}})
			h.ok(dispatch(id, "only", 1))
			h.ok(failCmd(id, "only", 1, "x", true))
		}
		ids = append(ids, h.lastID(EventStepDeadLettered))
	}
	h.ok(cancelCmd("t0"))

	// Pages of 3, newest first, with the cancelled one last.
	var got []string
	tok := ""
	for pages := 0; ; pages++ {
		page, next, err := h.fsm.State().DeadLetters(DeadLetterFilter{Limit: 3, PageToken: tok})
		if err != nil || pages > 3 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, d := range page {
			got = append(got, d.ID)
		}
		if next == "" {
			break
		}
		tok = next
	}
	want := []string{ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paged %v, want %v", got, want)
	}
	count := func(f DeadLetterFilter) int { return len(h.list(f)) }
	for name, c := range map[string]struct {
		f    DeadLetterFilter
		want int
	}{
		"workflow":           {DeadLetterFilter{Workflow: "second"}, 3},
		"namespace":          {DeadLetterFilter{Namespace: "shop"}, 4},
		"task":               {DeadLetterFilter{TaskID: "t2"}, 1},
		"unknown task":       {DeadLetterFilter{TaskID: "nope"}, 0},
		"open":               {DeadLetterFilter{Status: statusOf(DeadLetterOpen)}, 6},
		"cancelled":          {DeadLetterFilter{Status: statusOf(DeadLetterCancelled)}, 1},
		"open of a workflow": {DeadLetterFilter{Workflow: "order-fulfilment", Status: statusOf(DeadLetterOpen)}, 3},
	} {
		if n := count(c.f); n != c.want {
			t.Errorf("%s: %d dead letters, want %d", name, n, c.want)
		}
	}

	// Bad input is refused with what to do; unknown ids are not found.
	if _, _, err := h.fsm.State().DeadLetters(DeadLetterFilter{PageToken: "12-3"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad page token: %v", err)
	}
	for _, id := range []string{"", "abc", "12-", "-3", "12-x"} {
		if _, err := h.fsm.State().DeadLetter(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("id %q: %v, want ErrInvalid", id, err)
		}
	}
	// An event that is no dead letter, and ids nothing has.
	for _, id := range []string{h.lastID(EventTaskCancelled), "999999-1", "t1-1"} {
		if _, err := h.fsm.State().DeadLetter(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("id %q: %v, want ErrNotFound", id, err)
		}
	}
}

// Dead letters are derived from what snapshots keep: a restored state has
// the same ones, with the same ids and statuses.
func TestDeadLettersSurviveSnapshots(t *testing.T) {
	h := newDLHarness(t)
	for _, id := range []string{"t1", "t2"} {
		h.ok(create(id, "", orderInput))
		h.ok(dispatch(id, "validate", 1))
		fail := failCmd(id, "validate", 1, "bad", false)
		fail.GetFailStep().DetailsJson = `{"why":"` + id + `"}`
		h.ok(fail)
	}
	h.ok(retryCmd("t1", "validate", "again"))
	before := h.list(DeadLetterFilter{})
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	after, _, err := restored.State().DeadLetters(DeadLetterFilter{})
	if err != nil || !reflect.DeepEqual(before, after) || len(after) != 2 || after[0].DetailsJSON != `{"why":"t2"}` {
		t.Fatalf("before %+v\nafter %+v (%v)", before, after, err)
	}
}

// Commands applied without a Raft index (tools replaying state, or
// events restored from snapshots older than event ids) have ids of the
// form "<task id>-<sequence>", which find their dead letter too.
func TestDeadLetterIDsWithoutRaftIndex(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	h.ok(failCmd("t1", "validate", 1, "bad", false))
	list, _, err := h.fsm.State().DeadLetters(DeadLetterFilter{})
	if err != nil || len(list) != 1 || list[0].ID != fmt.Sprintf("t1-%d", list[0].Seq) {
		t.Fatalf("dead letters %+v, %v", list, err)
	}
	d, err := h.fsm.State().DeadLetter(list[0].ID)
	if err != nil || d.Step != "validate" {
		t.Fatalf("by id: %+v, %v", d, err)
	}
}

func TestParseDeadLetterStatus(t *testing.T) {
	for _, s := range []DeadLetterStatus{DeadLetterOpen, DeadLetterReplayed, DeadLetterResolved, DeadLetterCancelled} {
		if got, err := ParseDeadLetterStatus(s.String()); err != nil || got != s {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	if _, err := ParseDeadLetterStatus("closed"); err == nil {
		t.Error("closed parsed")
	}
}

// BenchmarkDeadLetters lists the open dead letters among 10,000 tasks, one
// in a hundred of which has one: the cost of deriving them on demand.
func BenchmarkDeadLetters(b *testing.B) {
	h := newDLHarness(b)
	for i := range 10000 {
		id := fmt.Sprintf("t%d", i)
		h.ok(create(id, "", orderInput))
		h.ok(dispatch(id, "validate", 1))
		if i%100 == 0 {
			h.ok(failCmd(id, "validate", 1, "bad", false))
		} else {
			h.ok(complete(id, "validate", 1, results["validate"]))
		}
	}
	open := DeadLetterOpen
	b.ResetTimer()
	for range b.N {
		if l, _, _ := h.fsm.State().DeadLetters(DeadLetterFilter{Status: &open}); len(l) != 100 {
			b.Fatal(len(l))
		}
	}
}
