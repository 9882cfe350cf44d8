package consensus

import (
	"bytes"
	"errors"
	"testing"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

func cursorCmd(i uint64) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_BusCursor{BusCursor: &fsmv1.BusCursor{Index: i}}}
}

// The cursor only moves forward, says when it moved, and survives a
// snapshot: a new leader resumes publishing after it.
func TestBusCursor(t *testing.T) {
	h := newHarness(t)
	steps := []struct {
		index, want uint64
		effect      bool
	}{
		{10, 10, true},
		{25, 25, true},
		{12, 25, false}, // a deposed leader's late cursor
		{25, 25, false},
		{40, 40, true},
	}
	for _, s := range steps {
		n := len(h.fx)
		h.ok(cursorCmd(s.index))
		if got := h.fsm.State().BusCursor(); got != s.want {
			t.Fatalf("after cursor %d: BusCursor = %d, want %d", s.index, got, s.want)
		}
		moved := len(h.fx) > n && h.lastEffects().BusCursor == s.want
		if moved != s.effect {
			t.Fatalf("after cursor %d: effect reported %v, want %v", s.index, moved, s.effect)
		}
	}
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	if got := restored.State().BusCursor(); got != 40 {
		t.Fatalf("restored BusCursor = %d, want 40", got)
	}
}

// What notify handed off must be durable before a snapshot lets Raft
// compact the log: the hook runs first, and its failure skips the snapshot.
func TestBeforeSnapshot(t *testing.T) {
	h := newHarness(t)
	calls := 0
	h.fsm.SetBeforeSnapshot(func() error { calls++; return nil })
	if _, err := h.fsm.Snapshot(); err != nil || calls != 1 {
		t.Fatalf("Snapshot: err %v, hook calls %d; want nil, 1", err, calls)
	}
	boom := errors.New("outbox disk full")
	h.fsm.SetBeforeSnapshot(func() error { return boom })
	if _, err := h.fsm.Snapshot(); !errors.Is(err, boom) {
		t.Fatalf("Snapshot with a failing hook: err %v, want %v", err, boom)
	}
}
