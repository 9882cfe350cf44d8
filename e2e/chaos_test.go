package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// The chaos run's settings: TASKER_CHAOS_SEED repeats a run's schedule
// of faults and orders (the timings of a real cluster never repeat
// exactly), TASKER_CHAOS_DURATION is how long faults are injected.
const (
	chaosSeedEnv     = "TASKER_CHAOS_SEED"
	chaosDurationEnv = "TASKER_CHAOS_DURATION"
	// chaosDefaultDuration keeps the run inside make test short.
	chaosDefaultDuration = 35 * time.Second
)

// The faults the nemesis injects. Each is healed before the next begins,
// so at most one server is down, paused or cut off at a time and quorum
// holds.
const (
	faultLeaderKill    = "leader-kill"    // kill -9 of the leader, restarted on its data dir and ports
	faultFollowerKill  = "follower-kill"  // kill -9 of a follower, restarted
	faultLeaderPause   = "leader-pause"   // SIGSTOP of the leader, SIGCONT a few seconds later
	faultFollowerPause = "follower-pause" // SIGSTOP of a follower, SIGCONT later
	faultClientKill    = "client-kill"    // kill -9 of a client agent and its service, both restarted
	faultSidecarKill   = "sidecar-kill"   // kill -9 of a client agent alone: its service stays and reconnects
	faultServiceKill   = "service-kill"   // kill -9 of a service alone, restarted
	// The partitions need the network lab: every agent on its own host.
	faultLeaderPartition   = "leader-partition"   // the leader's host cut off from every other host, healed later
	faultFollowerPartition = "follower-partition" // a follower's host cut off from every other host, healed later
	faultClientPartition   = "client-partition"   // a client agent's host (its service with it) cut off from the servers, healed later
)

// chaosFaults are the faults of every run; partitionFaults are added
// where the cluster runs in the network lab.
var (
	chaosFaults     = []string{faultLeaderKill, faultFollowerKill, faultLeaderPause, faultFollowerPause, faultClientKill, faultSidecarKill, faultServiceKill}
	partitionFaults = []string{faultLeaderPartition, faultFollowerPartition, faultClientPartition}
)

// chaosServices is what each client agent's service offers: every
// capability, so that a client agent down leaves another to do its steps.
const chaosServices = "orders,inventory,payments,shipping,notifications"

// chaosBreakerPolicy opens a payments target's breaker after ten
// failures in a row, for two seconds.
const chaosBreakerPolicy = `policies:
  circuitBreakers:
    flaky-gateway:
      maxRequests: 1
      interval: 0s
      timeout: 2s
      trip: consecutiveFailures > 9
targets:
  capabilities:
    payments.charge:
      circuitBreaker: flaky-gateway
`

// TestChaos runs a steady workload of orders against a 3-server cluster
// and two client agents (each with a service offering every capability,
// payments failing half of its attempts) while a nemesis, on a seeded
// random schedule, kills, pauses and partitions leaders and followers,
// kills client agents and services and cuts client agents off from the
// servers, undoing each before the next fault. Partitions need network
// namespaces (every agent on its own host of the network lab); without
// them the cluster runs on loopback and the run says partitions were
// skipped and why (TASKER_REQUIRE_NETNS=1 fails it instead). Some
// orders are meant to fail for good (a declined card, an item out of
// stock), so dead letters appear. Once the schedule ends and everything
// runs again, every accepted task must settle within a bound, and the
// invariants users rely on must hold: no accepted task lost, no step
// completed twice, every dead letter a real failure, every task's events
// complete and in order. A failing run saves its evidence under
// $TASKER_ARTIFACTS (or a temporary directory) and names it.
func TestChaos(t *testing.T) {
	seed, runFor := chaosSettings(t)
	t.Logf("chaos: seed=%d duration=%s (%s=%d repeats the schedule)", seed, runFor, chaosSeedEnv, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos: failed; %s=%d repeats the schedule", chaosSeedEnv, seed)
		}
	})
	// -flaky is a function of the order id and the attempt, so the seed of
	// the services is fixed: the run's seed picks the orders.
	svcFlags := []string{"-flaky", "0.5", "-seed", "7", "-concurrency", "8"}
	// The default breaker (open for 30 s after 6 failures in a row) trips
	// now and then at this failure rate and holds every charge for half a
	// minute; a short one still trips, and settles the run sooner.
	policy := filepath.Join(t.TempDir(), "breakers.yaml")
	if err := os.WriteFile(policy, []byte(chaosBreakerPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	lab := chaosLab(t)
	kinds := chaosFaults
	if lab != nil {
		kinds = slices.Concat(chaosFaults, partitionFaults)
	}
	c := startClusterWith(t, clusterOptions{
		servers:    3,
		serverArgs: []string{"-breakers", policy},
		lab:        lab,
		clients: []clientSpec{
			{name: "client-a", only: chaosServices, flags: svcFlags},
			{name: "client-b", only: chaosServices, flags: svcFlags},
		},
	})
	if _, err := newClient(c.client("client-a").api).ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}

	w := newChaosWorkload(c)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Stop the workload before the processes are killed (cleanups run
	// last added first), also when the test fails early.
	t.Cleanup(func() { stop(); wg.Wait() })
	const starters = 3
	for g := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, g, rand.New(rand.NewPCG(seed, uint64(g)+1)))
		}()
	}

	n := &nemesis{t: t, c: c, w: w, lab: lab, kinds: kinds, rnd: rand.New(rand.NewPCG(seed, 0)), began: time.Now(), counts: map[string]int{}}
	n.run(time.Now().Add(runFor))
	stop()
	wg.Wait()
	t.Logf("chaos: schedule done after %s: %s; %d orders sent", time.Since(n.began).Round(time.Millisecond), n.describeCounts(), w.sent())

	// Heal: every process runs (each fault was undone), the servers agree
	// on a leader and all vote, and every server sees both client agents'
	// capabilities again, so that nothing waits for a provider.
	n.checkHealed()
	c.waitVoters(t, 60*time.Second)
	c.waitCapabilities(t, 60*time.Second, c.expectedProviders())

	// Every order the workload sent is accepted: the ones whose StartTask
	// never got an answer are sent again with their key, as a client
	// would.
	w.acceptAll(t)
	healed := time.Now()
	final := w.waitSettled(t, 5*time.Minute)
	t.Logf("chaos: %d tasks settled %s after healing", len(final), time.Since(healed).Round(time.Millisecond))

	rep := checkChaos(t, c, w, final)
	rep.seed, rep.duration, rep.faults, rep.faultLog = seed, runFor, n.describeCounts(), n.log
	dir := rep.save(t)
	t.Logf("chaos: seed=%d duration=%s faults: %s; tasks accepted=%d completed=%d failed=%d dead-letters=%d; invariants: %s",
		seed, runFor, n.describeCounts(), rep.accepted, rep.completed, rep.failed, rep.deadLetters, rep.summary())
	if rep.failedAny() {
		t.Fatalf("chaos: invariants broken (seed %d, %s=%d repeats the schedule); the evidence is in %s", seed, chaosSeedEnv, seed, dir)
	}
	if n.total() < 2 {
		t.Errorf("chaos: only %d faults injected in %s; the run tested little", n.total(), runFor)
	}
	if rep.accepted < 20 {
		t.Errorf("chaos: only %d tasks accepted; the workload did not run", rep.accepted)
	}
}

// chaosLab returns a network lab for the chaos cluster, or nil, saying
// why, where network namespaces are unavailable: the run goes on on
// loopback without partitions, unless TASKER_REQUIRE_NETNS=1 (CI as root)
// makes that a failure, as for the partition tests.
func chaosLab(t *testing.T) *netLab {
	t.Helper()
	why := netnsUnavailable()
	if why == "" {
		lab := newNetLab(t)
		// The seed picks from a longer list of faults here: a seed
		// repeats its schedule only where namespaces are available too.
		t.Logf("chaos: every agent on its own host of network lab %s (%s): partitions included", lab.id, lab.prefix)
		return lab
	}
	if os.Getenv(requireNetnsEnv) == "1" {
		t.Fatalf("chaos: network namespaces unavailable: %s (%s=1 requires them)", why, requireNetnsEnv)
	}
	t.Logf("chaos: network partitions SKIPPED, the cluster runs on loopback: network namespaces unavailable: %s "+
		"(partitions need Linux, root and iproute2; %s=1 makes this a failure)", why, requireNetnsEnv)
	return nil
}

// chaosSettings reads the seed and the duration from the environment.
func chaosSettings(t *testing.T) (uint64, time.Duration) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(chaosSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", chaosSeedEnv, s, err)
		}
		seed = v
	}
	runFor := chaosDefaultDuration
	if s := os.Getenv(chaosDurationEnv); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 10m", chaosDurationEnv, s)
		}
		runFor = v
	}
	return seed, runFor
}

// chaosOrder is one order of the workload and what it should come to.
type chaosOrder struct {
	key   string
	token string
	sku   string
	// fate is the step expected to fail for good and its error code, or
	// "" for an order that should complete (or fail only when retries of
	// the flaky gateway or of timeouts run out).
	failStep, failCode string
}

// chaosWorkload sends orders through random live agents and remembers
// every key it sent and the task each was answered with.
type chaosWorkload struct {
	c      *cluster
	agents []*clusterAgent
	down   []atomic.Bool
	apis   []*client.Client

	mu     sync.Mutex
	orders []*chaosOrder
	ids    map[string]string   // key → the task id of its first answer
	others map[string][]string // key → other task ids answered later: a broken idempotency key
	calls  struct{ ok, created, unknown, mayApply int }
	// failedCalls counts, by key, the calls that got no answer; notCreated
	// lists the keys whose first call was answered created: false: the
	// known residual bug of docs/guarantees.md (logged, not failed).
	failedCalls map[string]int
	notCreated  []string
}

func newChaosWorkload(c *cluster) *chaosWorkload {
	w := &chaosWorkload{c: c, ids: map[string]string{}, others: map[string][]string{}, failedCalls: map[string]int{}}
	w.agents = append(slices.Clone(c.servers), c.clients...)
	w.down = make([]atomic.Bool, len(w.agents))
	for _, a := range w.agents {
		w.apis = append(w.apis, newClient(a.api))
	}
	return w
}

// setDown marks an agent down (killed or paused) or up again: the
// workload does not call it while it is down.
func (w *chaosWorkload) setDown(a *clusterAgent, down bool) {
	for i, b := range w.agents {
		if b == a {
			w.down[i].Store(down)
		}
	}
}

// run sends orders until ctx ends: each one until an agent answers, a
// few a second.
func (w *chaosWorkload) run(ctx context.Context, g int, rnd *rand.Rand) {
	for n := 0; ctx.Err() == nil; n++ {
		o := &chaosOrder{key: fmt.Sprintf("ord_c%dn%d", g, n), token: "tok_visa", sku: "TEE-M"}
		switch p := rnd.IntN(100); {
		case p < 6:
			o.token, o.failStep, o.failCode = "tok_declined", "charge", "card_declined"
		case p < 10:
			o.sku, o.failStep, o.failCode = "OOS-"+strconv.Itoa(n), "reserve", "out_of_stock"
		}
		w.mu.Lock()
		w.orders = append(w.orders, o)
		w.mu.Unlock()
		for ctx.Err() == nil {
			i := w.pick(rnd)
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := w.start(callCtx, w.apis[i], o)
			cancel()
			if err == nil {
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
		sleepCtx(ctx, time.Duration(150+rnd.IntN(300))*time.Millisecond)
	}
}

// pick returns a random agent that is not down.
func (w *chaosWorkload) pick(rnd *rand.Rand) int {
	for {
		if i := rnd.IntN(len(w.agents)); !w.down[i].Load() {
			return i
		}
	}
}

// start sends one StartTask for o and records its answer.
func (w *chaosWorkload) start(ctx context.Context, c *client.Client, o *chaosOrder) error {
	task, created, err := c.StartTask(ctx, "order-fulfilment", orderInput(o.key, o.token, o.sku),
		client.Namespace("shop"), client.IdempotencyKey(o.key))
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.calls.unknown++
		// A forward cut off by a partition fails at the hold timeout
		// saying so: the caller (run, acceptAll) sends it again with the
		// same key, as the message asks, which is safe either way.
		if strings.Contains(err.Error(), "may still be applied") {
			w.calls.mayApply++
		}
		w.failedCalls[o.key]++
		return err
	}
	w.calls.ok++
	if created {
		w.calls.created++
	}
	switch id, ok := w.ids[o.key]; {
	case !ok:
		w.ids[o.key] = task.GetId()
		if !created && w.failedCalls[o.key] == 0 {
			w.notCreated = append(w.notCreated, o.key+" → "+task.GetId())
		}
	case id != task.GetId():
		w.others[o.key] = append(w.others[o.key], task.GetId())
	}
	return nil
}

// sent is how many orders the workload sent.
func (w *chaosWorkload) sent() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.orders)
}

// acceptAll sends every order that never got an answer again, through
// the client agents, until each is answered.
func (w *chaosWorkload) acceptAll(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	var open []*chaosOrder
	for _, o := range w.orders {
		if _, ok := w.ids[o.key]; !ok {
			open = append(open, o)
		}
	}
	w.mu.Unlock()
	for _, o := range open {
		waitFor(t, 60*time.Second, "StartTask of "+o.key+" is answered", func(ctx context.Context) (bool, string, error) {
			err := w.start(ctx, w.apis[len(w.apis)-1], o)
			return err == nil, fmt.Sprint(err), nil
		})
	}
	if len(open) > 0 {
		t.Logf("chaos: %d orders sent during the run got no answer; sent again after healing", len(open))
	}
}

// consistentGet reads a task with Tasker-Consistency: consistent.
func consistentGet(ctx context.Context, c *client.Client, id string) (*taskerv1.Task, error) {
	req := connect.NewRequest(&taskerv1.GetTaskRequest{Id: id})
	req.Header().Set("Tasker-Consistency", "consistent")
	res, err := c.Service().GetTask(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return res.Msg.GetTask(), nil
}

// waitSettled waits until every accepted task has settled (settled) and
// returns them, read consistently, by task id. On timeout it fails naming
// the tasks still moving and where their steps are.
func (w *chaosWorkload) waitSettled(t *testing.T, timeout time.Duration) map[string]*taskerv1.Task {
	t.Helper()
	w.mu.Lock()
	ids := make([]string, 0, len(w.ids))
	for _, id := range w.ids {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	slices.Sort(ids)
	out := map[string]*taskerv1.Task{}
	c := w.apis[len(w.apis)-1]
	waitFor(t, timeout, "every accepted task settles", func(ctx context.Context) (bool, string, error) {
		var moving []string
		for _, id := range ids {
			if task, ok := out[id]; ok && settled(task) {
				continue
			}
			task, err := consistentGet(ctx, c, id)
			if err != nil {
				if connect.CodeOf(err) == connect.CodeNotFound {
					return false, "", fmt.Errorf("accepted task lost: %w", err)
				}
				return false, fmt.Sprintf("%d of %d settled; %v", len(ids)-len(moving), len(ids), err), nil
			}
			out[id] = task
			if !settled(task) {
				moving = append(moving, describeSteps(task))
			}
		}
		if len(moving) == 0 {
			return true, "", nil
		}
		return false, fmt.Sprintf("%d of %d still moving: %s", len(moving), len(ids), strings.Join(moving[:min(3, len(moving))], " ")), nil
	})
	return out
}

// settled reports whether a task has ended or is blocked in error with
// nothing left moving: no attempt in flight, no retry scheduled, and no
// pending step whose dependencies are done (the scheduler still runs the
// unblocked steps of a task in error).
func settled(task *taskerv1.Task) bool {
	switch task.GetState() {
	case taskerv1.TaskState_TASK_STATE_COMPLETE, taskerv1.TaskState_TASK_STATE_CANCELLED, taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY:
		return true
	case taskerv1.TaskState_TASK_STATE_ERROR:
	default:
		return false
	}
	done := map[string]bool{}
	for _, st := range task.GetSteps() {
		done[st.GetName()] = st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE
	}
	for _, st := range task.GetSteps() {
		switch st.GetState() {
		case taskerv1.StepState_STEP_STATE_ENQUEUED, taskerv1.StepState_STEP_STATE_IN_PROGRESS:
			return false
		case taskerv1.StepState_STEP_STATE_ERROR:
			if st.GetNextAttemptAt() != nil {
				return false
			}
		case taskerv1.StepState_STEP_STATE_PENDING:
			if !slices.ContainsFunc(st.GetDependsOn(), func(d string) bool { return !done[d] }) {
				return false
			}
		}
	}
	return true
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// nemesis injects faults on a seeded random schedule, one at a time, each
// undone before the next: a killed process is restarted on its data dir
// and ports, a paused one continued.
type nemesis struct {
	t *testing.T
	c *cluster
	w *chaosWorkload
	// lab cuts the network between the agents' hosts; nil on loopback.
	lab *netLab
	// kinds are the faults the schedule picks from; deck is what is
	// left of the current shuffled round of them.
	kinds  []string
	deck   []string
	rnd    *rand.Rand
	began  time.Time
	counts map[string]int
	log    []string
}

// run injects faults until deadline, a random 1-3 s apart.
func (n *nemesis) run(deadline time.Time) {
	for {
		gap := time.Duration(1000+n.rnd.IntN(2000)) * time.Millisecond
		if time.Now().Add(gap).After(deadline) {
			return
		}
		time.Sleep(gap) // the schedule's pause between faults
		n.inject(n.next())
	}
}

// next draws the next fault from a shuffled deck of every kind, dealt out
// before any repeats: a short run then sees nearly every kind (an even draw
// left whole kinds, such as all partitions, out of some 35 s runs).
func (n *nemesis) next() string {
	if len(n.deck) == 0 {
		n.deck = slices.Clone(n.kinds)
		n.rnd.Shuffle(len(n.deck), func(i, j int) { n.deck[i], n.deck[j] = n.deck[j], n.deck[i] })
	}
	k := n.deck[0]
	n.deck = n.deck[1:]
	return k
}

// hold is how long a fault lasts before it is undone: 0.5-3.5 s.
func (n *nemesis) hold() time.Duration {
	return time.Duration(500+n.rnd.IntN(3000)) * time.Millisecond
}

func (n *nemesis) logf(format string, args ...any) {
	line := fmt.Sprintf("%8s ", time.Since(n.began).Round(time.Millisecond)) + fmt.Sprintf(format, args...)
	n.log = append(n.log, line)
	n.t.Log("nemesis: " + line)
}

// inject applies one fault and undoes it.
func (n *nemesis) inject(kind string) {
	t, c := n.t, n.c
	t.Helper()
	n.counts[kind]++
	hold := n.hold()
	switch kind {
	case faultLeaderKill, faultFollowerKill, faultLeaderPause, faultFollowerPause:
		li := c.waitLeader(t, 60*time.Second)
		victim := c.servers[li]
		if kind == faultFollowerKill || kind == faultFollowerPause {
			others := slices.Delete(slices.Clone(c.servers), li, li+1)
			victim = others[n.rnd.IntN(len(others))]
		}
		n.w.setDown(victim, true)
		if kind == faultLeaderKill || kind == faultFollowerKill {
			victim.kill()
			at := time.Now()
			if kind == faultLeaderKill {
				next := c.servers[c.waitLeaderOther(t, 60*time.Second, victim.name)]
				n.logf("%s: %s killed; %s leads %s later", kind, victim.name, next.name, time.Since(at).Round(time.Millisecond))
			} else {
				n.logf("%s: %s killed", kind, victim.name)
			}
			time.Sleep(max(0, hold-time.Since(at)))
			victim.start()
			victim.waitServing(60 * time.Second)
			n.logf("%s: %s restarted %s after the kill", kind, victim.name, time.Since(at).Round(time.Millisecond))
		} else {
			victim.proc.signal(t, syscall.SIGSTOP)
			n.logf("%s: %s paused for %s", kind, victim.name, hold)
			time.Sleep(hold)
			victim.proc.signal(t, syscall.SIGCONT)
			victim.waitServing(60 * time.Second)
			leader := c.servers[c.waitLeader(t, 60*time.Second)]
			n.logf("%s: %s continued; %s leads", kind, victim.name, leader.name)
		}
		n.w.setDown(victim, false)
		// The server is back in the quorum only once it votes again:
		// autopilot removes a server dead in gossip for a second
		// (-dev-timing) and adds it back as a non-voter, promoted once
		// caught up. A server fault before that would leave two voters,
		// one of them down: no quorum.
		if took := c.waitVoters(t, 60*time.Second); took > 100*time.Millisecond {
			n.logf("%s: %s a voter again %s later", kind, victim.name, took.Round(time.Millisecond))
		}
	case faultClientKill, faultSidecarKill, faultServiceKill:
		a := c.clients[n.rnd.IntN(len(c.clients))]
		svc := c.services[a.name][len(c.services[a.name])-1]
		if kind != faultServiceKill {
			n.w.setDown(a, true)
			a.kill()
		}
		if kind != faultSidecarKill {
			svc.signal(t, syscall.SIGKILL)
			svc.wait(t, 10*time.Second)
		}
		n.logf("%s: %s killed", kind, map[string]string{faultClientKill: a.name + " and its service", faultSidecarKill: a.name, faultServiceKill: "the service of " + a.name}[kind])
		time.Sleep(hold)
		if kind != faultServiceKill {
			a.start()
			a.waitServing(60 * time.Second)
			n.w.setDown(a, false)
		}
		if kind != faultSidecarKill {
			c.startService(a, chaosServices, c.specOf(a.name).flags...)
		}
		n.logf("%s: restarted after %s", kind, hold)
	case faultLeaderPartition, faultFollowerPartition:
		n.partitionServer(kind, hold)
	case faultClientPartition:
		// Only from the servers, as the fault says: the other client
		// agent still reaches it, so gossip's indirect probes through that
		// agent may keep each side alive to the other (a partition that is
		// not transitive); its forwards and the leader's dispatches to it
		// still go nowhere until the heal, and held attempts' leases lapse.
		a := c.clients[n.rnd.IntN(len(c.clients))]
		at := time.Now()
		n.lab.partition([]*netHost{a.host}, n.serverHosts())
		n.logf("%s: %s cut off from the servers for %s", kind, a.name, hold)
		time.Sleep(hold)
		n.lab.heal()
		n.logf("%s: healed %s after the cut", kind, time.Since(at).Round(time.Millisecond))
	}
}

// partitionServer cuts the leader or a follower off from every other host
// (servers and client agents: a server whose link failed, not a partial
// partition), and heals after hold. The workload goes on calling it: its
// refusals ("may still be applied") are sent again with the same key.
func (n *nemesis) partitionServer(kind string, hold time.Duration) {
	t, c := n.t, n.c
	t.Helper()
	li := c.waitLeader(t, 60*time.Second)
	victim := c.servers[li]
	if kind == faultFollowerPartition {
		others := slices.Delete(slices.Clone(c.servers), li, li+1)
		victim = others[n.rnd.IntN(len(others))]
	}
	at := time.Now()
	n.lab.isolate(victim.host)
	if kind == faultLeaderPartition {
		// The majority elects a new leader: bounded, as every wait.
		next, _ := c.waitLeaderAmong(t, 60*time.Second, c.others(victim))
		n.logf("%s: %s cut off; %s leads the majority %s later", kind, victim.name, next.name, time.Since(at).Round(time.Millisecond))
	} else {
		n.logf("%s: %s cut off", kind, victim.name)
	}
	time.Sleep(max(0, hold-time.Since(at)))
	n.lab.heal()
	cut := time.Since(at)
	leader := c.servers[c.waitLeader(t, 60*time.Second)]
	n.logf("%s: healed %s after the cut; %s leads", kind, cut.Round(time.Millisecond), leader.name)
	// As after a kill: the autopilot removed the server cut off for a
	// second and adds it back as a non-voter, promoted once caught up.
	if took := c.waitVoters(t, 60*time.Second); took > 100*time.Millisecond {
		n.logf("%s: %s a voter again %s later", kind, victim.name, took.Round(time.Millisecond))
	}
}

// serverHosts are the lab hosts of the servers.
func (n *nemesis) serverHosts() []*netHost {
	out := make([]*netHost, 0, len(n.c.servers))
	for _, s := range n.c.servers {
		out = append(out, s.host)
	}
	return out
}

// checkHealed fails unless every process of the cluster runs: every
// server, client agent and each client's newest service.
func (n *nemesis) checkHealed() {
	n.t.Helper()
	for _, a := range append(slices.Clone(n.c.servers), n.c.clients...) {
		if a.proc.exited() {
			n.t.Fatalf("%s is not running after the schedule: %v", a.name, a.proc.err)
		}
	}
	for name, ps := range n.c.services {
		if ps[len(ps)-1].exited() {
			n.t.Fatalf("the service of %s is not running after the schedule: %v", name, ps[len(ps)-1].err)
		}
	}
}

func (n *nemesis) total() int {
	sum := 0
	for _, v := range n.counts {
		sum += v
	}
	return sum
}

// describeCounts renders how many faults of each kind were injected, and
// says when partitions were left out.
func (n *nemesis) describeCounts() string {
	parts := make([]string, 0, len(n.kinds)+1)
	for _, k := range n.kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, n.counts[k]))
	}
	if n.lab == nil {
		parts = append(parts, "(partitions skipped: no network namespaces)")
	}
	return strings.Join(parts, " ")
}

// specOf returns the spec the client agent named name was started with.
func (c *cluster) specOf(name string) clientSpec {
	c.t.Helper()
	for _, s := range c.opts.clients {
		if s.name == name {
			return s
		}
	}
	c.t.Fatalf("no client spec %q", name)
	return clientSpec{}
}
