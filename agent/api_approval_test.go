package agent

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// TestApprovalRequired: with approval_required, ApplyWorkflow of a new
// workflow or version is refused but a dry run is not; Status says so; a
// create_workflow proposal with the manifest, once approved, makes the
// workflow, which may then be re-applied as is; an update_workflow with a
// full manifest makes the next version.
func TestApprovalRequired(t *testing.T) {
	ctx := context.Background()
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.ApprovalRequired = true })
	ic := taskerv1connect.NewInsightServiceClient(h2c(), ta.Addr())
	pc := proposalClient(ta, "")

	st, err := ic.Status(ctx, connect.NewRequest(&taskerv1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Msg.GetApprovalRequired() || st.Msg.GetModelConfigured() || st.Msg.GetModel() != "" {
		t.Fatalf("status %+v", st.Msg)
	}

	_, err = ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick}))
	wantCode(t, "apply with approvals required", err, connect.CodeFailedPrecondition, "approvals are required on this cluster (approval_required): file the manifest as a proposal")
	dry, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick, ValidateOnly: true}))
	if err != nil || len(dry.Msg.GetProblems()) != 0 {
		t.Fatalf("dry run: %v %v", dry, err)
	}

	cr, err := pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "create_workflow", Workflow: "quick", Manifest: quick}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: cr.Msg.GetProposal().GetId()})); err != nil {
		t.Fatal(err)
	}
	if _, err := ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick"})); err != nil {
		t.Fatal(err)
	}
	// The same content again changes nothing: accepted.
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick})); err != nil {
		t.Fatalf("re-apply identical: %v", err)
	}
	next := strings.Replace(quick, "version: 1.0.0", "version: 1.1.0", 1)
	if next == quick {
		t.Fatal("quick has no version: 1.0.0")
	}
	_, err = ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: next}))
	wantCode(t, "apply a new version", err, connect.CodeFailedPrecondition, "approval_required")
	ur, err := pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "update_workflow", Workflow: "quick", Manifest: next}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: ur.Msg.GetProposal().GetId()})); err != nil {
		t.Fatal(err)
	}
	gw, err := ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick"}))
	if err != nil || gw.Msg.GetWorkflow().GetVersion() == "1.0.0" {
		t.Fatalf("after the update: %v %v", gw, err)
	}
}
