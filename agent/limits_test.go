package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// TestLimitSettings: each limit is settable by flag, environment and
// file, and a bad value is refused naming the setting and its range.
func TestLimitSettings(t *testing.T) {
	bad := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-dev", "-max-tasks-in-flight", "0"}, nil, "max-tasks-in-flight: 0 is out of range: use 1 to 100000000"},
		{[]string{"-dev"}, map[string]string{"TASKER_MAX_TASKS_IN_FLIGHT": "many"}, `TASKER_MAX_TASKS_IN_FLIGHT: "many" is not a whole number`},
		{[]string{"-dev", "-max-workflow-steps", "70000"}, nil, "max-workflow-steps: 70000 is out of range: use 1 to 65535"},
		{[]string{"-dev", "-max-watchers", "-1"}, nil, "max-watchers: -1 is out of range"},
		{[]string{"-dev", "-max-workers", "0"}, nil, "max-workers: 0 is out of range: use 1 to 1000000"},
		{[]string{"-dev", "-rate-limit", "-5"}, nil, "rate-limit: -5 is out of range: use 0 (off)"},
		{[]string{"-dev", "-rate-limit", "NaN"}, nil, "rate-limit: NaN is out of range"},
		{[]string{"-dev", "-rate-limit", "fast"}, nil, `-rate-limit: "fast" is not a number`},
		{[]string{"-dev", "-rate-burst", "10"}, nil, "rate-burst: has no effect without -rate-limit"},
		{[]string{"-dev", "-rate-limit", "5", "-rate-burst", "-1"}, nil, "rate-burst: -1 is out of range"},
	}
	for _, tt := range bad {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}

	cfg, err := Load([]string{"-dev"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxTasksInFlight != 100000 || cfg.MaxWorkflowSteps != 10000 || cfg.MaxWatchers != 10000 || cfg.MaxWorkers != 10000 || cfg.RateLimit != 0 {
		t.Fatalf("defaults: %+v; want 100000 tasks in flight, 10000 steps, 10000 watchers, no rate limit", cfg.Limits)
	}

	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("max_tasks_in_flight: 7\nmax_workflow_steps: 9\nrate_limit: 2.5\nrate_burst: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load([]string{"-dev", "-config", file, "-rate-burst", "6"}, func(k string) string {
		return map[string]string{"TASKER_MAX_WATCHERS": "3", "TASKER_MAX_TASKS_IN_FLIGHT": "8"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{MaxTasksInFlight: 8, MaxWorkflowSteps: 9, MaxWatchers: 3, MaxWorkers: 10000, RateLimit: 2.5, RateBurst: 6}
	if cfg.Limits != want {
		t.Fatalf("file, env and flags: %+v, want %+v (flags beat env beat file)", cfg.Limits, want)
	}
}

// TestRateLimiter: a client gets its burst, then one request per 1/rate;
// clients do not share buckets; the map of buckets stays bounded.
func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	tests := []struct {
		name  string
		rate  float64
		burst int
		// steps: advance the clock by wait, then ask for key; want says
		// whether it is allowed.
		steps []struct {
			wait time.Duration
			key  string
			want bool
		}
	}{
		{"burst then refill", 2, 2, []struct {
			wait time.Duration
			key  string
			want bool
		}{{0, "a", true}, {0, "a", true}, {0, "a", false}, {500 * time.Millisecond, "a", true}, {0, "a", false}}},
		{"clients are independent", 1, 1, []struct {
			wait time.Duration
			key  string
			want bool
		}{{0, "a", true}, {0, "a", false}, {0, "b", true}, {0, "b", false}, {time.Second, "a", true}}},
		{"burst 0 means the rate rounded up", 2.5, 0, []struct {
			wait time.Duration
			key  string
			want bool
		}{{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := newRateLimiter(tt.rate, tt.burst, 100, clock)
			for i, s := range tt.steps {
				now = now.Add(s.wait)
				ok, wait := rl.allow(s.key)
				if ok != s.want {
					t.Fatalf("step %d (%s): allowed = %v, want %v", i, s.key, ok, s.want)
				}
				if !ok && (wait <= 0 || wait > time.Duration(float64(time.Second)/tt.rate)+time.Millisecond) {
					t.Fatalf("step %d: retry after %v, want within one token's time", i, wait)
				}
			}
		})
	}

	t.Run("bounded, idle buckets evicted", func(t *testing.T) {
		rl := newRateLimiter(1, 1, 3, clock)
		for _, k := range []string{"a", "b", "c"} {
			if ok, _ := rl.allow(k); !ok {
				t.Fatalf("%s refused", k)
			}
		}
		// Full: a new client shares the overflow bucket rather than growing the map.
		if ok, _ := rl.allow("d"); !ok {
			t.Fatal("first overflow client refused")
		}
		if ok, _ := rl.allow("e"); ok {
			t.Fatal("second overflow client got its own bucket beyond the bound")
		}
		if n := rl.size(); n != 3 {
			t.Fatalf("%d buckets, want the bound of 3", n)
		}
		// Once the others have refilled, they are dropped and e gets a bucket.
		now = now.Add(2 * time.Second)
		if ok, _ := rl.allow("e"); !ok {
			t.Fatal("e refused after idle buckets were due for eviction")
		}
		if n := rl.size(); n != 1 {
			t.Fatalf("%d buckets after eviction, want 1", n)
		}
	})
}

// wantExhausted fails unless err is ResourceExhausted naming setting.
func wantExhausted(t *testing.T, err error, setting string) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || !strings.Contains(ce.Message(), setting) {
		t.Fatalf("got %v, want resource_exhausted naming %s", err, setting)
	}
	return ce
}

func taskCount(t *testing.T, ta *testAgent) int {
	t.Helper()
	r, err := ta.wf.ListTasks(context.Background(), connect.NewRequest(&taskerv1.ListTasksRequest{PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Msg.GetTasks())
}

// TestTasksInFlightCap: at max_tasks_in_flight StartTask is refused with
// ResourceExhausted naming the setting and starts nothing, including
// through a client agent configured with a higher cap (the leader's
// applies); a retry with a known idempotency key still gets its task.
func TestTasksInFlightCap(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.MaxTasksInFlight = 2 })
	applyQuick(t, srv)
	first := startQuick(t, srv, "k1")
	startQuick(t, srv, "k2")

	start := func(ta *testAgent, key string) (*connect.Response[taskerv1.StartTaskResponse], error) {
		return ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n": 1}`, IdempotencyKey: key}))
	}
	_, err := start(srv, "k3")
	ce := wantExhausted(t, err, "max_tasks_in_flight")
	if !strings.Contains(ce.Message(), "2 tasks in flight, at the limit of 2") {
		t.Fatalf("message %q does not say the count and the limit", ce.Message())
	}
	if n := taskCount(t, srv); n != 2 {
		t.Fatalf("%d tasks after a refused start, want 2", n)
	}
	r, err := start(srv, "k1")
	if err != nil || r.Msg.GetTask().GetId() != first || r.Msg.GetCreated() {
		t.Fatalf("retry of k1 at the cap: %v %v, want task %s, not created", r, err, first)
	}

	client := startClientAgent(t, "c1", srv, func(c *Config) { c.MaxTasksInFlight = 1000 })
	_, err = start(client, "k4")
	wantExhausted(t, err, "max_tasks_in_flight")
	if r, err := start(client, "k1"); err != nil || r.Msg.GetTask().GetId() != first {
		t.Fatalf("retry of k1 through a client agent at the cap: %v %v", r, err)
	}
	if n := taskCount(t, srv); n != 2 {
		t.Fatalf("%d tasks after refused starts, want 2", n)
	}

	// A task that ends makes room.
	if _, err := srv.wf.CancelTask(context.Background(), connect.NewRequest(&taskerv1.CancelTaskRequest{Id: first})); err != nil {
		t.Fatal(err)
	}
	if _, err := start(client, "k5"); err != nil {
		t.Fatalf("start after a task ended: %v", err)
	}
	assertRejections(t, srv, "tasks_in_flight")
}

// assertRejections fails unless /metrics counts a rejection by limit.
func assertRejections(t *testing.T, ta *testAgent, limit string) {
	t.Helper()
	resp, err := h2c().Get(ta.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "tasker_limit_rejections_total{") && strings.Contains(line, `tasker_limit="`+limit+`"`) && !strings.HasSuffix(line, " 0") {
			return
		}
	}
	t.Fatalf("no tasker_limit_rejections_total{tasker_limit=%q} above 0 in /metrics", limit)
}

// TestPayloadAndStepsLimits: oversize payloads and workflows with too many
// steps are refused with ResourceExhausted naming the setting, and nothing
// is stored; a client agent with a larger payload limit cannot push a
// larger result past the leader.
func TestPayloadAndStepsLimits(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.MaxPayloadBytes, c.MaxWorkflowSteps = 2048, 1 })
	ctx := context.Background()

	_, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick}))
	ce := wantExhausted(t, err, "max_workflow_steps")
	if !strings.Contains(ce.Message(), "quick has 2 steps, over the limit of 1") {
		t.Fatalf("message %q does not name the workflow, its steps and the limit", ce.Message())
	}
	if r, err := srv.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{})); err != nil || len(r.Msg.GetWorkflows()) != 0 {
		t.Fatalf("a refused workflow was stored: %v %v", r, err)
	}
	big := strings.Repeat("x", 3000)
	_, err = srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: "name: big\n# " + big}))
	wantExhausted(t, err, "max_payload_bytes")

	one := "name: one\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: test.a\n"
	if _, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: one})); err != nil {
		t.Fatal(err)
	}
	_, err = srv.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "one", InputJson: `{"s":"` + big + `"}`}))
	wantExhausted(t, err, "max_payload_bytes")
	if n := taskCount(t, srv); n != 0 {
		t.Fatalf("%d tasks after a refused start, want 0", n)
	}

	// Through a client agent whose own limit is larger: the proxied call
	// meets the leader's limit.
	client := startClientAgent(t, "c1", srv, func(c *Config) { c.MaxPayloadBytes = 1 << 20 })
	_, err = client.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "one", InputJson: `{"s":"` + big + `"}`}))
	wantExhausted(t, err, "max_payload_bytes")

	// A client agent with a smaller limit refuses before forwarding, with
	// the same code, even when the body is too large to buffer.
	small := startClientAgent(t, "c2", srv, func(c *Config) { c.MaxPayloadBytes = 1024 })
	_, err = small.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "one", InputJson: `{"s":"` + strings.Repeat("x", 200<<10) + `"}`}))
	wantExhausted(t, err, "max_payload_bytes")
	assertRejections(t, small, "payload")

	// A command another agent forwards is held to the leader's limit too.
	r, err := srv.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "one"}))
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := proto.Marshal(&fsmv1.Command{Kind: &fsmv1.Command_CompleteStep{CompleteStep: &fsmv1.CompleteStep{
		TaskId: r.Msg.GetTask().GetId(), Step: "a", Attempt: 1, ResultJson: `{"s":"` + big + `"}`,
	}}})
	rpc := agentv1connect.NewAgentServiceClient(h2c(), "http://"+srv.RPCAddr(), connect.WithGRPC())
	_, err = rpc.Apply(ctx, connect.NewRequest(&agentv1.ApplyRequest{Command: cmd}))
	wantExhausted(t, err, "max_payload_bytes")
	assertRejections(t, srv, "workflow_steps")
	assertRejections(t, srv, "payload")
	assertRejections(t, srv, "command_payload")
}

// TestWatchersLimit: an agent serves at most max_watchers watch streams;
// the next is refused naming the setting, and a closed one frees its slot.
func TestWatchersLimit(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.MaxWatchers = 1 })
	applyQuick(t, srv)
	id := startQuick(t, srv, "")
	ctx, cancel := context.WithCancel(context.Background())
	s1, err := srv.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if !s1.Receive() {
		t.Fatalf("first watch: %v", s1.Err())
	}
	s2, err := srv.wf.WatchEvents(context.Background(), connect.NewRequest(&taskerv1.WatchEventsRequest{}))
	if err == nil {
		for s2.Receive() {
		}
		err = s2.Err()
	}
	wantExhausted(t, err, "max_watchers")
	cancel()
	waitFor(t, 10*time.Second, "the closed watch to free its slot", func() bool {
		s, err := srv.wf.WatchTask(context.Background(), connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
		if err != nil {
			return false
		}
		defer s.Close()
		return s.Receive()
	})
}

// TestRateLimitPerClient: a client over rate_limit is refused with
// ResourceExhausted, a Retry-After header and a RetryInfo detail; another
// client (another token) is not affected; health checks are not limited;
// calls a client agent forwards for its apps are not limited again on the
// leader.
func TestRateLimitPerClient(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.RateLimit, c.RateBurst = 0.5, 2 })
	ctx := context.Background()
	as := func(token string) *connect.Request[taskerv1.ListWorkflowsRequest] {
		r := connect.NewRequest(&taskerv1.ListWorkflowsRequest{})
		r.Header().Set("Authorization", "Bearer "+token)
		return r
	}
	for i := range 2 {
		if _, err := srv.wf.ListWorkflows(ctx, as("alice")); err != nil {
			t.Fatalf("alice's call %d within the burst: %v", i+1, err)
		}
	}
	_, err := srv.wf.ListWorkflows(ctx, as("alice"))
	ce := wantExhausted(t, err, "rate_limit")
	if ra := ce.Meta().Get("Retry-After"); ra == "" {
		t.Fatal("no Retry-After on the refusal")
	}
	hint := time.Duration(0)
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok {
				hint = ri.GetRetryDelay().AsDuration()
			}
		}
	}
	if hint <= 0 || hint > 2*time.Second {
		t.Fatalf("RetryInfo hint %v, want up to 2s (one token at 0.5/s)", hint)
	}
	// Another client, on the same connection and IP, is unaffected; so is
	// the gRPC protocol's view of the same refusal.
	if _, err := srv.wf.ListWorkflows(ctx, as("bob")); err != nil {
		t.Fatalf("bob throttled by alice's calls: %v", err)
	}
	grpcWF := taskerv1connect.NewWorkflowServiceClient(h2c(), srv.Addr(), connect.WithGRPC())
	_, err = grpcWF.ListWorkflows(ctx, as("alice"))
	wantExhausted(t, err, "rate_limit")
	resp, err := h2c().Get(srv.Addr() + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics while throttled: %v %v", resp, err)
	}
	resp.Body.Close()
	assertRejections(t, srv, "rate")

	// The RPC port limits direct callers the same way, but not calls
	// another agent forwards for its own (already limited) clients.
	rpcWF := taskerv1connect.NewWorkflowServiceClient(h2c(), "http://"+srv.RPCAddr(), connect.WithGRPC())
	for range 2 {
		if _, err := rpcWF.ListWorkflows(ctx, as("carol")); err != nil {
			t.Fatalf("carol on the RPC port within the burst: %v", err)
		}
	}
	_, err = rpcWF.ListWorkflows(ctx, as("carol"))
	wantExhausted(t, err, "rate_limit")
	fwd := as("carol")
	fwd.Header().Set(hdrForwarded, "c0")
	if _, err := rpcWF.ListWorkflows(ctx, fwd); err != nil {
		t.Fatalf("a forwarded call limited again on the leader: %v", err)
	}

	// An app behind a client agent: its calls are limited there (generous
	// here), and not again, as the client agent's, on the leader.
	client := startClientAgent(t, "c1", srv, func(c *Config) { c.RateLimit, c.RateBurst = 1000, 1000 })
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := client.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("forwarded call limited on the leader: %v", err)
		}
	}
}

// TestWorkersLimit: an agent keeps at most max_workers registrations. At
// the cap a new worker is refused naming the setting, unless a
// registration that can receive nothing has gone unrenewed past
// reclaim_grace, which makes room; a polling worker is never evicted.
func TestWorkersLimit(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.MaxWorkers, c.ReclaimGrace = 1, 300*time.Millisecond })
	ctx := context.Background()
	register := func(id string) error {
		_, err := srv.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
			WorkerId: id, Capabilities: []*taskerv1.Capability{{Name: "test.first"}},
		}))
		return err
	}
	if err := register("w1"); err != nil {
		t.Fatal(err)
	}
	wantExhausted(t, register("w2"), "max_workers")
	if err := register("w1"); err != nil {
		t.Fatalf("re-registering a known worker at the cap: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := register("w2"); err != nil {
		t.Fatalf("w1 (never polled, not renewed) did not make room: %v", err)
	}
	// w2 polls: it stays, however long.
	newPoller(t, srv, "w2", "test.first")
	time.Sleep(400 * time.Millisecond)
	wantExhausted(t, register("w3"), "max_workers")
	assertRejections(t, srv, "workers")
}

// TestTasksInFlightCapAcrossLeaderChange: the count of tasks in flight is
// replicated state, so a new leader refuses at the cap as the old one did,
// and still answers a retry with the task it started.
func TestTasksInFlightCapAcrossLeaderChange(t *testing.T) {
	f := newFleet(t)
	capTwo := func(c *Config) { c.MaxTasksInFlight = 2 }
	s1 := f.start("s1", 3, nil, nil, capTwo)
	ss := []*testServer{s1, f.start("s2", 3, s1, nil, capTwo), f.start("s3", 3, s1, nil, capTwo)}
	old := waitCluster(t, ss, "s1", "s2", "s3")
	applyQuick(t, old.testAgent)
	first := startQuick(t, old.testAgent, "k1")
	startQuick(t, old.testAgent, "k2")

	crash(old)
	rest := others(ss, old)
	var leader *testServer
	waitFor(t, 20*time.Second, "a new leader", func() bool { leader = leaderOf(rest); return leader != nil })
	var err error
	waitFor(t, 20*time.Second, "the new leader to answer StartTask", func() bool {
		_, err = leader.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n": 1}`, IdempotencyKey: "k3"}))
		return connect.CodeOf(err) != connect.CodeUnavailable
	})
	wantExhausted(t, err, "2 tasks in flight, at the limit of 2 (max_tasks_in_flight)")
	r, err := leader.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n": 1}`, IdempotencyKey: "k1"}))
	if err != nil || r.Msg.GetTask().GetId() != first {
		t.Fatalf("retry of k1 on the new leader at the cap: %v %v, want task %s", r, err, first)
	}
	if n := leader.state.TasksInFlight(); n != 2 {
		t.Fatalf("new leader counts %d tasks in flight, want 2", n)
	}
}
