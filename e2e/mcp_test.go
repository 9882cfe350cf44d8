package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tasker-run/tasker/mcpserver"
)

// mcpCall calls a tool and returns its text, its structured content and
// whether it is a tool error; a protocol error fails the test.
func mcpCall(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, map[string]any, bool) {
	t.Helper()
	res, err := cs.CallTool(callCtx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", name, err)
	}
	var text []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text = append(text, tc.Text)
		}
	}
	var out map[string]any
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &out)
	}
	return strings.Join(text, "\n"), out, res.IsError
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(callCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

// TestMCP: an MCP client reaches the real agent's /mcp over streamable
// HTTP, finds every tool, starts a task, and diagnoses a declined card as
// the charge step's app error; `tasker mcp` serves the same tools over
// stdio to a client that starts it as a subprocess.
func TestMCP(t *testing.T) {
	a, failed := declinedOrder(t, agentConfig{})
	want := slices.Sorted(slices.Values(mcpserver.ToolNames(false)))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: a.addr + "/mcp", HTTPClient: &http.Client{}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect to %s/mcp: %v", a.addr, err)
	}
	defer cs.Close()
	if got := toolNames(t, cs); !slices.Equal(got, want) {
		t.Fatalf("tools over HTTP = %v, want %v", got, want)
	}

	text, out, isErr := mcpCall(t, cs, "start_task", map[string]any{"workflow": "order-fulfilment", "namespace": "shop",
		"input": orderInput("ord_mcp1", "tok_visa", "TEE-M"), "idempotency_key": "mcp-1"})
	if isErr || !strings.HasPrefix(text, "started: task ") {
		t.Fatalf("start_task: %v %q", isErr, text)
	}
	id, _ := out["task"].(map[string]any)["id"].(string)
	eventually(t, 30*time.Second, "the task started over MCP completes", func(context.Context) (bool, error) {
		text, _, isErr := mcpCall(t, cs, "get_task", map[string]any{"id": id})
		return !isErr && strings.Contains(text, "is complete"), nil
	})

	text, out, isErr = mcpCall(t, cs, "diagnose_workflow_failure", map[string]any{"task_id": failed})
	if isErr || !strings.Contains(text, "root cause charge: app_error card_declined") {
		t.Fatalf("diagnose_workflow_failure: %v %q", isErr, text)
	}
	findings, _ := out["findings"].([]any)
	if len(findings) == 0 || findings[0].(map[string]any)["role"] != "root_cause" || findings[0].(map[string]any)["step"] != "charge" {
		t.Fatalf("diagnosis findings = %v, want the charge step first as the root cause", findings)
	}
	text, _, isErr = mcpCall(t, cs, "list_failures", nil)
	if isErr || !strings.Contains(text, failed+" shop/order-fulfilment step charge: card_declined") {
		t.Fatalf("list_failures: %v %q", isErr, text)
	}
	if text, _, isErr := mcpCall(t, cs, "get_task", map[string]any{"id": "tsk_nope"}); !isErr || !strings.Contains(text, "not found") {
		t.Fatalf("get_task of an unknown task: %v %q, want a tool error saying not found", isErr, text)
	}

	// `tasker mcp` over stdio, read-only, against the same agent.
	cmd := exec.Command(taskerBin, "mcp", "-addr", a.addr, "-read-only")
	stdio, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("start tasker mcp: %v", err)
	}
	defer stdio.Close()
	if got, want := toolNames(t, stdio), slices.Sorted(slices.Values(mcpserver.ToolNames(true))); !slices.Equal(got, want) {
		t.Fatalf("tools over stdio with -read-only = %v, want %v", got, want)
	}
	text, _, isErr = mcpCall(t, stdio, "get_task", map[string]any{"id": failed})
	if isErr || !strings.Contains(text, "step charge failed: card_declined") {
		t.Fatalf("get_task over stdio: %v %q", isErr, text)
	}
}
