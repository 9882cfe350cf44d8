package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"

	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// Headers of agent-to-agent traffic and of read consistency.
const (
	// hdrConsistency picks how fresh a read must be: "stale" lets any
	// server answer from its own state; "consistent" makes the leader
	// confirm its leadership with a quorum first; absent, the leader
	// answers from its state.
	hdrConsistency = "Tasker-Consistency"
	// hdrForwarded names the agent that forwarded a call. An agent never
	// forwards a forwarded call again: it answers "not the leader" so the
	// origin retries, which keeps two confused agents from ping-ponging.
	hdrForwarded = "Tasker-Forwarded"
	// hdrNotLeader is set on a refusal to the leader the refusing agent
	// knows ("" when it knows none).
	hdrNotLeader = "Tasker-Not-Leader"
	// hdrLeader is set on every answer served by the leader: forwarders
	// learn where to send the next call without asking a server first.
	hdrLeader = "Tasker-Leader"
	// hdrTaskID carries the task id the first agent chose for a StartTask,
	// so that retrying a forwarded StartTask after a leader change whose
	// outcome is unknown cannot start the task twice.
	hdrTaskID = "Tasker-Task-Id"
)

// errNoServer is returned when no server is known to forward to.
var errNoServer = errors.New("no Tasker server is known yet: is -join or -retry-join set, and are the servers up?")

// errNoPeer is errNoServer on an agent that knew servers: gossip declared
// every one dead.
var errNoPeer = errors.New("gossip sees no server alive: this agent is cut off from them (a network partition) or they are down")

// forwarder sends calls that only the leader can answer to the leader,
// over the agent-to-agent Connect API, and retries them across a leader
// change until the hold timeout ends.
type forwarder struct {
	a      *Agent
	client *http.Client // HTTP/2 (h2c or TLS): one connection per server, multiplexed
	// peers calls any agent, not only servers (dispatch, keyring): with
	// verify_server_hostname, client checks for a server's certificate.
	peers *http.Client

	mu      sync.Mutex
	hint    string // the leader's name, as last learned
	next    int    // round robin over servers when no leader is known
	agents  map[string]agentv1connect.AgentServiceClient
	workers map[string]taskerv1connect.WorkerServiceClient
	anyPeer map[string]agentv1connect.AgentServiceClient
}

func newForwarder(a *Agent) *forwarder {
	return &forwarder{
		a:       a,
		client:  &http.Client{Transport: a.rpcTransport(true)},
		peers:   &http.Client{Transport: a.rpcTransport(false)},
		agents:  map[string]agentv1connect.AgentServiceClient{},
		workers: map[string]taskerv1connect.WorkerServiceClient{},
		anyPeer: map[string]agentv1connect.AgentServiceClient{},
	}
}

func (f *forwarder) close() {
	f.client.CloseIdleConnections()
	f.peers.CloseIdleConnections()
}

// peerClient is the AgentService client of the agent at base, which may
// be a client agent (dispatch, keyring).
func (f *forwarder) peerClient(base string) agentv1connect.AgentServiceClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.anyPeer[base]
	if c == nil {
		c = agentv1connect.NewAgentServiceClient(f.peers, base, connect.WithGRPC(), connect.WithSendMaxBytes(f.a.cfg.MaxPayloadBytes+64<<10), connect.WithInterceptors(f.a.chain()...))
		f.anyPeer[base] = c
	}
	return c
}

// agentClient is the AgentService client of the server at base.
func (f *forwarder) agentClient(base string) agentv1connect.AgentServiceClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.agents[base]
	if c == nil {
		c = agentv1connect.NewAgentServiceClient(f.client, base, connect.WithGRPC(), connect.WithSendMaxBytes(f.a.cfg.MaxPayloadBytes+64<<10), connect.WithInterceptors(f.a.chain()...))
		f.agents[base] = c
	}
	return c
}

// workerClient is the WorkerService client of the agent at base.
func (f *forwarder) workerClient(base string) taskerv1connect.WorkerServiceClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.workers[base]
	if c == nil {
		c = taskerv1connect.NewWorkerServiceClient(f.client, base, connect.WithGRPC(), connect.WithInterceptors(f.a.chain()...))
		f.workers[base] = c
	}
	return c
}

// learn records the leader an answer named.
func (f *forwarder) learn(name string) {
	if name == "" || name == "-" { // "-": the answering agent knows none
		return
	}
	f.mu.Lock()
	f.hint = name
	f.mu.Unlock()
}

func (f *forwarder) forget(name string) {
	f.mu.Lock()
	if f.hint == name {
		f.hint = ""
	}
	f.mu.Unlock()
}

// target returns the agent to send a leader-only call to: the leader if
// this agent knows it, else some server, which will name the leader.
//
// That may be this server itself: a call is forwarded because this server
// did not lead when it arrived, but it may win an election while the
// forward waits for a leader, and then only it can answer (the others
// name it as the leader). It sends the call to its own RPC port, where it
// is answered as any forwarded call, or refused if leadership moved again.
func (f *forwarder) target() (name, base string, err error) {
	a := f.a
	if a.node != nil {
		if id, _ := a.node.Leader(); id != "" {
			if addr := a.rpcAddrOf(id); addr != "" {
				return id, a.rpcURL(addr), nil
			}
		}
	}
	f.mu.Lock()
	hint := f.hint
	f.mu.Unlock()
	if hint != "" && hint != a.cfg.NodeName {
		if addr := a.rpcAddrOf(hint); addr != "" {
			return hint, a.rpcURL(addr), nil
		}
	}
	servers := a.aliveServers()
	if len(servers) == 0 {
		if a.node != nil || a.knewServers() {
			return "", "", errNoPeer
		}
		return "", "", errNoServer
	}
	f.mu.Lock()
	f.next++
	m := servers[f.next%len(servers)]
	f.mu.Unlock()
	return m.Name, a.rpcURL(m.RPCAddr), nil
}

// do runs call against the leader, retrying while the cluster has no
// leader or the call reached a server that is not (or no longer) the
// leader, for up to the hold timeout. Calls must be idempotent: a call
// whose connection broke may have been applied.
//
// A server on the far side of a partition drops packets without a word:
// an attempt sent to it would wait until the caller gives up. So an
// attempt ends with the hold timeout, and earlier when this agent learns
// that its target is no longer where to send it (dead in gossip, or
// another leader known), and the call is sent again there.
func (f *forwarder) do(ctx context.Context, call func(ctx context.Context, base string) error) error {
	return f.forward(ctx, "", false, call)
}

// forward is do, traced: a "forward to leader" span over the retries,
// naming procedure (when given) and the agent that answered; root traces a
// call that arrived with no trace context (see forwardSpan).
func (f *forwarder) forward(ctx context.Context, procedure string, root bool, call func(ctx context.Context, base string) error) (err error) {
	ctx, note, end := f.a.forwardSpan(ctx, procedure, root)
	attempts := 0
	defer func() { end(attempts, err) }()
	deadline := time.Now().Add(f.a.cfg.RPCHoldTimeout)
	wait := 10 * time.Millisecond
	var (
		last error
		// silent names a target that got the call and never answered:
		// what it was sent may still arrive (the kernel resends it after
		// a partition heals), so the call's outcome is unknown.
		silent string
	)
	for {
		name, base, err := f.target()
		if err == nil {
			attempts++
			note(name)
			actx, cancel := context.WithDeadline(ctx, deadline)
			moved := f.watchTarget(actx, cancel, name)
			err = call(actx, base)
			cut := err != nil && actx.Err() != nil && ctx.Err() == nil
			cancel()
			if cut {
				why := "did not answer"
				if moved.Load() {
					why = "stopped answering and is no longer the leader this agent knows"
				}
				err = connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s %s: %w", name, why, errSilent))
				silent = name
			}
			if err == nil || !retryable(err) {
				return err
			}
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Meta().Get(hdrNotLeader) != "" {
				f.learn(ce.Meta().Get(hdrNotLeader))
			} else {
				f.forget(name)
			}
		}
		last = err
		if ctx.Err() != nil {
			return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("waiting for a leader: %w", last))
		}
		if time.Now().Add(wait).After(deadline) {
			unknown := ""
			if silent != "" {
				unknown = fmt.Sprintf("; the call sent to %s got no answer and may still be applied: send it again as it was (a StartTask with the same idempotency key)", silent)
			}
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("no leader answered within %v%s: %w%s", f.a.cfg.RPCHoldTimeout, f.why(), last, unknown))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
}

// watchTarget cancels an attempt sent to name once name is no longer the
// agent to send it to, and reports whether it did.
func (f *forwarder) watchTarget(ctx context.Context, cancel context.CancelFunc, name string) *atomic.Bool {
	var moved atomic.Bool
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !f.stillTarget(name) {
				moved.Store(true)
				cancel()
				return
			}
		}
	}()
	return &moved
}

// stillTarget reports whether a call sent to name may still be answered
// there: name is alive in gossip, and this server (if it is one) knows no
// other leader.
func (f *forwarder) stillTarget(name string) bool {
	a := f.a
	if a.node != nil {
		if id, _ := a.node.Leader(); id != "" && id != name {
			return false
		}
	}
	return a.rpcAddrOf(name) != ""
}

// errSilent is the error of a forward attempt whose target did not
// answer: gone, or cut off by a partition.
var errSilent = errors.New("no answer (down, or cut off by a network partition)")

// why says, for an agent that gave up waiting for a leader, what it sees:
// a server that knows no leader is cut off from a quorum of servers, or
// the quorum has no leader; either way the write cannot be taken here.
func (f *forwarder) why() string {
	a := f.a
	if a.node == nil {
		return ""
	}
	if id, _ := a.node.Leader(); id != "" {
		return " (this server follows " + id + ", which did not answer)"
	}
	return " (this server knows no leader: it cannot reach a quorum of servers, or they are electing one; writes need a quorum)"
}

// retryable reports whether a forwarded call may succeed if sent again
// (to the leader of the moment).
func retryable(err error) bool {
	if errors.Is(err, errNoServer) || errors.Is(err, errNoPeer) {
		return true
	}
	return connect.CodeOf(err) == connect.CodeUnavailable
}

// notLeaderError is the refusal of a call only the leader may answer.
func (a *Agent) notLeaderError() *connect.Error {
	leader := ""
	if a.node != nil {
		leader, _ = a.node.Leader()
	}
	msg := "this agent is not the leader"
	if leader == "" {
		msg = "no leader is elected yet"
	}
	e := connect.NewError(connect.CodeUnavailable, errors.New(msg))
	e.Meta().Set(hdrNotLeader, orDash(leader))
	return e
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// isLeader reports whether this agent is the Raft leader.
func (a *Agent) isLeader() bool { return a.node != nil && a.node.IsLeader() }

// rpcAddrOf is the agent-to-agent address of the named agent, from gossip.
func (a *Agent) rpcAddrOf(name string) string {
	if name == a.cfg.NodeName {
		return a.rpcAdvertise
	}
	if a.gossip == nil {
		return ""
	}
	if m, ok := a.gossip.Registry().Member(name); ok && m.Status == gossip.StatusAlive {
		return m.RPCAddr
	}
	return ""
}

// knewServers reports whether gossip knows servers it declared dead.
func (a *Agent) knewServers() bool {
	if a.gossip == nil {
		return false
	}
	for _, m := range a.gossip.Members() {
		if m.Role == gossip.RoleServer && m.Status == gossip.StatusDead && m.Name != a.cfg.NodeName {
			return true
		}
	}
	return false
}

// aliveServers lists the servers gossip says are alive, this one excluded.
func (a *Agent) aliveServers() []gossip.Member {
	if a.gossip == nil {
		return nil
	}
	var out []gossip.Member
	for _, m := range a.gossip.Members() {
		if m.Role == gossip.RoleServer && m.Status == gossip.StatusAlive && m.Name != a.cfg.NodeName {
			out = append(out, m)
		}
	}
	return out
}

// leaderOnly lists the paths of calls the leader must answer (besides the
// whole WorkflowService). RaftPeers and the snapshot calls are answered by
// any server, so only client agents forward them.
var leaderOnly = map[string]bool{
	taskerv1connect.ClusterServiceRemovePeerProcedure: true,
	taskerv1connect.ClusterServiceBreakersProcedure:   true,
}

// leaderService reports whether a call's path is of a service the leader
// answers (a stale read lets any server): workflows and tasks, the
// analyses of what they ran, and proposals, whose approvals read the
// state they commit against.
func leaderService(path string) bool {
	for _, svc := range []string{taskerv1connect.WorkflowServiceName, taskerv1connect.InsightServiceName, taskerv1connect.ProposalServiceName} {
		if strings.HasPrefix(path, "/"+svc+"/") {
			return true
		}
	}
	return false
}

// slowCalls lists the calls a forward never cuts at the hold timeout:
// their answer may take longer than it to begin. A drafted workflow waits
// for several answers of a language model; the leader bounds it by
// ai_timeout.
var slowCalls = map[string]bool{
	taskerv1connect.ClusterServiceSnapshotSaveProcedure:     true,
	taskerv1connect.ClusterServiceSnapshotRestoreProcedure:  true,
	taskerv1connect.InsightServiceGenerateWorkflowProcedure: true,
}

// reports are the app reports agents forward to the leader themselves.
var reports = map[string]bool{
	taskerv1connect.WorkerServiceCompleteStepProcedure: true,
	taskerv1connect.WorkerServiceFailStepProcedure:     true,
	taskerv1connect.WorkerServiceExtendLeaseProcedure:  true,
}

var serverOnly = map[string]bool{
	taskerv1connect.ClusterServiceRaftPeersProcedure:       true,
	taskerv1connect.ClusterServiceSnapshotSaveProcedure:    true,
	taskerv1connect.ClusterServiceSnapshotRestoreProcedure: true,
}

// route serves a call here when this agent can answer it, and otherwise
// proxies it, whatever its protocol (Connect, gRPC, gRPC-Web), to the
// leader or a server.
func (a *Agent) route(local http.Handler) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(*httputil.ProxyRequest) {},
		Transport:     &leaderTransport{a: a},
		FlushInterval: -1, // streams (WatchTask) must not be buffered
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeUnavailable(w, r, err)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(hdrForwarded) != "" && !a.answersHere(r) {
			// Refuse in the response headers, where the forwarder's transport
			// sees them for every call: a streaming call's error would only
			// reach the trailers, too late to retry elsewhere.
			leader := ""
			if a.node != nil {
				leader, _ = a.node.Leader()
			}
			w.Header().Set(hdrNotLeader, orDash(leader))
			writeUnavailable(w, r, errors.New("this agent is not the leader"))
			return
		}
		if a.answersHere(r) || r.Header.Get(hdrForwarded) != "" {
			if a.isLeader() {
				w.Header().Set(hdrLeader, a.cfg.NodeName)
			}
			local.ServeHTTP(w, r)
			return
		}
		// Buffer the request so a retry can send it again. Only snapshot
		// restores are client streams; they are sent once, unbuffered.
		if r.URL.Path != taskerv1connect.ClusterServiceSnapshotRestoreProcedure && r.Body != nil {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(a.cfg.MaxPayloadBytes)+128<<10))
			if err != nil {
				if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
					a.lim.refuse(w, r, exhausted(limitPayload, fmt.Errorf("%w: the request is over %d bytes, the limit of max_payload_bytes (%d) plus room for the message; keep large data elsewhere and pass a reference, or raise the limit", errTooLarge, tooLarge.Limit, a.cfg.MaxPayloadBytes)))
					return
				}
				writeUnavailable(w, r, fmt.Errorf("read request: %w", err))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		if r.URL.Path == taskerv1connect.WorkflowServiceStartTaskProcedure && r.Header.Get(hdrTaskID) == "" {
			r.Header.Set(hdrTaskID, a.newTaskID())
		}
		r.Header.Set(hdrForwarded, a.cfg.NodeName)
		proxy.ServeHTTP(w, r)
	})
}

// answersHere reports whether this agent answers r itself.
func (a *Agent) answersHere(r *http.Request) bool {
	p := r.URL.Path
	switch {
	case leaderService(p) || leaderOnly[p]:
		return a.isLeader() || (a.node != nil && r.Header.Get(hdrConsistency) == "stale")
	case serverOnly[p]:
		return a.node != nil
	}
	return true
}

// leaderGuard refuses, with the leader's name, calls that reached an
// agent that must not answer them: a forwarded call that arrived just
// after leadership moved. A consistent read first confirms leadership.
type leaderGuard struct{ a *Agent }

func (g leaderGuard) check(ctx context.Context, procedure string, h http.Header) error {
	stale := h.Get(hdrConsistency) == "stale"
	if reports[procedure] && h.Get(hdrForwarded) != "" && !g.a.isLeader() {
		return g.a.notLeaderError()
	}
	if !leaderService(procedure) && !leaderOnly[procedure] {
		return nil
	}
	switch {
	case g.a.isLeader():
		if h.Get(hdrConsistency) == "consistent" {
			if err := g.a.node.VerifyLeader(ctx); err != nil {
				return g.a.notLeaderError()
			}
		}
		return nil
	case stale && g.a.node != nil:
		return nil
	}
	return g.a.notLeaderError()
}

func (g leaderGuard) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := g.check(ctx, req.Spec().Procedure, req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (g leaderGuard) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (g leaderGuard) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := g.check(ctx, conn.Spec().Procedure, conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// leaderTransport sends a proxied call to the leader (or a server, which
// names the leader) through the forwarder's retry loop, so a proxied call
// and a forwarded report wait for a leader the same way. The request body
// was buffered by route, so it can be sent again.
type leaderTransport struct{ a *Agent }

func (t *leaderTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f := t.a.fwd
	var resp *http.Response
	ctx := req.Context()
	if t.a.tel.Tracing {
		// The proxy is outside the Connect interceptors: the caller's
		// trace context is in the headers.
		ctx = t.a.tel.Propagator.Extract(ctx, propagation.HeaderCarrier(req.Header))
	}
	err := f.forward(ctx, strings.TrimPrefix(req.URL.Path, "/"), true, func(ctx context.Context, base string) error {
		u, err := url.Parse(base)
		if err != nil {
			return err
		}
		// The forward's context ends with the hold timeout; a stream
		// (WatchTask) lives past it, so the request runs on its own
		// context, cut when the forward's ends before the response's
		// headers arrive, and after them when the body is closed. A
		// snapshot may take longer than the hold timeout to answer at
		// all: it is never cut.
		rctx, cancel := context.WithCancel(req.Context())
		stop := func() bool { return true }
		if !slowCalls[req.URL.Path] {
			stop = context.AfterFunc(ctx, cancel)
		}
		out := req.Clone(rctx)
		if t.a.tel.Tracing {
			// The leader's span of the call is the forward span's child.
			t.a.tel.Propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
		}
		out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
		out.Host = out.URL.Host
		if req.GetBody != nil {
			out.Body, _ = req.GetBody()
		}
		r, err := f.client.Transport.RoundTrip(out)
		if !stop() {
			// The hold timeout ended first: forward reports the silence.
			cancel()
			if err == nil {
				r.Body.Close()
			}
			return ctx.Err()
		}
		if err != nil {
			cancel()
			if req.GetBody == nil {
				return err // cannot resend: not retried
			}
			return connect.NewError(connect.CodeUnavailable, err)
		}
		nl := r.Header.Get(hdrNotLeader)
		if (nl == "" && r.StatusCode != http.StatusServiceUnavailable) || req.GetBody == nil {
			// An answer, or a refusal that cannot be resent: the client gets it.
			f.learn(r.Header.Get(hdrLeader))
			r.Body = cancelOnClose{r.Body, cancel}
			resp = r
			return nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		r.Body.Close()
		cancel()
		refused := connect.NewError(connect.CodeUnavailable, errors.New("not the leader"))
		if nl != "" {
			refused.Meta().Set(hdrNotLeader, nl)
		}
		return refused
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// cancelOnClose ends a proxied request's context when the proxy is done
// with its response.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// writeUnavailable answers a call that could not be forwarded in a way
// every protocol reads as UNAVAILABLE: HTTP 503 (Connect and gRPC-Web map
// it so) plus gRPC's status headers for gRPC clients.
func writeUnavailable(w http.ResponseWriter, r *http.Request, err error) {
	ct := r.Header.Get("Content-Type")
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message() // the code is the answer's; not "unavailable: " twice
	}
	if strings.HasPrefix(ct, "application/grpc") {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Grpc-Status", "14")
		w.Header().Set("Grpc-Message", url.PathEscape(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := json.Marshal(map[string]string{"code": "unavailable", "message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}

// hasLeader reports whether this agent can write through a leader: a
// server that knows one, or a client that knows a live server.
func (a *Agent) hasLeader() bool {
	if a.node != nil {
		id, _ := a.node.Leader()
		return id != ""
	}
	return len(a.aliveServers()) > 0
}
