package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight/llm/llmtest"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkworker "github.com/tasker-run/tasker/sdk/go/worker"
)

// draftAnswer is a model's answer with one charge step using capability.
func draftAnswer(capability string) string {
	return `{"manifest":{"name":"model-picked","version":"1.0.0",
	  "input_schema":{"type":"object","required":["order_id","amount"],"properties":{"order_id":{"type":"string"},"amount":{"type":"integer"}}},
	  "steps":[{"name":"charge","capability":"` + capability + `","input":{"order_id":"$.input.order_id","amount":"$.input.amount"}}]},
	  "missing_capabilities":[],"explanation":"Charges the card for the order."}`
}

// chargeApp registers payments.charge with schemas through the Go SDK and
// answers every step, until the test ends; it returns once gossip lists
// the capability with its schemas.
func chargeApp(t *testing.T, ta *testAgent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := sdkworker.New(sdkworker.Options{Addr: ta.Addr(), WorkerID: "app-gen", Logger: slog.New(slog.DiscardHandler)})
	w.Handle("payments.charge", func(context.Context, *sdkworker.Step) (any, error) {
		return map[string]string{"charge_id": "ch_1"}, nil
	}, sdkworker.Schemas(chargeInputSchema, chargeOutputSchema), sdkworker.Description("Charges the card for an order"))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop within 10s")
		}
	})
	waitFor(t, 10*time.Second, "gossip to list payments.charge", func() bool {
		ps := ta.gossip.Registry().Providers("payments.charge")
		return len(ps) == 1 && len(ps[0].InputSchema) > 0 && ps[0].Description != ""
	})
}

// TestGenerateWorkflow: a draft from a scripted model, first with an
// invented capability and then repaired, is filed as a create_workflow
// proposal; approving it creates the workflow, whose task then runs; it
// cannot be rolled back; a second draft of the same name is a new version.
func TestGenerateWorkflow(t *testing.T) {
	ctx := context.Background()
	srv := llmtest.New(t, llmtest.Reply{Content: draftAnswer("payments.charge_card")}, llmtest.Reply{Content: draftAnswer("payments.charge")})
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.AIEndpoint, c.AIModel = srv.URL(), "scripted" })
	chargeApp(t, ta)
	ic := taskerv1connect.NewInsightServiceClient(h2c(), ta.Addr())
	pc := proposalClient(ta, "")

	desc := "Charge the card for each order."
	r, err := ic.GenerateWorkflow(ctx, connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: desc, Namespace: "shop", Name: "charges"}))
	if err != nil {
		t.Fatal(err)
	}
	g := r.Msg
	if !g.GetValid() || g.GetRounds() != 2 || len(g.GetProblems()) != 0 || g.GetProposalId() == "" {
		t.Fatalf("draft: valid %v, rounds %d, problems %v, proposal %q", g.GetValid(), g.GetRounds(), g.GetProblems(), g.GetProposalId())
	}
	for _, w := range []string{"name: charges\n", "namespace: shop\n", "capability: payments.charge\n", "result_schema:"} {
		if !strings.Contains(g.GetManifest(), w) {
			t.Errorf("manifest lacks %q:\n%s", w, g.GetManifest())
		}
	}
	if !strings.Contains(g.GetSummary(), "1 step") || g.GetExplanation() == "" {
		t.Errorf("summary %q, explanation %q", g.GetSummary(), g.GetExplanation())
	}
	// The model saw the live catalog and was told what it invented.
	if !srv.Contains("Charges the card for an order") || !srv.Contains(`\"amount\"`) {
		t.Error("the prompt lacks the catalog's description or schemas")
	}
	if msgs := srv.Requests()[1].Messages; !strings.Contains(msgs[len(msgs)-1].Content, `"payments.charge_card" is not in the catalog`) {
		t.Errorf("repair message: %s", msgs[len(msgs)-1].Content)
	}

	gp, err := pc.GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: g.GetProposalId()}))
	if err != nil {
		t.Fatal(err)
	}
	p := gp.Msg.GetProposal()
	if p.GetState() != "pending" || p.GetAction() != "create_workflow" || p.GetKind() != "workflow_change" || p.GetSource() != "model" ||
		p.GetBaseVersion() != "" || p.GetNewVersion() != "1.0.0" || p.GetCreatedBy() != "anonymous" || p.GetManifest() != g.GetManifest() {
		t.Fatalf("proposal %+v", p)
	}
	if !strings.Contains(p.GetDiff(), "+name: charges\n") || strings.Contains(p.GetDiff(), "\n-") {
		t.Errorf("diff is not the whole manifest added:\n%s", p.GetDiff())
	}
	var ev struct {
		Description string `json:"description"`
		Rounds      int    `json:"rounds"`
		Explanation string `json:"explanation"`
	}
	if err := json.Unmarshal([]byte(p.GetEvidenceJson()), &ev); err != nil || ev.Description != desc || ev.Rounds != 2 || ev.Explanation == "" {
		t.Errorf("evidence %s (%v)", p.GetEvidenceJson(), err)
	}
	_, err = ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: "shop", Name: "charges"}))
	wantCode(t, "the workflow before approval", err, connect.CodeNotFound)

	if _, err := pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: p.GetId()})); err != nil {
		t.Fatal(err)
	}
	gw, err := ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: "shop", Name: "charges"}))
	if err != nil || gw.Msg.GetWorkflow().GetVersion() != "1.0.0" {
		t.Fatalf("workflow after approval: %v %v", gw, err)
	}
	st, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "charges", InputJson: `{"order_id":"o1","amount":42}`}))
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, ta, st.Msg.GetTask().GetId(), taskerv1.TaskState_TASK_STATE_COMPLETE)

	_, err = pc.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: p.GetId()}))
	wantCode(t, "roll back a create_workflow", err, connect.CodeFailedPrecondition, "a first version has nothing to go back to")

	// The same name again: a new version of the workflow, on the active one.
	r, err = ic.GenerateWorkflow(ctx, connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: desc, Namespace: "shop", Name: "charges"}))
	if err != nil {
		t.Fatal(err)
	}
	gp, err = pc.GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: r.Msg.GetProposalId()}))
	if err != nil {
		t.Fatal(err)
	}
	if p := gp.Msg.GetProposal(); p.GetAction() != consensus.ActionUpdateWorkflow || p.GetBaseVersion() != "1.0.0" || p.GetNewVersion() != "1.0.1-ai.1" ||
		!strings.Contains(r.Msg.GetManifest(), "version: 1.0.1-ai.1\n") {
		t.Fatalf("second draft's proposal %+v", p)
	}

	// A dry run files nothing.
	r, err = ic.GenerateWorkflow(ctx, connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: desc, Namespace: "shop", Name: "other", DryRun: true}))
	if err != nil || !r.Msg.GetValid() || r.Msg.GetProposalId() != "" {
		t.Fatalf("dry run: %v %v", r, err)
	}
	if n := len(ta.state.Proposals(consensus.ProposalFilter{})); n != 2 {
		t.Fatalf("%d proposals after a dry run, want 2", n)
	}

	// Bad input is refused before the model is asked, naming the field.
	asked := len(srv.Requests())
	for _, tc := range []struct {
		name string
		req  *taskerv1.GenerateWorkflowRequest
		want []string
	}{
		{"no description", &taskerv1.GenerateWorkflowRequest{Description: "  "}, []string{"description"}},
		{"description too long", &taskerv1.GenerateWorkflowRequest{Description: strings.Repeat("x", 4001)}, []string{"description", "4001 characters, over the limit of 4000"}},
		{"bad name", &taskerv1.GenerateWorkflowRequest{Description: desc, Name: "Charges!"}, []string{"name", "not a valid workflow name"}},
		{"bad namespace", &taskerv1.GenerateWorkflowRequest{Description: desc, Namespace: "Shop"}, []string{"namespace"}},
	} {
		_, err := ic.GenerateWorkflow(ctx, connect.NewRequest(tc.req))
		wantCode(t, tc.name, err, connect.CodeInvalidArgument, tc.want...)
	}
	if n := len(srv.Requests()); n != asked {
		t.Fatalf("bad input reached the model (%d requests, was %d)", n, asked)
	}
}

// TestGenerateWorkflowNoModel: without a model the call says so plainly.
func TestGenerateWorkflowNoModel(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ic := taskerv1connect.NewInsightServiceClient(h2c(), ta.Addr())
	_, err := ic.GenerateWorkflow(context.Background(), connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: "charge the card"}))
	wantCode(t, "no model", err, connect.CodeFailedPrecondition, "no language model is configured: set ai_endpoint and ai_model (docs/ai.md); generation needs one")
}

// TestGenerateWorkflowForwarded: a draft asked of a client agent is
// answered by the leader, and the forward waits for the model longer than
// the hold timeout, which is for finding a leader, not for the answer.
func TestGenerateWorkflowForwarded(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: draftAnswer("payments.charge"), Delay: 1500 * time.Millisecond})
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.AIEndpoint, c.AIModel = srv.URL(), "scripted" })
	chargeApp(t, ta)
	cli := startClientAgent(t, "c1", ta, func(c *Config) { c.RPCHoldTimeout = 500 * time.Millisecond })
	ic := taskerv1connect.NewInsightServiceClient(h2c(), cli.Addr())
	r, err := ic.GenerateWorkflow(context.Background(), connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: "charge the card", Name: "forwarded", DryRun: true}))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Msg.GetValid() || r.Msg.GetRounds() != 1 {
		t.Fatalf("valid %v, rounds %d, problems %v", r.Msg.GetValid(), r.Msg.GetRounds(), r.Msg.GetProblems())
	}
}
