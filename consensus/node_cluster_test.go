package consensus_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
)

// clusterTimeout bounds each cluster test's raft operations.
const clusterTimeout = 20 * time.Second

// openFresh opens n servers with empty data dirs and Bootstrap off.
func openFresh(t *testing.T, log *slog.Logger, ids ...string) ([]*consensus.Node, []*listFSM, []consensus.Server) {
	t.Helper()
	nodes := make([]*consensus.Node, len(ids))
	fsms := make([]*listFSM, len(ids))
	servers := make([]consensus.Server, len(ids))
	for i, id := range ids {
		fsms[i] = newListFSM()
		nodes[i] = openNode(t, testConfig(t, log, id), fsms[i])
		if nodes[i].HadState() {
			t.Fatalf("%s: HadState() = true on an empty data dir", id)
		}
		servers[i] = consensus.Server{ID: id, Addr: nodes[i].Addr()}
	}
	return nodes, fsms, servers
}

// bootstrapAll has every node bootstrap with the same list at once, as a
// -bootstrap-expect group does. A node the winner of the first election
// reached before its own call may answer ErrAlreadyBootstrapped; at least
// one must succeed.
func bootstrapAll(ctx context.Context, t *testing.T, nodes []*consensus.Node, servers []consensus.Server) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.BootstrapCluster(ctx, slices.Clone(servers)) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, consensus.ErrAlreadyBootstrapped):
			t.Logf("%s: %v (another server reached it first)", servers[i].ID, err)
		default:
			t.Fatalf("%s: BootstrapCluster: %v", servers[i].ID, err)
		}
	}
	if ok == 0 {
		t.Fatal("no server bootstrapped")
	}
}

func TestBootstrapClusterFormsOneClusterThatReplicates(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()

	nodes, fsms, servers := openFresh(t, log, "b1", "b2", "b3")
	bootstrapAll(ctx, t, nodes, servers)
	l := waitLeader(t, nodes...)
	leader := nodes[l]
	for i, n := range nodes {
		peers, err := n.Peers()
		if err != nil {
			t.Fatalf("%s.Peers: %v", servers[i].ID, err)
		}
		var got []consensus.Server
		for _, p := range peers {
			if !p.Voter {
				t.Errorf("%s.Peers: %+v is not a voter", servers[i].ID, p)
			}
			got = append(got, consensus.Server{ID: p.ID, Addr: p.Address})
		}
		if !slices.Equal(got, servers) {
			t.Errorf("%s.Peers = %+v, want the bootstrap list %+v", servers[i].ID, got, servers)
		}
	}

	lastBefore, appliedBefore := leader.LastIndex(), leader.AppliedIndex()
	if _, err := leader.Apply(ctx, []byte("x")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if last, applied := leader.LastIndex(), leader.AppliedIndex(); last <= lastBefore || applied <= appliedBefore || applied > last {
		t.Errorf("leader indexes after Apply: last %d (was %d), applied %d (was %d); want both to advance, applied <= last",
			last, lastBefore, applied, appliedBefore)
	}
	want := []string{"x"}
	leaderLast, leaderTerm := leader.LastIndex(), leader.Term()
	for i, n := range nodes {
		waitFor(t, 5*time.Second, servers[i].ID+" to apply the entry", func() bool {
			return slices.Equal(fsms[i].Items(), want) && n.AppliedIndex() == leaderLast
		})
		if n.LastIndex() != leaderLast || n.Term() != leaderTerm || leaderTerm == 0 {
			t.Errorf("%s: LastIndex %d, Term %d; want the leader's %d, %d (term > 0)", servers[i].ID, n.LastIndex(), n.Term(), leaderLast, leaderTerm)
		}
		if i == l {
			continue
		}
		if lc := n.LastContact(); lc.IsZero() || time.Since(lc) > 5*time.Second {
			t.Errorf("%s.LastContact() = %v, want a recent contact with the leader", servers[i].ID, lc)
		}
	}
}

func TestBootstrapClusterOnAServerTheWinnerReachedFirst(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()

	// c1 bootstraps and wins the first election with c2's vote before c2
	// calls BootstrapCluster itself.
	nodes, _, servers := openFresh(t, log, "c1", "c2")
	if err := nodes[0].BootstrapCluster(ctx, servers); err != nil {
		t.Fatalf("c1: BootstrapCluster: %v", err)
	}
	waitLeader(t, nodes...)
	if err := nodes[1].BootstrapCluster(ctx, servers); !errors.Is(err, consensus.ErrAlreadyBootstrapped) {
		t.Fatalf("c2: BootstrapCluster after joining: err = %v, want ErrAlreadyBootstrapped", err)
	}
	if nodes[1].HadState() {
		t.Error("c2.HadState() = true; it had none at Open")
	}
	if _, err := nodes[0].Apply(ctx, []byte("still one cluster")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func TestBootstrapClusterRefusesAServerWithState(t *testing.T) {
	tests := []struct {
		name     string
		reopen   bool // shut the server down and reopen it on its data dir
		hadState bool
	}{
		{"bootstrapped by Config.Bootstrap at Open", false, false},
		{"reopened on its old data dir", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := testLogger(t)
			ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
			defer cancel()

			cfg := testConfig(t, log, "s1")
			cfg.Bootstrap = true
			n := openNode(t, cfg, newListFSM())
			waitLeader(t, n)
			if _, err := n.Apply(ctx, []byte("a")); err != nil {
				t.Fatal(err)
			}
			if tt.reopen {
				if err := n.Shutdown(); err != nil {
					t.Fatal(err)
				}
				cfg.BindAddr = n.Addr()
				cfg.Bootstrap = false
				n = openNode(t, cfg, newListFSM())
				waitLeader(t, n)
			}
			if got := n.HadState(); got != tt.hadState {
				t.Errorf("HadState() = %v, want %v", got, tt.hadState)
			}
			if err := n.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			peersBefore, err := n.Peers()
			if err != nil {
				t.Fatal(err)
			}
			lastBefore, termBefore := n.LastIndex(), n.Term()

			lists := map[string][]consensus.Server{
				"itself":               {{ID: "s1", Addr: n.Addr()}},
				"itself and two peers": {{ID: "s1", Addr: n.Addr()}, {ID: "s2", Addr: "127.0.0.1:1"}, {ID: "s3", Addr: "127.0.0.1:2"}},
			}
			for name, list := range lists {
				if err := n.BootstrapCluster(ctx, list); !errors.Is(err, consensus.ErrAlreadyBootstrapped) {
					t.Errorf("BootstrapCluster(%s): err = %v, want ErrAlreadyBootstrapped", name, err)
				}
			}
			peersAfter, err := n.Peers()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(peersAfter, peersBefore) || n.LastIndex() != lastBefore || n.Term() != termBefore {
				t.Errorf("a refused BootstrapCluster changed the server: peers %+v → %+v, last index %d → %d, term %d → %d",
					peersBefore, peersAfter, lastBefore, n.LastIndex(), termBefore, n.Term())
			}
			if !n.IsLeader() {
				t.Error("the server lost leadership")
			}
		})
	}
}

func TestBootstrapClusterRefusesABadList(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()
	nodes, _, _ := openFresh(t, log, "v1")
	n := nodes[0]
	self := consensus.Server{ID: "v1", Addr: n.Addr()}
	other := consensus.Server{ID: "v2", Addr: "127.0.0.1:1"}

	tests := []struct {
		name    string
		servers []consensus.Server
		want    string
	}{
		{"empty", nil, "empty"},
		{"without the local node", []consensus.Server{other, {ID: "v3", Addr: "127.0.0.1:2"}}, "v1) is not in the list"},
		{"duplicate ID", []consensus.Server{self, other, {ID: "v2", Addr: "127.0.0.1:2"}}, "v2 is listed twice"},
		{"duplicate address", []consensus.Server{self, other, {ID: "v3", Addr: other.Addr}}, other.Addr + " is listed twice"},
		{"missing ID", []consensus.Server{self, {Addr: "127.0.0.1:2"}}, "server 1 has no ID"},
		{"address without port", []consensus.Server{self, {ID: "v2", Addr: "127.0.0.1"}}, "v2"},
		{"local node at another address", []consensus.Server{{ID: "v1", Addr: "127.0.0.1:1"}, other}, "Raft address is " + n.Addr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := n.BootstrapCluster(ctx, tt.servers)
			if err == nil {
				t.Fatal("BootstrapCluster succeeded")
			}
			if errors.Is(err, consensus.ErrAlreadyBootstrapped) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want a validation error mentioning %q", err, tt.want)
			}
		})
	}

	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := n.BootstrapCluster(canceled, []consensus.Server{self}); !errors.Is(err, context.Canceled) {
		t.Errorf("BootstrapCluster with a canceled context: err = %v, want context.Canceled", err)
	}

	// Nothing was written: the server is still empty and can bootstrap.
	if peers, err := n.Peers(); err != nil || len(peers) != 0 || n.LastIndex() != 0 || n.Term() != 0 {
		t.Fatalf("after refusals: peers %+v (err %v), last index %d, term %d; want an empty server", peers, err, n.LastIndex(), n.Term())
	}
	if err := n.BootstrapCluster(ctx, []consensus.Server{self}); err != nil {
		t.Fatalf("BootstrapCluster with a good list: %v", err)
	}
	waitLeader(t, n)
}

func TestAddNonvoterStagesAServerAndAddVoterPromotesIt(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()

	cfg := testConfig(t, log, "p1")
	cfg.Bootstrap = true
	fsm1 := newListFSM()
	n1 := openNode(t, cfg, fsm1)
	waitLeader(t, n1)
	want := cmds("a", 5)
	for _, c := range want {
		if _, err := n1.Apply(ctx, []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n1.TransferLeadership(ctx); err == nil || !strings.Contains(err.Error(), "no other voter") {
		t.Errorf("TransferLeadership alone: err = %v, want one saying there is no other voter", err)
	}
	if err := n1.AddNonvoter(ctx, "", "127.0.0.1:1"); err == nil {
		t.Error("AddNonvoter without an id succeeded")
	}

	fsm2 := newListFSM()
	n2 := openNode(t, testConfig(t, log, "p2"), fsm2)
	voter := func(n *consensus.Node, id string) (member, voter bool) {
		t.Helper()
		peers, err := n.Peers()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.ID == id {
				return true, p.Voter
			}
		}
		return false, false
	}

	if err := n1.AddNonvoter(ctx, "p2", n2.Addr()); err != nil {
		t.Fatalf("AddNonvoter: %v", err)
	}
	if member, v := voter(n1, "p2"); !member || v {
		t.Fatalf("after AddNonvoter: p2 member %v voter %v; want a member without a vote", member, v)
	}
	waitFor(t, 5*time.Second, "the nonvoter to catch up", func() bool { return slices.Equal(fsm2.Items(), want) })
	if member, v := voter(n2, "p2"); !member || v {
		t.Errorf("p2's own configuration: member %v voter %v; want a member without a vote", member, v)
	}
	if err := n2.AddNonvoter(ctx, "p3", "127.0.0.1:1"); !errors.Is(err, consensus.ErrNotLeader) {
		t.Errorf("AddNonvoter on the nonvoter: err = %v, want ErrNotLeader", err)
	}
	// A nonvoter is no transfer target.
	if err := n1.TransferLeadership(ctx); err == nil || !strings.Contains(err.Error(), "no other voter") {
		t.Errorf("TransferLeadership with only a nonvoter: err = %v, want one saying there is no other voter", err)
	}

	if err := n1.AddVoter(ctx, "p2", n2.Addr()); err != nil {
		t.Fatalf("AddVoter (promote): %v", err)
	}
	if member, v := voter(n1, "p2"); !member || !v {
		t.Fatalf("after AddVoter: p2 member %v voter %v; want a voter", member, v)
	}
	more := cmds("b", 3)
	for _, c := range more {
		if _, err := n1.Apply(ctx, []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	want = append(want, more...)
	waitFor(t, 5*time.Second, "the promoted voter to catch up", func() bool {
		_, v := voter(n2, "p2")
		return v && slices.Equal(fsm2.Items(), want)
	})
	if peers, err := n1.Peers(); err != nil || len(peers) != 2 {
		t.Errorf("Peers = %+v, %v; want p1 and p2", peers, err)
	}
}

func TestVerifyAndTransferLeadership(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()

	nodes, fsms, servers := openFresh(t, log, "t1", "t2", "t3")
	bootstrapAll(ctx, t, nodes, servers)
	l := waitLeader(t, nodes...)
	if err := nodes[l].VerifyLeader(ctx); err != nil {
		t.Errorf("VerifyLeader on the leader: %v", err)
	}
	for i, n := range nodes {
		if i == l {
			continue
		}
		if err := n.VerifyLeader(ctx); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("%s.VerifyLeader: err = %v, want ErrNotLeader", servers[i].ID, err)
		}
		if err := n.TransferLeadership(ctx); !errors.Is(err, consensus.ErrNotLeader) {
			t.Errorf("%s.TransferLeadership: err = %v, want ErrNotLeader", servers[i].ID, err)
		}
	}
	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := nodes[l].VerifyLeader(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("VerifyLeader with a canceled context: err = %v, want context.Canceled", err)
	}
	if err := nodes[l].TransferLeadership(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("TransferLeadership with a canceled context: err = %v, want context.Canceled", err)
	}

	oldTerm := nodes[l].Term()
	if err := nodes[l].TransferLeadership(ctx); err != nil {
		t.Fatalf("TransferLeadership: %v", err)
	}
	if nodes[l].IsLeader() {
		t.Error("the old leader is still leader after TransferLeadership returned")
	}
	nl := waitLeader(t, nodes...)
	if nl == l {
		t.Fatalf("leadership stayed with %s", servers[l].ID)
	}
	t.Logf("leadership moved from %s to %s", servers[l].ID, servers[nl].ID)
	if term := nodes[nl].Term(); term <= oldTerm {
		t.Errorf("term after the transfer = %d, want > %d", term, oldTerm)
	}
	if err := nodes[nl].VerifyLeader(ctx); err != nil {
		t.Errorf("VerifyLeader on the new leader: %v", err)
	}
	if err := nodes[l].VerifyLeader(ctx); !errors.Is(err, consensus.ErrNotLeader) {
		t.Errorf("VerifyLeader on the old leader: err = %v, want ErrNotLeader", err)
	}
	if _, err := nodes[nl].Apply(ctx, []byte("after transfer")); err != nil {
		t.Fatalf("Apply on the new leader: %v", err)
	}
	waitFor(t, 5*time.Second, "the old leader to apply the new leader's entry", func() bool {
		return slices.Equal(fsms[l].Items(), []string{"after transfer"})
	})

	if err := nodes[l].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[l].VerifyLeader(ctx); !errors.Is(err, consensus.ErrShutdown) {
		t.Errorf("VerifyLeader after Shutdown: err = %v, want ErrShutdown", err)
	}
	if err := nodes[l].BootstrapCluster(ctx, servers); !errors.Is(err, consensus.ErrShutdown) {
		t.Errorf("BootstrapCluster after Shutdown: err = %v, want ErrShutdown", err)
	}
}

// TestLoggedClusterID: a server reopened on its data dir knows its
// cluster's id from its log before it applies anything, so the autopilot
// of a leader that removed it while it was down can add it back; a new
// server has none.
func TestLoggedClusterID(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()
	cfg := testConfig(t, log, "s1")
	cfg.Bootstrap = true
	n := openNode(t, cfg, newListFSM())
	if got := n.LoggedClusterID(); got != "" {
		t.Fatalf("LoggedClusterID() of a new server = %q, want none", got)
	}
	waitLeader(t, n)
	for _, c := range []*fsmv1.Command{
		{Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: "c0ffee"}}},
		{Kind: &fsmv1.Command_BusCursor{BusCursor: &fsmv1.BusCursor{}}},
	} {
		b, err := consensus.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// Reopened, not bootstrapped and never elected: nothing is applied.
	cfg.BindAddr, cfg.Bootstrap = n.Addr(), false
	cfg.HeartbeatTimeout = time.Hour
	fsm := newListFSM()
	n = openNode(t, cfg, fsm)
	if got := n.LoggedClusterID(); got != "c0ffee" {
		t.Errorf("LoggedClusterID() after a restart = %q, want c0ffee", got)
	}
}
