package agent

// ACLs (docs/acl.md): every Connect call this agent serves, on the local
// API and on the RPC port, passes aclInterceptor. With ACLs on it finds
// the caller's token (authenticate), resolves it — from the agent's
// configuration, the replicated state on a server, or a server over
// AgentService.ResolveToken with a short cache on a client agent — and
// checks that the token's policy covers the call (authorize). Calls this
// agent makes to others carry the caller's token when it acts for a
// caller, else the agent's own token, so the agent that answers checks
// the same identity again: no hop trusts another's word for a caller.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/acl"
	"github.com/tasker-run/tasker/consensus"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// The headers a token travels in. Authorization is the standard one;
// X-Tasker-Token is for clients that reserve Authorization for a proxy.
const (
	hdrAuthorization = "Authorization"
	hdrToken         = "X-Tasker-Token"
)

// aclCacheMax bounds the tokens a client agent remembers: a sidecar serves
// a handful of apps, so this is never reached in normal use, and a caller
// sending random tokens cannot grow the agent's memory without bound.
const aclCacheMax = 4096

// aclNegativeTTL bounds how long a client agent remembers that a token is
// unknown, so that a token used just before its creation replicated works
// a moment later, while a flood of bad tokens still costs few lookups.
const aclNegativeTTL = 2 * time.Second

// errUnknownToken is a token the cluster does not know.
var errUnknownToken = errors.New("unknown token")

// aclResolver turns secrets into tokens.
type aclResolver struct {
	a *Agent
	// The tokens from configuration, as hashes, compared in constant time.
	mgmt, agent       [32]byte
	hasMgmt, hasAgent bool

	mu    sync.Mutex
	cache map[[32]byte]aclCached // client agents only: servers read the state
	// owners maps the worker ids registered here to the accessor id of the
	// token that registered them: another app's token may not take over a
	// worker id (and with it the stream of that worker's steps).
	owners map[string]string
}

type aclCached struct {
	tok     *acl.Token // nil: unknown to the cluster
	expires time.Time
}

func newACLResolver(a *Agent) *aclResolver {
	r := &aclResolver{a: a, cache: map[[32]byte]aclCached{}, owners: map[string]string{}}
	if s := a.cfg.ACLInitialManagementToken; s != "" {
		r.mgmt, r.hasMgmt = acl.Hash(s), true
	}
	if s := a.cfg.ACLAgentToken; s != "" {
		r.agent, r.hasAgent = acl.Hash(s), true
	}
	return r
}

// configured resolves the tokens set in this agent's configuration.
func (r *aclResolver) configured(h [32]byte) *acl.Token {
	// Both compared, always, so the time taken says nothing about which
	// matched.
	m := r.hasMgmt && subtle.ConstantTimeCompare(h[:], r.mgmt[:]) == 1
	g := r.hasAgent && subtle.ConstantTimeCompare(h[:], r.agent[:]) == 1
	switch {
	case m:
		return &acl.Token{AccessorID: "initial-management", Policy: acl.Management, Description: "acl_initial_management_token", FromConfig: true}
	case g:
		return &acl.Token{AccessorID: "agent", Policy: acl.Agent, Description: "acl_agent_token", FromConfig: true}
	}
	return nil
}

// resolve returns the token whose secret hashes to h: errUnknownToken when
// the cluster knows none, another error when it could not be asked.
func (r *aclResolver) resolve(ctx context.Context, h [32]byte) (*acl.Token, error) {
	if t := r.configured(h); t != nil {
		return t, nil
	}
	a := r.a
	if a.node != nil {
		// A server's state may trail the leader's by a moment: a token
		// created an instant ago may be refused here once.
		if t, ok := a.state.ACLToken(h); ok {
			return t, nil
		}
		return nil, errUnknownToken
	}
	now := time.Now()
	r.mu.Lock()
	c, ok := r.cache[h]
	r.mu.Unlock()
	if ok && now.Before(c.expires) {
		if c.tok == nil {
			return nil, errUnknownToken
		}
		return c.tok, nil
	}
	var tok *acl.Token
	err := a.fwd.do(ctx, func(ctx context.Context, base string) error {
		resp, err := a.fwd.agentClient(base).ResolveToken(ctx, connect.NewRequest(&agentv1.ResolveTokenRequest{SecretHash: h[:]}))
		if err != nil {
			return err
		}
		tok = tokenFromPB(resp.Msg.GetToken())
		return nil
	})
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		r.remember(h, aclCached{expires: now.Add(min(aclNegativeTTL, a.cfg.ACLTokenTTL))})
		return nil, errUnknownToken
	case err != nil:
		// Fail closed: without a server to ask, no call is authorized.
		return nil, err
	}
	r.remember(h, aclCached{tok: tok, expires: now.Add(a.cfg.ACLTokenTTL)})
	return tok, nil
}

func (r *aclResolver) remember(h [32]byte, c aclCached) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= aclCacheMax {
		now := time.Now()
		for k, v := range r.cache {
			if !now.Before(v.expires) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < aclCacheMax {
				break
			}
			delete(r.cache, k) // an arbitrary one: it is only a cache
		}
	}
	r.cache[h] = c
}

// checkOwner refuses a token acting on a worker id another token
// registered. Management may act on any.
func (r *aclResolver) checkOwner(workerID string, tok *acl.Token) error {
	if workerID == "" || tok.Policy == acl.Management {
		return nil
	}
	r.mu.Lock()
	owner, ok := r.owners[workerID]
	r.mu.Unlock()
	if ok && owner != tok.AccessorID {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"worker %q was registered with another token (%s); token %s may not act for it: use a worker id of your own", workerID, owner, tok.AccessorID))
	}
	return nil
}

func (r *aclResolver) own(workerID string, tok *acl.Token) {
	if workerID == "" || tok.Policy == acl.Management {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.owners[workerID]; !ok {
		r.owners[workerID] = tok.AccessorID
	}
}

// callerKey carries the secret of the caller a handler acts for, so that
// calls it makes to other agents on the caller's behalf carry it too.
type callerKey struct{}

type caller struct {
	secret string
	tok    *acl.Token
}

func callerOf(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// secretOf reads the token a request carries; "" when none.
func secretOf(h interface{ Get(string) string }) string {
	if v := h.Get(hdrAuthorization); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return strings.TrimSpace(h.Get(hdrToken))
}

// authenticate establishes who is calling. It is the one place where an
// identity is accepted: a token today; an agent's verified mTLS client
// certificate can be mapped to the agent policy here too.
func (a *Agent) authenticate(ctx context.Context, h interface{ Get(string) string }) (*caller, error) {
	secret := secretOf(h)
	if secret == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New(
			"ACLs are enabled and the call carries no token: send it in the header 'Authorization: Bearer <token>' (or 'X-Tasker-Token: <token>'); "+
				"the CLI takes -token or TASKER_TOKEN. An operator creates tokens with 'tasker acl token create' (docs/acl.md)"))
	}
	tok, err := a.acl.resolve(ctx, acl.Hash(secret))
	switch {
	case errors.Is(err, errUnknownToken):
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New(
			"the ACL token is not known to the cluster: it was deleted or mistyped ('tasker acl token list' shows the tokens that exist)"))
	case err != nil:
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("cannot check the ACL token: no server answered: %w", err))
	}
	return &caller{secret: secret, tok: tok}, nil
}

// need says what a call needs, from its procedure and, for calls whose
// need depends on what they act on, its request message (nil when not
// known yet: streams check their message as it arrives).
func (a *Agent) need(procedure string, msg any) []acl.Request {
	svc, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	switch svc {
	case agentv1connect.AgentServiceName:
		return []acl.Request{{Need: acl.AgentRPC}}
	case taskerv1connect.AclServiceName:
		if method == "WhoAmI" {
			return nil // any valid token may ask who it is
		}
		return []acl.Request{{Need: acl.Operator}}
	case taskerv1connect.ClusterServiceName:
		switch method {
		case "Members", "Capabilities", "Breakers", "RaftPeers":
			return []acl.Request{{Need: acl.Read}}
		}
		return []acl.Request{{Need: acl.Operator}}
	case taskerv1connect.WorkflowServiceName:
		switch method {
		case "ApplyWorkflow", "CancelTask", "RetryStep", "ResolveStep":
			return []acl.Request{{Need: acl.Write}}
		case "ReplayDeadLetter":
			return []acl.Request{{Need: acl.Operator}}
		case "StartTask":
			r, _ := msg.(*taskerv1.StartTaskRequest)
			return []acl.Request{{Need: acl.Start, Workflow: nsOrDefault(r.GetNamespace()) + "/" + r.GetWorkflow()}}
		case "GetWorkflow", "ListWorkflows", "GetTask", "ListTasks", "WatchTask", "WatchEvents", "ListDeadLetters", "GetDeadLetter":
			return []acl.Request{{Need: acl.Read}}
		}
	case taskerv1connect.InsightServiceName:
		if method == "GenerateWorkflow" {
			// It files a proposal, as CreateProposal does.
			return []acl.Request{{Need: acl.Write}}
		}
		// Analyses read what the workflow reads show, no more.
		return []acl.Request{{Need: acl.Read}}
	case taskerv1connect.ProposalServiceName:
		switch method {
		case "ListProposals", "GetProposal":
			return []acl.Request{{Need: acl.Read}}
		case "CreateProposal":
			return []acl.Request{{Need: acl.Write}}
		}
		// Approving, rejecting and rolling back change what runs: operators
		// decide.
		return []acl.Request{{Need: acl.Operator}}
	case taskerv1connect.WorkerServiceName:
		switch r := msg.(type) {
		case *taskerv1.RegisterCapabilitiesRequest:
			var out []acl.Request
			for _, c := range r.GetCapabilities() {
				out = append(out, acl.Request{Need: acl.Worker, Capability: c.GetName()})
			}
			return out
		case *taskerv1.PollStepsRequest, *taskerv1.ClaimStepsRequest:
			// The capabilities of the worker whose steps are taken.
			var out []acl.Request
			for _, c := range a.workers.capabilitiesOf(r.(interface{ GetWorkerId() string }).GetWorkerId()) {
				out = append(out, acl.Request{Need: acl.Worker, Capability: c})
			}
			return append(out, acl.Request{Need: acl.Worker})
		case interface {
			GetTaskId() string
			GetStep() string
		}:
			return []acl.Request{{Need: acl.Worker, Capability: a.stepCapability(r.GetTaskId(), r.GetStep())}}
		}
		return []acl.Request{{Need: acl.Worker}}
	}
	// A call this table does not know (added later) needs the most.
	return []acl.Request{{Need: acl.Operator}}
}

func nsOrDefault(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

// stepCapability is the capability of a task's step, when this agent
// holds the state to say; "" otherwise. A report to an agent without the
// state is checked again, precisely, by the leader it is forwarded to.
func (a *Agent) stepCapability(taskID, step string) string {
	if a.node == nil || taskID == "" {
		return ""
	}
	ps, err := a.planStep(taskID, step)
	if err != nil {
		return ""
	}
	if ps.Capability == "" {
		// A transport: bus step: no app token serves it, only agents do.
		return "(bus step " + step + ")"
	}
	return ps.Capability
}

// authorize checks a call: nil, Unauthenticated or PermissionDenied.
func (a *Agent) authorize(ctx context.Context, procedure string, h interface{ Get(string) string }, msg any) (context.Context, error) {
	c, err := a.authenticate(ctx, h)
	if err != nil {
		return ctx, err
	}
	if err := a.allow(c.tok, procedure, msg); err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

func (a *Agent) allow(tok *acl.Token, procedure string, msg any) error {
	for _, r := range a.need(procedure, msg) {
		if err := tok.Allow(r); err != nil {
			return connect.NewError(connect.CodePermissionDenied, err)
		}
	}
	return nil
}

// chain is the interceptors of every Connect handler and client of the
// agent: tracing first, so a refused call is traced too, then ACLs.
func (a *Agent) chain() []connect.Interceptor {
	return append(slices.Clip(a.interceptors), aclInterceptor{a})
}

// aclInterceptor checks the calls this agent serves and signs the calls
// it makes.
type aclInterceptor struct{ a *Agent }

// sign sets the token on a call this agent makes: AgentService calls carry
// the agent's own token; public calls made for a caller carry the
// caller's, others the agent's.
func (i aclInterceptor) sign(ctx context.Context, procedure string, h interface{ Set(string, string) }) {
	secret := i.a.cfg.ACLAgentToken
	if c := callerOf(ctx); c != nil && !strings.HasPrefix(procedure, "/"+agentv1connect.AgentServiceName+"/") {
		secret = c.secret
	}
	if secret != "" {
		h.Set(hdrAuthorization, "Bearer "+secret)
	}
}

func (i aclInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			i.sign(ctx, req.Spec().Procedure, req.Header())
			return next(ctx, req)
		}
		if !i.a.cfg.ACLEnabled {
			return next(ctx, req)
		}
		ctx, err := i.a.authorize(ctx, req.Spec().Procedure, req.Header(), req.Any())
		if err != nil {
			return nil, err
		}
		tok := callerOf(ctx).tok
		if cl, ok := req.Any().(*taskerv1.ClaimStepsRequest); ok {
			if err := i.a.acl.checkOwner(cl.GetWorkerId(), tok); err != nil {
				return nil, err
			}
		}
		reg, isReg := req.Any().(*taskerv1.RegisterCapabilitiesRequest)
		if !isReg {
			return next(ctx, req)
		}
		if err := i.a.acl.checkOwner(reg.GetWorkerId(), tok); err != nil {
			return nil, err
		}
		resp, err := next(ctx, req)
		if err == nil {
			if out, ok := resp.Any().(*taskerv1.RegisterCapabilitiesResponse); ok {
				i.a.acl.own(out.GetWorkerId(), tok)
			}
		}
		return resp, err
	}
}

func (i aclInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		i.sign(ctx, spec.Procedure, conn.RequestHeader())
		return conn
	}
}

func (i aclInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !i.a.cfg.ACLEnabled {
			return next(ctx, conn)
		}
		c, err := i.a.authenticate(ctx, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(context.WithValue(ctx, callerKey{}, c), &aclConn{StreamingHandlerConn: conn, a: i.a, tok: c.tok})
	}
}

// aclConn checks a stream's request messages as the handler receives
// them: a stream's need can depend on its request (PollSteps' worker).
type aclConn struct {
	connect.StreamingHandlerConn
	a   *Agent
	tok *acl.Token
}

func (c *aclConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if p, ok := msg.(*taskerv1.PollStepsRequest); ok {
		if err := c.a.acl.checkOwner(p.GetWorkerId(), c.tok); err != nil {
			return err
		}
	}
	return c.a.allow(c.tok, c.Spec().Procedure, msg)
}

// capabilitiesOf lists what a registered worker offers.
func (ws *workers) capabilitiesOf(id string) []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil {
		return nil
	}
	out := make([]string, 0, len(w.caps))
	for name := range w.caps {
		out = append(out, name)
	}
	return out
}

// ResolveToken serves a client agent's lookup of a caller's token.
func (s *agentRPC) ResolveToken(ctx context.Context, req *connect.Request[agentv1.ResolveTokenRequest]) (*connect.Response[agentv1.ResolveTokenResponse], error) {
	if s.a.node == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("only servers resolve tokens"))
	}
	if len(req.Msg.GetSecretHash()) != 32 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("secret_hash must be the 32-byte SHA-256 of the secret"))
	}
	tok, err := s.a.acl.resolve(ctx, [32]byte(req.Msg.GetSecretHash()))
	if err != nil {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	return connect.NewResponse(&agentv1.ResolveTokenResponse{Token: tokenToPB(tok)}), nil
}

func tokenToPB(t *acl.Token) *taskerv1.AclToken {
	out := &taskerv1.AclToken{
		AccessorId: t.AccessorID, Policy: string(t.Policy), Capabilities: t.Capabilities, Workflows: t.Workflows,
		Description: t.Description, FromConfig: t.FromConfig,
	}
	if !t.CreatedAt.IsZero() {
		out.CreatedAt = timestamppb.New(t.CreatedAt)
	}
	return out
}

func tokenFromPB(t *taskerv1.AclToken) *acl.Token {
	out := &acl.Token{
		AccessorID: t.GetAccessorId(), Policy: acl.Policy(t.GetPolicy()), Capabilities: t.GetCapabilities(), Workflows: t.GetWorkflows(),
		Description: t.GetDescription(), FromConfig: t.GetFromConfig(),
	}
	if t.GetCreatedAt() != nil {
		out.CreatedAt = t.GetCreatedAt().AsTime()
	}
	return out
}

// aclAPI serves AclService. Its calls reach it only through aclInterceptor,
// which admits management tokens (and any token to WhoAmI).
type aclAPI struct{ a *Agent }

var _ taskerv1connect.AclServiceHandler = (*aclAPI)(nil)

func (s *aclAPI) CreateToken(ctx context.Context, req *connect.Request[taskerv1.CreateTokenRequest]) (*connect.Response[taskerv1.CreateTokenResponse], error) {
	r := req.Msg
	p, err := acl.ParsePolicy(r.GetPolicy())
	if err != nil {
		return nil, invalid("policy", "%v", err)
	}
	if err := acl.CheckGrant(p, r.GetCapabilities(), r.GetWorkflows()); err != nil {
		return nil, invalid("capabilities", "%v", err)
	}
	if len(r.GetDescription()) > 1024 {
		return nil, invalid("description", "is %d bytes, over the limit of 1024", len(r.GetDescription()))
	}
	secret, err := acl.NewSecret()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	id, err := acl.NewAccessorID()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	h := acl.Hash(secret)
	t := &fsmv1.AclToken{
		AccessorId: id, SecretHash: h[:], Policy: string(p), Capabilities: r.GetCapabilities(), Workflows: r.GetWorkflows(),
		Description: r.GetDescription(), CreatedAt: timestamppb.New(s.a.now()),
	}
	if _, err := s.a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_PutAclToken{PutAclToken: &fsmv1.PutAclToken{Token: t}}}); err != nil {
		return nil, toConnect(err)
	}
	who := "-"
	if c := callerOf(ctx); c != nil {
		who = c.tok.AccessorID
	}
	s.a.log.Info("acl token created", "accessor_id", id, "policy", p, "by", who)
	out := tokenToPB(&acl.Token{AccessorID: id, Policy: p, Capabilities: r.GetCapabilities(), Workflows: r.GetWorkflows(), Description: r.GetDescription(), CreatedAt: s.a.now()})
	return connect.NewResponse(&taskerv1.CreateTokenResponse{Token: out, Secret: secret}), nil
}

func (s *aclAPI) ListTokens(ctx context.Context, req *connect.Request[taskerv1.ListTokensRequest]) (*connect.Response[taskerv1.ListTokensResponse], error) {
	a := s.a
	if a.node == nil {
		// A client agent holds no state: the leader answers, checking the
		// caller's token again.
		var out *taskerv1.ListTokensResponse
		err := a.fwd.do(ctx, func(ctx context.Context, base string) error {
			cl := taskerv1connect.NewAclServiceClient(a.fwd.client, base, connect.WithGRPC(), connect.WithInterceptors(a.chain()...))
			resp, err := cl.ListTokens(ctx, connect.NewRequest(req.Msg))
			if err == nil {
				out = resp.Msg
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(out), nil
	}
	out := &taskerv1.ListTokensResponse{}
	for _, t := range a.state.ACLTokens() {
		out.Tokens = append(out.Tokens, tokenToPB(t))
	}
	return connect.NewResponse(out), nil
}

func (s *aclAPI) DeleteToken(ctx context.Context, req *connect.Request[taskerv1.DeleteTokenRequest]) (*connect.Response[taskerv1.DeleteTokenResponse], error) {
	id := req.Msg.GetAccessorId()
	if err := required("accessor_id", id); err != nil {
		return nil, err
	}
	_, err := s.a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_DeleteAclToken{DeleteAclToken: &fsmv1.DeleteAclToken{AccessorId: id}}})
	if errors.Is(err, consensus.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no token %q is stored in the cluster (tokens from agent configuration are removed from the configuration)", id))
	}
	if err != nil {
		return nil, toConnect(err)
	}
	s.a.log.Info("acl token deleted", "accessor_id", id)
	return connect.NewResponse(&taskerv1.DeleteTokenResponse{}), nil
}

func (s *aclAPI) WhoAmI(ctx context.Context, _ *connect.Request[taskerv1.WhoAmIRequest]) (*connect.Response[taskerv1.WhoAmIResponse], error) {
	c := callerOf(ctx)
	if c == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("ACLs are not enabled on this agent: every call is allowed without a token"))
	}
	return connect.NewResponse(&taskerv1.WhoAmIResponse{Token: tokenToPB(c.tok)}), nil
}

// warnExposed says loudly when the local API is reachable from other
// hosts without ACLs: anyone who can reach it can start tasks, report
// step results and operate the cluster.
func (a *Agent) warnExposed() {
	ip := net.ParseIP(a.cfg.ClientAddr)
	if ip == nil || ip.IsLoopback() || a.cfg.ACLEnabled {
		return
	}
	a.log.Warn("the local API listens on a non-loopback address without ACLs: anyone who can reach it can start tasks, "+
		"complete steps and operate the cluster; keep -client on 127.0.0.1 or turn on -acl (docs/acl.md)", "client", a.cfg.ClientAddr)
}

// validateACL checks the ACL settings.
func (c *Config) validateACL(bad func(setting, format string, args ...any)) {
	for _, s := range []struct{ name, v string }{{"acl-initial-management-token", c.ACLInitialManagementToken}, {"acl-agent-token", c.ACLAgentToken}} {
		if s.v != "" && len(s.v) < 16 {
			bad(s.name, "is %d characters: use a random secret of at least 16 (such as the output of 'tasker keygen')", len(s.v))
		}
	}
	if c.ACLInitialManagementToken != "" && c.ACLInitialManagementToken == c.ACLAgentToken {
		bad("acl-agent-token", "is the management token: give agents their own secret, so a leaked agent token is not the keys to everything")
	}
	if c.ACLEnabled && c.Dev && c.ACLInitialManagementToken == "" {
		bad("acl-initial-management-token", "is required with -dev -acl: without it no one can create a token")
	}
	if c.ACLEnabled && c.ACLAgentToken == "" && !c.Dev {
		bad("acl-agent-token", "is required with -acl: agents present it to each other (set the same secret on every agent, docs/acl.md)")
	}
	if c.ACLTokenTTL <= 0 || c.ACLTokenTTL > 10*time.Minute {
		bad("acl_token_ttl", "%v is out of range: use a positive duration up to 10m", c.ACLTokenTTL)
	}
}
