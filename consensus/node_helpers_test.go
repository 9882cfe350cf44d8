package consensus_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tasker-run/tasker/consensus"
)

// blockCmd makes listFSM.Apply wait until the FSM's gate is closed, to
// hold a command in flight.
const blockCmd = "block"

// listFSM is an append-only list of strings: the smallest FSM with real
// Snapshot and Restore. Apply returns the list's new length.
type listFSM struct {
	mu    sync.Mutex
	items []string
	gate  chan struct{}
}

func newListFSM() *listFSM { return &listFSM{gate: make(chan struct{})} }

func (f *listFSM) Apply(l *raft.Log) any {
	if string(l.Data) == blockCmd {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = append(f.items, string(l.Data))
	return len(f.items)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.items)
	return listSnapshot(b), err
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var items []string
	if err := json.NewDecoder(rc).Decode(&items); err != nil {
		return fmt.Errorf("listFSM restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = items
	return nil
}

func (f *listFSM) Items() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.items)
}

type listSnapshot []byte

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// syncBuffer collects a test's log; raft writes from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger keeps raft's debug log and prints it only if the test fails.
// Call it before opening nodes, so that its cleanup runs after theirs.
func testLogger(t testing.TB) *slog.Logger {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("raft log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a node on a free loopback port with test timeouts. Only
// HeartbeatTimeout is set: ElectionTimeout and LeaderLeaseTimeout are
// derived from it (200ms and 100ms).
func testConfig(t testing.TB, log *slog.Logger, id string) consensus.Config {
	return consensus.Config{
		NodeID:           id,
		DataDir:          filepath.Join(t.TempDir(), id),
		BindAddr:         "127.0.0.1:0",
		Logger:           log.With("node", id),
		HeartbeatTimeout: 200 * time.Millisecond,
		CommitTimeout:    5 * time.Millisecond,
	}
}

func openNode(t testing.TB, cfg consensus.Config, fsm raft.FSM) *consensus.Node {
	t.Helper()
	n, err := consensus.Open(cfg, fsm)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.NodeID, err)
		}
	})
	return n
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLeader waits until exactly one of nodes is leader and every node
// names it, and returns its index.
func waitLeader(t testing.TB, nodes ...*consensus.Node) int {
	t.Helper()
	leader := -1
	waitFor(t, 5*time.Second, "one agreed leader", func() bool {
		leader = -1
		for i, n := range nodes {
			if n.IsLeader() {
				if leader >= 0 {
					return false
				}
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		want := nodes[leader].Addr()
		for _, n := range nodes {
			if _, addr := n.Leader(); addr != want {
				return false
			}
		}
		return true
	})
	return leader
}

func cmds(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
