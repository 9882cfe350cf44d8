package consensus

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// TestEventIDsAreStableAcrossServers applies the same log to two FSMs, as
// two servers do, and checks that every event gets the same id on both,
// derived from the log index and its place in the entry: consumers
// de-duplicate on it across servers and leader changes.
func TestEventIDsAreStableAcrossServers(t *testing.T) {
	var log []*raft.Log
	now := t0
	add := func(c *fsmv1.Command) {
		now = now.Add(10 * time.Millisecond)
		c.Now = timestamppb.New(now)
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		// Raft indexes start above 1 and skip entries that are not commands
		// (configuration changes), so the ids must come from the index.
		log = append(log, &raft.Log{Type: raft.LogCommand, Index: uint64(3 + 2*len(log)), Data: b})
	}
	add(put(manifest(t)))
	add(create("t1", "k1", orderInput))
	add(dispatch("t1", "validate", 1))
	add(failCmd("t1", "validate", 1, "flaky", true))
	now = now.Add(time.Hour) // past the backoff
	add(dispatch("t1", "validate", 2))
	// One entry, several commands: the positions go on across the batch.
	add(&fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: []*fsmv1.Command{
		complete("t1", "validate", 2, results["validate"]),
		create("t2", "k2", orderInput),
	}}}})

	run := func() (*FSM, []Event) {
		var fxEvents []Event
		f := NewFSM(NewState(workflow.Limits{}), nil, func(fx *Effects) { fxEvents = append(fxEvents, fx.Events...) })
		for _, l := range log {
			if r := f.Apply(l).(*Result); r.Err != nil {
				t.Fatalf("index %d: %v", l.Index, r.Err)
			}
		}
		return f, fxEvents
	}
	a, ea := run()
	b, eb := run()
	if len(ea) == 0 || !reflect.DeepEqual(ea, eb) {
		t.Fatalf("two servers produced different events:\n%+v\n%+v", ea, eb)
	}
	seen := map[string]bool{}
	for _, e := range ea {
		if seen[e.ID()] {
			t.Fatalf("id %s given twice", e.ID())
		}
		seen[e.ID()] = true
	}
	// The first event of the create entry (index 5) is task.created, 5-1.
	if e := ea[0]; e.Type != EventTaskCreated || e.ID() != "5-1" {
		t.Fatalf("first event %s %s, want task.created 5-1", e.Type, e.ID())
	}
	// The batch (index 13) numbers its events in one run: validate's
	// completion, the steps it readied, then t2's creation.
	var batch []string
	for _, e := range ea {
		if e.Index == 13 {
			batch = append(batch, fmt.Sprintf("%s %s %s", e.ID(), e.TaskID, e.Type))
		}
	}
	if len(batch) < 3 || batch[0] != "13-1 t1 step.completed" {
		t.Fatalf("batch events: %v", batch)
	}
	for i, s := range batch {
		if want := fmt.Sprintf("13-%d ", i+1); s[:len(want)] != want {
			t.Fatalf("batch event %d is %s, want position %d", i, s, i+1)
		}
	}
	// The task's stored history carries the same ids, and a failure its code.
	hist, _ := a.State().Events("t1", 0)
	hb, _ := b.State().Events("t1", 0)
	if !reflect.DeepEqual(hist, hb) {
		t.Fatal("stored histories differ")
	}
	for _, e := range hist {
		if !seen[e.ID()] {
			t.Fatalf("stored event %s (%s) was not in the effects", e.ID(), e.Type)
		}
		if e.Type == EventStepFailed && e.Code != "flaky" {
			t.Fatalf("step.failed code %q, want flaky", e.Code)
		}
	}
}

// TestEventIDsSurviveSnapshots: a server that restores a snapshot
// reports the ids of the server that took it.
func TestEventIDsSurviveSnapshots(t *testing.T) {
	h := newHarness(t)
	apply := func(i uint64, c *fsmv1.Command) {
		h.now = h.now.Add(10 * time.Millisecond)
		c.Now = timestamppb.New(h.now)
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := h.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Data: b}).(*Result); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	apply(1, put(manifest(t)))
	apply(2, create("t1", "k1", orderInput))
	apply(3, dispatch("t1", "validate", 1))
	apply(4, failCmd("t1", "validate", 1, "bad_input", false))
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	ea, _ := h.fsm.State().Events("t1", 0)
	eb, _ := restored.State().Events("t1", 0)
	if !reflect.DeepEqual(ea, eb) {
		t.Fatalf("events differ after restore:\n%+v\n%+v", ea, eb)
	}
	last := eb[len(eb)-1]
	if last.Type != EventTaskFailed || last.Index != 4 || last.Code != "bad_input" {
		t.Fatalf("last event after restore: %+v", last)
	}
}

// TestEventIDWithoutIndex: events from snapshots older than the index
// keep a stable id of another form.
func TestEventIDWithoutIndex(t *testing.T) {
	if id := (Event{TaskID: "tsk_1", Seq: 7}).ID(); id != "tsk_1-7" {
		t.Fatalf("id %q", id)
	}
	if id := (Event{TaskID: "tsk_1", Seq: 7, Index: 42, Position: 3}).ID(); id != "42-3" {
		t.Fatalf("id %q", id)
	}
}

// TestStateTraceParent: the trace context a task was started in, for the
// trace id of its events.
func TestStateTraceParent(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	c := create("t1", "k1", orderInput)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c.GetCreateTask().TraceParent = tp
	h.ok(c)
	h.ok(create("t2", "k2", orderInput))
	if got := h.fsm.State().TraceParent("t1"); got != tp {
		t.Errorf("t1: %q, want %q", got, tp)
	}
	if got := h.fsm.State().TraceParent("t2") + h.fsm.State().TraceParent("nope"); got != "" {
		t.Errorf("untraced and unknown tasks: %q, want none", got)
	}
}
