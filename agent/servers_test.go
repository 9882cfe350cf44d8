package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// logBuf keeps an agent's log so a test can wait for what it reports.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.Lines(l.b.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// testServer is a real server agent of a multi-server cluster on
// loopback, with its log kept.
type testServer struct {
	*testAgent
	logs *logBuf
}

// fleet is a test's servers. They are shut down together at the end of
// the test, gossip first: a graceful gossip leave waits up to seconds for
// its broadcast, which these tests do not look at.
type fleet struct {
	t       testing.TB
	mu      sync.Mutex
	servers []*testServer
}

func newFleet(t testing.TB) *fleet {
	f := &fleet{t: t}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		var wg sync.WaitGroup
		for _, s := range f.servers {
			wg.Go(func() {
				_ = s.gossip.Shutdown()
				_ = s.Shutdown(context.Background())
			})
		}
		wg.Wait()
	})
	return f
}

// start starts server name with -bootstrap-expect expect (0: none),
// joined to join's gossip (nil: the first server). tune, if set, changes
// autopilot's clocks before the agent starts.
func (f *fleet) start(name string, expect int, join *testServer, tune func(*serverTimings), mutate ...func(*Config)) *testServer {
	t := f.t
	t.Helper()
	cfg := Defaults()
	cfg.NodeName, cfg.Server, cfg.BootstrapExpect, cfg.DevTiming = name, true, expect, true
	cfg.DataDir = t.TempDir()
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort = 0, 0, 0, 0
	cfg.ShutdownTimeout = 5 * time.Second
	if join != nil {
		cfg.Join = []string{join.GossipAddr()}
	}
	for _, m := range mutate {
		m(&cfg)
	}
	logs := &logBuf{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	a, err := New(cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tm := a.timings()
		tune(&tm)
		a.servers.tune = &tm
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := h2c()
	s := &testServer{logs: logs, testAgent: &testAgent{Agent: a, dir: cfg.DataDir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, a.Addr()),
		wk: taskerv1connect.NewWorkerServiceClient(c, a.Addr()),
		cl: taskerv1connect.NewClusterServiceClient(c, a.Addr()),
	}}
	f.mu.Lock()
	f.servers = append(f.servers, s)
	f.mu.Unlock()
	return s
}

// startServers starts n servers s1..sn with -bootstrap-expect expect, all
// joined to s1.
func (f *fleet) startServers(n, expect int, tune func(*serverTimings)) []*testServer {
	f.t.Helper()
	var out []*testServer
	for i := 1; i <= n; i++ {
		var join *testServer
		if i > 1 {
			join = out[0]
		}
		out = append(out, f.start("s"+string(rune('0'+i)), expect, join, tune))
	}
	return out
}

// crash stops s the way a killed process stops: no gossip leave, no
// leadership transfer, connections dropped.
func crash(s *testServer) {
	_ = s.gossip.Shutdown()
	_ = s.node.Shutdown()
	_ = s.rpcSrv.Close()
	_ = s.srv.Close()
}

// leaderOf returns the one server of ss that leads with every other one
// of ss following it, or nil.
func leaderOf(ss []*testServer) *testServer {
	var leader *testServer
	for _, s := range ss {
		if s.node.IsLeader() {
			if leader != nil {
				return nil
			}
			leader = s
		}
	}
	if leader == nil {
		return nil
	}
	for _, s := range ss {
		if id, _ := s.node.Leader(); id != leader.cfg.NodeName {
			return nil
		}
	}
	return leader
}

// config lists s's voters and non-voters, sorted.
func config(s *testServer) (voters, nonvoters []string) {
	peers, err := s.node.Peers()
	if err != nil {
		return nil, nil
	}
	for _, p := range peers {
		if p.Voter {
			voters = append(voters, p.ID)
		} else {
			nonvoters = append(nonvoters, p.ID)
		}
	}
	slices.Sort(voters)
	slices.Sort(nonvoters)
	return voters, nonvoters
}

// waitCluster waits until ss agree on one leader whose configuration is
// exactly the voters want, and returns the leader.
func waitCluster(t *testing.T, ss []*testServer, want ...string) *testServer {
	t.Helper()
	var (
		leader      *testServer
		last, lastN []string
	)
	deadline := time.Now().Add(15 * time.Second)
	for {
		leader = leaderOf(ss)
		if leader != nil {
			last, lastN = config(leader)
			if slices.Equal(last, want) && len(lastN) == 0 {
				return leader
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for one leader with voters %v: leader %v, voters %v, non-voters %v", want, leader != nil, last, lastN)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// names lists the node names of ss, sorted, as waitCluster wants them.
func names(ss []*testServer) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.cfg.NodeName)
	}
	slices.Sort(out)
	return out
}

func others(ss []*testServer, not ...*testServer) []*testServer {
	var out []*testServer
	for _, s := range ss {
		if !slices.Contains(not, s) {
			out = append(out, s)
		}
	}
	return out
}

func TestBootstrapExpectFormsOneCluster(t *testing.T) {
	ss := newFleet(t).startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	for _, s := range ss {
		waitFor(t, 5*time.Second, s.cfg.NodeName+" to have the configuration", func() bool {
			v, n := config(s)
			return slices.Equal(v, []string{"s1", "s2", "s3"}) && len(n) == 0
		})
	}
	waitFor(t, 5*time.Second, "a server to log that it bootstrapped the cluster", func() bool {
		return slices.ContainsFunc(ss, func(s *testServer) bool { return s.logs.has("bootstrap: formed a new cluster") })
	})

	// RaftPeers asks every peer for its last index.
	follower := others(ss, leader)[0]
	waitFor(t, 5*time.Second, "raft peers with every last index", func() bool {
		resp, err := follower.cl.RaftPeers(context.Background(), connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil || len(resp.Msg.GetPeers()) != 3 || resp.Msg.GetLeader() != leader.cfg.NodeName {
			return false
		}
		for _, p := range resp.Msg.GetPeers() {
			if p.GetLastIndex() == 0 || !p.GetVoter() {
				return false
			}
		}
		return true
	})
}

func TestRemovePeerErrorsNameTheID(t *testing.T) {
	ss := newFleet(t).startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	follower := others(ss, leader)[0]
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		via  *testServer
		id   string
		code connect.Code
		msg  []string
	}{
		{"empty id on the leader", leader, " ", connect.CodeInvalidArgument, []string{"id: required", "s1, s2, s3"}},
		{"unknown id on the leader", leader, "s9", connect.CodeNotFound, []string{`"s9"`, "s1, s2, s3"}},
		{"unknown id through a follower", follower, "s9", connect.CodeNotFound, []string{`"s9"`, "s1, s2, s3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.via.cl.RemovePeer(ctx, connect.NewRequest(&taskerv1.RemovePeerRequest{Id: tt.id}))
			if connect.CodeOf(err) != tt.code {
				t.Fatalf("code %v (%v), want %v", connect.CodeOf(err), err, tt.code)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
	// The agent-to-agent call is the leader's alone.
	_, err := follower.fwd.agentClient("http://"+follower.RPCAddr()).RemovePeer(ctx, connect.NewRequest(&agentv1.RemovePeerRequest{Id: "s9"}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("AgentService.RemovePeer on a follower: %v, want Unavailable", err)
	}
	if v, _ := config(leader); len(v) != 3 {
		t.Fatalf("a refused removal changed the configuration: %v", v)
	}

	// The last voter stays.
	solo := startAgent(t, t.TempDir())
	_, err = solo.cl.RemovePeer(ctx, connect.NewRequest(&taskerv1.RemovePeerRequest{Id: "test"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "test is the last voter") {
		t.Fatalf("removing the last voter: %v", err)
	}
}

func TestConflictingBootstrapExpectNeverBootstraps(t *testing.T) {
	f := newFleet(t)
	s1 := f.start("s1", 3, nil, nil)
	s2 := f.start("s2", 3, s1, nil)
	s3 := f.start("s3", 2, s1, nil)
	ss := []*testServer{s1, s2, s3}
	waitFor(t, 10*time.Second, "every server to report the conflict", func() bool {
		return s1.logs.has("conflicting bootstrap_expect", "server=s3", "its_bootstrap_expect=2") &&
			s2.logs.has("conflicting bootstrap_expect", "server=s3", "its_bootstrap_expect=2") &&
			s3.logs.has("conflicting bootstrap_expect", "its_bootstrap_expect=3")
	})
	// Nothing may happen: watch for a while (a negative cannot be polled
	// for). Several bootstrap rounds run in this window.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, s := range ss {
			if id, _ := s.node.Leader(); id != "" || s.node.LastIndex() > 0 {
				t.Fatalf("%s: leader %q, last index %d: a cluster formed despite the conflict", s.cfg.NodeName, id, s.node.LastIndex())
			}
		}
	}

	// Once the odd one is gone, the three that agree form one cluster.
	if err := s3.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s4 := f.start("s4", 3, s1, nil)
	waitCluster(t, []*testServer{s1, s2, s4}, "s1", "s2", "s4")
	if s3.node.LastIndex() != 0 {
		t.Errorf("s3 (bootstrap_expect 2) has a Raft log: last index %d", s3.node.LastIndex())
	}
}

func TestAutopilotAddsPromotesAndRemovesServers(t *testing.T) {
	f := newFleet(t)
	ss := f.startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")

	// A server started later, without -bootstrap-expect, is staged and
	// promoted.
	s4 := f.start("s4", 0, ss[0], nil)
	ss = append(ss, s4)
	leader = waitCluster(t, ss, "s1", "s2", "s3", "s4")
	// The log line follows the commit that waitCluster may see first.
	waitFor(t, 5*time.Second, "the leader to log staging and promoting s4", func() bool {
		return leader.logs.has("autopilot: added a server as a non-voter", "server=s4") && leader.logs.has("autopilot: promoted a server to voter", "server=s4")
	})
	if !s4.logs.has("agent started") || s4.logs.has("bootstrap:") {
		t.Error("s4 (no -bootstrap-expect) ran the bootstrap loop")
	}

	// A server that dies is removed: 1 failed voter of 4 is within the
	// safe limit.
	dead := others(ss, leader)[0]
	crash(dead)
	ss = others(ss, dead)
	leader = waitCluster(t, ss, names(ss)...)
	// Whoever led when it was removed says why: on a loaded machine that
	// may be a leader before the one waitCluster found.
	waitFor(t, 10*time.Second, "a leader to log why it removed "+dead.cfg.NodeName, func() bool {
		for _, s := range ss {
			if s.logs.has("autopilot: removed a server", "server="+dead.cfg.NodeName, "dead in gossip") {
				return true
			}
		}
		return false
	})

	// A follower that leaves is removed from Raft and its agent stops.
	gone := others(ss, leader)[0]
	if _, err := gone.cl.Leave(context.Background(), connect.NewRequest(&taskerv1.LeaveRequest{})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone.Left():
	case <-time.After(15 * time.Second):
		t.Fatal("the leaving server did not stop")
	}
	if !gone.logs.has("leave: removed from the Raft configuration") {
		t.Error("the leaving server did not confirm its removal")
	}
	ss = others(ss, gone)
	waitCluster(t, ss, names(ss)...)
	// It is not staged again: it left gossip too.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if v, n := config(leader); len(v) != 2 || len(n) != 0 {
			t.Fatalf("after %s left: voters %v, non-voters %v", gone.cfg.NodeName, v, n)
		}
	}
}

func TestLeaveOnTheLeaderHandsLeadershipOver(t *testing.T) {
	ss := newFleet(t).startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	if _, err := leader.cl.Leave(context.Background(), connect.NewRequest(&taskerv1.LeaveRequest{})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leader.Left():
	case <-time.After(15 * time.Second):
		t.Fatal("the leaving leader did not stop")
	}
	if !leader.logs.has("leave: handed leadership over") {
		t.Error("the leader did not hand leadership over")
	}
	rest := others(ss, leader)
	waitCluster(t, rest, names(rest)...)
}

func TestForceLeaveRemovesAFailedServer(t *testing.T) {
	// Autopilot would remove the dead server itself; keep it from doing so
	// to see force-leave do it.
	patient := func(tm *serverTimings) { tm.deadGrace, tm.unknownGrace = time.Hour, time.Hour }
	ss := newFleet(t).startServers(3, 3, patient)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	rest := others(ss, leader)
	dead, via := rest[0], rest[1]
	ctx := context.Background()

	// Refusals name the node.
	for _, tt := range []struct {
		node string
		code connect.Code
		msg  string
	}{
		{"", connect.CodeInvalidArgument, "node: required"},
		{via.cfg.NodeName, connect.CodeInvalidArgument, "run 'tasker leave'"},
		{leader.cfg.NodeName, connect.CodeFailedPrecondition, leader.cfg.NodeName + " is alive"},
		{"nobody", connect.CodeNotFound, `"nobody"`},
	} {
		_, err := via.cl.ForceLeave(ctx, connect.NewRequest(&taskerv1.ForceLeaveRequest{Node: tt.node}))
		if connect.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("force-leave %q: %v, want %v mentioning %q", tt.node, err, tt.code, tt.msg)
		}
	}

	crash(dead)
	waitFor(t, 10*time.Second, "gossip to declare "+dead.cfg.NodeName+" dead", func() bool {
		for _, m := range via.gossip.Members() {
			if m.Name == dead.cfg.NodeName {
				return m.Status == gossip.StatusDead
			}
		}
		return false
	})
	resp, err := via.cl.ForceLeave(ctx, connect.NewRequest(&taskerv1.ForceLeaveRequest{Node: dead.cfg.NodeName}))
	if err != nil || !resp.Msg.GetRemovedFromRaft() {
		t.Fatalf("force-leave %s: %v, removed_from_raft %v", dead.cfg.NodeName, err, resp.Msg.GetRemovedFromRaft())
	}
	survivors := []*testServer{leader, via}
	waitCluster(t, survivors, names(survivors)...)
	// Again: known to gossip, no longer in Raft.
	resp, err = via.cl.ForceLeave(ctx, connect.NewRequest(&taskerv1.ForceLeaveRequest{Node: dead.cfg.NodeName}))
	if err != nil || resp.Msg.GetRemovedFromRaft() {
		t.Fatalf("second force-leave: %v, removed_from_raft %v", err, resp.Msg.GetRemovedFromRaft())
	}
}

func TestAutopilotNeverAddsAnotherClustersServer(t *testing.T) {
	f := newFleet(t)
	// A one-server cluster of its own, named by its first leader, stopped.
	dir := t.TempDir()
	inDir := func(c *Config) { c.DataDir = dir }
	old := f.start("old", 1, nil, nil, inDir)
	waitFor(t, 10*time.Second, "the old cluster to be named", func() bool { return old.state.ClusterID() != "" })
	oldID := old.state.ClusterID()
	if err := old.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	ss := f.startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	waitFor(t, 10*time.Second, "the cluster to be named", func() bool { return leader.state.ClusterID() != "" })

	// The old server comes back on its data dir and joins this cluster's
	// gossip: it leads its own cluster, and neither takes the other in.
	back := f.start("old", 0, ss[0], nil, inDir)
	waitFor(t, 10*time.Second, "the leader to refuse the old server", func() bool {
		return leader.logs.has("not adding a server whose Raft state is not this cluster's", "server=old", "its_cluster_id="+oldID)
	})
	waitFor(t, 10*time.Second, "the old server to refuse this cluster's servers", func() bool {
		return back.logs.has("not adding a server whose Raft state is not this cluster's", "server=s1")
	})
	if v, n := config(leader); !slices.Equal(v, []string{"s1", "s2", "s3"}) || len(n) > 0 {
		t.Errorf("the cluster's configuration: voters %v, non-voters %v", v, n)
	}
	if v, n := config(back); !slices.Equal(v, []string{"old"}) || len(n) > 0 {
		t.Errorf("the old server's configuration: voters %v, non-voters %v", v, n)
	}
	if back.state.ClusterID() != oldID {
		t.Errorf("the old server's cluster id changed from %s to %s", oldID, back.state.ClusterID())
	}
}
