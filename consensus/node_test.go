package consensus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/consensus"
)

func TestOpenRejectsInvalidConfig(t *testing.T) {
	log := testLogger(t)
	tests := []struct {
		name  string
		edit  func(*consensus.Config)
		wants []string // every one must appear in the error
	}{
		{"no NodeID", func(c *consensus.Config) { c.NodeID = "" }, []string{"NodeID is required"}},
		{"NodeID with spaces", func(c *consensus.Config) { c.NodeID = " s1" }, []string{"NodeID"}},
		{"no DataDir", func(c *consensus.Config) { c.DataDir = "" }, []string{"DataDir is required"}},
		{"no BindAddr", func(c *consensus.Config) { c.BindAddr = "" }, []string{"BindAddr is required"}},
		{"BindAddr without port", func(c *consensus.Config) { c.BindAddr = "127.0.0.1" }, []string{"BindAddr", "host:port"}},
		{"BindAddr bad port", func(c *consensus.Config) { c.BindAddr = "127.0.0.1:99999" }, []string{"BindAddr", "invalid port"}},
		{"wildcard BindAddr alone", func(c *consensus.Config) { c.BindAddr = "0.0.0.0:7423" }, []string{"AdvertiseAddr is required"}},
		{"empty host BindAddr alone", func(c *consensus.Config) { c.BindAddr = ":7423" }, []string{"AdvertiseAddr is required"}},
		{"AdvertiseAddr port 0", func(c *consensus.Config) { c.AdvertiseAddr = "127.0.0.1:0" }, []string{"AdvertiseAddr", "port other than 0"}},
		{"wildcard AdvertiseAddr", func(c *consensus.Config) { c.AdvertiseAddr = "0.0.0.0:7423" }, []string{"AdvertiseAddr", "wildcard"}},
		{"negative HeartbeatTimeout", func(c *consensus.Config) { c.HeartbeatTimeout = -time.Second }, []string{"HeartbeatTimeout must not be negative"}},
		{"tiny HeartbeatTimeout", func(c *consensus.Config) { c.HeartbeatTimeout = time.Millisecond }, []string{"HeartbeatTimeout must be at least 5ms"}},
		{"ElectionTimeout below HeartbeatTimeout", func(c *consensus.Config) { c.ElectionTimeout = 100 * time.Millisecond }, []string{"ElectionTimeout (100ms) must be at least HeartbeatTimeout (200ms)"}},
		{"LeaderLeaseTimeout above HeartbeatTimeout", func(c *consensus.Config) { c.LeaderLeaseTimeout = time.Second }, []string{"LeaderLeaseTimeout (1s) must not exceed HeartbeatTimeout"}},
		{"tiny CommitTimeout", func(c *consensus.Config) { c.CommitTimeout = time.Microsecond }, []string{"CommitTimeout must be at least 1ms"}},
		{"negative SnapshotInterval", func(c *consensus.Config) { c.SnapshotInterval = -1 }, []string{"SnapshotInterval must not be negative"}},
		{"every problem at once", func(c *consensus.Config) { c.NodeID, c.DataDir, c.BindAddr = "", "", "" }, []string{"NodeID", "DataDir", "BindAddr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, log, "s1")
			tt.edit(&cfg)
			n, err := consensus.Open(cfg, newListFSM())
			if err == nil {
				_ = n.Shutdown()
				t.Fatal("Open succeeded, want a config error")
			}
			for _, want := range tt.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if !strings.HasPrefix(err.Error(), "consensus: invalid config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if cfg.DataDir != "" {
				if _, statErr := os.Stat(cfg.DataDir); !errors.Is(statErr, os.ErrNotExist) {
					t.Errorf("a rejected config created DataDir (stat: %v)", statErr)
				}
			}
		})
	}

	if _, err := consensus.Open(testConfig(t, log, "s1"), nil); err == nil || !strings.Contains(err.Error(), "fsm") {
		t.Errorf("Open with a nil FSM: err = %v, want one naming the fsm", err)
	}
}

func TestSingleNodeBootstrapsAppliesAndReplaysAfterRestart(t *testing.T) {
	tests := []struct {
		name     string
		snapshot bool // force snapshots and log compaction before the restart
	}{
		{"from the log", false},
		{"from a snapshot", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := testLogger(t)
			cfg := testConfig(t, log, "s1")
			cfg.Bootstrap = true
			if tt.snapshot {
				cfg.SnapshotInterval = 10 * time.Millisecond
				cfg.SnapshotThreshold = 4
				cfg.TrailingLogs = 2
			}
			fsm := newListFSM()
			n := openNode(t, cfg, fsm)
			waitLeader(t, n)
			if fi, err := os.Stat(cfg.DataDir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("DataDir mode = %v (err %v), want 0700", fi.Mode().Perm(), err)
			}

			ctx := t.Context()
			want := cmds("c", 20)
			for i, c := range want {
				resp, err := n.Apply(ctx, []byte(c))
				if err != nil {
					t.Fatalf("Apply(%s): %v", c, err)
				}
				if resp != i+1 {
					t.Fatalf("Apply(%s) response = %v, want the FSM's %d", c, resp, i+1)
				}
			}
			if got := fsm.Items(); !slices.Equal(got, want) {
				t.Fatalf("FSM = %v, want %v", got, want)
			}
			if tt.snapshot {
				waitFor(t, 5*time.Second, "an automatic snapshot", func() bool { return n.Stats().LastSnapshotIndex > 10 })
			}
			before := n.Stats()
			if err := n.Shutdown(); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := n.Shutdown(); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}
			if _, err := n.Apply(ctx, []byte("late")); !errors.Is(err, consensus.ErrShutdown) {
				t.Fatalf("Apply after Shutdown: err = %v, want ErrShutdown", err)
			}

			// Same DataDir and address, Bootstrap still on: the state is
			// replayed, not replaced by a fresh cluster.
			cfg.BindAddr = n.Addr()
			fsm2 := newListFSM()
			n2 := openNode(t, cfg, fsm2)
			if tt.snapshot && len(fsm2.Items()) == 0 {
				t.Error("the snapshot was not restored into the FSM at Open")
			}
			waitLeader(t, n2)
			if err := n2.Barrier(ctx); err != nil {
				t.Fatalf("Barrier: %v", err)
			}
			if got := fsm2.Items(); !slices.Equal(got, want) {
				t.Fatalf("FSM after restart = %v, want %v", got, want)
			}
			after := n2.Stats()
			if after.Term <= before.Term || after.LastIndex <= before.LastIndex {
				t.Errorf("stats after restart %+v do not continue from %+v (re-bootstrapped?)", after, before)
			}
			peers, err := n2.Peers()
			if err != nil || len(peers) != 1 || peers[0].ID != "s1" || !peers[0].Voter || !peers[0].Leader {
				t.Errorf("Peers = %+v, %v; want s1 alone, voter and leader", peers, err)
			}
			if resp, err := n2.Apply(ctx, []byte("more")); err != nil || resp != len(want)+1 {
				t.Errorf("Apply after restart = %v, %v", resp, err)
			}
		})
	}
}

func TestOpenWithoutBootstrapNeverElectsItself(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	ctx := t.Context()
	for round := range 2 { // the second Open finds the DataDir the first left
		fsm := newListFSM()
		n := openNode(t, cfg, fsm)
		// Five heartbeat timeouts: a node able to elect itself would have.
		until := time.Now().Add(5 * cfg.HeartbeatTimeout)
		for time.Now().Before(until) {
			if n.IsLeader() {
				t.Fatalf("round %d: a node without Bootstrap elected itself", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if id, addr := n.Leader(); id != "" || addr != "" {
			t.Errorf("Leader() = %q, %q; want none", id, addr)
		}
		if _, err := n.Apply(ctx, []byte("x")); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("Apply: err = %v, want ErrNotLeader", err)
		}
		if err := n.RestoreSnapshot(ctx, strings.NewReader("")); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("RestoreSnapshot: err = %v, want ErrNotLeader", err)
		}
		if peers, err := n.Peers(); err != nil || len(peers) != 0 {
			t.Errorf("Peers = %+v, %v; want none", peers, err)
		}
		if s := n.Stats(); s.State != "Follower" || s.LastContact >= 0 || s.LastIndex != 0 {
			t.Errorf("Stats = %+v; want a follower that never heard from a leader", s)
		}
		if len(fsm.Items()) != 0 {
			t.Errorf("FSM = %v, want empty", fsm.Items())
		}
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
		cfg.BindAddr = n.Addr()
	}
}

func TestOpenRefusesADataDirInUse(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	openNode(t, cfg, newListFSM())

	start := time.Now()
	n, err := consensus.Open(cfg, newListFSM())
	if err == nil {
		_ = n.Shutdown()
		t.Fatal("a second Open of the same DataDir succeeded")
	}
	if !strings.Contains(err.Error(), "another process") {
		t.Errorf("error %q does not say the DataDir is in use", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %s to give up", d)
	}
}

func TestLeadershipChangesReportsLeadershipAndClosesOnShutdown(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	cfg.Bootstrap = true
	n := openNode(t, cfg, newListFSM())

	select {
	case v := <-n.LeadershipChanges():
		if !v {
			t.Fatal("first notification is false, want true")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no leadership notification")
	}
	if !n.IsLeader() {
		t.Error("notified true but IsLeader() is false")
	}

	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v, ok := <-n.LeadershipChanges():
			if !ok {
				return
			}
			if v {
				t.Fatal("notified true during Shutdown")
			}
		case <-timeout:
			t.Fatal("LeadershipChanges not closed after Shutdown")
		}
	}
}

func TestApplyHonoursContext(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	cfg.Bootstrap = true
	fsm := newListFSM()
	n := openNode(t, cfg, fsm)
	waitLeader(t, n)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", canceled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := n.Apply(tt.ctx, []byte(tt.name)); !errors.Is(err, tt.want) {
				t.Errorf("Apply: err = %v, want %v", err, tt.want)
			}
			if err := n.Barrier(tt.ctx); !errors.Is(err, tt.want) {
				t.Errorf("Barrier: err = %v, want %v", err, tt.want)
			}
		})
	}
	if err := n.Barrier(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := fsm.Items(); len(got) != 0 {
		t.Fatalf("commands with a dead context were applied: %v", got)
	}

	// A deadline that passes while the command is in flight returns at the
	// deadline; the command's fate is then unknown (here it commits).
	ctx, cancel3 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel3()
	start := time.Now()
	_, err := n.Apply(ctx, []byte(blockCmd))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Apply of a stuck command: err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Apply returned %s after its deadline of 100ms", d)
	}
	close(fsm.gate)
	waitFor(t, 5*time.Second, "the stuck command to apply", func() bool { return slices.Equal(fsm.Items(), []string{blockCmd}) })
}

func TestThreeNodeClusterFailsOver(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	ids := []string{"n1", "n2", "n3"}
	cfgs := make([]consensus.Config, 3)
	fsms := make([]*listFSM, 3)
	nodes := make([]*consensus.Node, 3)
	for i, id := range ids {
		cfgs[i] = testConfig(t, log, id)
		fsms[i] = newListFSM()
	}
	// n1 bootstraps alone and adds the others, as servers join in Tasker.
	cfgs[0].Bootstrap = true
	nodes[0] = openNode(t, cfgs[0], fsms[0])
	waitLeader(t, nodes[0])
	for i := 1; i < 3; i++ {
		nodes[i] = openNode(t, cfgs[i], fsms[i])
		if err := nodes[0].AddVoter(ctx, ids[i], nodes[i].Addr()); err != nil {
			t.Fatalf("AddVoter(%s): %v", ids[i], err)
		}
	}
	if l := waitLeader(t, nodes...); l != 0 {
		t.Fatalf("leader is %s, want n1", ids[l])
	}
	peers, err := nodes[0].Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Fatalf("Peers = %+v, want 3", peers)
	}
	for _, p := range peers {
		if !p.Voter || p.Leader != (p.ID == "n1") {
			t.Errorf("peer %+v: want a voter, leader only if n1", p)
		}
	}

	want := cmds("a", 10)
	for _, c := range want {
		if _, err := nodes[0].Apply(ctx, []byte(c)); err != nil {
			t.Fatalf("Apply(%s): %v", c, err)
		}
	}
	leaders := 0
	for _, n := range nodes {
		if n.IsLeader() {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders, want exactly 1", leaders)
	}
	for i := 1; i < 3; i++ {
		f := nodes[i]
		if _, err := f.Apply(ctx, []byte("on a follower")); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("%s.Apply: err = %v, want ErrNotLeader", ids[i], err)
		} else if !strings.Contains(err.Error(), nodes[0].Addr()) {
			t.Errorf("%s.Apply: error %q does not name the leader", ids[i], err)
		}
		if id, addr := f.Leader(); id != "n1" || addr != nodes[0].Addr() {
			t.Errorf("%s.Leader() = %s, %s; want n1, %s", ids[i], id, addr, nodes[0].Addr())
		}
		if err := f.Barrier(ctx); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("%s.Barrier: err = %v, want ErrNotLeader", ids[i], err)
		}
		if err := f.AddVoter(ctx, "n4", "127.0.0.1:1"); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("%s.AddVoter: err = %v, want ErrNotLeader", ids[i], err)
		}
		waitFor(t, 5*time.Second, ids[i]+" to apply every entry", func() bool { return slices.Equal(fsms[i].Items(), want) })
		if s := f.Stats(); s.State != "Follower" || s.LastContact < 0 || s.LastContact > 5*time.Second {
			t.Errorf("%s.Stats() = %+v", ids[i], s)
		}
	}

	// Fail over: stop the leader; the other two elect one of themselves.
	oldAddr := nodes[0].Addr()
	stopped := time.Now()
	if err := nodes[0].Shutdown(); err != nil {
		t.Fatal(err)
	}
	l := 1 + waitLeader(t, nodes[1:]...)
	t.Logf("%s became leader %s after the leader stopped", ids[l], time.Since(stopped).Round(time.Millisecond))
	leader := nodes[l]
	if err := leader.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fsms[l].Items(); !slices.Equal(got, want) {
		t.Fatalf("new leader's FSM = %v, want %v", got, want)
	}
	more := cmds("b", 5)
	for _, c := range more {
		if _, err := leader.Apply(ctx, []byte(c)); err != nil {
			t.Fatalf("Apply(%s) on the new leader: %v", c, err)
		}
	}
	want = append(want, more...)

	// The old leader restarts with Bootstrap still set: it must rejoin the
	// cluster as a follower, not bootstrap a second one.
	cfgs[0].BindAddr = oldAddr
	fsm1 := newListFSM()
	n1 := openNode(t, cfgs[0], fsm1)
	waitFor(t, 5*time.Second, "n1 to rejoin and catch up", func() bool {
		id, _ := n1.Leader()
		return id == ids[l] && slices.Equal(fsm1.Items(), want)
	})
	if n1.IsLeader() {
		t.Error("the restarted n1 is leader")
	}
	if peers, err := n1.Peers(); err != nil || len(peers) != 3 {
		t.Errorf("n1.Peers() = %+v, %v; want the 3-server configuration", peers, err)
	}

	if err := leader.RemoveServer(ctx, "n1"); err != nil {
		t.Fatalf("RemoveServer(n1): %v", err)
	}
	if peers, err := leader.Peers(); err != nil || len(peers) != 2 || slices.ContainsFunc(peers, func(p consensus.Peer) bool { return p.ID == "n1" }) {
		t.Errorf("Peers after RemoveServer = %+v, %v", peers, err)
	}
	if _, err := leader.Apply(ctx, []byte("after remove")); err != nil {
		t.Errorf("Apply with two servers: %v", err)
	}
}

func TestStaleRestoreFilesAreRemovedAtOpen(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(cfg.DataDir, "restore-123.tmp")
	if err := os.WriteFile(stale, []byte("half an archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	openNode(t, cfg, newListFSM())
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale restore file still there (stat: %v)", err)
	}
}
