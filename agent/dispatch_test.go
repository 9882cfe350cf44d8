package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkworker "github.com/tasker-run/tasker/sdk/go/worker"
)

// The dispatch tests run real agents on loopback: a one-server cluster
// whose server has no app of its own, and client agents joined to it whose
// apps (Go SDK workers) offer the capability, so every step crosses from
// the leader to another agent.

const dxMaxAttempts = 10

// dxManifest is a one-step workflow on capability dx.work with quick
// retries, so that failures come fast and attempts are plentiful.
const dxManifest = `name: dx
version: 1.0.0
steps:
  - name: work
    capability: dx.work
    timeout: 10s
    retry: {max_attempts: 10, backoff: {initial: 10ms, max: 20ms}}
`

// fastBreakers trips after 3 consecutive failures and stays open 500 ms.
const fastBreakers = `policies:
  circuitBreakers:
    fast: {maxRequests: 1, timeout: 500ms, trip: consecutiveFailures > 2}
defaults: {circuitBreaker: fast}
`

// startDxServer starts the one server, s1, with the fast breaker policy
// and its logs collected, and applies dxManifest.
func startDxServer(t *testing.T) (*testAgent, *logBuf) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "breakers.yaml")
	if err := os.WriteFile(path, []byte(fastBreakers), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect, cfg.DevTiming = "s1", t.TempDir(), true, 1, true
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort = 0, 0, 0, 0
	cfg.ShutdownTimeout, cfg.BreakersFile = 5*time.Second, path
	logs := &logBuf{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	a, err := New(cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	c := h2c()
	ta := &testAgent{Agent: a, dir: cfg.DataDir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, a.Addr()),
		wk: taskerv1connect.NewWorkerServiceClient(c, a.Addr()),
		cl: taskerv1connect.NewClusterServiceClient(c, a.Addr()),
	}
	waitFor(t, 10*time.Second, "a leader", func() bool { return a.node.IsLeader() })
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: dxManifest})); err != nil {
		t.Fatal(err)
	}
	return ta, logs
}

// runApp attaches an app offering capName to ta with the Go SDK; it stops
// at the end of the test.
func runApp(t *testing.T, ta *testAgent, id, capName string, concurrency int, h sdkworker.Handler) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("app", id)
	}
	w := sdkworker.New(sdkworker.Options{Addr: ta.Addr(), WorkerID: id, Logger: log, DrainTimeout: 200 * time.Millisecond})
	w.Handle(capName, h, sdkworker.Concurrency(concurrency))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitProviders waits until the server's registry lists n providers of capName.
func waitProviders(t *testing.T, srv *testAgent, capName string, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d providers of %s", n, capName), func() bool {
		return len(srv.gossip.Registry().Providers(capName)) == n
	})
}

func startDxTasks(t *testing.T, srv *testAgent, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		r, err := srv.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "dx"}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Msg.GetTask().GetId())
	}
	return ids
}

// getTask reads a task through ta.
func getTask(t *testing.T, ta *testAgent, id string) *taskerv1.Task {
	t.Helper()
	r, err := ta.wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetTask()
}

// waitComplete waits for every task to complete and returns them.
func waitComplete(t *testing.T, srv *testAgent, ids []string, within time.Duration) []*taskerv1.Task {
	t.Helper()
	out := make([]*taskerv1.Task, len(ids))
	for i, id := range ids {
		out[i] = waitTaskWithin(t, srv, id, within)
	}
	return out
}

func waitTaskWithin(t *testing.T, srv *testAgent, id string, within time.Duration) *taskerv1.Task {
	t.Helper()
	var last *taskerv1.Task
	deadline := time.Now().Add(within)
	for {
		last = getTask(t, srv, id)
		if last.GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s after %v: %v", id, last.GetState(), within, last.GetSteps())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// breakerOf returns target's breaker as ta's Breakers call lists it, or nil.
func breakerOf(t *testing.T, ta *testAgent, target string) *taskerv1.Breaker {
	t.Helper()
	r, err := ta.cl.Breakers(context.Background(), connect.NewRequest(&taskerv1.BreakersRequest{}))
	if err != nil {
		t.Fatalf("breakers: %v", err)
	}
	if r.Msg.GetLeader() != "s1" {
		t.Fatalf("breakers answered by %q, want the leader s1", r.Msg.GetLeader())
	}
	for _, b := range r.Msg.GetBreakers() {
		if b.GetTarget() == target {
			return b
		}
	}
	return nil
}

// TestDispatchToClientAgents: steps whose capability only client agents
// offer run there, through the leader, and several agents offering it
// share the load.
func TestDispatchToClientAgents(t *testing.T) {
	for _, tc := range []struct {
		name    string
		clients int
		tasks   int
	}{
		{"one client agent", 1, 3},
		{"two client agents share the load", 2, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := startDxServer(t)
			var (
				mu    sync.Mutex
				ran   = map[string]int{} // by agent
				peak  atomic.Int32
				inApp atomic.Int32
			)
			var clients []*testAgent
			for i := range tc.clients {
				name := fmt.Sprintf("c%d", i+1)
				c := startClientAgent(t, name, srv)
				clients = append(clients, c)
				runApp(t, c, name+"-app", "dx.work", 4, func(ctx context.Context, s *sdkworker.Step) (any, error) {
					n := inApp.Add(1)
					defer inApp.Add(-1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					mu.Lock()
					ran[name]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // long enough for steps to overlap
					return map[string]string{"by": name}, nil
				})
			}
			waitProviders(t, srv, "dx.work", tc.clients)
			ids := startDxTasks(t, srv, tc.tasks)
			for _, task := range waitComplete(t, srv, ids, 20*time.Second) {
				st := task.GetSteps()[0]
				if st.GetAttempts() != 1 || !strings.HasPrefix(st.GetAgent(), "c") || st.GetWaiting() != "" {
					t.Errorf("task %s: step ran %d times on %q, waiting %q; want once on a client agent", task.GetId(), st.GetAttempts(), st.GetAgent(), st.GetWaiting())
				}
			}
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for i := range tc.clients {
				name := fmt.Sprintf("c%d", i+1)
				total += ran[name]
				if min := tc.tasks / (2 * tc.clients); ran[name] < min {
					t.Errorf("%s ran %d of %d steps, want at least %d: %v", name, ran[name], tc.tasks, min, ran)
				}
				// Breakers is answered by the leader, also when asked through a client agent.
				b := breakerOf(t, clients[0], name+"/dx.work")
				if b == nil || b.GetState() != "closed" || b.GetSuccesses() != uint32(ran[name]) || b.GetInFlight() != 0 {
					t.Errorf("breaker %s/dx.work = %v, want closed with %d successes and none in flight", name, b, ran[name])
				}
			}
			if total != tc.tasks {
				t.Errorf("apps ran %d steps for %d tasks: %v", total, tc.tasks, ran)
			}
			if p := peak.Load(); p > int32(4*tc.clients) {
				t.Errorf("%d steps ran at once, over the agents' concurrency of %d", p, 4*tc.clients)
			}
		})
	}
}

// TestBreakerOpensAndRecovers: an agent whose app fails every step
// (retryably) has its breaker opened; then the steps go to a healthy agent
// offering the capability, or wait, without spending attempts, saying why.
// Once the app recovers, the breaker half-opens, its trial succeeds, it
// closes, and every task completes.
func TestBreakerOpensAndRecovers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy bool // a second agent offers dx.work and never fails
	}{
		{"alone: steps wait", false},
		{"with a healthy agent: steps go there", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, logs := startDxServer(t)
			var failing atomic.Bool
			failing.Store(true)
			var failures atomic.Int32
			bad := startClientAgent(t, "bad", srv)
			runApp(t, bad, "bad-app", "dx.work", 4, func(ctx context.Context, s *sdkworker.Step) (any, error) {
				if failing.Load() {
					failures.Add(1)
					return nil, sdkworker.Retryable("unavailable", "the database is down", 0)
				}
				time.Sleep(50 * time.Millisecond) // a trial long enough to see half-open
				return map[string]string{"by": "bad"}, nil
			})
			providers := 1
			if tc.healthy {
				good := startClientAgent(t, "good", srv)
				runApp(t, good, "good-app", "dx.work", 4, func(ctx context.Context, s *sdkworker.Step) (any, error) {
					time.Sleep(20 * time.Millisecond)
					return map[string]string{"by": "good"}, nil
				})
				providers = 2
			}
			waitProviders(t, srv, "dx.work", providers)
			ids := startDxTasks(t, srv, 6)

			waitFor(t, 10*time.Second, "bad's breaker to open", func() bool {
				return logs.has("circuit breaker open", "target=bad/dx.work")
			})
			if !tc.healthy {
				// Every retry waits for the breaker; GetTask says why.
				var why string
				waitFor(t, 10*time.Second, "a step waiting for the open breaker", func() bool {
					for _, id := range ids {
						if w := getTask(t, srv, id).GetSteps()[0].GetWaiting(); strings.Contains(w, "circuit breaker") {
							why = w
							return true
						}
					}
					return false
				})
				if !strings.Contains(why, "bad/dx.work") || !strings.HasSuffix(why, "no other agent offers dx.work") {
					t.Errorf("waiting %q: want the open breaker and that no other agent offers dx.work", why)
				}
				if b := breakerOf(t, srv, "bad/dx.work"); b == nil || b.GetState() == "closed" {
					t.Errorf("breaker bad/dx.work = %v, want open (or half-open)", b)
				}
				failing.Store(false)
			}
			tasks := waitComplete(t, srv, ids, 20*time.Second)
			total := 0
			for _, task := range tasks {
				st := task.GetSteps()[0]
				total += int(st.GetAttempts())
				if st.GetAttempts() >= dxMaxAttempts {
					t.Errorf("task %s used %d of %d attempts", task.GetId(), st.GetAttempts(), dxMaxAttempts)
				}
				if tc.healthy && st.GetAgent() != "good" {
					t.Errorf("task %s completed on %q, want good", task.GetId(), st.GetAgent())
				}
			}
			// An open breaker spends no attempt: only the app's real
			// failures did (and one success per task).
			if f := int(failures.Load()); total != f+len(tasks) {
				t.Errorf("%d attempts in all for %d failures and %d tasks", total, f, len(tasks))
			}
			if !tc.healthy {
				waitFor(t, 10*time.Second, "bad's breaker to half-open, then close", func() bool {
					return logs.has("circuit breaker half_open", "target=bad/dx.work") && logs.has("circuit breaker closed", "target=bad/dx.work")
				})
				if b := breakerOf(t, srv, "bad/dx.work"); b == nil || b.GetState() != "closed" {
					t.Errorf("breaker bad/dx.work = %v, want closed after recovery", b)
				}
			}
		})
	}
}

// TestWaitingReasons: a ready step nobody can take waits, saying why in
// GetTask, and runs once that changes.
func TestWaitingReasons(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup prepares the cluster and returns the tasks to check and
		// what unblocks them.
		setup func(t *testing.T, srv, cli *testAgent) (ids []string, unblock func())
		want  string
	}{
		{"no provider yet", func(t *testing.T, srv, cli *testAgent) ([]string, func()) {
			return startDxTasks(t, srv, 1), func() {
				runApp(t, cli, "late-app", "dx.work", 1, func(context.Context, *sdkworker.Step) (any, error) { return nil, nil })
			}
		}, "no agent offers capability dx.work yet"},
		{"every provider at its limit", func(t *testing.T, srv, cli *testAgent) ([]string, func()) {
			release := make(chan struct{})
			runApp(t, cli, "slow-app", "dx.work", 1, func(ctx context.Context, _ *sdkworker.Step) (any, error) {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil
			})
			waitProviders(t, srv, "dx.work", 1)
			ids := startDxTasks(t, srv, 2)
			var once sync.Once
			return ids, func() { once.Do(func() { close(release) }) }
		}, "every agent offering dx.work is at its concurrency limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := startDxServer(t)
			cli := startClientAgent(t, "c1", srv)
			ids, unblock := tc.setup(t, srv, cli)
			t.Cleanup(unblock)
			var waiting *taskerv1.Task
			waitFor(t, 10*time.Second, "a step waiting: "+tc.want, func() bool {
				for _, id := range ids {
					// Asked through the client agent: forwarded to the leader.
					if task := getTask(t, cli, id); task.GetSteps()[0].GetWaiting() == tc.want {
						waiting = task
						return true
					}
				}
				return false
			})
			if st := waiting.GetSteps()[0]; st.GetAttempts() != 0 || st.GetState() != taskerv1.StepState_STEP_STATE_PENDING {
				t.Errorf("waiting step: %s after %d attempts, want pending with none", st.GetState(), st.GetAttempts())
			}
			// WatchTask shows it too.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stream, err := srv.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: waiting.GetId()}))
			if err != nil {
				t.Fatal(err)
			}
			if !stream.Receive() {
				t.Fatalf("watch: %v", stream.Err())
			}
			if got := stream.Msg().GetTask().GetSteps()[0].GetWaiting(); got != tc.want {
				t.Errorf("WatchTask: waiting %q, want %q", got, tc.want)
			}
			_ = stream.Close()
			unblock()
			for _, task := range waitComplete(t, srv, ids, 15*time.Second) {
				if st := task.GetSteps()[0]; st.GetWaiting() != "" || st.GetAttempts() != 1 {
					t.Errorf("task %s: step waiting %q after %d attempts, want none after 1", task.GetId(), st.GetWaiting(), st.GetAttempts())
				}
			}
		})
	}
}

// pinnedManifest has one step owned by system payments; unpinnedManifest
// asks for the same capability with no owner.
const (
	pinnedManifest = `name: pinned
version: 1.0.0
systems:
  payments:
    capabilities: [payments.charge]
steps:
  - name: charge
    owner: payments
    capability: payments.charge
    timeout: 10s
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
`
	unpinnedManifest = `name: unpinned
version: 1.0.0
steps:
  - name: charge
    capability: payments.charge
    timeout: 10s
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
`
)

// startTasksOf applies manifest through srv and starts n tasks of workflow.
func startTasksOf(t *testing.T, srv *testAgent, manifest, workflow string, n int) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range n {
		r, err := srv.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: workflow}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Msg.GetTask().GetId())
	}
	return ids
}

// startSystemAgent starts client agent name labeled system, with an app
// offering payments.charge that counts its steps in ran.
func startSystemAgent(t *testing.T, srv *testAgent, name, system string, ran *sync.Map) *testAgent {
	t.Helper()
	c := startClientAgent(t, name, srv, func(c *Config) { c.System = system })
	runApp(t, c, name+"-app", "payments.charge", 4, func(context.Context, *sdkworker.Step) (any, error) {
		n, _ := ran.LoadOrStore(name, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		time.Sleep(10 * time.Millisecond) // long enough for steps to overlap
		return map[string]string{"by": name}, nil
	})
	return c
}

func ranOn(ran *sync.Map, name string) int32 {
	if n, ok := ran.Load(name); ok {
		return n.(*atomic.Int32).Load()
	}
	return 0
}

// TestOwnerPinsSystem: a step whose owner is a system runs only on agents
// labeled with that system (-system), although an agent of another system
// offers its capability too; a step without an owner runs on either. With
// no agent of the owner's system, the owned step waits, saying which
// agents offer the capability and of which systems, and runs once an
// agent of the system joins.
func TestOwnerPinsSystem(t *testing.T) {
	t.Run("pinned to its system's agent", func(t *testing.T) {
		srv, _ := startDxServer(t)
		var ran sync.Map
		pay := startSystemAgent(t, srv, "pay-1", "payments", &ran)
		startSystemAgent(t, srv, "other-1", "other", &ran)
		waitProviders(t, srv, "payments.charge", 2)
		systems := map[string]string{"s1": "", "pay-1": "payments", "other-1": "other"}
		for _, p := range srv.gossip.Registry().Providers("payments.charge") {
			if p.System != systems[p.Agent] {
				t.Fatalf("the leader sees %s of system %q, want %q", p.Agent, p.System, systems[p.Agent])
			}
		}
		// Members shows the labels: other agents' from gossip, its own from
		// its config.
		for _, via := range []*testAgent{srv, pay} {
			waitFor(t, 10*time.Second, "the labels in Members through "+via.cfg.NodeName, func() bool {
				r, err := via.cl.Members(context.Background(), connect.NewRequest(&taskerv1.MembersRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				members := r.Msg.GetMembers()
				for _, m := range members {
					if want, ok := systems[m.GetName()]; !ok || m.GetSystem() != want {
						return false
					}
				}
				return len(members) == len(systems)
			})
		}
		pinned := startTasksOf(t, srv, pinnedManifest, "pinned", 8)
		for _, task := range waitComplete(t, srv, pinned, 20*time.Second) {
			if st := task.GetSteps()[0]; st.GetAgent() != "pay-1" || st.GetAttempts() != 1 {
				t.Errorf("task %s: owned step ran on %q at attempt %d, want pay-1 at attempt 1", task.GetId(), st.GetAgent(), st.GetAttempts())
			}
		}
		if n := ranOn(&ran, "other-1"); n != 0 {
			t.Fatalf("the app of system other ran %d steps owned by payments", n)
		}
		// Without an owner the label does not matter: both agents share the load.
		unpinned := startTasksOf(t, srv, unpinnedManifest, "unpinned", 16)
		agents := map[string]int{}
		for _, task := range waitComplete(t, srv, unpinned, 20*time.Second) {
			agents[task.GetSteps()[0].GetAgent()]++
		}
		if agents["pay-1"] == 0 || agents["other-1"] == 0 || agents["pay-1"]+agents["other-1"] != 16 {
			t.Errorf("steps without an owner ran on %v, want both pay-1 and other-1", agents)
		}
	})
	t.Run("waits for an agent of its system", func(t *testing.T) {
		srv, _ := startDxServer(t)
		var ran sync.Map
		cli := startSystemAgent(t, srv, "other-1", "other", &ran)
		waitProviders(t, srv, "payments.charge", 1)
		ids := startTasksOf(t, srv, pinnedManifest, "pinned", 1)
		want := `no agent of system "payments" offers payments.charge (agents offering it: other-1 of system "other")`
		var got string
		waitFor(t, 10*time.Second, "the owned step waiting: "+want, func() bool {
			// Asked through the client agent: forwarded to the leader.
			got = getTask(t, cli, ids[0]).GetSteps()[0].GetWaiting()
			return got == want
		})
		if st := getTask(t, srv, ids[0]).GetSteps()[0]; st.GetAttempts() != 0 || st.GetState() != taskerv1.StepState_STEP_STATE_PENDING {
			t.Errorf("waiting step: %s after %d attempts, want pending with none", st.GetState(), st.GetAttempts())
		}
		startSystemAgent(t, srv, "pay-1", "payments", &ran)
		task := waitTaskWithin(t, srv, ids[0], 15*time.Second)
		if st := task.GetSteps()[0]; st.GetAgent() != "pay-1" || st.GetAttempts() != 1 || st.GetWaiting() != "" {
			t.Errorf("step ran on %q at attempt %d, waiting %q; want pay-1 at attempt 1, not waiting", st.GetAgent(), st.GetAttempts(), st.GetWaiting())
		}
		if n := ranOn(&ran, "other-1"); n != 0 {
			t.Errorf("the app of system other ran %d steps owned by payments", n)
		}
	})
}

// killAgent stops a client agent the way a killed process stops: gossip
// goes silent (no leave), connections drop. Its Shutdown, at cleanup,
// finds nothing left to do.
func killAgent(ta *testAgent) {
	_ = ta.gossip.Shutdown()
	_ = ta.rpcSrv.Close()
	_ = ta.srv.Close()
}

// TestDeadAgentStepsGoElsewhere: the attempts in flight on an agent that
// dies end as soon as gossip declares it failed (as timed out: its app
// may only be cut off, so the step's next run gets a new attempt number),
// and the steps run on another agent offering the capability.
func TestDeadAgentStepsGoElsewhere(t *testing.T) {
	srv, _ := startDxServer(t)
	doomed := startClientAgent(t, "c1", srv, func(c *Config) { c.ShutdownTimeout = 100 * time.Millisecond })
	started := make(chan struct{}, 4)
	runApp(t, doomed, "c1-app", "dx.work", 4, func(ctx context.Context, _ *sdkworker.Step) (any, error) {
		started <- struct{}{}
		<-ctx.Done() // hangs until its agent is gone and the app stops
		return nil, ctx.Err()
	})
	waitProviders(t, srv, "dx.work", 1)
	ids := startDxTasks(t, srv, 2)
	for range ids {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the steps did not start on c1")
		}
	}
	other := startClientAgent(t, "c2", srv)
	runApp(t, other, "c2-app", "dx.work", 4, func(context.Context, *sdkworker.Step) (any, error) {
		return map[string]string{"by": "c2"}, nil
	})
	waitProviders(t, srv, "dx.work", 2)
	killed := time.Now()
	killAgent(doomed)

	// Well before the steps' 10 s timeout: gossip's verdict ended them.
	for _, task := range waitComplete(t, srv, ids, 8*time.Second) {
		st := task.GetSteps()[0]
		if st.GetAgent() != "c2" || st.GetAttempts() != 2 {
			t.Errorf("task %s: step completed on %q at attempt %d, want c2 at attempt 2", task.GetId(), st.GetAgent(), st.GetAttempts())
		}
		ev, err := srv.state.Events(task.GetId(), 0)
		if err != nil {
			t.Fatal(err)
		}
		ended := false
		for _, e := range ev {
			ended = ended || e.Type == "step.failed" && e.Attempt == 1 && e.Message == "timeout: agent c1 failed while running the attempt"
		}
		if !ended {
			t.Errorf("task %s: attempt 1 did not fail as \"agent c1 failed\": %v", task.GetId(), ev)
		}
	}
	t.Logf("steps of the killed agent completed elsewhere %v after the kill", time.Since(killed).Round(time.Millisecond))
	if b := breakerOf(t, srv, "c1/dx.work"); b == nil || b.GetFailures() != 2 || b.GetInFlight() != 0 {
		t.Errorf("breaker c1/dx.work = %v: want both lost attempts counted as failures and nothing in flight", b)
	}
}

// TestPermanentFailuresDoNotTrip: an app that refuses its steps for good
// (the input, not the agent, is at fault) does not open its agent's
// breaker, however many it refuses.
func TestPermanentFailuresDoNotTrip(t *testing.T) {
	srv, logs := startDxServer(t)
	cli := startClientAgent(t, "c1", srv)
	runApp(t, cli, "picky-app", "dx.work", 4, func(context.Context, *sdkworker.Step) (any, error) {
		return nil, sdkworker.Permanent("invalid_order", "no such order")
	})
	waitProviders(t, srv, "dx.work", 1)
	ids := startDxTasks(t, srv, 5)
	for _, id := range ids {
		waitFor(t, 10*time.Second, "task "+id+" to fail", func() bool {
			return getTask(t, srv, id).GetState() == taskerv1.TaskState_TASK_STATE_ERROR
		})
	}
	b := breakerOf(t, srv, "c1/dx.work")
	if b == nil || b.GetState() != "closed" || b.GetFailures() != 0 || b.GetRequests() != 5 {
		t.Errorf("breaker c1/dx.work = %v, want closed, 5 requests, no failures", b)
	}
	if logs.has("circuit breaker open") {
		t.Error("a breaker opened")
	}
}

func TestWaitReason(t *testing.T) {
	for _, tc := range []struct {
		owner string
		n     int
		notes []string
		full  int
		want  string
	}{
		{"", 0, nil, 0, "no agent offers capability p.c yet"},
		{"", 2, nil, 2, "every agent offering p.c is at its concurrency limit"},
		{"", 1, []string{"circuit breaker open for a/p.c until 12:00:03"}, 0,
			"circuit breaker open for a/p.c until 12:00:03; no other agent offers p.c"},
		{"", 3, []string{"circuit breaker open for a/p.c until 12:00:03", "b did not take the last step sent to it; trying it again after 12:00:01"}, 1,
			"circuit breaker open for a/p.c until 12:00:03; b did not take the last step sent to it; trying it again after 12:00:01; every other agent offering p.c is at its concurrency limit"},
		// An owned step: only the agents serving its system count.
		{"p", 0, nil, 0, "no agent offers capability p.c yet"},
		{"p", 2, nil, 2, `every agent of system "p" offering p.c is at its concurrency limit`},
		{"p", 1, []string{"circuit breaker open for a/p.c until 12:00:03"}, 0,
			`circuit breaker open for a/p.c until 12:00:03; no other agent of system "p" offers p.c`},
		{"p", 2, []string{"circuit breaker open for a/p.c until 12:00:03"}, 1,
			`circuit breaker open for a/p.c until 12:00:03; every other agent of system "p" offering p.c is at its concurrency limit`},
	} {
		if got := waitReason(want{"p.c", tc.owner}, tc.n, tc.notes, tc.full); got != tc.want {
			t.Errorf("waitReason(owner %q, %d, %q, %d) = %q, want %q", tc.owner, tc.n, tc.notes, tc.full, got, tc.want)
		}
	}
}

func TestServesOwner(t *testing.T) {
	for _, tc := range []struct {
		system, owner string
		want          bool
	}{
		{"", "", true},         // no owner, no label
		{"payments", "", true}, // no owner: any agent offering the capability
		{"payments", "payments", true},
		{"other", "payments", false}, // pinned elsewhere
		{"", "payments", true},       // an unlabeled agent serves every system
	} {
		if got := servesOwner(tc.system, tc.owner); got != tc.want {
			t.Errorf("servesOwner(%q, %q) = %v, want %v", tc.system, tc.owner, got, tc.want)
		}
	}
}

// TestUnreachableAgentIsPassedOver: an agent gossip lists but whose RPC
// port does not answer fails its deliveries, which count against its
// breaker and are handed back without spending attempts, to run on an
// agent that answers.
func TestUnreachableAgentIsPassedOver(t *testing.T) {
	srv, _ := startDxServer(t)
	for _, name := range []string{"c1", "c2"} {
		c := startClientAgent(t, name, srv)
		runApp(t, c, name+"-app", "dx.work", 4, func(context.Context, *sdkworker.Step) (any, error) {
			return map[string]string{"by": name}, nil
		})
		if name == "c1" {
			_ = c.rpcSrv.Close() // gossip still says it is alive and offers dx.work
		}
	}
	waitProviders(t, srv, "dx.work", 2)
	ids := startDxTasks(t, srv, 4)
	for _, task := range waitComplete(t, srv, ids, 15*time.Second) {
		if st := task.GetSteps()[0]; st.GetAgent() != "c2" || st.GetAttempts() != 1 {
			t.Errorf("task %s: step completed on %q at attempt %d, want c2 at attempt 1", task.GetId(), st.GetAgent(), st.GetAttempts())
		}
	}
	if b := breakerOf(t, srv, "c1/dx.work"); b == nil || b.GetFailures() == 0 || b.GetInFlight() != 0 {
		t.Errorf("breaker c1/dx.work = %v, want failed deliveries counted and nothing in flight", b)
	}
}
