package agent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkclient "github.com/tasker-run/tasker/sdk/go/client"
)

const (
	testMgmtToken  = "mgmt-secret-for-tests-0123456789"
	testAgentToken = "agent-secret-for-tests-012345678"
)

func withACL(c *Config) {
	c.ACLEnabled, c.ACLInitialManagementToken, c.ACLAgentToken = true, testMgmtToken, testAgentToken
}

// as is ta's API seen by a caller holding secret, at base (the local API
// unless given).
func as(ta *testAgent, secret string, base ...string) *testAgent {
	addr := ta.Addr()
	if len(base) > 0 {
		addr = base[0]
	}
	c, o := h2c(), connect.WithInterceptors(sdkclient.BearerToken(secret))
	return &testAgent{Agent: ta.Agent, dir: ta.dir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, addr, o),
		wk: taskerv1connect.NewWorkerServiceClient(c, addr, o),
		cl: taskerv1connect.NewClusterServiceClient(c, addr, o),
	}
}

func aclClient(ta *testAgent, secret string) taskerv1connect.AclServiceClient {
	return taskerv1connect.NewAclServiceClient(h2c(), ta.Addr(), connect.WithInterceptors(sdkclient.BearerToken(secret)))
}

func createToken(t *testing.T, ta *testAgent, req *taskerv1.CreateTokenRequest) string {
	t.Helper()
	resp, err := aclClient(ta, testMgmtToken).CreateToken(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create token %v: %v", req, err)
	}
	return resp.Msg.GetSecret()
}

func wantCode(t *testing.T, what string, err error, code connect.Code, mentions ...string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("%s: %q does not mention %q", what, err, m)
		}
	}
}

// TestACLOneServer: with -acl, a call without a token is refused naming
// the header; an app token serves only its own capabilities (even with a
// step in hand, it cannot complete another capability's step) and starts
// only the workflows it lists; operator calls need management.
func TestACLOneServer(t *testing.T) {
	ctx := context.Background()
	srv := startAgent(t, t.TempDir(), withACL)

	_, err := srv.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	wantCode(t, "no token", err, connect.CodeUnauthenticated, "Authorization: Bearer", "tasker acl token create")
	_, err = as(srv, "tasker_not-a-token").wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	wantCode(t, "unknown token", err, connect.CodeUnauthenticated, "not known")

	mgmt := as(srv, testMgmtToken)
	applyQuick(t, mgmt)
	first := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "app", Capabilities: []string{"test.first"}, Workflows: []string{"default/quick"}})
	second := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "app", Capabilities: []string{"test.sec*"}})
	reader := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "reader"})

	app := as(srv, first)
	_, err = app.cl.RemovePeer(ctx, connect.NewRequest(&taskerv1.RemovePeerRequest{Id: "test"}))
	wantCode(t, "raft remove-peer with an app token", err, connect.CodePermissionDenied, "policy app", "operator access")
	_, err = aclClient(srv, first).ListTokens(ctx, connect.NewRequest(&taskerv1.ListTokensRequest{}))
	wantCode(t, "list tokens with an app token", err, connect.CodePermissionDenied, "management")
	_, err = as(srv, reader).wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n":1}`}))
	wantCode(t, "start with a reader token", err, connect.CodePermissionDenied, "policy reader")
	_, err = as(srv, second).wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n":1}`}))
	wantCode(t, "start with an app token not listing the workflow", err, connect.CodePermissionDenied, `"default/quick"`)
	_, err = app.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId: "thief", Capabilities: []*taskerv1.Capability{{Name: "test.second"}},
	}))
	wantCode(t, "register another capability", err, connect.CodePermissionDenied, `"test.second"`)

	p := newPoller(t, app, "w-first", "test.first")
	// Another app may not take over the worker id (and its stream of
	// steps), even re-registered with capabilities of its own.
	_, err = as(srv, second).wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId: "w-first", Capabilities: []*taskerv1.Capability{{Name: "test.second"}},
	}))
	wantCode(t, "register over another app's worker id", err, connect.CodePermissionDenied, "another token")
	_, err = as(srv, second).wk.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: "w-first"}))
	if err == nil {
		// Server streams report errors on the first Receive.
		s, _ := as(srv, second).wk.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: "w-first"}))
		s.Receive()
		err = s.Err()
	}
	wantCode(t, "poll another app's worker", err, connect.CodePermissionDenied, "another token")

	startQuick(t, app, "k1")
	asg := p.next()
	_, err = as(srv, second).wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{
		TaskId: asg.GetTaskId(), Step: asg.GetStep(), Attempt: asg.GetAttempt(), ResultJson: `{"id":"x"}`,
	}))
	wantCode(t, "complete another capability's step", err, connect.CodePermissionDenied, `"test.first"`, "policy app")
	if err := p.complete(asg, `{"id":"x"}`); err != nil {
		t.Fatalf("the app completing its own capability's step: %v", err)
	}

	who, err := aclClient(srv, first).WhoAmI(ctx, connect.NewRequest(&taskerv1.WhoAmIRequest{}))
	if err != nil || who.Msg.GetToken().GetPolicy() != "app" {
		t.Fatalf("whoami: %v %v", who, err)
	}
	list, err := aclClient(srv, testMgmtToken).ListTokens(ctx, connect.NewRequest(&taskerv1.ListTokensRequest{}))
	if err != nil || len(list.Msg.GetTokens()) != 3 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, tok := range list.Msg.GetTokens() {
		if strings.Contains(tok.String(), "tasker_") {
			t.Fatalf("listing shows a secret: %v", tok)
		}
	}
	_, err = aclClient(srv, testMgmtToken).DeleteToken(ctx, connect.NewRequest(&taskerv1.DeleteTokenRequest{AccessorId: who.Msg.GetToken().GetAccessorId()}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = app.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	wantCode(t, "a deleted token", err, connect.CodeUnauthenticated)
}

// TestACLAcrossAgents: a token created through a client agent works on
// the server and on the client (it is replicated); the RPC port checks the
// caller's token too, so calling it directly bypasses nothing; a deleted
// token stops working on the client within the cache TTL.
func TestACLAcrossAgents(t *testing.T) {
	ctx := context.Background()
	srv := startAgent(t, t.TempDir(), withACL, func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv, withACL, func(c *Config) { c.ACLInitialManagementToken, c.ACLTokenTTL = "", 300*time.Millisecond })

	applyQuick(t, as(srv, testMgmtToken))
	// The management token is configured only on the server: the client
	// agent resolves it there.
	secret := createToken(t, cli, &taskerv1.CreateTokenRequest{Policy: "app", Capabilities: []string{"test.first"}, Workflows: []string{"default/*"}})
	other := createToken(t, cli, &taskerv1.CreateTokenRequest{Policy: "app", Capabilities: []string{"test.second"}})
	for _, ta := range []*testAgent{srv, cli} {
		if _, err := as(ta, secret).wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{})); err != nil {
			t.Fatalf("the token on %s: %v", ta.cfg.NodeName, err)
		}
	}

	// The app works through its sidecar, the client agent: its report is
	// forwarded to the leader with its token.
	p := newPoller(t, as(cli, secret), "w1", "test.first")
	startQuick(t, as(cli, secret), "k1")
	asg := p.next()

	rpc := "http://" + srv.RPCAddr()
	_, err := as(srv, other, rpc).wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{
		TaskId: asg.GetTaskId(), Step: asg.GetStep(), Attempt: asg.GetAttempt(), ResultJson: `{"id":"x"}`,
	}))
	wantCode(t, "another app's token on the server's RPC port", err, connect.CodePermissionDenied)
	_, err = as(cli, other).wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{
		TaskId: asg.GetTaskId(), Step: asg.GetStep(), Attempt: asg.GetAttempt(), ResultJson: `{"id":"x"}`,
	}))
	wantCode(t, "another app's token through the client agent", err, connect.CodePermissionDenied)
	_, err = agentv1connect.NewAgentServiceClient(h2c(), rpc, connect.WithGRPC(), connect.WithInterceptors(sdkclient.BearerToken(secret))).
		Apply(ctx, connect.NewRequest(&agentv1.ApplyRequest{}))
	wantCode(t, "AgentService.Apply with an app token", err, connect.CodePermissionDenied, "agent access")
	_, err = agentv1connect.NewAgentServiceClient(h2c(), rpc, connect.WithGRPC()).Apply(ctx, connect.NewRequest(&agentv1.ApplyRequest{}))
	wantCode(t, "AgentService.Apply without a token", err, connect.CodeUnauthenticated)
	if err := p.complete(asg, `{"id":"x"}`); err != nil {
		t.Fatalf("its own step through the client agent: %v", err)
	}

	who, err := aclClient(cli, secret).WhoAmI(ctx, connect.NewRequest(&taskerv1.WhoAmIRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aclClient(cli, testMgmtToken).DeleteToken(ctx, connect.NewRequest(&taskerv1.DeleteTokenRequest{AccessorId: who.Msg.GetToken().GetAccessorId()})); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitFor(t, 10*time.Second, "the deleted token to stop working on the client agent", func() bool {
		_, err := as(cli, secret).wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
		return connect.CodeOf(err) == connect.CodeUnauthenticated
	})
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("the deleted token worked for %v, far past the 300ms TTL", d)
	}
}

// TestACLConfig: the ACL settings are checked at start, naming the setting.
func TestACLConfig(t *testing.T) {
	base := []string{"-node", "s", "-server", "-data-dir", "/tmp/x"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"acl without an agent token", []string{"-acl"}, "acl-agent-token: is required with -acl"},
		{"short management token", []string{"-acl-initial-management-token", "short"}, "acl-initial-management-token: is 5 characters"},
		{"dev without a management token", []string{"-dev", "-acl"}, "acl-initial-management-token: is required with -dev -acl"},
		{"same secret twice", []string{"-acl-initial-management-token", testMgmtToken, "-acl-agent-token", testMgmtToken}, "acl-agent-token: is the management token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(append(base, tc.args...), func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg, err := Load(base, func(k string) string {
		return map[string]string{"TASKER_ACL": "true", "TASKER_ACL_AGENT_TOKEN": testAgentToken}[k]
	})
	if err != nil || !cfg.ACLEnabled || cfg.ACLAgentToken != testAgentToken {
		t.Fatalf("from the environment: %+v %v", cfg, err)
	}
}

// TestACLOffByDefault: without -acl, calls need no token, and WhoAmI says
// ACLs are off rather than inventing an identity.
func TestACLOffByDefault(t *testing.T) {
	srv := startAgent(t, t.TempDir())
	applyQuick(t, srv)
	_, err := aclClient(srv, "").WhoAmI(context.Background(), connect.NewRequest(&taskerv1.WhoAmIRequest{}))
	wantCode(t, "whoami with ACLs off", err, connect.CodeFailedPrecondition, "not enabled")
}

// TestACLCacheIsBounded: a caller sending ever new tokens cannot grow a
// client agent's memory past the cache bound.
func TestACLCacheIsBounded(t *testing.T) {
	r := &aclResolver{cache: map[[32]byte]aclCached{}}
	for i := range aclCacheMax + 100 {
		var h [32]byte
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		r.remember(h, aclCached{expires: time.Now().Add(time.Minute)})
	}
	if n := len(r.cache); n > aclCacheMax {
		t.Fatalf("%d cached tokens, bound %d", n, aclCacheMax)
	}
}

// TestACLWarnsWhenExposed: a local API on a non-loopback address without
// ACLs is announced at WARN; on loopback, or with ACLs, it is not.
func TestACLWarnsWhenExposed(t *testing.T) {
	for _, tc := range []struct {
		client string
		acl    bool
		warn   bool
	}{{"0.0.0.0", false, true}, {"127.0.0.1", false, false}, {"0.0.0.0", true, false}} {
		var buf bytes.Buffer
		cfg := Defaults()
		cfg.Dev, cfg.Server, cfg.BootstrapExpect, cfg.ClientAddr = true, true, 1, tc.client
		if tc.acl {
			withACL(&cfg)
		}
		a, err := New(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
		if err != nil {
			t.Fatal(err)
		}
		a.warnExposed()
		if got := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "-acl"); got != tc.warn {
			t.Errorf("-client %s, acl %v: warned %v, want %v (%q)", tc.client, tc.acl, got, tc.warn, buf.String())
		}
	}
}
