package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// testAgent is a real one-server agent on loopback with a temp data dir.
type testAgent struct {
	*Agent
	wf  taskerv1connect.WorkflowServiceClient
	wk  taskerv1connect.WorkerServiceClient
	cl  taskerv1connect.ClusterServiceClient
	dir string
}

func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func startAgent(t testing.TB, dir string, mutate ...func(*Config)) *testAgent {
	t.Helper()
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect = "test", dir, true, 1
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort, cfg.Dev = 0, 0, 0, 0, true
	cfg.ShutdownTimeout = 5 * time.Second
	// No bus unless a test asks for one: most tests are about other things,
	// and an embedded NATS server per agent is slow to start.
	cfg.Bus = "off"
	for _, m := range mutate {
		m(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	c := h2c()
	ta := &testAgent{Agent: a, dir: dir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, a.Addr()),
		wk: taskerv1connect.NewWorkerServiceClient(c, a.Addr()),
		cl: taskerv1connect.NewClusterServiceClient(c, a.Addr()),
	}
	waitFor(t, 10*time.Second, "a leader", func() bool { return a.node.IsLeader() })
	return ta
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readExample(t *testing.T) string {
	b, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const orderInput = `{"order_id":"ord_1","customer":{"id":"c1","email":"a@example.com"},"items":[{"sku":"sku-1","quantity":2}],"payment":{"token":"tok","amount_cents":4200,"currency":"EUR"}}`

var orderResults = map[string]string{
	"orders.validate":     `{"valid":true,"risk_score":0.1}`,
	"inventory.reserve":   `{"reservation_id":"r1","expires_at":"2026-05-01T11:00:00Z"}`,
	"payments.charge":     `{"charge_id":"ch_1","status":"captured"}`,
	"shipping.book":       `{"tracking_number":"TN1","carrier":"DHL"}`,
	"notifications.email": `{}`,
}

// pullWorker registers every order capability and answers with results
// from fn until ctx ends; it records the assignments it saw.
type pullWorker struct {
	mu   sync.Mutex
	seen []*taskerv1.StepAssignment
}

func (p *pullWorker) run(ctx context.Context, t *testing.T, ta *testAgent, id string, fn func(*taskerv1.StepAssignment) (string, *taskerv1.FailStepRequest)) {
	var caps []*taskerv1.Capability
	for c := range orderResults {
		caps = append(caps, &taskerv1.Capability{Name: c, MaxConcurrency: 8})
	}
	if _, err := ta.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{WorkerId: id, Capabilities: caps})); err != nil {
		t.Errorf("register: %v", err)
		return
	}
	stream, err := ta.wk.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: id}))
	if err != nil {
		t.Errorf("poll: %v", err)
		return
	}
	for stream.Receive() {
		a := stream.Msg().GetAssignment()
		p.mu.Lock()
		p.seen = append(p.seen, a)
		p.mu.Unlock()
		go func() {
			res, fail := fn(a)
			if fail != nil {
				fail.TaskId, fail.Step, fail.Attempt = a.GetTaskId(), a.GetStep(), a.GetAttempt()
				_, _ = ta.wk.FailStep(ctx, connect.NewRequest(fail))
				return
			}
			_, _ = ta.wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), ResultJson: res}))
		}()
	}
}

func ok(a *taskerv1.StepAssignment) (string, *taskerv1.FailStepRequest) {
	return orderResults[a.GetCapability()], nil
}

func waitTask(t *testing.T, ta *testAgent, id string, want taskerv1.TaskState) *taskerv1.Task {
	t.Helper()
	var last *taskerv1.Task
	waitFor(t, 15*time.Second, "task "+id+" to reach "+want.String(), func() bool {
		r, err := ta.wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		last = r.Msg.GetTask()
		return last.GetState() == want
	})
	return last
}

func TestOrderWorkflowEndToEnd(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	w := &pullWorker{}
	go w.run(ctx, t, ta, "w1", ok)
	start, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "order-1"}))
	if err != nil {
		t.Fatal(err)
	}
	task := waitTask(t, ta, start.Msg.GetTask().GetId(), taskerv1.TaskState_TASK_STATE_COMPLETE)
	for _, s := range task.GetSteps() {
		if s.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE || s.GetAttempts() != 1 {
			t.Errorf("step %s: %s after %d attempts", s.GetName(), s.GetState(), s.GetAttempts())
		}
	}
	// ship's input was built from the upstream results.
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.seen {
		if a.GetStep() == "ship" && !strings.Contains(a.GetInputJson(), `"reservation":"r1"`) {
			t.Errorf("ship input %s lacks the reservation", a.GetInputJson())
		}
	}
	again, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "order-1"}))
	if err != nil || again.Msg.GetCreated() || again.Msg.GetTask().GetId() != task.GetId() {
		t.Fatalf("same idempotency key: %v created=%v", err, again.Msg.GetCreated())
	}
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	big := `{"order_id":"` + strings.Repeat("x", 2<<20) + `"}`
	tests := []struct {
		name string
		call func() error
		code connect.Code
		msg  string
	}{
		{"cyclic manifest", func() error {
			_, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: "name: x\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a, depends_on: [b]}\n- {name: b, capability: x.b, depends_on: [a]}\n"}))
			return err
		}, connect.CodeInvalidArgument, "dependency cycle: a → b → a"},
		{"unknown workflow", func() error {
			_, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "nope"}))
			return err
		}, connect.CodeNotFound, "workflow default/nope"},
		{"malformed input JSON", func() error {
			_, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: "{"}))
			return err
		}, connect.CodeInvalidArgument, "input_json"},
		{"input violating input_schema", func() error {
			_, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: `{"order_id":"ord_1"}`}))
			return err
		}, connect.CodeInvalidArgument, "/customer"},
		{"payload over the limit", func() error {
			_, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: big}))
			return err
		}, connect.CodeResourceExhausted, ""},
		{"unknown task", func() error {
			_, err := ta.wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: "tsk_nope"}))
			return err
		}, connect.CodeNotFound, "tsk_nope"},
		{"missing workflow name", func() error {
			_, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{}))
			return err
		}, connect.CodeInvalidArgument, "workflow: required"},
		{"bad capability name", func() error {
			_, err := ta.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{Capabilities: []*taskerv1.Capability{{Name: "Charge"}}}))
			return err
		}, connect.CodeInvalidArgument, "capabilities[0].name"},
		{"invalid output schema", func() error {
			_, err := ta.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{Capabilities: []*taskerv1.Capability{{Name: "x.y", OutputSchemaJson: `{"type": 5}`}}}))
			return err
		}, connect.CodeInvalidArgument, "output_schema_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := ta.wf.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{}))
			err := tt.call()
			if connect.CodeOf(err) != tt.code {
				t.Fatalf("code %v (%v), want %v", connect.CodeOf(err), err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not mention %q", err, tt.msg)
			}
			after, _ := ta.wf.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{}))
			if len(after.Msg.GetTasks()) != len(before.Msg.GetTasks()) {
				t.Fatal("a refused call created a task")
			}
		})
	}
	var ce *connect.Error
	_, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: "name: x\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a, depends_on: [b]}\n- {name: b, capability: x.b, depends_on: [a]}\n"}))
	if !errors.As(err, &ce) || len(ce.Details()) != 1 {
		t.Fatalf("validation error without its ValidationFailure detail: %v", err)
	}
}

// startClientAgent starts a client agent (no Raft) joined to server's
// gossip, with fast timings; its API forwards to the server.
func startClientAgent(t testing.TB, name string, server *testAgent, mutate ...func(*Config)) *testAgent {
	t.Helper()
	cfg := Defaults()
	cfg.NodeName, cfg.Server, cfg.DevTiming = name, false, true
	cfg.DataDir = t.TempDir()
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort = 0, 0, 0, 0
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Join = []string{server.GossipAddr()}
	for _, m := range mutate {
		m(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", name)
	}
	a, err := New(cfg, log)
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
	waitFor(t, 10*time.Second, name+" to see a server", func() bool { return len(a.aliveServers()) > 0 })
	return ta
}
