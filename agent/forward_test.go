package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// TestClientAgentForwardsEveryProtocol: an app that only knows its own
// sidecar can apply workflows, start, read and watch tasks through a
// client agent, which holds no state, in Connect, gRPC and gRPC-Web alike.
func TestClientAgentForwardsEveryProtocol(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatalf("apply through the client agent: %v", err)
	}
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wf := taskerv1connect.NewWorkflowServiceClient(h2c(), cli.Addr(), tc.opts...)
			started, err := wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{
				Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput,
			}))
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			id := started.Msg.GetTask().GetId()
			got, err := wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
			if err != nil || got.Msg.GetTask().GetId() != id {
				t.Fatalf("get %s = %v, %v", id, got, err)
			}
			// The server holds the task: the client agent only forwarded.
			if _, err := srv.state.Task(id); err != nil {
				t.Fatalf("server does not hold the task: %v", err)
			}
			stream, err := wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			if !stream.Receive() {
				t.Fatalf("watch through the client agent ended without a message: %v", stream.Err())
			}
			if stream.Msg().GetTask().GetId() != id {
				t.Fatalf("watch sent task %q", stream.Msg().GetTask().GetId())
			}
			_ = stream.Close()
			// Errors keep their code and details across the hop.
			_, err = wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: "tsk_nope"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("get unknown task through the client agent = %v, want NotFound", err)
			}
		})
	}
}

// TestForwardedStartTaskIsIdempotent: the id the first agent chose makes a
// re-sent StartTask (after a leader change left its outcome unknown)
// return the task it started instead of starting another.
func TestForwardedStartTaskIsIdempotent(t *testing.T) {
	srv := startAgent(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	send := func(input string) (*taskerv1.StartTaskResponse, error) {
		req := connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: input})
		req.Header().Set(hdrForwarded, "c1")
		req.Header().Set(hdrTaskID, "tsk_0123456789abcdefghjk")
		resp, err := srv.wf.StartTask(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	first, err := send(orderInput)
	if err != nil || !first.GetCreated() || first.GetTask().GetId() != "tsk_0123456789abcdefghjk" {
		t.Fatalf("first start = %v, %v", first, err)
	}
	// The same call (same task id) answered as the first time: it did
	// create the task.
	again, err := send(orderInput)
	if err != nil || !again.GetCreated() || again.GetTask().GetId() != first.GetTask().GetId() {
		t.Fatalf("re-sent start = %v, %v; want the same task, created", again, err)
	}
	if _, n := srv.state.Counts(); n != 1 {
		t.Fatalf("%d tasks after a re-sent start, want 1", n)
	}
	if _, err := send(strings.Replace(orderInput, "ord_1", "ord_2", 1)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("another task under a taken id = %v, want InvalidArgument", err)
	}

	// With an idempotency key the new leader may find the key taken
	// before it proposes anything: still the call that created the task
	// when the task has the id this call carries, and only then.
	keyed := func(id string) (*taskerv1.StartTaskResponse, error) {
		req := connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "order-9"})
		req.Header().Set(hdrForwarded, "c1")
		req.Header().Set(hdrTaskID, id)
		resp, err := srv.wf.StartTask(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	for _, tc := range []struct {
		name, id    string
		wantCreated bool
	}{
		{"first", "tsk_keyed0000000000000001", true},
		{"re-sent by the forwarder", "tsk_keyed0000000000000001", true},
		{"another call with the key", "tsk_keyed0000000000000002", false},
	} {
		got, err := keyed(tc.id)
		if err != nil || got.GetCreated() != tc.wantCreated || got.GetTask().GetId() != "tsk_keyed0000000000000001" {
			t.Fatalf("%s: start = %v, %v; want task tsk_keyed0000000000000001, created %v", tc.name, got, err, tc.wantCreated)
		}
	}
}

// TestStaleAndConsistentReads: a stale read is answered by the server
// that receives it; a consistent read by a leader that verified it still
// leads; a client agent forwards both.
func TestStaleAndConsistentReads(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv)
	ctx := context.Background()
	if _, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"", "stale", "consistent"} {
		for _, target := range []*testAgent{srv, cli} {
			req := connect.NewRequest(&taskerv1.ListWorkflowsRequest{})
			if mode != "" {
				req.Header().Set(hdrConsistency, mode)
			}
			resp, err := target.wf.ListWorkflows(ctx, req)
			if err != nil || len(resp.Msg.GetWorkflows()) != 1 {
				t.Fatalf("%s read via %s = %v, %v", orDash(mode), target.cfg.NodeName, resp, err)
			}
			if mode != "stale" && resp.Header().Get(hdrLeader) != "s1" {
				t.Errorf("%s read via %s: answered by %q, want the leader s1", orDash(mode), target.cfg.NodeName, resp.Header().Get(hdrLeader))
			}
		}
	}
}

// TestClientWithoutServersFailsWithinHoldTime: with no server reachable,
// a call through a client agent fails with UNAVAILABLE once the hold time
// ends, naming the problem, instead of hanging.
func TestClientWithoutServersFailsWithinHoldTime(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv, func(c *Config) { c.RPCHoldTimeout = 600 * time.Millisecond })
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the client to notice the server left", func() bool { return len(cli.aliveServers()) == 0 })
	start := time.Now()
	_, err := cli.wf.ListWorkflows(context.Background(), connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("read with no server = %v, want Unavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("read with no server took %v; the hold time is 600ms", took)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message(), "leader") {
		t.Fatalf("error %v does not say what is missing", err)
	}
}

// TestNotLeaderRefusalNamesLeader: a forwarded call that reaches an agent
// that cannot answer it is refused with the leader's name, not forwarded
// again, so two agents can never bounce a call between them.
func TestNotLeaderRefusalNamesLeader(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv)
	wf := taskerv1connect.NewWorkflowServiceClient(h2c(), "http://"+cli.RPCAddr())
	req := connect.NewRequest(&taskerv1.ListWorkflowsRequest{})
	req.Header().Set(hdrForwarded, "someone")
	_, err := wf.ListWorkflows(context.Background(), req)
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
		t.Fatalf("forwarded call to a client agent = %v, want Unavailable", err)
	}
	if got := ce.Meta().Get(hdrNotLeader); got == "" {
		t.Fatalf("refusal carries no %s header", hdrNotLeader)
	}
}
