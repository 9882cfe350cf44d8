package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight/llm/llmtest"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// generatedDraft is a model's answer: validate the order, then charge it,
// with charge using capability (so that a test can make it invent one).
func generatedDraft(capability string) string {
	return `{"manifest":{"name":"charge-orders","version":"1.0.0","description":"Validate an order, then charge its card.",
	  "input_schema":{"type":"object","required":["order_id","customer","items","payment"],"properties":{
	    "order_id":{"type":"string"},
	    "customer":{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}},
	    "items":{"type":"array","items":{"type":"object","required":["sku","quantity"],"properties":{"sku":{"type":"string"},"quantity":{"type":"integer"}}}},
	    "payment":{"type":"object","required":["token","amount_cents","currency"],"properties":{"token":{"type":"string"},"amount_cents":{"type":"integer"},"currency":{"type":"string","enum":["EUR","USD","GBP"]}}}}},
	  "steps":[
	    {"name":"validate","capability":"orders.validate","input":{"order_id":"$.input.order_id","customer_id":"$.input.customer.id","items":"$.input.items"}},
	    {"name":"charge","capability":"` + capability + `","depends_on":["validate"],"timeout":"20s",
	     "input":{"order_id":"$.input.order_id","token":"$.input.payment.token","amount_cents":"$.input.payment.amount_cents","currency":"$.input.payment.currency","risk_score":"$.steps.validate.result.risk_score"}}]},
	  "missing_capabilities":[],"explanation":"Validates the order and scores its risk, then charges the card with that score."}`
}

// TestAIGenerate drafts a workflow through the real binary from a
// scripted model: its first answer invents a capability, the repaired
// one is valid and filed as a proposal; approving it creates the
// workflow, whose task then runs on the example services. An agent
// without a model says so.
func TestAIGenerate(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: generatedDraft("payments.capture")}, llmtest.Reply{Content: generatedDraft("payments.charge")})
	a := startAgent(t, agentConfig{configFile: "ai_endpoint: " + srv.URL() + "\nai_model: scripted\n"})
	startServices(t, a.addr, []string{"-delay", "1ms-5ms"})
	eventually(t, 30*time.Second, "the services' capabilities in the catalog", func(context.Context) (bool, error) {
		r := tasker(t, a.addr, "capabilities")
		return r.code == 0 && strings.Contains(r.stdout, "orders.validate") && strings.Contains(r.stdout, "payments.charge"), nil
	})

	r := tasker(t, a.addr, "ai", "generate", "Validate each order, then charge its card.", "-namespace", "shop").must(t, "tasker ai generate", 0,
		"Draft (valid, 2 answers from the model)", "name: charge-orders\n", "namespace: shop\n", "capability: payments.charge\n",
		"Shape: 2 steps, 1 edge, 2 levels", "Filed as proposal p-1", "tasker ai proposals approve p-1")
	t.Logf("tasker ai generate:\n%s", r.stdout)
	if msgs := srv.Requests()[1].Messages; !strings.Contains(msgs[len(msgs)-1].Content, `"payments.capture" is not in the catalog`) {
		t.Fatalf("the repair did not name the invented capability: %s", msgs[len(msgs)-1].Content)
	}
	if !srv.Contains("Charges the card for an order") {
		t.Fatal("the prompt lacks the live catalog's descriptions")
	}
	tasker(t, a.addr, "ai", "proposals", "show", "p-1").must(t, "ai proposals show", 0, "create_workflow", "+name: charge-orders")
	if r := tasker(t, a.addr, "workflow", "get", "shop/charge-orders"); r.code != 1 {
		t.Fatalf("the workflow exists before approval: exit %d\n%s", r.code, r.stdout)
	}
	tasker(t, a.addr, "ai", "proposals", "approve", "p-1").must(t, "ai proposals approve", 0, "applied")
	tasker(t, a.addr, "workflow", "get", "shop/charge-orders").must(t, "workflow get", 0, "1.0.0", "validate", "charge")

	cl := newClient(a.addr)
	task, _, err := cl.StartTask(callCtx(t), "charge-orders", orderInput("ord_gen1", "tok_visa", "TEE-M"), client.Namespace("shop"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the drafted workflow's task completes", func(ctx context.Context) (bool, error) {
		got, err := cl.GetTask(ctx, task.GetId())
		if err != nil {
			return false, nil
		}
		return got.GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE, nil
	})

	// -o yaml is the manifest alone; a dry run files nothing.
	y := tasker(t, a.addr, "ai", "generate", "Validate each order, then charge its card.", "-name", "other", "-dry-run", "-o", "yaml").must(t, "ai generate -o yaml", 0, "name: other\n")
	if !strings.HasPrefix(y.stdout, "name: other\n") || strings.Contains(y.stdout, "Filed") {
		t.Fatalf("-o yaml printed more than the manifest:\n%s", y.stdout)
	}
	if r := tasker(t, a.addr, "ai", "proposals", "list"); strings.Contains(r.stdout, "p-2") {
		t.Fatalf("a dry run filed a proposal:\n%s", r.stdout)
	}

	// No model: said plainly, exit 1.
	b := startAgent(t, agentConfig{})
	if r := tasker(t, b.addr, "ai", "generate", "Validate each order."); r.code != 1 || !strings.Contains(r.stderr, "no language model is configured: set ai_endpoint and ai_model") {
		t.Fatalf("no model: exit %d, want 1 saying so\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// Bad input is a usage error.
	if r := tasker(t, b.addr, "ai", "generate"); r.code != 2 || !strings.Contains(r.stderr, "want one description") {
		t.Fatalf("no description: exit %d, want 2\n%s", r.code, r.stderr)
	}
}
