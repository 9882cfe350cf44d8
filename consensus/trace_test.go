package consensus

import (
	"bytes"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// TestTaskTraceParentIsReplicated: the trace context a task was started in
// is part of the replicated state, survives a snapshot, and reaches the
// scheduler through StepInfo, so a new leader's step spans join the trace.
func TestTaskTraceParentIsReplicated(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	h := newHarness(t)
	h.ok(put(manifest(t)))
	c := create("traced", "", orderInput)
	c.GetCreateTask().TraceParent = tp
	h.ok(c)
	h.ok(create("plain", "", orderInput))
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*State{h.fsm.State(), restored.State()} {
		info, err := s.StepInfo(StepRef{TaskID: "traced", Name: "validate", Step: 0}, h.now)
		if err != nil || info.TraceParent != tp {
			t.Fatalf("StepInfo of a traced task: %q (%v), want %q", info.TraceParent, err, tp)
		}
		info, err = s.StepInfo(StepRef{TaskID: "plain", Name: "validate", Step: 0}, h.now)
		if err != nil || info.TraceParent != "" {
			t.Fatalf("StepInfo of an untraced task: %q (%v)", info.TraceParent, err)
		}
	}
}
