package consensus

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// failingLogs is an in-memory log store whose writes fail with ENOSPC
// while full is set, as raft-boltdb's do on a full disk.
type failingLogs struct {
	*raft.InmemStore
	full atomic.Bool
}

func (f *failingLogs) StoreLogs(logs []*raft.Log) error {
	if f.full.Load() {
		return &raftStoreErr{syscall.ENOSPC}
	}
	return f.InmemStore.StoreLogs(logs)
}

func (f *failingLogs) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

// raftStoreErr is the store's own error; the log cache above it keeps
// only its text.
type raftStoreErr struct{ err error }

func (e *raftStoreErr) Error() string { return "write raft.db: " + e.err.Error() }

// TestApplyLeaderCannotWriteLog: when the leader cannot write a command to
// its own log (a full disk), raft steps it down; Apply says so with
// ErrNotLeader — the command was written nowhere, so the agent sends it to
// the next leader — and names the cause.
func TestApplyLeaderCannotWriteLog(t *testing.T) {
	store := raft.NewInmemStore()
	logs := &failingLogs{InmemStore: raft.NewInmemStore()}
	cache, err := raft.NewLogCache(16, logs)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	rc := raft.DefaultConfig()
	rc.LocalID = "s1"
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	rc.Logger = newHCLogger(discardLogger(), "raft")
	snaps := raft.NewInmemSnapshotStore()
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr()}}}
	if err := raft.BootstrapCluster(rc, cache, store, snaps, trans, conf); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, nopFSM{}, logWrites{cache}, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{raft: r, closed: make(chan struct{})}
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	select {
	case <-r.LeaderCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no leader within 5s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, []byte("ok")); err != nil {
		t.Fatalf("Apply with room on disk: %v", err)
	}

	logs.full.Store(true)
	_, err = n.Apply(ctx, []byte("lost"))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Apply with the log store full = %v, want ErrNotLeader", err)
	}
	for _, want := range []string{"could not write to its Raft log", "no space left on device"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Apply's error %q does not say %q", err, want)
		}
	}
	// A single voter elects itself again at once and steps down again on
	// its next failed write, so it may be leader at any one instant; what
	// must hold is that it does not stay leader.
	deadline := time.Now().Add(2 * time.Second)
	for r.State() == raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("raft stayed leader for 2s after failing to write its log")
		}
		time.Sleep(time.Millisecond)
	}
}

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }
