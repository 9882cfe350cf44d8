package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// The cluster tests run one at a time (no t.Parallel): each runs six to
// nine processes, and some measure timings (failover, breaker periods)
// that a loaded two-core machine would distort.

// cli runs the tasker binary against addr with -o json and decodes its
// output into m.
func cli(t *testing.T, addr string, m proto.Message, args ...string) {
	t.Helper()
	tasker(t, addr, append(args, "-o", "json")...).must(t, "tasker "+strings.Join(args, " "), 0).decode(t, m)
}

// TestClusterCrossSystemWorkflow runs the order workflow across a cluster
// of three servers and three client agents, one per system, each with its
// own services: the workflow is applied through one client agent, orders
// start through another, every step runs on the agent whose app offers
// its capability, and the operator commands show the whole cluster.
func TestClusterCrossSystemWorkflow(t *testing.T) {
	c := startCluster(t, 3, []clientSpec{
		{name: "client-orders", only: "orders,shipping,notifications"},
		{name: "client-inventory", only: "inventory"},
		{name: "client-payments", only: "payments", flags: []string{"-flaky", "0.2", "-seed", "5"}},
	})
	orders, inventory, payments := c.client("client-orders"), c.client("client-inventory"), c.client("client-payments")

	manifest := filepath.Join(repoRoot, "examples", "order-fulfilment.yaml")
	tasker(t, inventory.api, "workflow", "apply", "-f", manifest).must(t, "workflow apply through a client agent", 0, "created")

	const n = 20
	b := startBatch(t, newClient(orders.api), "xs", n)
	final := b.waitComplete(t, 90*time.Second)
	execs := readJournal(t, c.journal)
	checkRuns(t, final, execs, nil)

	// Every step ran on the agent offering its capability: the agent says
	// so, and the journal's process ids say so.
	providers := c.expectedProviders()
	for _, task := range final {
		checkOrderResults(t, task)
		for _, st := range task.GetSteps() {
			want := providers[st.GetCapability()]
			if len(want) != 1 || st.GetAgent() != want[0] {
				t.Errorf("%s/%s (%s): ran on agent %q, want %v", task.GetId(), st.GetName(), st.GetCapability(), st.GetAgent(), want)
			}
		}
	}
	byPID := c.agentOfPID()
	ran := 0
	for k, es := range execs {
		for _, e := range es {
			ran++
			if agent := byPID[e.PID]; !slices.Contains(providers[e.Capability], agent) {
				t.Errorf("%s attempt %d (%s) was executed by pid %d attached to %q, want one of %v", k, e.Attempt, e.Capability, e.PID, agent, providers[e.Capability])
			}
		}
	}
	t.Logf("%d tasks complete across the cluster; %d executions", n, ran)

	// tasker members: six alive agents with their roles and capabilities.
	wantRoles := map[string]string{}
	for _, s := range c.servers {
		wantRoles[s.name] = "server"
	}
	for _, a := range c.clients {
		wantRoles[a.name] = "client"
	}
	wantCaps := map[string][]string{}
	for cp, agents := range providers {
		for _, a := range agents {
			wantCaps[a] = append(wantCaps[a], cp)
		}
	}
	var members taskerv1.MembersResponse
	waitFor(t, 15*time.Second, "tasker members lists 6 alive agents with their roles and capabilities", func(context.Context) (bool, string, error) {
		cli(t, c.servers[1].api, &members, "members")
		return membersProblem(&members, wantRoles, wantCaps) == "", membersProblem(&members, wantRoles, wantCaps), nil
	})

	// tasker capabilities, asked of a client agent (gossip tells it what
	// the others offer): each capability with the agent offering it.
	var caps taskerv1.CapabilitiesResponse
	took := waitFor(t, 10*time.Second, "tasker capabilities on client-payments lists each capability with its agent", func(context.Context) (bool, string, error) {
		cli(t, payments.api, &caps, "capabilities")
		got := providersOf(&caps)
		for cp, agents := range providers {
			if !slices.Equal(got[cp], agents) {
				return false, fmt.Sprintf("%s is offered by %v, want %v (all: %v)", cp, got[cp], agents, got), nil
			}
		}
		return true, "", nil
	})
	if took > time.Second {
		t.Logf("tasker capabilities on client-payments listed every capability only %s after the orders completed", took.Round(time.Millisecond))
	}
	for _, cp := range caps.GetCapabilities() {
		for _, p := range cp.GetProviders() {
			if _, ok := wantCaps[p.GetAgent()]; !ok {
				t.Errorf("tasker capabilities: %s is offered by %s, which runs no app", cp.GetName(), p.GetAgent())
			}
			if p.GetRpcAddress() == "" {
				t.Errorf("tasker capabilities: %s on %s has no RPC address", cp.GetName(), p.GetAgent())
			}
		}
	}

	// tasker raft peers through a client agent: the three servers, all
	// voters, one leader.
	var peers taskerv1.RaftPeersResponse
	cli(t, orders.api, &peers, "raft", "peers")
	if ids := peerIDs(&peers); !slices.Equal(ids, []string{"server-0", "server-1", "server-2"}) || peers.GetLeader() == "" {
		t.Errorf("tasker raft peers through a client agent: peers %v, leader %q; want the three servers and a leader", ids, peers.GetLeader())
	}
	for _, p := range peers.GetPeers() {
		if !p.GetVoter() {
			t.Errorf("tasker raft peers: %s is not a voter", p.GetId())
		}
	}
}

// membersProblem says what is wrong with a members list, or "".
func membersProblem(m *taskerv1.MembersResponse, roles map[string]string, caps map[string][]string) string {
	var problems []string
	seen := map[string]bool{}
	for _, x := range m.GetMembers() {
		seen[x.GetName()] = true
		want, ok := roles[x.GetName()]
		switch {
		case !ok:
			problems = append(problems, "unexpected member "+x.GetName())
			continue
		case x.GetStatus() != "alive":
			problems = append(problems, fmt.Sprintf("%s is %s", x.GetName(), x.GetStatus()))
		case x.GetRole() != want:
			problems = append(problems, fmt.Sprintf("%s has role %q, want %q", x.GetName(), x.GetRole(), want))
		}
		got := slices.Sorted(slices.Values(x.GetCapabilities()))
		if w := slices.Sorted(slices.Values(caps[x.GetName()])); !slices.Equal(got, w) {
			problems = append(problems, fmt.Sprintf("%s offers %v, want %v", x.GetName(), got, w))
		}
	}
	for name := range roles {
		if !seen[name] {
			problems = append(problems, name+" is missing")
		}
	}
	sort.Strings(problems)
	return strings.Join(problems, "; ")
}

// peerIDs lists the ids of a Raft configuration, sorted.
func peerIDs(r *taskerv1.RaftPeersResponse) []string {
	var out []string
	for _, p := range r.GetPeers() {
		out = append(out, p.GetId())
	}
	sort.Strings(out)
	return out
}

// TestClusterLeaderKilled kills the leader with SIGKILL in the middle of a
// batch: the other servers elect a new leader within seconds, every task
// completes, none is lost, and no step whose completion was committed runs
// again.
func TestClusterLeaderKilled(t *testing.T) {
	slow := []string{"-delay", "200ms-400ms", "-concurrency", "4"}
	c := startCluster(t, 3, []clientSpec{
		{name: "client-a", only: "orders,shipping,notifications", flags: slow},
		{name: "client-b", only: "inventory,payments", flags: slow},
	})
	ca, cb := newClient(c.client("client-a").api), newClient(c.client("client-b").api)
	if _, err := ca.ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}
	const n = 40
	b := startBatch(t, cb, "lk", n)
	waitFor(t, 60*time.Second, "a fifth of the tasks complete", func(ctx context.Context) (bool, string, error) {
		res, err := cb.Service().ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{
			Namespace: "shop", State: taskerv1.TaskState_TASK_STATE_COMPLETE, PageSize: 1000}))
		if err != nil {
			return false, err.Error(), nil
		}
		return len(res.Msg.GetTasks()) >= n/5, fmt.Sprintf("%d complete", len(res.Msg.GetTasks())), nil
	})
	before, err := b.tasks(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	old := c.servers[c.leaderIndex(t)]
	killedAt := time.Now()
	old.kill()
	done, _ := count(before, taskerv1.TaskState_TASK_STATE_COMPLETE, 0)
	_, running := count(before, 0, taskerv1.StepState_STEP_STATE_IN_PROGRESS)
	t.Logf("killed the leader %s with %d of %d tasks complete and %d steps in progress", old.name, done, n, running)
	if done == n {
		t.Fatal("every task completed before the kill: nothing was tested; slow the services down")
	}
	committed := map[stepKey]time.Time{}
	for _, task := range before {
		for _, st := range task.GetSteps() {
			if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE {
				committed[stepKey{task.GetId(), st.GetName()}] = killedAt
			}
		}
	}

	next := c.servers[c.waitLeaderOther(t, 15*time.Second, old.name)]
	failover := time.Since(killedAt)
	t.Logf("failover: %s leads %s after the kill", next.name, failover.Round(time.Millisecond))
	if failover > 5*time.Second {
		t.Errorf("a new leader took %s to be elected, want under 5s with -dev-timing", failover.Round(time.Millisecond))
	}

	final := b.waitComplete(t, 90*time.Second)
	t.Logf("all %d tasks complete %s after the kill", n, time.Since(killedAt).Round(time.Millisecond))
	b.checkKeys(t)
	execs := readJournal(t, c.journal)
	checkRuns(t, final, execs, committed)
	checkNoDoubleWork(t, execs)
	for _, task := range final {
		checkOrderResults(t, task)
		for _, st := range task.GetSteps() {
			if st.GetAttempts() > st.GetMaxAttempts() {
				t.Errorf("%s/%s: %d attempts, over its max of %d", task.GetId(), st.GetName(), st.GetAttempts(), st.GetMaxAttempts())
			}
		}
	}
}

// checkNoDoubleWork checks that no attempt of a step was executed to the
// end twice: a retry gets a new attempt number, so two executions of one
// attempt that both did the work mean a step ran twice beyond its retries.
func checkNoDoubleWork(t *testing.T, execs map[stepKey][]execution) {
	t.Helper()
	for k, es := range execs {
		byAttempt := map[int][]execution{}
		for _, e := range es {
			if e.didWork() {
				byAttempt[e.Attempt] = append(byAttempt[e.Attempt], e)
			}
		}
		for at, dup := range byAttempt {
			if len(dup) > 1 {
				t.Errorf("%s: attempt %d was executed %d times: %s", k, at, len(dup), describe(dup))
			}
		}
	}
}

// readJournal reads a services' journal, grouped by task and step.
func readJournal(t *testing.T, path string) map[stepKey][]execution {
	t.Helper()
	return (&serviceSet{journal: path}).executions(t)
}

// TestClusterClientKilledMidStep runs inventory on two client agents, one
// slow, and kills the slow one (agent and service, SIGKILL) while it holds
// steps: those steps complete on the other agent.
func TestClusterClientKilledMidStep(t *testing.T) {
	c := startCluster(t, 3, []clientSpec{
		{name: "client-main", only: "orders,payments,shipping,notifications"},
		{name: "client-inv-slow", only: "inventory", flags: []string{"-delay", "2s"}},
		{name: "client-inv-fast", only: "inventory"},
	})
	main := newClient(c.client("client-main").api)
	if _, err := main.ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, main, "ck", 12)

	var held map[string]int32 // task → the reserve attempt client-inv-slow holds
	waitFor(t, 30*time.Second, "client-inv-slow holds reserve steps", func(ctx context.Context) (bool, string, error) {
		tasks, err := b.tasks(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		held = map[string]int32{}
		var agents []string
		for _, task := range tasks {
			st := stepOf(t, task, "reserve")
			agents = append(agents, fmt.Sprintf("%s:%s", st.GetState(), st.GetAgent()))
			if st.GetState() == taskerv1.StepState_STEP_STATE_IN_PROGRESS && st.GetAgent() == "client-inv-slow" {
				held[task.GetId()] = st.GetAttempts()
			}
		}
		return len(held) > 0, fmt.Sprintf("reserve steps: %v", agents), nil
	})
	slowAgent := c.client("client-inv-slow")
	killedAt := time.Now()
	slowAgent.kill()
	killedPIDs := map[int]bool{}
	for _, p := range c.services[slowAgent.name] {
		p.signal(t, syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		killedPIDs[p.cmd.Process.Pid] = true
	}
	t.Logf("killed client-inv-slow and its service holding %d reserve steps", len(held))

	final := b.waitComplete(t, 60*time.Second)
	t.Logf("every task complete %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	execs := readJournal(t, c.journal)
	checkRuns(t, final, execs, nil)
	// An execution the killed service finished in the moment between its
	// agent's death and its own could not be reported: running that
	// attempt again is the price of the crash, not a double dispatch.
	survivors := map[stepKey][]execution{}
	for k, es := range execs {
		for _, e := range es {
			if !killedPIDs[e.PID] {
				survivors[k] = append(survivors[k], e)
			}
		}
	}
	checkNoDoubleWork(t, survivors)
	fast := c.services["client-inv-fast"][0].cmd.Process.Pid
	for _, task := range final {
		checkOrderResults(t, task)
		attempt, ok := held[task.GetId()]
		if !ok {
			continue
		}
		st := stepOf(t, task, "reserve")
		if st.GetAgent() != "client-inv-fast" || st.GetAttempts() <= attempt {
			t.Errorf("%s/reserve: held as attempt %d by client-inv-slow at the kill; completed as attempt %d on %q, want a later attempt on client-inv-fast",
				task.GetId(), attempt, st.GetAttempts(), st.GetAgent())
		}
		found := false
		for _, e := range execs[stepKey{task.GetId(), "reserve"}] {
			if e.Attempt == int(st.GetAttempts()) && e.Outcome == "ok" && e.PID == fast {
				found = true
			}
		}
		if !found {
			t.Errorf("%s/reserve: no ok execution of attempt %d by client-inv-fast's service (pid %d): %s",
				task.GetId(), st.GetAttempts(), fast, describe(execs[stepKey{task.GetId(), "reserve"}]))
		}
	}
}

// breakerPolicy opens a target's breaker after three consecutive failures,
// for a second, then lets one trial call through.
const breakerPolicy = `policies:
  circuitBreakers:
    payments:
      maxRequests: 1
      interval: 0s
      timeout: 1s
      trip: consecutiveFailures > 2
targets:
  capabilities:
    payments.charge:
      circuitBreaker: payments
`

// breakerMaxAttempts is the charge step's max_attempts in breakerWorkflow.
const breakerMaxAttempts = 40

// breakerWorkflow is the example workflow whose charge step may take many
// attempts, 100ms apart: without a breaker, an outage burns them fast.
func breakerWorkflow(t *testing.T) []byte {
	t.Helper()
	old := "      max_attempts: 5\n      retryable: [gateway_unavailable, timeout]\n      backoff: {initial: 1s, max: 1m, multiplier: 3, jitter: 0.3}\n"
	b := string(exampleWorkflow(t))
	if !strings.Contains(b, old) {
		t.Fatalf("the example workflow's charge retry is not\n%s: update breakerWorkflow", old)
	}
	return []byte(strings.Replace(b, old, fmt.Sprintf("      max_attempts: %d\n      retryable: [gateway_unavailable, timeout]\n      backoff: {initial: 100ms, max: 100ms, multiplier: 1, jitter: 0}\n", breakerMaxAttempts), 1))
}

// TestClusterBreakerOpens takes the payment gateway down: the leader's
// breaker for the payments agent opens after three failures, and while it
// is open no charge attempt is spent; once the gateway is back the breaker
// closes through a trial call and every task completes, well under the
// charge's attempt limit.
func TestClusterBreakerOpens(t *testing.T) {
	dir := t.TempDir()
	down := filepath.Join(dir, "gateway-down")
	if err := os.WriteFile(down, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "breakers.yaml")
	if err := os.WriteFile(policy, []byte(breakerPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startClusterWith(t, clusterOptions{
		servers:    3,
		serverArgs: []string{"-breakers", policy},
		clients: []clientSpec{
			{name: "client-main", only: "orders,inventory,shipping,notifications"},
			{name: "client-payments", only: "payments", flags: []string{"-fail-while", down, "-delay", "250ms"}},
		},
	})
	main := c.client("client-main")
	cm := newClient(main.api)
	if _, err := cm.ApplyWorkflow(callCtx(t), breakerWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	const target = "client-payments/payments.charge"
	// breakerOf reads the target's breaker with `tasker breakers -o json`,
	// as an operator does, or, where timing matters (a race-built CLI can
	// take a second to start), with the same call from Go.
	breakerOf := func(viaCLI bool) *taskerv1.Breaker {
		res := &taskerv1.BreakersResponse{}
		if viaCLI {
			cli(t, main.api, res, "breakers")
		} else {
			r, err := main.cluster().Breakers(callCtx(t), connect.NewRequest(&taskerv1.BreakersRequest{}))
			if err != nil {
				t.Fatalf("Breakers: %v", err)
			}
			res = r.Msg
		}
		for _, br := range res.GetBreakers() {
			if br.GetTarget() == target {
				return br
			}
		}
		return nil
	}
	stateOf := func(br *taskerv1.Breaker) string {
		if br == nil {
			return "none"
		}
		return strings.ReplaceAll(br.GetState(), "_", "-")
	}
	b := startBatch(t, cm, "br", 5)
	chargeAttempts := func() (map[string]int32, int32) {
		tasks, err := b.tasks(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		per, sum := map[string]int32{}, int32(0)
		for _, task := range tasks {
			n := stepOf(t, task, "charge").GetAttempts()
			per[task.GetId()] = n
			sum += n
		}
		return per, sum
	}

	// The breaker opens; then, within one open period, no attempt starts.
	waitFor(t, 30*time.Second, "tasker breakers shows "+target+" open", func(context.Context) (bool, string, error) {
		br := breakerOf(true)
		return stateOf(br) == "open", fmt.Sprintf("%s is %s: %v", target, stateOf(br), br), nil
	})
	var firstOpen time.Time
	verified := false
	var tried []*taskerv1.Breaker // the open periods tried, by their since
	var skipped []string          // why the periods tried did not do
	for cycle := 0; cycle < 5 && !verified; cycle++ {
		var br *taskerv1.Breaker
		waitFor(t, 30*time.Second, target+" is open (a new open period)", func(context.Context) (bool, string, error) {
			br = breakerOf(false)
			isNew := !slices.ContainsFunc(tried, func(x *taskerv1.Breaker) bool { return proto.Equal(x.GetSince(), br.GetSince()) })
			return stateOf(br) == "open" && isNew, fmt.Sprintf("%s is %s: %v", target, stateOf(br), br), nil
		})
		tried = append(tried, br)
		if firstOpen.IsZero() {
			firstOpen = time.Now()
			t.Logf("the breaker opened: %v", br)
		}
		until := br.GetSince().AsTime().Add(time.Second)
		if br.GetOpenUntil() != nil {
			until = br.GetOpenUntil().AsTime()
		}
		if left := time.Until(until); left < 400*time.Millisecond {
			skipped = append(skipped, fmt.Sprintf("seen open with %s left", left.Round(time.Millisecond)))
			continue // too little of this open period left: take the next
		}
		_, s1 := chargeAttempts()
		time.Sleep(time.Until(until) - 200*time.Millisecond) // across the open period
		_, s2 := chargeAttempts()
		after := breakerOf(false)
		if stateOf(after) != "open" || !proto.Equal(after.GetSince(), br.GetSince()) {
			skipped = append(skipped, fmt.Sprintf("left the open period before the second sample was confirmed (then %s since %s)",
				stateOf(after), after.GetSince().AsTime().Format("15:04:05.000")))
			continue // it left that open period before the second sample
		}
		verified = true
		t.Logf("open period from %s to %s: %d charge attempts at its start, %d near its end",
			br.GetSince().AsTime().Format("15:04:05.000"), until.Format("15:04:05.000"), s1, s2)
		if s2 != s1 {
			t.Errorf("charge attempts went from %d to %d while the breaker was open: attempts were spent on an open breaker", s1, s2)
		}
	}
	if !verified {
		t.Fatalf("could not sample the charge attempts twice within one open period of the breaker in 5 tries: %s", strings.Join(skipped, "; "))
	}
	// Keep the gateway down a while: without the breaker the charges
	// would burn an attempt about every 350ms each.
	waitFor(t, 15*time.Second, "the outage has lasted 5s since the breaker opened", func(context.Context) (bool, string, error) {
		return time.Since(firstOpen) >= 5*time.Second, "", nil
	})
	perTask, sum := chargeAttempts()
	t.Logf("after %s of outage: %d charge attempts in all (%v); max per task %d", time.Since(firstOpen).Round(time.Millisecond), sum, perTask, breakerMaxAttempts)
	for id, n := range perTask {
		if n > breakerMaxAttempts/4 {
			t.Errorf("%s/charge: %d attempts spent during the outage, want at most %d (a quarter of its max %d): the breaker did not spare them",
				id, n, breakerMaxAttempts/4, breakerMaxAttempts)
		}
	}

	// The gateway comes back: the breaker goes half-open, a trial call
	// succeeds, and it closes.
	if err := os.Remove(down); err != nil {
		t.Fatal(err)
	}
	restoredAt := time.Now()
	var states []string
	var closed *taskerv1.Breaker
	waitFor(t, 20*time.Second, target+" is closed", func(context.Context) (bool, string, error) {
		br := breakerOf(false)
		if s := stateOf(br); len(states) == 0 || states[len(states)-1] != s {
			states = append(states, s)
		}
		closed = br
		return stateOf(br) == "closed", fmt.Sprintf("states seen: %v", states), nil
	})
	t.Logf("breaker states after the gateway came back: %v; closed %s later", states, time.Since(restoredAt).Round(time.Millisecond))
	if br := breakerOf(true); stateOf(br) != "closed" {
		t.Errorf("tasker breakers shows %s %s after it was seen closed: %v", target, stateOf(br), br)
	}
	// A breaker only closes from half-open; if polling missed that state,
	// the closed state still began after the last open period ended.
	if !slices.Contains(states, "half-open") && closed.GetSince().AsTime().Before(restoredAt) {
		t.Errorf("the breaker is closed since %s, before the gateway came back at %s, and was never seen half-open",
			closed.GetSince().AsTime().Format("15:04:05.000"), restoredAt.Format("15:04:05.000"))
	}

	final := b.waitComplete(t, 30*time.Second)
	checkRuns(t, final, readJournal(t, c.journal), nil)
	for _, task := range final {
		checkOrderResults(t, task)
		if n := stepOf(t, task, "charge").GetAttempts(); n > breakerMaxAttempts/4 {
			t.Errorf("%s/charge completed after %d attempts, want at most %d", task.GetId(), n, breakerMaxAttempts/4)
		}
	}
}

// TestClusterRestartAllServers stops every server (SIGTERM) after a batch
// completed and starts them again on their data dirs and ports: they
// elect a leader, the tasks and the workflow are all there, and new orders
// complete through the client agent that stayed up.
func TestClusterRestartAllServers(t *testing.T) {
	c := startCluster(t, 3, []clientSpec{{name: "client-all", only: "orders,inventory,payments,shipping,notifications"}})
	ag := c.client("client-all")
	cl := newClient(ag.api)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, cl, "rs", 10)
	before := b.waitComplete(t, 60*time.Second)

	var wg sync.WaitGroup
	codes := make([]int, len(c.servers))
	for _, s := range c.servers {
		s.proc.signal(t, syscall.SIGTERM)
	}
	for i, s := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-s.proc.done:
				codes[i] = s.proc.exitCode()
			case <-time.After(40 * time.Second):
				codes[i] = -2
			}
		}()
	}
	wg.Wait()
	for i, code := range codes {
		switch code {
		case 0:
		case -2:
			t.Fatalf("%s did not exit within 40s of SIGTERM:\n%s", c.servers[i].name, c.servers[i].proc.tail(20))
		default:
			t.Errorf("%s exited with %d after SIGTERM, want 0", c.servers[i].name, code)
		}
	}
	t.Log("all three servers stopped")

	restartedAt := time.Now()
	for _, s := range c.servers {
		s.start()
	}
	leader := c.servers[c.waitLeader(t, 30*time.Second)]
	t.Logf("%s leads %s after the restart began", leader.name, time.Since(restartedAt).Round(time.Millisecond))

	// The state, read from the leader itself.
	lc := newClient(leader.api)
	wfs, err := lc.Service().ListWorkflows(callCtx(t), connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: "shop"}))
	if err != nil {
		t.Fatalf("ListWorkflows on the new leader: %v", err)
	}
	if len(wfs.Msg.GetWorkflows()) != 1 || wfs.Msg.GetWorkflows()[0].GetName() != "order-fulfilment" {
		t.Errorf("after the restart the leader lists workflows %v, want order-fulfilment", wfs.Msg.GetWorkflows())
	}
	for _, old := range before {
		now, err := lc.GetTask(callCtx(t), old.GetId())
		if err != nil {
			t.Errorf("GetTask %s on the new leader: %v", old.GetId(), err)
			continue
		}
		if now.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
			t.Errorf("task %s is %s after the restart, was complete", old.GetId(), now.GetState())
		}
		for _, st := range old.GetSteps() {
			if got := stepOf(t, now, st.GetName()); got.GetResultJson() != st.GetResultJson() || got.GetAttempts() != st.GetAttempts() {
				t.Errorf("%s/%s after the restart: attempt %d result %s; before: attempt %d result %s",
					old.GetId(), st.GetName(), got.GetAttempts(), got.GetResultJson(), st.GetAttempts(), st.GetResultJson())
			}
		}
	}

	// Through the client agent, which stayed up: the old tasks and keys,
	// and new orders.
	ag.waitServing(30 * time.Second)
	b.checkKeys(t)
	nb := startBatch(t, cl, "rs2", 5)
	final := nb.waitComplete(t, 60*time.Second)
	checkRuns(t, append(final, before...), readJournal(t, c.journal), nil)
	for _, task := range final {
		checkOrderResults(t, task)
	}
}

// TestClusterFourthServerJoins starts a fourth server, without
// -bootstrap-expect, joined to the cluster later: it becomes a voter,
// with the cluster's state.
func TestClusterFourthServerJoins(t *testing.T) {
	c := startCluster(t, 3, nil)
	if _, err := newClient(c.servers[1].api).ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	fourth := c.addServer("server-3")
	took := waitFor(t, 30*time.Second, "the leader lists server-3 as a voter", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, c.servers[:3])
		leader := agreedLeader(views)
		if leader == "" {
			return false, describeViews(views), nil
		}
		for _, p := range views[leader].GetPeers() {
			if p.GetId() == "server-3" && p.GetVoter() {
				return true, "", nil
			}
		}
		return false, describeViews(views), nil
	})
	t.Logf("server-3 is a voter %s after it started", took.Round(time.Millisecond))
	var peers taskerv1.RaftPeersResponse
	cli(t, c.servers[c.leaderIndex(t)].api, &peers, "raft", "peers")
	if ids := peerIDs(&peers); !slices.Equal(ids, []string{"server-0", "server-1", "server-2", "server-3"}) {
		t.Errorf("tasker raft peers lists %v, want the four servers", ids)
	}
	for _, p := range peers.GetPeers() {
		if !p.GetVoter() {
			t.Errorf("tasker raft peers: %s is not a voter", p.GetId())
		}
	}
	fourth.waitServing(30 * time.Second)

	// Its own view: four voters and the leader; and the state.
	waitFor(t, 15*time.Second, "server-3 sees four voters, a leader, and the workflow", func(ctx context.Context) (bool, string, error) {
		res, err := fourth.cluster().RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil {
			return false, err.Error(), nil
		}
		voters := 0
		for _, p := range res.Msg.GetPeers() {
			if p.GetVoter() {
				voters++
			}
		}
		wfs, err := fourth.staleWorkflows().ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: "shop"}))
		if err != nil {
			return false, fmt.Sprintf("peers %v; ListWorkflows: %v", peerIDs(res.Msg), err), nil
		}
		state := fmt.Sprintf("%d voters %v, leader %q, %d workflows", voters, peerIDs(res.Msg), res.Msg.GetLeader(), len(wfs.Msg.GetWorkflows()))
		return voters == 4 && res.Msg.GetLeader() != "" && len(wfs.Msg.GetWorkflows()) == 1, state, nil
	})
}

// TestClusterNoSecondCluster checks the two ways a server could start a
// cluster of its own next to the real one: a -bootstrap-expect that
// disagrees with the others', and a data dir left over from another
// cluster. At no moment do two servers claim to lead.
func TestClusterNoSecondCluster(t *testing.T) {
	// A data dir from another cluster: a three-server cluster that held a
	// workflow of its own, all of it gone but one server's data dir.
	other := newCluster(t, clusterOptions{})
	for i := range 3 {
		other.addServer(fmt.Sprintf("old-%d", i), "-bootstrap-expect", "3")
	}
	other.waitLeader(t, 30*time.Second)
	legacy := strings.Replace(string(exampleWorkflow(t)), "name: order-fulfilment", "name: legacy-fulfilment", 1)
	oc := newClient(other.servers[0].api)
	if _, err := oc.ApplyWorkflow(callCtx(t), []byte(legacy)); err != nil {
		t.Fatal(err)
	}
	for _, s := range other.servers {
		s.kill()
	}
	stale := other.servers[1]

	// The real cluster forms while a server expecting 2 joins it.
	c := newCluster(t, clusterOptions{servers: 3})
	s0 := c.addServer("server-0", "-bootstrap-expect", "3")
	odd := c.newAgent("odd", true, "-bootstrap-expect", "2", "-join", s0.gossip)
	odd.start()
	c.addServer("server-1", "-bootstrap-expect", "3")
	c.addServer("server-2", "-bootstrap-expect", "3")

	// check polls the outsider and the real servers and fails on two
	// leaders at once, on the outsider leading, and on the outsider in a
	// Raft configuration other than its old one (oldConfig) or the real
	// cluster's including it. It returns the leader the real cluster's
	// servers agree on.
	check := func(ctx context.Context, outsider *clusterAgent, oldConfig []string) (string, map[string]*taskerv1.RaftPeersResponse) {
		// The outsider first: if it says it is in the real cluster's
		// configuration, the real servers, asked after it, have that
		// configuration too.
		views := c.raftViews(ctx, []*clusterAgent{outsider})
		real := c.raftViews(ctx, c.servers)
		for name, v := range real {
			views[name] = v
		}
		if claims := selfLeaders(views); len(claims) > 1 {
			t.Errorf("%d servers lead at once: %v; %s", len(claims), claims, describeViews(views))
		}
		leader := agreedLeader(real)
		v, ok := views[outsider.name]
		if !ok {
			return leader, views
		}
		if v.GetLeader() == outsider.name {
			t.Errorf("%s leads: %s", outsider.name, describeViews(views))
		}
		ids := peerIDs(v)
		switch {
		case len(ids) == 0, slices.Equal(ids, oldConfig):
		case leader != "" && slices.Contains(peerIDs(real[leader]), outsider.name):
			// The real cluster took it in.
		default:
			t.Errorf("%s is in a Raft configuration %v that is neither its old one %v nor the real cluster's: %s",
				outsider.name, ids, oldConfig, describeViews(views))
		}
		return leader, views
	}

	oddStarted := time.Now()
	formed := pollUntil(10*time.Second, func(ctx context.Context) bool {
		leader, _ := check(ctx, odd, nil)
		return leader != "" && time.Since(oddStarted) > 5*time.Second
	})
	if t.Failed() {
		t.FailNow()
	}
	if formed {
		t.Logf("the expect-3 servers formed a cluster with the expect-2 server present")
	} else {
		// Refusing to bootstrap while the servers disagree on the count
		// is fair (Consul does so); the cluster must form once the odd
		// server is gone.
		t.Logf("the expect-3 servers did not form a cluster within 10s with the expect-2 server present; stopping it: %s",
			describeViews(c.raftViews(callCtx(t), append(slices.Clone(c.servers), odd))))
	}
	if v := c.raftViews(callCtx(t), []*clusterAgent{odd}); len(v) > 0 {
		t.Logf("the expect-2 server's view: %s", describeViews(v))
	}
	odd.proc.signal(t, syscall.SIGTERM)
	odd.proc.wait(t, 40*time.Second)
	c.waitLeader(t, 20*time.Second)

	// Now the server with the stale data dir joins the real cluster.
	c.servers[0].waitServing(30 * time.Second)
	if _, err := newClient(c.servers[0].api).ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := 0; i < len(stale.args); i++ {
		if stale.args[i] == "-join" {
			i++
			continue
		}
		args = append(args, stale.args[i])
	}
	stale.args = append(args, "-join", s0.gossip)
	stale.start()
	staleStarted := time.Now()
	oldConfig := []string{"old-0", "old-1", "old-2"}
	waitFor(t, 20*time.Second, "the stale server is watched for 6s with a leader in the real cluster", func(ctx context.Context) (bool, string, error) {
		leader, views := check(ctx, stale, oldConfig)
		return leader != "" && time.Since(staleStarted) > 6*time.Second, describeViews(views), nil
	})
	if v := c.raftViews(callCtx(t), []*clusterAgent{stale}); len(v) > 0 {
		t.Logf("the stale server's view: %s", describeViews(v))
	}

	// The real cluster's state is its own.
	leader := c.servers[c.leaderIndex(t)]
	wfs, err := newClient(leader.api).Service().ListWorkflows(callCtx(t), connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: "shop"}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, wf := range wfs.Msg.GetWorkflows() {
		names = append(names, wf.GetName())
	}
	if !slices.Equal(names, []string{"order-fulfilment"}) {
		t.Errorf("the real cluster lists workflows %v, want only order-fulfilment", names)
	}

	// If the real cluster took the stale server in, that server now holds
	// the real cluster's state, not its old one: a stale read there, or
	// its leadership one day, must not serve the other cluster's data.
	views := c.raftViews(callCtx(t), c.liveServers())
	if !slices.Contains(peerIDs(views[leader.name]), stale.name) {
		t.Logf("the real cluster did not take %s in", stale.name)
		return
	}
	var staleNames []string
	ok := pollUntil(15*time.Second, func(ctx context.Context) bool {
		wfs, err := stale.staleWorkflows().ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: "shop"}))
		if err != nil {
			return false
		}
		staleNames = nil
		for _, wf := range wfs.Msg.GetWorkflows() {
			staleNames = append(staleNames, wf.GetName())
		}
		return slices.Equal(staleNames, names)
	})
	if !ok {
		t.Errorf("%s, taken into the real cluster, serves workflows %v (stale read), want the cluster's %v: it kept state from its old cluster",
			stale.name, staleNames, names)
	}
}

// benchEnv, set to a number of orders, runs TestClusterThroughput.
const benchEnv = "TASKER_E2E_BENCH"

// TestClusterThroughput is a measurement, not a check, and runs only when
// $TASKER_E2E_BENCH names a number of orders: the cluster of
// TestClusterCrossSystemWorkflow with services that take 1ms, orders
// started through two client agents at once, and the figures logged:
// tasks per second from the first start to the last end, task latency
// (created to ended) and dispatch latency (a step ready to dispatched, which
// crosses from the leader to another agent) percentiles.
//
//	TASKER_E2E_BENCH=500 go test -count=1 -run ClusterThroughput ./e2e/ -v
func TestClusterThroughput(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(benchEnv))
	if err != nil || n <= 0 {
		t.Skipf("a measurement: set %s to a number of orders to run it", benchEnv)
	}
	fast := []string{"-delay", "1ms", "-concurrency", "64"}
	c := startCluster(t, 3, []clientSpec{
		{name: "client-orders", only: "orders,shipping,notifications", flags: fast},
		{name: "client-inventory", only: "inventory", flags: fast},
		{name: "client-payments", only: "payments", flags: fast},
	})
	starters := []*client.Client{newClient(c.client("client-orders").api), newClient(c.client("client-inventory").api)}
	if _, err := starters[0].ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const workers = 16
	ids := make([]string, n)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	began := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := starters[w%len(starters)]
			for i := w; i < n; i += workers {
				key := fmt.Sprintf("ord_bench%06d", i)
				task, _, err := cl.StartTask(ctx, "order-fulfilment", orderInput(key, "tok_visa", "TEE-M"), client.Namespace("shop"), client.IdempotencyKey(key))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = task.GetId()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	started := time.Since(began)
	b := &batch{c: starters[0], ids: map[string]string{}}
	for i, id := range ids {
		b.ids[strconv.Itoa(i)] = id
	}
	final := b.waitComplete(t, 10*time.Minute)
	var first, last time.Time
	var taskLat, dispatchLat []time.Duration
	for _, task := range final {
		created, ended := task.GetCreatedAt().AsTime(), task.GetEndedAt().AsTime()
		if first.IsZero() || created.Before(first) {
			first = created
		}
		if ended.After(last) {
			last = ended
		}
		taskLat = append(taskLat, ended.Sub(created))
		for _, st := range task.GetSteps() {
			if st.GetReadyAt() != nil && st.GetDispatchedAt() != nil {
				dispatchLat = append(dispatchLat, st.GetDispatchedAt().AsTime().Sub(st.GetReadyAt().AsTime()))
			}
		}
	}
	span := last.Sub(first)
	t.Logf("%d orders: started in %s (%.0f starts/s through client agents); all ended %s after the first start: %.1f tasks/s",
		n, started.Round(time.Millisecond), float64(n)/started.Seconds(), span.Round(time.Millisecond), float64(n)/span.Seconds())
	t.Logf("task latency (created → ended): %s", percentiles(taskLat))
	t.Logf("dispatch latency (step ready → dispatched to its agent): %s", percentiles(dispatchLat))
}

// percentiles renders the p50, p95, p99 and max of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		return ds[min(len(ds)-1, int(p*float64(len(ds))))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %s, p95 %s, p99 %s, max %s (%d samples)", at(0.50), at(0.95), at(0.99), ds[len(ds)-1].Round(100*time.Microsecond), len(ds))
}
