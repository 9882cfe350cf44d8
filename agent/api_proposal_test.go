package agent

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkclient "github.com/tasker-run/tasker/sdk/go/client"
)

func proposalClient(ta *testAgent, secret string) taskerv1connect.ProposalServiceClient {
	var opts []connect.ClientOption
	if secret != "" {
		opts = append(opts, connect.WithInterceptors(sdkclient.BearerToken(secret)))
	}
	return taskerv1connect.NewProposalServiceClient(h2c(), ta.Addr(), opts...)
}

// startVersion starts a quick task without a version and returns the
// version it got.
func startVersion(t *testing.T, ta *testAgent) (id, version string) {
	t.Helper()
	r, err := ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n": 1}`}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetTask().GetId(), r.Msg.GetTask().GetVersion()
}

// TestProposalApproveAndRollback: a proposed timeout change is a new
// version only once approved; approving makes it the version new tasks
// get, rolling back makes the base that again, and tasks keep theirs.
func TestProposalApproveAndRollback(t *testing.T) {
	ctx := context.Background()
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	pc := proposalClient(ta, "")

	cr, err := pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{
		Action: "change_timeout", Workflow: "quick", Step: "second", Params: map[string]string{"timeout": "45s"},
		EvidenceJson: `{"finding":{"class":"timeout"}}`, Source: "rules", Confidence: 0.7,
	}))
	if err != nil {
		t.Fatal(err)
	}
	p := cr.Msg.GetProposal()
	if p.GetId() != "p-1" || p.GetState() != "pending" || p.GetKind() != "workflow_change" || p.GetBaseVersion() != "1.0.0" ||
		p.GetNewVersion() != "1.0.1-ai.1" || p.GetCreatedBy() != "anonymous" || !strings.Contains(p.GetUndo(), "re-activate version 1.0.0") {
		t.Fatalf("created %+v", p)
	}
	for _, w := range []string{"-version: 1.0.0", "+version: 1.0.1-ai.1", "+    timeout: 45s"} {
		if !strings.Contains(p.GetDiff(), w+"\n") {
			t.Errorf("diff lacks %q:\n%s", w, p.GetDiff())
		}
	}
	if _, v := startVersion(t, ta); v != "1.0.0" {
		t.Fatalf("before approval a task got %s", v)
	}

	ar, err := pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: "p-1", Reason: "timeouts seen"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := ar.Msg.GetProposal(); got.GetState() != "applied" || len(got.GetHistory()) != 3 || got.GetHistory()[1].GetReason() != "timeouts seen" {
		t.Fatalf("approved %+v", got)
	}
	gw, err := ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick"}))
	if err != nil {
		t.Fatal(err)
	}
	if w := gw.Msg.GetWorkflow(); w.GetVersion() != "1.0.1-ai.1" || w.GetActiveVersion() != "1.0.1-ai.1" || !w.GetPinned() || w.GetSteps()[1].GetTimeout().AsDuration().String() != "45s" {
		t.Fatalf("workflow after approval %+v", w)
	}
	during, v := startVersion(t, ta)
	if v != "1.0.1-ai.1" {
		t.Fatalf("after approval a task got %s", v)
	}
	_, err = pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: "p-1"}))
	wantCode(t, "approve twice", err, connect.CodeFailedPrecondition, "is applied", "only a pending proposal")

	rr, err := pc.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: "p-1", Reason: "slower"}))
	if err != nil {
		t.Fatal(err)
	}
	if rr.Msg.GetProposal().GetState() != "rolled_back" {
		t.Fatalf("rolled back %+v", rr.Msg.GetProposal())
	}
	if _, v := startVersion(t, ta); v != "1.0.0" {
		t.Fatalf("after rollback a task got %s", v)
	}
	if tk, err := ta.wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: during})); err != nil || tk.Msg.GetTask().GetVersion() != "1.0.1-ai.1" {
		t.Fatalf("a task started before the rollback changed version: %v %v", tk, err)
	}
	lw, err := ta.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	if err != nil || lw.Msg.GetWorkflows()[0].GetActiveVersion() != "1.0.0" || lw.Msg.GetWorkflows()[0].GetVersion() != "1.0.1-ai.1" {
		t.Fatalf("list after rollback %+v %v", lw, err)
	}
	_, err = pc.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: "p-1"}))
	wantCode(t, "roll back twice", err, connect.CodeFailedPrecondition, "is rolled_back")

	// Operations.
	task, _ := startVersion(t, ta)
	_, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "retry_step", TaskId: task, Step: "nope"}))
	wantCode(t, "retry of an unknown step", err, connect.CodeNotFound, `step "nope"`)
	cr, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "retry_step", TaskId: task, Step: "first"}))
	if err != nil {
		t.Fatal(err)
	}
	retry := cr.Msg.GetProposal().GetId()
	_, err = pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: retry}))
	wantCode(t, "retry of a step that did not fail", err, connect.CodeFailedPrecondition, "could not be applied", "marked failed")
	if g, _ := pc.GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: retry})); g.Msg.GetProposal().GetState() != "failed" {
		t.Fatalf("a proposal that could not be applied is %s", g.Msg.GetProposal().GetState())
	}

	cr, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "escalate", TaskId: task, Summary: "needs a person"}))
	if err != nil {
		t.Fatal(err)
	}
	esc := cr.Msg.GetProposal().GetId()
	ar, err = pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: esc}))
	if err != nil || ar.Msg.GetProposal().GetState() != "applied" || ar.Msg.GetProposal().GetHistory()[2].GetReason() != "escalated to a human" {
		t.Fatalf("escalate: %+v %v", ar, err)
	}
	_, err = pc.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: esc}))
	wantCode(t, "roll back an operation", err, connect.CodeFailedPrecondition, "cannot be rolled back", "nothing to undo")

	cr, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "cancel", TaskId: task}))
	if err != nil {
		t.Fatal(err)
	}
	cancel := cr.Msg.GetProposal().GetId()
	_, err = pc.RejectProposal(ctx, connect.NewRequest(&taskerv1.RejectProposalRequest{Id: cancel}))
	wantCode(t, "reject without a reason", err, connect.CodeInvalidArgument, "reason")
	if _, err := pc.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: cancel})); err != nil {
		t.Fatal(err)
	}
	waitTask(t, ta, task, taskerv1.TaskState_TASK_STATE_CANCELLED)

	cr, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "change_retry_policy", Workflow: "quick", Params: map[string]string{"step": "first", "max_attempts": "5"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cr.Msg.GetProposal(); got.GetNewVersion() != "1.0.1-ai.2" || !strings.Contains(got.GetDiff(), "+    retry: {max_attempts: 5, backoff") {
		t.Fatalf("retry policy proposal %s:\n%s", got.GetNewVersion(), got.GetDiff())
	}
	if _, err := pc.RejectProposal(ctx, connect.NewRequest(&taskerv1.RejectProposalRequest{Id: cr.Msg.GetProposal().GetId(), Reason: "not now"})); err != nil {
		t.Fatal(err)
	}
	_, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "change_timeout", Workflow: "quick", Step: "first", Params: map[string]string{"timeout": "soon"}}))
	wantCode(t, "a bad timeout", err, connect.CodeInvalidArgument, "params.timeout", `"soon"`)
	_, err = pc.CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{Action: "reboot"}))
	wantCode(t, "an unknown action", err, connect.CodeInvalidArgument, "action", "change_timeout")

	lr, err := pc.ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{Workflow: "quick"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range lr.Msg.GetProposals() {
		got = append(got, p.GetId()+":"+p.GetState())
		if p.GetManifest() != "" {
			t.Error("a listed proposal carries its manifest")
		}
	}
	if want := "p-5:rejected p-4:applied p-3:applied p-2:failed p-1:rolled_back"; strings.Join(got, " ") != want {
		t.Fatalf("list %v, want %s", got, want)
	}
	lr, err = pc.ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{State: "applied", Limit: 1}))
	if err != nil || len(lr.Msg.GetProposals()) != 1 || lr.Msg.GetProposals()[0].GetId() != "p-4" {
		t.Fatalf("filtered list %+v %v", lr, err)
	}
	_, err = pc.ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{State: "done"}))
	wantCode(t, "an unknown state", err, connect.CodeInvalidArgument, "state", "pending")
}

// TestProposalACL: reading proposals needs read access, filing one write
// access, deciding operator access; the history names the token.
func TestProposalACL(t *testing.T) {
	ctx := context.Background()
	srv := startAgent(t, t.TempDir(), withACL)
	applyQuick(t, as(srv, testMgmtToken))
	reader := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "reader"})
	writer := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "writer"})
	create := &taskerv1.CreateProposalRequest{Action: "change_timeout", Workflow: "quick", Step: "first", Params: map[string]string{"timeout": "1s"}}

	_, err := proposalClient(srv, reader).CreateProposal(ctx, connect.NewRequest(create))
	wantCode(t, "create with a reader token", err, connect.CodePermissionDenied, "policy reader", "write access")
	cr, err := proposalClient(srv, writer).CreateProposal(ctx, connect.NewRequest(create))
	if err != nil {
		t.Fatal(err)
	}
	if by := cr.Msg.GetProposal().GetCreatedBy(); by == "anonymous" || by == "" {
		t.Fatalf("created by %q", by)
	}
	if _, err := proposalClient(srv, reader).ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{})); err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{"reader": reader, "writer": writer} {
		_, err = proposalClient(srv, secret).ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: "p-1"}))
		wantCode(t, "approve with a "+name+" token", err, connect.CodePermissionDenied, "policy "+name, "operator access")
	}
	ar, err := proposalClient(srv, testMgmtToken).ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: "p-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if h := ar.Msg.GetProposal().GetHistory(); h[1].GetBy() != "initial-management" || h[2].GetBy() != "initial-management" {
		t.Fatalf("history %+v", h)
	}
}

// TestProposalsThroughAClientAgent: a client agent holds no state; its
// ProposalService calls are answered by the leader, with the caller's
// token checked there too.
func TestProposalsThroughAClientAgent(t *testing.T) {
	ctx := context.Background()
	srv := startAgent(t, t.TempDir(), withACL)
	applyQuick(t, as(srv, testMgmtToken))
	writer := createToken(t, srv, &taskerv1.CreateTokenRequest{Policy: "writer"})
	cli := startClientAgent(t, "c1", srv, withACL)

	cr, err := proposalClient(cli, writer).CreateProposal(ctx, connect.NewRequest(&taskerv1.CreateProposalRequest{
		Action: "change_retry_policy", Workflow: "quick", Step: "second", Params: map[string]string{"max_attempts": "2"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := cr.Msg.GetProposal().GetId()
	_, err = proposalClient(cli, writer).ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: id}))
	wantCode(t, "approve with a writer token through a client agent", err, connect.CodePermissionDenied, "operator access")
	if _, err := proposalClient(cli, testMgmtToken).ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	g, err := proposalClient(cli, writer).GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: id}))
	if err != nil || g.Msg.GetProposal().GetState() != "applied" {
		t.Fatalf("get through the client agent: %v %v", g, err)
	}
	gw, err := as(cli, writer).wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick"}))
	if err != nil || gw.Msg.GetWorkflow().GetActiveVersion() != "1.0.1-ai.1" || gw.Msg.GetWorkflow().GetSteps()[1].GetMaxAttempts() != 2 {
		t.Fatalf("workflow through the client agent: %v %v", gw, err)
	}
}
