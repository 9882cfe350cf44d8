package agent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
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

}

// TestForwardedStartTaskWithKeyIsIdempotent: a StartTask with an
// idempotency key, sent again by its forwarder with the id it chose after
// the first send's answer was lost, is answered as the first send would
// have been (created), though the key is now taken; another call with the
// key is answered with the same task, not created.
func TestForwardedStartTaskWithKeyIsIdempotent(t *testing.T) {
	srv := startAgent(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	send := func(taskID string) *taskerv1.StartTaskResponse {
		t.Helper()
		req := connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "order-1"})
		req.Header().Set(hdrForwarded, "c1")
		req.Header().Set(hdrTaskID, taskID)
		resp, err := srv.wf.StartTask(ctx, req)
		if err != nil {
			t.Fatalf("start with id %s: %v", taskID, err)
		}
		return resp.Msg
	}
	const id = "tsk_0123456789abcdefghjk"
	if first := send(id); !first.GetCreated() || first.GetTask().GetId() != id {
		t.Fatalf("first start = %v; want task %s, created", first, id)
	}
	if again := send(id); !again.GetCreated() || again.GetTask().GetId() != id {
		t.Fatalf("re-sent start = %v; want task %s, created: the first send created it", again, id)
	}
	if other := send("tsk_0123456789abcdefghjm"); other.GetCreated() || other.GetTask().GetId() != id {
		t.Fatalf("another start with the key = %v; want task %s, not created", other, id)
	}
	if _, n := srv.state.Counts(); n != 1 {
		t.Fatalf("%d tasks, want 1", n)
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

// TestForwardToSilentServerEndsWithHoldTime: a server that takes a
// forwarded call and never answers (a partition drops its packets in
// silence) holds the call only until the hold time ends, not until the
// caller gives up, and the refusal says that the call may still be
// applied, so the caller sends it again rather than assume it failed.
func TestForwardToSilentServerEndsWithHoldTime(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv, func(c *Config) { c.RPCHoldTimeout = 600 * time.Millisecond })
	waitFor(t, 10*time.Second, "the client to see the server", func() bool { return len(cli.aliveServers()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := cli.fwd.do(ctx, func(ctx context.Context, base string) error {
		<-ctx.Done() // sent, never answered
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a forward to a silent server took %v; the hold time is 600ms", took)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
		t.Fatalf("forward to a silent server = %v, want Unavailable", err)
	}
	for _, want := range []string{"s1 did not answer", "may still be applied"} {
		if !strings.Contains(ce.Message(), want) {
			t.Errorf("refusal %q does not say %q", ce.Message(), want)
		}
	}
}

// TestForwardLeavesAServerThatLeft: an attempt waiting on a server that
// gossip no longer lists as alive is given up at once, not at the end of
// the hold time, so the call can go to the next leader while there is
// still time.
func TestForwardLeavesAServerThatLeft(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv, func(c *Config) { c.RPCHoldTimeout = 5 * time.Second })
	waitFor(t, 10*time.Second, "the client to see the server", func() bool { return len(cli.aliveServers()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		once   sync.Once
		cutAt  = make(chan time.Time, 1)
		leftAt time.Time
	)
	_ = cli.fwd.do(ctx, func(ctx context.Context, base string) error {
		once.Do(func() {
			if err := srv.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
			leftAt = time.Now()
		})
		<-ctx.Done()
		cutAt <- time.Now()
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	})
	if took := (<-cutAt).Sub(leftAt); took > 3*time.Second {
		t.Errorf("the attempt on the server that left was given up %v after it left; want about a gossip round, under the 5s hold time", took)
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

// TestForwardGoesToItselfOnceLeader: a call a server forwards because it
// did not lead when the call arrived goes to the server itself once it
// leads (it may win an election while the forward waits for a leader),
// rather than to the other servers, which would only name it, until the
// hold time ends. The self-forward is answered as any forwarded call.
func TestForwardGoesToItselfOnceLeader(t *testing.T) {
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1"; c.RPCHoldTimeout = 3 * time.Second })
	waitFor(t, 10*time.Second, "s1 to lead", srv.isLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sentTo string
	if err := srv.fwd.do(ctx, func(ctx context.Context, base string) error {
		sentTo = base
		return nil
	}); err != nil {
		t.Fatalf("forward on the leader = %v, want it sent to the leader itself", err)
	}
	if want := srv.rpcURL(srv.RPCAddr()); sentTo != want {
		t.Fatalf("forward on the leader sent to %q, want its own RPC address %q", sentTo, want)
	}

	// What route does with a call that arrived before the election: the
	// proxy's transport, which sends it through the forwarder.
	wf := taskerv1connect.NewWorkflowServiceClient(&http.Client{Transport: &leaderTransport{a: srv.Agent}}, "http://proxied.invalid")
	req := connect.NewRequest(&taskerv1.ListWorkflowsRequest{})
	req.Header().Set(hdrForwarded, "s1")
	start := time.Now()
	resp, err := wf.ListWorkflows(ctx, req)
	if err != nil {
		t.Fatalf("a proxied call on the leader = %v after %v, want it answered by the leader itself", err, time.Since(start))
	}
	if got := resp.Header().Get(hdrLeader); got != "s1" {
		t.Errorf("the proxied call was answered by %q, want s1", got)
	}
}
