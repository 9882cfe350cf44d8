package e2e

// Real network partitions: a cluster whose agents are separate hosts in
// network namespaces (netns_harness_test.go), cut apart and healed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// startLabCluster starts three servers and the client agents of specs,
// each with its services, each agent on its own host of a new network
// lab, and applies the order workflow with every step timeout set to
// stepTimeout (the lease a partition makes an attempt lose).
func startLabCluster(t *testing.T, stepTimeout string, specs ...clientSpec) (*netLab, *cluster) {
	t.Helper()
	lab := newNetLab(t)
	c := startClusterWith(t, clusterOptions{servers: 3, lab: lab, clients: specs})
	for _, s := range c.servers {
		if !strings.HasPrefix(s.raft, s.host.ip.String()+":") {
			t.Fatalf("%s's Raft address is %s, not on its lab host %s", s.name, s.raft, s.host.ip)
		}
	}
	if _, err := newClient(c.clients[0].api).ApplyWorkflow(callCtx(t), fastWorkflow(t, stepTimeout)); err != nil {
		t.Fatal(err)
	}
	return lab, c
}

// labClient is one client agent running every order service, quickly.
var labClient = clientSpec{name: "client-a", only: allServices, flags: []string{"-delay", "20ms-60ms"}}

// TestPartitionLeaderIsolated cuts the leader off from every other host:
// it steps down and refuses writes with an error naming the lost quorum,
// the other two servers elect a leader and keep starting and completing
// tasks meanwhile, and after the heal the old leader follows and every
// server holds the same log and the same tasks. No task accepted on
// either side is lost.
func TestPartitionLeaderIsolated(t *testing.T) {
	lab, c := startLabCluster(t, "5s", labClient)
	cl := newClient(c.client("client-a").api)
	before := startBatch(t, cl, "plbefore", 5)

	old := c.servers[c.leaderIndex(t)]
	cutAt := time.Now()
	lab.isolate(old.host)

	next, _ := c.waitLeaderAmong(t, 20*time.Second, c.others(old))
	t.Logf("failover: %s leads the majority %s after the cut", next.name, time.Since(cutAt).Round(time.Millisecond))
	waitStepDown(t, old, 20*time.Second)
	t.Logf("the isolated %s no longer leads %s after the cut", old.name, time.Since(cutAt).Round(time.Millisecond))

	refused := tryWrite(old)
	during := startBatch(t, cl, "plduring", 5)
	before.waitComplete(t, 60*time.Second)
	during.waitComplete(t, 60*time.Second)
	t.Logf("every task accepted before and during the partition complete %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	oldRefusal := <-refused
	checkRefused(t, old, oldRefusal)

	healAt := time.Now()
	lab.heal()
	c.waitConverged(t, 30*time.Second, batchIDs(before, during))
	t.Logf("converged %s after the heal", time.Since(healAt).Round(time.Millisecond))
	// Every key names the task it started, whichever side of the cut it
	// was accepted on, and there is no task beyond them.
	all := &batch{c: cl, ids: maps.Clone(before.ids)}
	maps.Copy(all.ids, during.ids)
	retryRefused(t, old, oldRefusal, all)
	all.checkKeys(t)
}

// TestPartitionFollowerIsolated cuts one follower off: the leader and the
// other follower go on, writes sent to the isolated follower fail with a
// clear error within the hold timeout, and after the heal it catches up.
func TestPartitionFollowerIsolated(t *testing.T) {
	lab, c := startLabCluster(t, "5s", labClient)
	cl := newClient(c.client("client-a").api)
	leader := c.servers[c.leaderIndex(t)]
	lone := c.servers[(slices.Index(c.servers, leader)+1)%len(c.servers)]
	cutAt := time.Now()
	lab.isolate(lone.host)

	refused := tryWrite(lone)
	b := startBatch(t, cl, "pf", 5)
	b.waitComplete(t, 60*time.Second)
	t.Logf("the majority completed %d tasks %s after the cut", len(b.ids), time.Since(cutAt).Round(time.Millisecond))
	loneRefusal := <-refused
	checkRefused(t, lone, loneRefusal)
	if now, _ := c.waitLeaderAmong(t, 10*time.Second, c.others(lone)); now != leader {
		t.Logf("leadership moved from %s to %s while a follower was cut off", leader.name, now.name)
	}

	healAt := time.Now()
	lab.heal()
	c.waitConverged(t, 30*time.Second, batchIDs(b))
	t.Logf("%s caught up %s after the heal", lone.name, time.Since(healAt).Round(time.Millisecond))
	retryRefused(t, lone, loneRefusal, b)
	b.checkKeys(t)
}

// TestPartitionClientAgentIsolated cuts off a client agent (and its app,
// on the same host) while it holds steps: its local API refuses writes
// with an error naming the cut; the leader fails the held attempts as lost
// once gossip declares the agent dead (their leases would lapse anyway)
// and runs them as later attempts on the other agent offering the
// capability; after the heal the agent is a provider again, and its app's
// late results for the old attempts change nothing.
func TestPartitionClientAgentIsolated(t *testing.T) {
	lab, c := startLabCluster(t, "3s",
		clientSpec{name: "client-main", only: "orders,payments,shipping,notifications"},
		clientSpec{name: "client-inv-slow", only: "inventory", flags: []string{"-delay", "1500ms"}},
		clientSpec{name: "client-inv-fast", only: "inventory"},
	)
	cl := newClient(c.client("client-main").api)
	b := startBatch(t, cl, "pc", 8)
	held := map[string]int32{} // task → the reserve attempt client-inv-slow holds
	waitFor(t, 30*time.Second, "client-inv-slow holds reserve steps", func(ctx context.Context) (bool, string, error) {
		tasks, err := b.tasks(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		clear(held)
		for _, task := range tasks {
			if st := stepOf(t, task, "reserve"); st.GetState() == taskerv1.StepState_STEP_STATE_IN_PROGRESS && st.GetAgent() == "client-inv-slow" {
				held[task.GetId()] = st.GetAttempts()
			}
		}
		return len(held) > 0, fmt.Sprintf("%d held", len(held)), nil
	})
	slow := c.client("client-inv-slow")
	cutAt := time.Now()
	lab.isolate(slow.host)
	t.Logf("cut client-inv-slow off holding %d reserve steps", len(held))

	refused := tryWrite(slow)
	final := b.waitComplete(t, 60*time.Second)
	t.Logf("every task complete %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	slowRefusal := <-refused
	checkRefused(t, slow, slowRefusal)
	for _, task := range final {
		attempt, ok := held[task.GetId()]
		if !ok {
			continue
		}
		if st := stepOf(t, task, "reserve"); st.GetAgent() != "client-inv-fast" || st.GetAttempts() <= attempt {
			t.Errorf("%s/reserve: held as attempt %d by client-inv-slow at the cut; completed as attempt %d on %q, want a later attempt on client-inv-fast",
				task.GetId(), attempt, st.GetAttempts(), st.GetAgent())
		}
	}

	healAt := time.Now()
	lab.heal()
	c.waitCapabilities(t, 30*time.Second, c.expectedProviders())
	t.Logf("client-inv-slow offers inventory again %s after the heal", time.Since(healAt).Round(time.Millisecond))
	after := startBatch(t, cl, "pcafter", 4)
	after.waitComplete(t, 60*time.Second)
	// The results client-inv-slow's app sent for the attempts it lost
	// reached the leader late, or not at all: the tasks still hold the
	// results of their final attempts, and no attempt ran twice.
	final, err := b.tasks(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	execs := readJournal(t, c.journal)
	checkRuns(t, final, execs, nil)
	checkNoDoubleWork(t, execs)
	for _, task := range final {
		checkOrderResults(t, task)
	}
	maps.Copy(b.ids, after.ids)
	retryRefused(t, slow, slowRefusal, b)
	b.checkKeys(t)
}

// retryRefused sends the write tryWrite sent to s again, with the same
// idempotency key, through s once the partition healed, and adds it to b.
// It must succeed now. The first try may have been applied after all: a
// forward in flight to the leader when the cut came sits in the TCP send
// queue and is delivered after the heal, so its refusal is an unknown
// outcome, as after any connection lost mid-call, and the refusal r must
// have said so. The key makes the retry safe: checkKeys then finds
// exactly one task for it.
func retryRefused(t *testing.T, s *clusterAgent, r refusal, b *batch) {
	t.Helper()
	task, created, err := newClient(s.api).StartTask(callCtx(t), "order-fulfilment", orderInput("ord_minority", "tok_visa", "TEE-M"),
		client.Namespace("shop"), client.IdempotencyKey("ord_minority"))
	if err != nil {
		t.Fatalf("StartTask refused during the partition, sent again through %s after the heal: %v", s.name, err)
	}
	t.Logf("the refused StartTask sent again after the heal: created %v (false: the first try was applied late)", created)
	if !created && !strings.Contains(r.err.Error(), "may still be applied") {
		t.Errorf("the StartTask refused during the partition was applied after the heal, but its error did not warn that it might be: %v", r.err)
	}
	b.ids["ord_minority"] = task.GetId()
}

// tryWrite sends, in the background, a StartTask to s, which the test cut
// off from the quorum, and delivers what it answered and how long that
// took.
func tryWrite(s *clusterAgent) <-chan refusal {
	out := make(chan refusal, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		began := time.Now()
		_, _, err := newClient(s.api).StartTask(ctx, "order-fulfilment", orderInput("ord_minority", "tok_visa", "TEE-M"),
			client.Namespace("shop"), client.IdempotencyKey("ord_minority"))
		out <- refusal{err: err, took: time.Since(began)}
	}()
	return out
}

// refusal is what a write sent to the minority side got.
type refusal struct {
	err  error
	took time.Duration
}

// checkRefused checks that a write sent to s, cut off from the quorum,
// failed with Unavailable within the hold timeout and a margin, with a
// message that says why: what a user's app must see to retry elsewhere or
// later.
func checkRefused(t *testing.T, s *clusterAgent, r refusal) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("StartTask on %s, cut off from the quorum, succeeded", s.name)
	}
	t.Logf("StartTask on the isolated %s failed after %s: %v", s.name, r.took.Round(time.Millisecond), r.err)
	if code := connect.CodeOf(r.err); code != connect.CodeUnavailable {
		t.Errorf("StartTask on %s: code %s, want unavailable", s.name, code)
	}
	// A server knows it has no quorum; a client agent that the servers
	// are all dead (to it).
	if msg := r.err.Error(); !strings.Contains(msg, "quorum") && !strings.Contains(msg, "cut off") {
		t.Errorf("StartTask on %s: %q does not say that the agent is cut off from the quorum", s.name, msg)
	}
	// 7 s is the default rpc_hold_timeout; the rest is for a loaded machine.
	if r.took > 12*time.Second {
		t.Errorf("StartTask on %s took %s to fail, want about the hold timeout (7s)", s.name, r.took.Round(time.Millisecond))
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

// waitConverged waits until every server agrees on the leader and sees
// every server as a voter, has applied the same log index, and answers, from its own state (stale reads), the
// same state for every task of ids, each complete.
func (c *cluster) waitConverged(t *testing.T, timeout time.Duration, ids []string) {
	t.Helper()
	waitFor(t, timeout, "every server holds the same log and the same complete tasks", func(ctx context.Context) (bool, string, error) {
		views, ok, state := c.votersWhole(ctx)
		if !ok {
			return false, state, nil
		}
		applied := map[uint64][]string{}
		for name, v := range views {
			applied[v.GetAppliedIndex()] = append(applied[v.GetAppliedIndex()], name)
		}
		if len(applied) != 1 {
			return false, fmt.Sprintf("applied indexes differ: %v", applied), nil
		}
		for _, id := range ids {
			var first string
			for i, s := range c.servers {
				res, err := s.staleWorkflows().GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
				if err != nil {
					return false, fmt.Sprintf("%s: GetTask %s: %v", s.name, id, err), nil
				}
				if st := res.Msg.GetTask().GetState(); st != taskerv1.TaskState_TASK_STATE_COMPLETE {
					return false, fmt.Sprintf("%s: %s is %s", s.name, id, st), nil
				}
				v := fmt.Sprint(viewOf(res.Msg.GetTask()))
				if i == 0 {
					first = v
				} else if v != first {
					return false, fmt.Sprintf("%s differs: %s on %s, %s on %s", id, first, c.servers[0].name, v, s.name), nil
				}
			}
		}
		return true, "", nil
	})
}

// TestNetLab checks the lab itself, as the partition tests rely on it:
// hosts reach each other and the test process reaches every host; a
// partition drops packets both ways in silence (a dial times out rather
// than failing at once, as across a real partition) while the test
// process still reaches both sides; heal restores the link; and nothing
// of the lab is left once its test ends.
func TestNetLab(t *testing.T) {
	var lab *netLab
	t.Run("partition", func(t *testing.T) {
		lab = newNetLab(t)
		a, b := lab.host("a"), lab.host("b")
		addrA, addrB := serveOn(t, a), serveOn(t, b)
		for _, p := range []struct {
			from *netHost
			to   string
		}{{a, addrB}, {b, addrA}, {nil, addrA}, {nil, addrB}} {
			if err := dialFrom(p.from, p.to); err != nil {
				t.Fatalf("before any cut: %v", err)
			}
		}

		lab.partition([]*netHost{a}, []*netHost{b})
		for _, p := range []struct {
			from *netHost
			to   string
		}{{a, addrB}, {b, addrA}} {
			var ne net.Error
			if err := dialFrom(p.from, p.to); !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("across the cut: %v, want a timeout (packets dropped in silence)", err)
			}
		}
		for _, to := range []string{addrA, addrB} {
			if err := dialFrom(nil, to); err != nil {
				t.Errorf("the test process, during the cut: %v", err)
			}
		}

		lab.heal()
		waitFor(t, 10*time.Second, "a and b reach each other again", func(context.Context) (bool, string, error) {
			errA, errB := dialFrom(a, addrB), dialFrom(b, addrA)
			return errA == nil && errB == nil, fmt.Sprintf("a→b: %v, b→a: %v", errA, errB), nil
		})
	})
	if lab == nil {
		t.Skip("network namespaces unavailable (the subtest says why)")
	}
	out, err := ipCmd("netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "tasker-"+lab.id+"-") {
		t.Errorf("namespaces of lab %s left behind:\n%s", lab.id, out)
	}
	if out, err := ipCmd("-o", "link", "show"); err != nil || strings.Contains(out, lab.bridge) {
		t.Errorf("links of lab %s left behind (err %v):\n%s", lab.id, err, out)
	}
}

// serveOn listens on a free TCP port of host h and answers every
// connection with "ok"; it returns the address.
func serveOn(t *testing.T, h *netHost) string {
	t.Helper()
	var ln net.Listener
	if err := h.inside(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(h.ip.String(), "0"))
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", h.name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("ok"))
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// dialFrom connects from host h (the test process's namespace when nil)
// to addr and reads its "ok", within a second.
func dialFrom(h *netHost, addr string) error {
	dial := func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(conn, b); err != nil {
			return err
		}
		if string(b) != "ok" {
			return fmt.Errorf("%s answered %q", addr, b)
		}
		return nil
	}
	if h == nil {
		return dial()
	}
	if err := h.inside(dial); err != nil {
		return fmt.Errorf("from %s to %s: %w", h.name, addr, err)
	}
	return nil
}
