package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/ui"
)

// server builds the local API: Connect, gRPC and gRPC-Web on one port
// (HTTP/1.1 and cleartext HTTP/2), plus gRPC health and reflection so that
// grpcurl and buf curl work.
func (a *Agent) server() *http.Server {
	// Room for a payload at the limit plus the message around it; a larger
	// message is refused by Connect with ResourceExhausted.
	limit := connect.WithReadMaxBytes(a.cfg.MaxPayloadBytes + 64<<10)
	// Apps are on localhost: compressing small messages costs CPU and saves
	// nothing, so only large payloads are compressed.
	compress := connect.WithCompressMinBytes(64 << 10)
	// Tracing first, so the span covers the wait for a leader too.
	traced := connect.WithInterceptors(a.chain()...)
	opts := []connect.HandlerOption{limit, compress, traced, connect.WithInterceptors(leaderGuard{a}, readiness{a}, limitsInterceptor{a.lim})}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.tel.Metrics)
	// Calls only the leader can answer are proxied to it from any other
	// agent, whatever their protocol.
	path, h := taskerv1connect.NewWorkflowServiceHandler(&workflowAPI{a}, opts...)
	mux.Handle(path, a.route(h))
	mux.Handle(taskerv1connect.NewWorkerServiceHandler(&workerAPI{a}, opts...))
	// Operators must reach the cluster service even with no leader.
	path, h = taskerv1connect.NewClusterServiceHandler(&clusterAPI{a: a}, limit, compress, traced, connect.WithInterceptors(leaderGuard{a}))
	mux.Handle(path, a.route(h))
	path, h = taskerv1connect.NewInsightServiceHandler(&insightAPI{a}, opts...)
	mux.Handle(path, a.route(h))
	mux.Handle(taskerv1connect.NewAclServiceHandler(&aclAPI{a}, limit, compress, traced))
	path, h = taskerv1connect.NewProposalServiceHandler(&proposalAPI{a}, opts...)
	mux.Handle(path, a.route(h))
	names := []string{taskerv1connect.WorkflowServiceName, taskerv1connect.WorkerServiceName, taskerv1connect.ClusterServiceName, taskerv1connect.AclServiceName, taskerv1connect.ProposalServiceName, taskerv1connect.InsightServiceName}
	if a.cfg.MCP {
		mux.Handle(mcpPath, a.mcpHandler())
	}
	// The web UI is static files: it holds no secret and changes nothing
	// itself, and its calls go through the API above with the caller's
	// token and ACLs like any client's.
	web := ui.Handler()
	mux.Handle("/ui", web)
	mux.Handle("/ui/", web)
	mux.Handle(grpchealth.NewHandler(&health{a: a, names: names}))
	reflector := grpcreflect.NewStaticReflector(names...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           a.limitRate(mux, false),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// health reports SERVING once the agent has a leader to write through.
type health struct {
	a     *Agent
	names []string
}

func (h *health) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, n := range h.names {
		known = known || n == req.Service
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if h.a.draining.Load() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	if !h.a.hasLeader() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// readiness holds API calls until the state has caught up with every
// committed write (after a restart, Raft replays the log first), so a
// client never reads state older than what it was told was written.
type readiness struct{ a *Agent }

func (r readiness) wait(ctx context.Context) error {
	if !r.a.isLeader() {
		// Only the leader answers from state it must first catch up on;
		// other agents forward, or serve stale reads by request.
		return nil
	}
	select {
	case <-r.a.caughtUp:
		return nil // every call after start-up: no timer
	default:
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-r.a.caughtUp:
		return nil
	case <-ctx.Done():
		return connect.NewError(connect.CodeUnavailable, errors.New("the agent is still catching up with the Raft log; retry shortly"))
	case <-t.C:
		return connect.NewError(connect.CodeUnavailable, errors.New("no leader has caught up with the Raft log yet; is a quorum of servers up?"))
	}
}

func (r readiness) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := r.wait(ctx); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (r readiness) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (r readiness) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := r.wait(ctx); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
