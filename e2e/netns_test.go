package e2e

// Real network partitions: a cluster whose agents are separate hosts in
// network namespaces (netns_harness_test.go), cut apart and healed.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// startLabCluster starts three servers and one client agent with every
// order service, each on its own host of a new network lab, and applies
// the order workflow (5 s step timeouts, for leases lost to a partition).
func startLabCluster(t *testing.T) (*netLab, *cluster, *client.Client) {
	t.Helper()
	lab := newNetLab(t)
	c := startClusterWith(t, clusterOptions{servers: 3, lab: lab, clients: []clientSpec{
		{name: "client-a", only: "orders,inventory,payments,shipping,notifications", flags: []string{"-delay", "20ms-60ms"}},
	}})
	for _, s := range c.servers {
		if !strings.HasPrefix(s.raft, s.host.ip.String()+":") {
			t.Fatalf("%s's Raft address is %s, not on its lab host %s", s.name, s.raft, s.host.ip)
		}
	}
	cl := newClient(c.client("client-a").api)
	if _, err := cl.ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}
	return lab, c, cl
}

// TestPartitionLeaderIsolated cuts the leader off from every other host:
// it steps down and refuses writes with an error naming the lost quorum,
// the other two servers elect a leader and keep starting and completing
// tasks, and after the heal the old leader follows and every server holds
// the same log and the same tasks. No task accepted on either side is
// lost.
func TestPartitionLeaderIsolated(t *testing.T) {
	lab, c, cl := startLabCluster(t)
	before := startBatch(t, cl, "plbefore", 5)

	old := c.servers[c.leaderIndex(t)]
	majority := slices.DeleteFunc(slices.Clone(c.servers), func(s *clusterAgent) bool { return s == old })
	cutAt := time.Now()
	lab.isolate(old.host)

	next := c.waitLeaderAmong(t, 20*time.Second, majority, old.name)
	t.Logf("failover: %s leads the majority %s after the cut", next.name, time.Since(cutAt).Round(time.Millisecond))
	waitStepDown(t, old, 20*time.Second)
	t.Logf("the isolated %s no longer leads %s after the cut", old.name, time.Since(cutAt).Round(time.Millisecond))

	checkRefusesWrites(t, old)

	during := startBatch(t, cl, "plduring", 5)
	before.waitComplete(t, 60*time.Second)
	during.waitComplete(t, 60*time.Second)
	t.Logf("every task accepted before and during the partition complete %s after the cut", time.Since(cutAt).Round(time.Millisecond))

	healAt := time.Now()
	lab.heal()
	c.waitConverged(t, 30*time.Second, append(slices.Clone(before.idList()), during.idList()...))
	t.Logf("converged %s after the heal", time.Since(healAt).Round(time.Millisecond))
	// Every key names the task it started, whichever side of the cut it
	// was accepted on, and there is no task beyond them (the refused
	// write started none).
	all := &batch{c: cl, ids: maps.Clone(before.ids)}
	maps.Copy(all.ids, during.ids)
	all.checkKeys(t)
}

// TestPartitionFollowerIsolated cuts one follower off: the leader and the
// other follower go on, writes sent to the isolated follower fail with a
// clear error within the hold timeout, and after the heal it catches up.
func TestPartitionFollowerIsolated(t *testing.T) {
	lab, c, cl := startLabCluster(t)
	leader := c.servers[c.leaderIndex(t)]
	lone := c.servers[(slices.Index(c.servers, leader)+1)%len(c.servers)]
	majority := slices.DeleteFunc(slices.Clone(c.servers), func(s *clusterAgent) bool { return s == lone })
	cutAt := time.Now()
	lab.isolate(lone.host)

	checkRefusesWrites(t, lone)
	b := startBatch(t, cl, "pf", 5)
	b.waitComplete(t, 60*time.Second)
	if now := c.waitLeaderAmong(t, 10*time.Second, majority, lone.name); now != leader {
		t.Logf("leadership moved from %s to %s while a follower was cut off", leader.name, now.name)
	}
	t.Logf("the majority completed %d tasks %s after the cut", len(b.ids), time.Since(cutAt).Round(time.Millisecond))

	healAt := time.Now()
	lab.heal()
	c.waitConverged(t, 30*time.Second, b.idList())
	t.Logf("%s caught up %s after the heal", lone.name, time.Since(healAt).Round(time.Millisecond))
}

// checkRefusesWrites checks that a StartTask sent to a server cut off from
// the quorum fails with Unavailable, within the hold timeout and a
// margin, with a message that says why.
func checkRefusesWrites(t *testing.T, s *clusterAgent) {
	t.Helper()
	cl := newClient(s.api)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	_, _, err := cl.StartTask(ctx, "order-fulfilment", orderInput("ord_minority", "tok_visa", "TEE-M"),
		client.Namespace("shop"), client.IdempotencyKey("ord_minority"))
	took := time.Since(began)
	if err == nil {
		t.Fatalf("StartTask on %s, cut off from the quorum, succeeded", s.name)
	}
	t.Logf("StartTask on the isolated %s failed after %s: %v", s.name, took.Round(time.Millisecond), err)
	if code := connect.CodeOf(err); code != connect.CodeUnavailable {
		t.Errorf("StartTask on %s: code %s, want unavailable", s.name, code)
	}
	// 7 s is the default rpc_hold_timeout; the rest is for a loaded machine.
	if took > 12*time.Second {
		t.Errorf("StartTask on %s took %s to fail, want about the hold timeout (7s)", s.name, took.Round(time.Millisecond))
	}
}

// waitStepDown waits until the server no longer says it leads.
func waitStepDown(t *testing.T, s *clusterAgent, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, s.name+" no longer leads", func(ctx context.Context) (bool, string, error) {
		res, err := s.cluster().RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil {
			return false, err.Error(), nil
		}
		return res.Msg.GetLeader() != s.name, fmt.Sprintf("leader %q term %d", res.Msg.GetLeader(), res.Msg.GetTerm()), nil
	})
}

// waitLeaderAmong waits until the given servers agree on a leader among
// them other than not, and returns it. The other servers' views are not
// asked: they may be on the other side of a partition.
func (c *cluster) waitLeaderAmong(t *testing.T, timeout time.Duration, servers []*clusterAgent, not string) *clusterAgent {
	t.Helper()
	var leader *clusterAgent
	waitFor(t, timeout, fmt.Sprintf("%v agree on a leader other than %s", agentNames(servers), not), func(ctx context.Context) (bool, string, error) {
		views, errs := c.raftViewsErr(ctx, servers)
		name := agreedLeader(views)
		if name == "" || name == not || len(views) != len(servers) {
			return false, describeViews(views) + " " + errs, nil
		}
		for _, s := range servers {
			if s.name == name {
				leader = s
			}
		}
		return leader != nil, describeViews(views), nil
	})
	return leader
}

// waitConverged waits until every server agrees on the leader, has applied
// the same log index, and answers, from its own state (stale reads), the
// same state for every task of ids, each complete.
func (c *cluster) waitConverged(t *testing.T, timeout time.Duration, ids []string) {
	t.Helper()
	waitFor(t, timeout, "every server holds the same log and the same complete tasks", func(ctx context.Context) (bool, string, error) {
		views, errs := c.raftViewsErr(ctx, c.servers)
		if agreedLeader(views) == "" || len(views) != len(c.servers) {
			return false, describeViews(views) + " " + errs, nil
		}
		applied := map[uint64][]string{}
		for name, v := range views {
			applied[v.GetAppliedIndex()] = append(applied[v.GetAppliedIndex()], name)
		}
		if len(applied) != 1 {
			return false, fmt.Sprintf("applied indexes differ: %v", applied), nil
		}
		for _, id := range ids {
			var states []string
			for _, s := range c.servers {
				res, err := s.staleWorkflows().GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
				if err != nil {
					return false, fmt.Sprintf("%s: GetTask %s: %v", s.name, id, err), nil
				}
				states = append(states, stateOf(res.Msg.GetTask()))
			}
			want := stateOf(&taskerv1.Task{State: taskerv1.TaskState_TASK_STATE_COMPLETE})
			for i, st := range states {
				if !strings.HasPrefix(st, want) {
					return false, fmt.Sprintf("%s: %s is %s", c.servers[i].name, id, st), nil
				}
				if st != states[0] {
					return false, fmt.Sprintf("%s differs: %s on %s, %s on %s", id, states[0], c.servers[0].name, st, c.servers[i].name), nil
				}
			}
		}
		return true, "", nil
	})
}

// stateOf renders a task's state and its steps' states and attempts, to
// compare servers' copies.
func stateOf(task *taskerv1.Task) string {
	var b strings.Builder
	b.WriteString(strings.TrimPrefix(task.GetState().String(), "TASK_STATE_"))
	for _, st := range task.GetSteps() {
		fmt.Fprintf(&b, " %s=%s/%d", st.GetName(), strings.TrimPrefix(st.GetState().String(), "STEP_STATE_"), st.GetAttempts())
	}
	return b.String()
}

// idList lists the batch's task ids, sorted.
func (b *batch) idList() []string {
	out := make([]string, 0, len(b.ids))
	for _, id := range b.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func agentNames(as []*clusterAgent) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.name
	}
	return out
}
