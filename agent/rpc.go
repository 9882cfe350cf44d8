package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// rpcServer builds the agent-to-agent API on the RPC port: AgentService,
// plus the public services so that other agents can forward their apps'
// and operators' calls here.
func (a *Agent) rpcServer() *http.Server {
	limit := connect.WithReadMaxBytes(a.cfg.MaxPayloadBytes + 64<<10)
	compress := connect.WithCompressMinBytes(64 << 10)
	traced := connect.WithInterceptors(a.chain()...)
	guarded := []connect.HandlerOption{limit, compress, traced, connect.WithInterceptors(leaderGuard{a}, readiness{a}, limitsInterceptor{a.lim})}
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(&agentRPC{a}, limit, compress, traced, connect.WithInterceptors(limitsInterceptor{a.lim})))
	path, h := taskerv1connect.NewWorkflowServiceHandler(&workflowAPI{a}, guarded...)
	mux.Handle(path, a.route(h))
	mux.Handle(taskerv1connect.NewWorkerServiceHandler(&workerAPI{a}, guarded...))
	path, h = taskerv1connect.NewClusterServiceHandler(&clusterAPI{a: a}, limit, compress, traced, connect.WithInterceptors(leaderGuard{a}))
	mux.Handle(path, a.route(h))
	path, h = taskerv1connect.NewInsightServiceHandler(&insightAPI{a}, guarded...)
	mux.Handle(path, a.route(h))
	mux.Handle(taskerv1connect.NewAclServiceHandler(&aclAPI{a}, limit, compress, traced))
	path, h = taskerv1connect.NewProposalServiceHandler(&proposalAPI{a}, guarded...)
	mux.Handle(path, a.route(h))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true) // over TLS (tls.go), picked by ALPN
	return &http.Server{
		Handler:           withPeerRole(a.limitRate(mux, true)),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.With("component", "rpc").Handler(), slog.LevelWarn),
	}
}

// agentRPC serves AgentService.
type agentRPC struct{ a *Agent }

var _ agentv1connect.AgentServiceHandler = (*agentRPC)(nil)

// Apply commits a command another agent proposed. Only the leader does;
// anyone else names the leader so the caller can retry there.
func (s *agentRPC) Apply(ctx context.Context, req *connect.Request[agentv1.ApplyRequest]) (*connect.Response[agentv1.ApplyResponse], error) {
	if !s.a.isLeader() {
		return nil, s.a.notLeaderError()
	}
	var c fsmv1.Command
	if err := proto.Unmarshal(req.Msg.GetCommand(), &c); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("command: %w", err))
	}
	if err := s.a.checkCommandSize(&c); err != nil {
		return nil, err
	}
	res, err := s.a.proposeLocal(ctx, &c)
	if res == nil && err != nil {
		// Not a refusal by the state but a Raft failure: the caller retries.
		return nil, toConnect(err)
	}
	resp := connect.NewResponse(&agentv1.ApplyResponse{Result: encodeResult(res)})
	resp.Header().Set(hdrLeader, s.a.cfg.NodeName)
	return resp, nil
}

// Status reports this agent's Raft state.
func (s *agentRPC) Status(context.Context, *connect.Request[agentv1.StatusRequest]) (*connect.Response[agentv1.StatusResponse], error) {
	a := s.a
	out := &agentv1.StatusResponse{Node: a.cfg.NodeName, Server: a.cfg.Server, BootstrapExpect: int32(a.cfg.BootstrapExpect)}
	if a.node != nil {
		st := a.node.Stats()
		leader, _ := a.node.Leader()
		out.RaftAddress = a.node.Addr()
		out.HasState = a.node.HadState() || st.LastIndex > 0
		out.LastIndex = st.LastIndex
		out.AppliedIndex = st.AppliedIndex
		out.Term = st.Term
		out.Leader = leader
		out.ClusterId = a.state.ClusterID()
		if out.ClusterId == "" {
			// Restarted and not yet told what is committed (a leader that
			// removed it while it was down never will): its log says which
			// cluster it belongs to, so that the autopilot adds it back.
			out.ClusterId = a.node.LoggedClusterID()
		}
		if peers, err := a.node.Peers(); err == nil {
			out.Peers = int32(len(peers))
		}
	}
	return connect.NewResponse(out), nil
}

// Deliver hands an attempt the leader committed to this agent to one of
// its apps.
func (s *agentRPC) Deliver(ctx context.Context, req *connect.Request[agentv1.DeliverRequest]) (*connect.Response[agentv1.DeliverResponse], error) {
	if err := fromServer(ctx, "Deliver"); err != nil {
		return nil, err
	}
	asg := assignmentFromPB(req.Msg.GetAssignment())
	if asg == nil || asg.TaskID == "" || asg.Step == "" || asg.Capability == "" || asg.Attempt < 1 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("assignment: task_id, step, capability and attempt are required"))
	}
	if tp := req.Msg.GetAssignment().GetTraceParent(); tp != "" {
		s.a.asgTraces.put(asg, tp)
	}
	id, err := s.a.deliverLocal(asg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.DeliverResponse{WorkerId: id}), nil
}

// RemovePeer removes a server from the Raft configuration (leader only).
func (s *agentRPC) RemovePeer(ctx context.Context, req *connect.Request[agentv1.RemovePeerRequest]) (*connect.Response[agentv1.RemovePeerResponse], error) {
	if !s.a.isLeader() {
		return nil, s.a.notLeaderError()
	}
	if err := s.a.removePeer(ctx, req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.RemovePeerResponse{}), nil
}

// deliverLocal gives an attempt to the least loaded local app offering its
// capability; ResourceExhausted when none has room.
func (a *Agent) deliverLocal(asg *consensus.Assignment) (string, error) {
	if a.draining.Load() {
		return "", connect.NewError(connect.CodeUnavailable, errors.New("agent is shutting down"))
	}
	id, push, ok := a.workers.pick(asg.Capability)
	if !ok {
		return "", connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("no app attached to %s has room for %s", a.cfg.NodeName, asg.Capability))
	}
	k := leaseKey{asg.TaskID, asg.Step, asg.Attempt}
	a.workers.hold(id, k, asg.Capability)
	if push != "" {
		a.pushAsync(asg, push, id)
		return id, nil
	}
	if !a.workers.deliver(id, asg) {
		a.workers.drop(k)
		return "", connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("worker %s is not polling", id))
	}
	return id, nil
}

// Result kinds on the wire, for the errors a command's caller tells apart.
var resultKinds = []struct {
	kind string
	err  error
}{
	{"not_found", consensus.ErrNotFound},
	{"stale_attempt", consensus.ErrStaleAttempt},
	{"version_exists", consensus.ErrVersionExists},
	{"task_ended", consensus.ErrTaskEnded},
	{"invalid", consensus.ErrInvalid},
	{"unknown_command", consensus.ErrUnknownCommand},
	{"limit", consensus.ErrLimit},
}

func encodeResult(r *consensus.Result) *agentv1.Result {
	if r == nil {
		return nil
	}
	out := &agentv1.Result{TaskId: r.TaskID, Created: r.Created, Attempt: int32(r.Attempt), Retry: r.Retry, ProposalId: r.ProposalID}
	if !r.RetryAt.IsZero() {
		out.RetryAt = timestamppb.New(r.RetryAt)
	}
	if r.Err != nil {
		out.ErrorKind, out.ErrorMessage = "error", r.Err.Error()
		for _, k := range resultKinds {
			if errors.Is(r.Err, k.err) {
				out.ErrorKind = k.kind
				break
			}
		}
	}
	for _, b := range r.Batch {
		out.Batch = append(out.Batch, encodeResult(b))
	}
	return out
}

func decodeResult(r *agentv1.Result) *consensus.Result {
	if r == nil {
		return &consensus.Result{}
	}
	out := &consensus.Result{TaskID: r.GetTaskId(), Created: r.GetCreated(), Attempt: int(r.GetAttempt()), Retry: r.GetRetry(), ProposalID: r.GetProposalId()}
	if r.GetRetryAt() != nil {
		out.RetryAt = r.GetRetryAt().AsTime()
	}
	if r.GetErrorKind() != "" {
		var sentinel error
		for _, k := range resultKinds {
			if k.kind == r.GetErrorKind() {
				sentinel = k.err
			}
		}
		out.Err = &remoteError{msg: r.GetErrorMessage(), sentinel: sentinel}
	}
	for _, b := range r.GetBatch() {
		out.Batch = append(out.Batch, decodeResult(b))
	}
	return out
}

// remoteError is a refusal the leader's state returned, rebuilt on the
// agent that forwarded the command: same message, same errors.Is.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string        { return e.msg }
func (e *remoteError) Is(target error) bool { return e.sentinel != nil && target == e.sentinel }
