package mcpserver_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tasker-run/tasker/agent"
	"github.com/tasker-run/tasker/mcpserver"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/worker"
)

const (
	mgmtToken  = "mcp-test-management-secret-0123"
	agentToken = "mcp-test-agent-secret-0123456789"
)

// manifest: charge fails for good when the input says so; ship needs it.
const manifest = `name: pay
namespace: t
version: 1.0.0
description: charge, then ship
steps:
  - {name: charge, capability: t.charge, input: {decline: $.input.decline}}
  - {name: ship, capability: t.ship, depends_on: [charge]}
`

// startAgent starts a real one-server agent, with ACLs when acl, and
// returns its local API's URL.
func startAgent(t *testing.T, acl bool) string {
	t.Helper()
	cfg := agent.Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect, cfg.Dev = "s1", t.TempDir(), true, 1, true
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort, cfg.Bus = 0, 0, 0, 0, "off"
	if acl {
		cfg.ACLEnabled, cfg.ACLInitialManagementToken, cfg.ACLAgentToken = true, mgmtToken, agentToken
	}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	wf := workflowClient(a.Addr(), mgmtToken)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := wf.ListWorkflows(context.Background(), connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
		if err == nil {
			return a.Addr()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not answer within 15s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

type bearerAuth string

func (b bearerAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return h2c().Transport.RoundTrip(r)
}

func workflowClient(addr, token string) taskerv1connect.WorkflowServiceClient {
	return taskerv1connect.NewWorkflowServiceClient(&http.Client{Transport: bearerAuth(token)}, addr)
}

// connectMCP serves mcpserver over the clients of addr (with token) and
// connects an MCP client to it in memory.
func connectMCP(t *testing.T, addr, token string, readOnly bool) *mcp.ClientSession {
	t.Helper()
	srv, err := mcpserver.New(mcpserver.NewClients(h2c(), addr, token), mcpserver.Options{ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	st, ct := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close(); _ = ss.Wait(); cancel() })
	return cs
}

// runWorker offers t.charge (which fails with card_declined when the
// input has "decline": true) and t.ship until the test ends.
func runWorker(t *testing.T, addr, token string) {
	t.Helper()
	w := worker.New(worker.Options{Addr: addr, Token: token, Logger: slog.New(slog.DiscardHandler)})
	w.Handle("t.charge", func(_ context.Context, s *worker.Step) (any, error) {
		var in struct {
			Decline bool `json:"decline"`
		}
		if err := s.Bind(&in); err != nil {
			return nil, err
		}
		if in.Decline {
			return nil, worker.Permanent("card_declined", "the issuer declined the card")
		}
		return map[string]any{"charge_id": "ch_1"}, nil
	})
	w.Handle("t.ship", func(context.Context, *worker.Step) (any, error) { return map[string]any{}, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// call calls a tool; a protocol error fails the test.
func call(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (text string, structured map[string]any, isError bool) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", name, err)
	}
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &structured)
	}
	return strings.Join(parts, "\n"), structured, res.IsError
}

// waitState waits until the task reaches state.
func waitState(t *testing.T, wf taskerv1connect.WorkflowServiceClient, id string, state taskerv1.TaskState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		if err == nil && resp.Msg.GetTask().GetState() == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not reach %v within 20s (last: %v, %v)", id, state, resp.Msg.GetTask().GetState(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTools calls every tool against a real agent: once as an assistant
// should, once wrongly, which must be a tool error naming the fix.
func TestTools(t *testing.T) {
	addr := startAgent(t, false)
	runWorker(t, addr, "")
	cs := connectMCP(t, addr, "", false)
	wf := workflowClient(addr, "")

	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.Annotations == nil {
			t.Errorf("%s has no annotations", tl.Name)
			continue
		}
		read := slices.Contains(mcpserver.ToolNames(true), tl.Name)
		if tl.Annotations.ReadOnlyHint != read {
			t.Errorf("%s: readOnlyHint %v, want %v", tl.Name, tl.Annotations.ReadOnlyHint, read)
		}
		wantDestructive := map[string]bool{"resolve_step": true, "approve_proposal": true, "reject_proposal": true, "rollback_proposal": true}[tl.Name]
		if !read && (tl.Annotations.DestructiveHint == nil || *tl.Annotations.DestructiveHint != wantDestructive) {
			t.Errorf("%s: destructiveHint %v, want %v", tl.Name, tl.Annotations.DestructiveHint, wantDestructive)
		}
		if tl.OutputSchema == nil {
			t.Errorf("%s has no output schema", tl.Name)
		}
	}
	if want := mcpserver.ToolNames(false); !sameSet(names, want) {
		t.Fatalf("tools = %v, want %v", names, want)
	}

	// A workflow, a task that completes and two that fail.
	text, _, isErr := call(t, cs, "list_workflows", nil)
	if isErr || !strings.Contains(text, "0 workflows") {
		t.Fatalf("list_workflows on an empty cluster: %v %q", isErr, text)
	}
	if _, err := wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	start := func(decline bool) string {
		t.Helper()
		_, out, isErr := call(t, cs, "start_task", map[string]any{"workflow": "pay", "namespace": "t", "input": map[string]any{"decline": decline}})
		if isErr {
			t.Fatalf("start_task: %v", out)
		}
		id, _ := out["task"].(map[string]any)["id"].(string)
		if id == "" {
			t.Fatalf("start_task: no task id in %v", out)
		}
		return id
	}
	good, failed, failed2 := start(false), start(true), start(true)
	waitState(t, wf, good, taskerv1.TaskState_TASK_STATE_COMPLETE)
	waitState(t, wf, failed, taskerv1.TaskState_TASK_STATE_ERROR)
	waitState(t, wf, failed2, taskerv1.TaskState_TASK_STATE_ERROR)

	_, out, _ := call(t, cs, "list_failures", nil)
	if fs, _ := out["failures"].([]any); len(fs) != 2 || fs[0].(map[string]any)["code"] != "card_declined" {
		t.Errorf("list_failures structured = %v, want 2 card_declined failures", out)
	}

	type check struct {
		name    string
		args    map[string]any
		wantErr bool
		want    []string // in the text
	}
	checks := []check{
		{"list_workflows", nil, false, []string{"1 workflows: t/pay"}},
		{"list_workflows", map[string]any{"namespace": 7}, true, []string{"namespace"}},
		{"get_workflow", map[string]any{"namespace": "t", "name": "pay"}, false, []string{"workflow t/pay 1.0.0: 2 steps"}},
		{"get_workflow", map[string]any{"name": "pay"}, true, []string{"namespace"}},
		{"get_workflow", map[string]any{"namespace": "t", "name": "nope"}, true, []string{"get_workflow: ", "not found"}},
		{"start_task", map[string]any{"namespace": "t"}, true, []string{"workflow"}},
		{"start_task", map[string]any{"workflow": "nope", "namespace": "t"}, true, []string{"start_task: ", "not found"}},
		{"get_task", map[string]any{"id": failed}, false, []string{failed, "is error", "step charge failed: card_declined"}},
		{"get_task", map[string]any{"id": "tsk_nope"}, true, []string{"get_task: ", "not found"}},
		{"get_task", map[string]any{"id": ""}, true, []string{"id is required"}},
		{"list_tasks", map[string]any{"namespace": "t", "state": "error"}, false, []string{"2 tasks: 2 error"}},
		{"list_tasks", map[string]any{"state": "broken"}, true, []string{"state: \"broken\" is not a task state"}},
		{"list_failures", nil, false, []string{"2 failed tasks", failed + " t/pay step charge: card_declined"}},
		{"list_failures", map[string]any{"limit": -1}, true, []string{"limit: -1 is out of range"}},
		{"list_dead_letters", map[string]any{"status": "open"}, false, []string{"2 dead letters"}},
		{"list_dead_letters", map[string]any{"status": "lost"}, true, []string{"status: \"lost\""}},
		{"list_members", nil, false, []string{"1 members, 1 alive"}},
		{"list_members", map[string]any{"bogus": 1}, true, []string{"bogus"}},
		{"list_capabilities", nil, false, []string{"t.charge", "t.ship"}},
		{"list_capabilities", map[string]any{"bogus": 1}, true, []string{"bogus"}},
		{"analyze_workflow_performance", map[string]any{"namespace": "t", "workflow": "pay", "window": "1d"}, false, []string{"t/pay: 3 tasks"}},
		{"analyze_workflow_performance", map[string]any{"namespace": "t", "workflow": "pay", "window": "7x"}, true, []string{"window: \"7x\" is not a window"}},
		{"diagnose_workflow_failure", map[string]any{"task_id": failed}, false, []string{"root cause charge: app_error card_declined"}},
		{"diagnose_workflow_failure", map[string]any{"task_id": "tsk_nope"}, true, []string{"diagnose_workflow_failure: ", "not found"}},
		{"optimize_workflow_dependencies", map[string]any{"workflow": "pay"}, true, []string{"namespace"}},
		{"create_workflow_from_description", map[string]any{"description": " "}, true, []string{"description is required"}},
		{"list_proposals", nil, false, []string{"proposals"}},
		{"list_proposals", map[string]any{"limit": -1}, true, []string{"limit"}},
		{"get_proposal", map[string]any{"id": "p-999"}, true, []string{"get_proposal: ", "not found"}},
		{"get_proposal", map[string]any{}, true, []string{"id"}},
		{"approve_proposal", map[string]any{"id": "p-999", "reason": "ok", "operator_token": ""}, true, []string{"operator_token is required", "ask them"}},
		{"approve_proposal", map[string]any{"id": "p-999", "reason": "ok"}, true, []string{"operator_token"}},
		{"approve_proposal", map[string]any{"id": "p-999", "reason": "ok", "operator_token": "x"}, true, []string{"approve_proposal: ", "not found"}},
		{"reject_proposal", map[string]any{"id": "p-999", "reason": "no", "operator_token": ""}, true, []string{"operator_token is required"}},
		{"reject_proposal", map[string]any{"id": "p-999", "reason": "no", "operator_token": "x"}, true, []string{"reject_proposal: ", "not found"}},
		{"rollback_proposal", map[string]any{"id": "p-999", "reason": "undo", "operator_token": ""}, true, []string{"operator_token is required"}},
		{"rollback_proposal", map[string]any{"id": "p-999", "reason": "undo", "operator_token": "x"}, true, []string{"rollback_proposal: ", "not found"}},
		{"retry_step", map[string]any{"task_id": "tsk_nope", "step": "charge"}, true, []string{"retry_step: ", "not found"}},
		{"retry_step", map[string]any{"task_id": failed}, true, []string{"step"}},
		{"resolve_step", map[string]any{"task_id": failed2, "step": "charge", "result": map[string]any{}, "reason": ""}, true, []string{"reason is required"}},
		{"resolve_step", map[string]any{"task_id": "tsk_nope", "step": "charge", "result": map[string]any{}, "reason": "paid by phone"}, true, []string{"resolve_step: ", "not found"}},
		// The writes last: they change the failed tasks.
		{"resolve_step", map[string]any{"task_id": failed2, "step": "charge", "result": map[string]any{"charge_id": "ch_phone"}, "reason": "paid by phone"}, false, []string{"resolved step charge"}},
		{"retry_step", map[string]any{"task_id": failed, "step": "charge", "reason": "try again"}, false, []string{"retrying step charge"}},
	}
	for _, c := range checks {
		text, _, isErr := call(t, cs, c.name, c.args)
		if isErr != c.wantErr {
			t.Errorf("%s %v: isError %v, want %v: %s", c.name, c.args, isErr, c.wantErr, text)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s %v: %q does not say %q", c.name, c.args, text, w)
			}
		}
	}

	// Structured output is the API's message with proto field names.
	_, out, _ = call(t, cs, "get_task", map[string]any{"id": good})
	if task, _ := out["task"].(map[string]any); task["state"] != "TASK_STATE_COMPLETE" || task["input_json"] == nil {
		t.Errorf("get_task structured = %v, want the task with state and input_json", out)
	}

	// Optimize and generate: whatever the agent answers, it is the tool's
	// answer or a tool error naming the tool, never a protocol error.
	for _, c := range []check{
		{name: "optimize_workflow_dependencies", args: map[string]any{"namespace": "t", "workflow": "pay"}},
		{name: "create_workflow_from_description", args: map[string]any{"description": "charge the card, then ship the parcel", "dry_run": true}},
	} {
		text, _, isErr := call(t, cs, c.name, c.args)
		if isErr && !strings.HasPrefix(text, c.name+": ") {
			t.Errorf("%s: error %q does not name the tool", c.name, text)
		}
		if !isErr && text == "" {
			t.Errorf("%s: no summary", c.name)
		}
	}
	// This agent has no language model: the refusal reaches the assistant
	// as a tool error that says what to configure.
	text, _, isErr = call(t, cs, "create_workflow_from_description", map[string]any{"description": "charge, then ship"})
	if !isErr || !strings.Contains(text, "create_workflow_from_description: ") || !strings.Contains(text, "no language model is configured") {
		t.Errorf("create_workflow_from_description without a model: error %v, %q; want a tool error saying no model is configured", isErr, text)
	}
}

// TestResourcesAndPrompt: the workflows are listed as resources, their
// manifests and tasks read through the templates, and the prompt walks
// through a task.
func TestResourcesAndPrompt(t *testing.T) {
	addr := startAgent(t, false)
	cs := connectMCP(t, addr, "", true)
	wf := workflowClient(addr, "")
	if _, err := wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	st, err := wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "t", Workflow: "pay", InputJson: `{}`}))
	if err != nil {
		t.Fatal(err)
	}
	id := st.Msg.GetTask().GetId()
	ctx := context.Background()

	list, err := cs.ListResources(ctx, nil)
	if err != nil || len(list.Resources) != 1 || list.Resources[0].URI != "tasker://workflows/t/pay" {
		t.Fatalf("resources = %v, %v; want tasker://workflows/t/pay", list, err)
	}
	tmpl, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil || len(tmpl.ResourceTemplates) != 2 {
		t.Fatalf("templates = %v, %v", tmpl, err)
	}
	for _, c := range []struct{ uri, mime, want string }{
		{"tasker://workflows/t/pay", "text/yaml", "name: pay"},
		{"tasker://tasks/" + id, "application/json", `"workflow":"pay"`},
	} {
		r, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: c.uri})
		if err != nil {
			t.Fatalf("read %s: %v", c.uri, err)
		}
		if len(r.Contents) != 1 || r.Contents[0].MIMEType != c.mime || !strings.Contains(r.Contents[0].Text, c.want) {
			t.Errorf("read %s = %+v, want %s with %q", c.uri, r.Contents, c.mime, c.want)
		}
	}
	for _, uri := range []string{"tasker://workflows/t/nope", "tasker://tasks/tsk_nope"} {
		if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not found") {
			t.Errorf("read %s: %v, want not found", uri, err)
		}
	}

	p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "diagnose_failed_task", Arguments: map[string]string{"task_id": id}})
	if err != nil {
		t.Fatal(err)
	}
	text := p.Messages[0].Content.(*mcp.TextContent).Text
	for _, want := range []string{id, "get_task", "diagnose_workflow_failure", "evidence", "Do not apply", "operator"} {
		if !strings.Contains(text, want) {
			t.Errorf("the prompt does not say %q:\n%s", want, text)
		}
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "diagnose_failed_task"}); err == nil || !strings.Contains(err.Error(), "task_id") {
		t.Errorf("prompt without task_id: %v, want an error naming it", err)
	}
}

// TestReadOnly: a read-only server lists no tool that changes anything,
// and refuses to call one.
func TestReadOnly(t *testing.T) {
	addr := startAgent(t, false)
	cs := connectMCP(t, addr, "", true)
	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if !tl.Annotations.ReadOnlyHint {
			t.Errorf("read-only server offers %s, which is not read-only", tl.Name)
		}
	}
	if !sameSet(names, mcpserver.ToolNames(true)) {
		t.Fatalf("tools = %v, want %v", names, mcpserver.ToolNames(true))
	}
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "start_task", Arguments: map[string]any{"workflow": "pay"}})
	if err == nil && !res.IsError {
		t.Fatal("a read-only server started a task")
	}
}

// TestACL: with ACLs on, the API's rules apply to the tools: no token is
// refused naming how to send one; approving needs an operator token of
// the management policy, not merely a valid one.
func TestACL(t *testing.T) {
	addr := startAgent(t, true)
	ctx := context.Background()

	anon := connectMCP(t, addr, "", false)
	if text, _, isErr := call(t, anon, "list_workflows", nil); !isErr || !strings.Contains(text, "unauthenticated") || !strings.Contains(text, "token") {
		t.Fatalf("no token: %v %q, want unauthenticated naming the token", isErr, text)
	}

	acls := taskerv1connect.NewAclServiceClient(&http.Client{Transport: bearerAuth(mgmtToken)}, addr)
	tok, err := acls.CreateToken(ctx, connect.NewRequest(&taskerv1.CreateTokenRequest{Policy: "writer", Description: "assistant"}))
	if err != nil {
		t.Fatal(err)
	}
	writer := tok.Msg.GetSecret()
	cs := connectMCP(t, addr, writer, false)
	if _, err := workflowClient(addr, mgmtToken).ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	_, out, isErr := call(t, cs, "start_task", map[string]any{"workflow": "pay", "namespace": "t"})
	if isErr {
		t.Fatalf("start_task with a writer token: %v", out)
	}
	task := out["task"].(map[string]any)["id"].(string)
	pc := taskerv1connect.NewProposalServiceClient(&http.Client{Transport: bearerAuth(writer)}, addr)
	cr, err := pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "escalate", TaskId: task, Summary: "needs a person"}))
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Msg.GetProposal().GetId()

	// The session's own (writer) token does not stand in for an operator's.
	args := map[string]any{"id": id, "reason": "looked at it", "operator_token": writer}
	if text, _, isErr := call(t, cs, "approve_proposal", args); !isErr || !strings.Contains(text, "permission denied") {
		t.Fatalf("approve with a writer token: %v %q, want permission denied", isErr, text)
	}
	args["operator_token"] = mgmtToken
	text, out, isErr := call(t, cs, "approve_proposal", args)
	if isErr || out["state"] == "pending" {
		t.Fatalf("approve with the management token: %v %q %v", isErr, text, out)
	}
	// The operator's token was for that call only.
	if text, _, isErr := call(t, cs, "reject_proposal", map[string]any{"id": id, "reason": "no", "operator_token": writer}); !isErr || !strings.Contains(text, "permission denied") {
		t.Fatalf("reject with a writer token after an approval: %v %q", isErr, text)
	}
}

// TestNewNeedsNewClients: clients without the token interceptor would
// send an approval under the session's token; New refuses them.
func TestNewNeedsNewClients(t *testing.T) {
	if _, err := mcpserver.New(mcpserver.Clients{}, mcpserver.Options{}); err == nil || !strings.Contains(err.Error(), "NewClients") {
		t.Fatalf("New(Clients{}) = %v, want an error naming NewClients", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
