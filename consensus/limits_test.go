package consensus

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// cappedTask is a CreateTask carrying the leader's cap on tasks in flight.
func cappedTask(id, key string, max uint32) *fsmv1.Command {
	c := create(id, key, orderInput)
	c.GetCreateTask().MaxTasksInFlight = max
	return c
}

// TestFSMCapsTasksInFlight: at the cap a new task is refused with
// ErrLimit and a message naming the setting, and nothing changes; a retry
// of a task already created (same idempotency key, or same id) still gets
// it; a task that ends makes room.
func TestFSMCapsTasksInFlight(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(cappedTask("t1", "k1", 2))
	h.ok(cappedTask("t2", "k2", 2))
	if n := h.fsm.State().TasksInFlight(); n != 2 {
		t.Fatalf("in flight = %d, want 2", n)
	}
	_, before := h.fsm.State().Counts()

	r := h.do(cappedTask("t3", "k3", 2))
	if !errors.Is(r.Err, ErrLimit) || !strings.Contains(r.Err.Error(), "2 tasks in flight, at the limit of 2 (max_tasks_in_flight)") {
		t.Fatalf("third task at a cap of 2: %v, want ErrLimit naming max_tasks_in_flight", r.Err)
	}
	if _, after := h.fsm.State().Counts(); after != before {
		t.Fatalf("a refused task changed the task count: %d -> %d", before, after)
	}
	if _, ok := h.fsm.State().TaskByKey("shop", "k3"); ok {
		t.Fatal("the refused task's idempotency key was recorded")
	}
	// Retries of tasks that exist are answered at the cap.
	if r := h.do(cappedTask("t9", "k1", 2)); r.Err != nil || r.TaskID != "t1" || r.Created {
		t.Fatalf("retry by key at the cap: %+v, want t1, not created", r)
	}
	if r := h.do(cappedTask("t2", "k2", 2)); r.Err != nil || r.TaskID != "t2" {
		t.Fatalf("resent create at the cap: %+v, want t2", r)
	}
	// A cap of 0 (a command from before the cap) does not limit.
	if r := h.do(cappedTask("t4", "", 0)); r.Err != nil {
		t.Fatalf("uncapped create: %v", r.Err)
	}
	// An ended task makes room under a cap of 3.
	h.runToCompletion("t1")
	if n := h.fsm.State().TasksInFlight(); n != 2 {
		t.Fatalf("in flight after t1 completed = %d, want 2", n)
	}
	h.ok(cappedTask("t5", "k5", 3))
	if r := h.do(cappedTask("t6", "k6", 3)); !errors.Is(r.Err, ErrLimit) {
		t.Fatalf("fourth task at a cap of 3: %v, want ErrLimit", r.Err)
	}
}

// TestInFlightSurvivesSnapshotAndLeaderChange: the count is part of the
// replicated state. A replica restored from a snapshot (a new server, or
// one that fell behind, then elected leader) counts the same tasks and
// refuses and accepts exactly what the original does.
func TestInFlightSurvivesSnapshotAndLeaderChange(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	for _, id := range []string{"a", "b", "c"} {
		h.ok(cappedTask(id, "", 3))
	}
	h.runToCompletion("a")
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	if a, b := h.fsm.State().TasksInFlight(), restored.State().TasksInFlight(); a != 2 || b != a {
		t.Fatalf("in flight: original %d, restored %d; want 2 and 2", a, b)
	}
	// Both replicas apply the same log from here on.
	next := &harness{t: t, fsm: restored, now: h.now}
	for _, c := range []func() *fsmv1.Command{
		func() *fsmv1.Command { return cappedTask("d", "", 3) }, // fills the cap
		func() *fsmv1.Command { return cappedTask("e", "", 3) }, // refused on both
	} {
		r1, r2 := h.do(c()), next.do(c())
		if (r1.Err == nil) != (r2.Err == nil) || r1.Created != r2.Created {
			t.Fatalf("replicas disagree: %+v vs %+v", r1, r2)
		}
	}
	if r := next.do(cappedTask("f", "", 3)); !errors.Is(r.Err, ErrLimit) {
		t.Fatalf("restored replica at the cap: %v, want ErrLimit", r.Err)
	}
	if err := restored.State().CheckInFlight(3); !errors.Is(err, ErrLimit) {
		t.Fatalf("CheckInFlight at the cap: %v, want ErrLimit", err)
	}
	if err := restored.State().CheckInFlight(4); err != nil {
		t.Fatalf("CheckInFlight under the cap: %v", err)
	}
}
