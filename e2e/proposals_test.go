package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/sdk/go/client"
)

// TestAIProposals files the dependency optimizer's result as a proposal
// with `tasker ai optimize -propose`, reviews it with `ai proposals list`
// and `show`, approves it — new tasks then run the proposed version — and
// rolls it back — new tasks run the base version again, while the task
// started in between keeps its version.
func TestAIProposals(t *testing.T) {
	a := startAgent(t, agentConfig{})
	startServices(t, a.addr, []string{"-delay", "5ms-15ms"})
	cl := newClient(a.addr)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, cl, "prop", 3)
	b.waitAllComplete(t, 60*time.Second)

	r := tasker(t, a.addr, "ai", "optimize", "shop/order-fulfilment", "-propose", "-o", "json")
	r.must(t, "tasker ai optimize -propose", 0)
	var out struct {
		ProposalID string `json:"proposal_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.ProposalID == "" {
		t.Fatalf("-o json names no proposal (%v):\n%s", err, r.stdout)
	}
	id := out.ProposalID

	tasker(t, a.addr, "ai", "proposals", "list", "-state", "pending").must(t, "ai proposals list", 0,
		id, "optimize_dependencies", "shop/order-fulfilment", "1.0.0 -> 1.0.1-ai.1", "optimizer")
	tasker(t, a.addr, "ai", "proposals", "show", id).must(t, "ai proposals show", 0,
		"State:     pending", "Evidence:", `"saved_ms"`, "Diff:", "-version: 1.0.0", "+version: 1.0.1-ai.1", "-    depends_on: [validate]",
		"re-activate version 1.0.0")

	n := 0
	version := func() string {
		t.Helper()
		n++
		task, _, err := cl.StartTask(callCtx(t), "order-fulfilment", orderInput(fmt.Sprintf("ord_v%d", n), "tok_visa", "TEE-M"), client.Namespace("shop"))
		if err != nil {
			t.Fatal(err)
		}
		return task.GetVersion()
	}
	if v := version(); v != "1.0.0" {
		t.Fatalf("before approval a task got %s", v)
	}
	tasker(t, a.addr, "ai", "proposals", "approve", id, "-reason", "reviewed: reserve needs no validation").must(t, "ai proposals approve", 0,
		"proposal "+id+" applied: version 1.0.1-ai.1 is active")
	tasker(t, a.addr, "workflow", "get", "shop/order-fulfilment").must(t, "workflow get", 0, "Active:       1.0.1-ai.1 (pinned)")
	if v := version(); v != "1.0.1-ai.1" {
		t.Fatalf("after approval a task got %s", v)
	}
	if r := tasker(t, a.addr, "ai", "proposals", "approve", id); r.code != 1 || !strings.Contains(r.stderr, "is applied") {
		t.Fatalf("approving twice: exit %d: %s", r.code, r.stderr)
	}

	tasker(t, a.addr, "ai", "proposals", "rollback", id, "-reason", "slower in practice").must(t, "ai proposals rollback", 0,
		"proposal "+id+" rolled back: slower in practice")
	if v := version(); v != "1.0.0" {
		t.Fatalf("after rollback a task got %s", v)
	}
	tasker(t, a.addr, "workflow", "list").must(t, "workflow list", 0, "1.0.1-ai.1  1.0.0 (pinned)")
	tasker(t, a.addr, "ai", "proposals", "show", id, "-o", "json").must(t, "ai proposals show -o json", 0, `"state": "rolled_back"`, `"by": "anonymous"`)
	if r := tasker(t, a.addr, "ai", "proposals", "reject", id); r.code != 2 || !strings.Contains(r.stderr, "-reason") {
		t.Fatalf("reject without a reason: exit %d, want 2 naming -reason: %s", r.code, r.stderr)
	}
}
