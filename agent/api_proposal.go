package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/workflow"
)

// proposalAPI serves ProposalService (docs/proposals.md). Approving a
// proposal and applying it commit as one atomic Batch, so a proposal is
// never approved without its change, nor a change made without its
// approval on record. Proposals are not tasks, so their transitions are
// not lifecycle events on the bus: each is logged, and kept in the
// proposal's history.
type proposalAPI struct{ a *Agent }

var _ taskerv1connect.ProposalServiceHandler = (*proposalAPI)(nil)

// versionTag marks the versions proposals create: 1.2.1-ai.1.
const versionTag = "ai"

// by names who makes a call: the accessor id of its ACL token, or
// "anonymous" when ACLs are off.
func by(ctx context.Context) string {
	if c := callerOf(ctx); c != nil && c.tok != nil {
		return c.tok.AccessorID
	}
	return "anonymous"
}

func (s *proposalAPI) CreateProposal(ctx context.Context, req *connect.Request[taskerv1.CreateProposalRequest]) (*connect.Response[taskerv1.CreateProposalResponse], error) {
	out, err := s.create(ctx, req.Msg, by(ctx), false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.CreateProposalResponse{Proposal: pbProposal(out, true)}), nil
}

// create files a proposal on behalf of who; auto marks one the healing
// policy files to apply itself.
func (s *proposalAPI) create(ctx context.Context, r *taskerv1.CreateProposalRequest, who string, auto bool) (*consensus.Proposal, error) {
	if err := required("action", r.GetAction()); err != nil {
		return nil, err
	}
	kind, ok := consensus.ProposalKind(r.GetAction())
	if !ok {
		return nil, invalid("action", "%q is unknown: use one of retry_step, reroute, resolve_manually, cancel, escalate (operations) or change_timeout, change_retry_policy, optimize_dependencies, create_workflow, update_workflow (workflow changes)", r.GetAction())
	}
	source := r.GetSource()
	if source == "" {
		source = "user"
	}
	if !slices.Contains(consensus.ProposalSources, source) {
		return nil, invalid("source", "%q is unknown: use one of %v", source, consensus.ProposalSources)
	}
	if c := r.GetConfidence(); c < 0 || c > 1 {
		return nil, invalid("confidence", "%v is out of range: use 0 to 1", c)
	}
	if err := checkSize("manifest", r.GetManifest(), s.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	p := &fsmv1.Proposal{
		Kind: kind, Action: r.GetAction(), Title: r.GetTitle(), Summary: r.GetSummary(), Namespace: nsOrDefault(r.GetNamespace()),
		Workflow: r.GetWorkflow(), TaskId: r.GetTaskId(), Step: r.GetStep(), Params: r.GetParams(), EvidenceJson: r.GetEvidenceJson(),
		Source: source, Confidence: r.GetConfidence(), CreatedBy: who, Auto: auto,
	}
	if kind == consensus.ProposalWorkflowChange {
		if err := s.workflowChange(r, p); err != nil {
			return nil, err
		}
	}
	if p.Title == "" {
		p.Title = defaultTitle(p)
	}
	res, err := s.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_PutProposal{PutProposal: &fsmv1.PutProposal{Proposal: p}}})
	if errors.Is(err, consensus.ErrLimit) {
		return nil, exhausted(limitProposals, err)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	out, err := s.a.state.ProposalByID(res.ProposalID)
	if err != nil {
		return nil, toConnect(err)
	}
	s.a.log.InfoContext(ctx, "proposal created", "proposal", out.ID, "action", out.Action, "workflow", out.Workflow, "task_id", out.TaskID, "by", out.CreatedBy, "auto", out.Auto)
	s.a.events.recordProposal(out, eventProposalCreated, who, out.Summary, s.a.now())
	return out, nil
}

// workflowChange fills in a workflow change's manifest, versions and diff:
// from the full manifest given, or by editing the base version's for
// change_timeout and change_retry_policy.
func (s *proposalAPI) workflowChange(r *taskerv1.CreateProposalRequest, p *fsmv1.Proposal) error {
	if err := required("workflow", r.GetWorkflow()); err != nil {
		return err
	}
	if r.GetAction() == consensus.ActionCreateWorkflow {
		return s.createWorkflow(r, p)
	}
	base, err := s.a.state.Workflow(p.Namespace, p.Workflow, r.GetBaseVersion())
	if err != nil {
		return toConnect(err)
	}
	p.BaseVersion = base.Version
	next := r.GetNewVersion()
	if next == "" {
		next = insight.NextVersion(base.Version, base.Versions, versionTag)
	}
	step := r.GetStep()
	if step == "" {
		step = r.GetParams()["step"]
	}
	var manifest []byte
	switch {
	case r.GetManifest() != "":
		plan, err := workflow.Load([]byte(r.GetManifest()), fsmLimits())
		if err != nil {
			return toConnect(err)
		}
		manifest = []byte(r.GetManifest())
		if plan.Version == base.Version || r.GetNewVersion() != "" && plan.Version != r.GetNewVersion() {
			if manifest, err = insight.SetVersion(manifest, next); err != nil {
				return invalid("manifest", "cannot set its version to %s: %v", next, err)
			}
		}
	case r.GetAction() == "change_timeout":
		d, err := time.ParseDuration(r.GetParams()["timeout"])
		if err != nil || d <= 0 {
			return invalid("params.timeout", "%q is not a positive duration: write a number and a unit, such as 30s or 5m", r.GetParams()["timeout"])
		}
		if manifest, _, err = insight.ChangeStep([]byte(base.Manifest), next, insight.StepChange{Step: step, Timeout: d}); err != nil {
			return invalid("step", "%v", err)
		}
	case r.GetAction() == "change_retry_policy":
		n, err := strconv.Atoi(r.GetParams()["max_attempts"])
		if err != nil || n < 1 {
			return invalid("params.max_attempts", "%q is not a whole number of at least 1", r.GetParams()["max_attempts"])
		}
		if manifest, _, err = insight.ChangeStep([]byte(base.Manifest), next, insight.StepChange{Step: step, MaxAttempts: n}); err != nil {
			return invalid("step", "%v", err)
		}
	default:
		return invalid("manifest", "a %s proposal carries the proposed manifest", r.GetAction())
	}
	plan, err := workflow.Load(manifest, fsmLimits())
	if err != nil {
		return toConnect(fmt.Errorf("the proposed manifest: %w", err))
	}
	if err := s.a.checkWorkflow(plan); err != nil {
		return err
	}
	p.Step = step
	p.Manifest, p.NewVersion = string(manifest), plan.Version
	p.Diff = insight.Diff([]byte(base.Manifest), manifest)
	return nil
}

// createWorkflow fills in a create_workflow proposal: the first version
// of a workflow that does not exist yet, so no base, and a diff that adds
// the whole manifest.
func (s *proposalAPI) createWorkflow(r *taskerv1.CreateProposalRequest, p *fsmv1.Proposal) error {
	if r.GetBaseVersion() != "" {
		return invalid("base_version", "a create_workflow proposal has none (it is the first version); use update_workflow to propose a new version of %s/%s", p.Namespace, p.Workflow)
	}
	if err := required("manifest", r.GetManifest()); err != nil {
		return err
	}
	if _, err := s.a.state.Workflow(p.Namespace, p.Workflow, ""); err == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"workflow %s/%s exists: propose a new version of it (update_workflow) rather than create_workflow", p.Namespace, p.Workflow))
	}
	plan, err := workflow.Load([]byte(r.GetManifest()), fsmLimits())
	if err != nil {
		return toConnect(fmt.Errorf("the proposed manifest: %w", err))
	}
	if plan.Namespace != p.Namespace || plan.Name != p.Workflow {
		return invalid("manifest", "is workflow %s/%s, not %s/%s: name the workflow the manifest defines", plan.Namespace, plan.Name, p.Namespace, p.Workflow)
	}
	if v := r.GetNewVersion(); v != "" && v != plan.Version {
		return invalid("new_version", "%s is not the manifest's version %s: leave it empty, or set the manifest's", v, plan.Version)
	}
	if err := s.a.checkWorkflow(plan); err != nil {
		return err
	}
	p.Manifest, p.NewVersion = r.GetManifest(), plan.Version
	p.Diff = insight.Diff(nil, []byte(r.GetManifest()))
	return nil
}

func defaultTitle(p *fsmv1.Proposal) string {
	switch {
	case p.GetAction() == consensus.ActionCreateWorkflow:
		return fmt.Sprintf("%s: %s/%s %s", p.GetAction(), p.GetNamespace(), p.GetWorkflow(), p.GetNewVersion())
	case p.GetKind() == consensus.ProposalWorkflowChange && p.GetStep() != "":
		return fmt.Sprintf("%s of step %s: %s %s → %s", p.GetAction(), p.GetStep(), p.GetWorkflow(), p.GetBaseVersion(), p.GetNewVersion())
	case p.GetKind() == consensus.ProposalWorkflowChange:
		return fmt.Sprintf("%s: %s %s → %s", p.GetAction(), p.GetWorkflow(), p.GetBaseVersion(), p.GetNewVersion())
	case p.GetStep() != "":
		return fmt.Sprintf("%s step %s of task %s", p.GetAction(), p.GetStep(), p.GetTaskId())
	}
	return fmt.Sprintf("%s task %s", p.GetAction(), p.GetTaskId())
}

func (s *proposalAPI) ListProposals(_ context.Context, req *connect.Request[taskerv1.ListProposalsRequest]) (*connect.Response[taskerv1.ListProposalsResponse], error) {
	r := req.Msg
	f := consensus.ProposalFilter{State: r.GetState(), Namespace: r.GetNamespace(), Workflow: r.GetWorkflow(), Limit: int(r.GetLimit())}
	switch {
	case f.Limit < 0 || f.Limit > 1000:
		return nil, invalid("limit", "%d is out of range: use 1 to 1000 (0 means 100)", f.Limit)
	case f.Limit == 0:
		f.Limit = 100
	}
	states := []string{consensus.ProposalPending, consensus.ProposalApproved, consensus.ProposalRejected, consensus.ProposalApplied, consensus.ProposalRolledBack, consensus.ProposalFailed}
	if f.State != "" && !slices.Contains(states, f.State) {
		return nil, invalid("state", "%q is unknown: use one of %v", f.State, states)
	}
	out := &taskerv1.ListProposalsResponse{}
	for _, p := range s.a.state.Proposals(f) {
		out.Proposals = append(out.Proposals, pbProposal(p, false))
	}
	return connect.NewResponse(out), nil
}

func (s *proposalAPI) GetProposal(_ context.Context, req *connect.Request[taskerv1.GetProposalRequest]) (*connect.Response[taskerv1.GetProposalResponse], error) {
	if err := required("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	p, err := s.a.state.ProposalByID(req.Msg.GetId())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.GetProposalResponse{Proposal: pbProposal(p, true)}), nil
}

// find finds a proposal that must be in state want to be doing.
func (s *proposalAPI) find(id, want, doing string) (*consensus.Proposal, error) {
	if err := required("id", id); err != nil {
		return nil, err
	}
	p, err := s.a.state.ProposalByID(id)
	if err != nil {
		return nil, toConnect(err)
	}
	if p.State != want {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("proposal %s is %s: only a %s proposal can be %s", id, p.State, want, doing))
	}
	return p, nil
}

func (s *proposalAPI) ApproveProposal(ctx context.Context, req *connect.Request[taskerv1.ApproveProposalRequest]) (*connect.Response[taskerv1.ApproveProposalResponse], error) {
	if err := s.approve(ctx, req.Msg, by(ctx)); err != nil {
		return nil, err
	}
	return respondProposal(s.a, req.Msg.GetId(), func(pp *taskerv1.Proposal) *connect.Response[taskerv1.ApproveProposalResponse] {
		return connect.NewResponse(&taskerv1.ApproveProposalResponse{Proposal: pp})
	})
}

// approve approves a pending proposal on behalf of who and applies it, in
// one atomic batch.
func (s *proposalAPI) approve(ctx context.Context, r *taskerv1.ApproveProposalRequest, who string) error {
	p, err := s.find(r.GetId(), consensus.ProposalPending, "approved")
	if err != nil {
		return err
	}
	decide := &fsmv1.Command{Kind: &fsmv1.Command_DecideProposal{DecideProposal: &fsmv1.DecideProposal{Id: p.ID, Decision: consensus.ProposalApproved, By: who, Reason: r.GetReason()}}}
	why := "proposal " + p.ID
	var act []*fsmv1.Command
	note := ""
	switch p.Action {
	case "retry_step", "reroute":
		act = append(act, &fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: p.TaskID, Step: p.Step, Reason: why}}})
		note = "step " + p.Step + " of task " + p.TaskID + " retried"
		if p.Action == "reroute" {
			note += "; the scheduler picks the agent (the failed one is not excluded)"
		}
	case "resolve_manually":
		if r.GetResultJson() == "" {
			return invalid("result_json", "resolve_manually needs the step's result, as JSON satisfying its result_schema")
		}
		if err := checkSize("result_json", r.GetResultJson(), s.a.cfg.MaxPayloadBytes); err != nil {
			return err
		}
		if err := s.a.checkResult(p.TaskID, p.Step, r.GetResultJson()); err != nil {
			return err
		}
		act = append(act, &fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{TaskId: p.TaskID, Step: p.Step, ResultJson: r.GetResultJson(), Reason: why}}})
		note = "step " + p.Step + " of task " + p.TaskID + " resolved by hand"
	case "cancel":
		act = append(act, &fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: p.TaskID, Reason: why}}})
		note = "task " + p.TaskID + " cancelled"
	case "escalate":
		note = "escalated to a human"
	default: // a workflow change
		if v, err := s.a.state.Workflow(p.Namespace, p.Workflow, p.NewVersion); err == nil && v.Manifest != p.Manifest {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"%s/%s version %s was applied since proposal %s was made, with other content: reject the proposal and propose again", p.Namespace, p.Workflow, p.NewVersion, p.ID))
		}
		act = append(act,
			&fsmv1.Command{Kind: &fsmv1.Command_PutWorkflow{PutWorkflow: &fsmv1.PutWorkflow{Manifest: p.Manifest}}},
			&fsmv1.Command{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Namespace: p.Namespace, Workflow: p.Workflow, Version: p.NewVersion}}})
		note = "version " + p.NewVersion + " is active"
	}
	mark := &fsmv1.Command{Kind: &fsmv1.Command_MarkProposal{MarkProposal: &fsmv1.MarkProposal{Id: p.ID, State: consensus.ProposalApplied, By: who, Reason: note}}}
	cmds := append(append([]*fsmv1.Command{decide}, act...), mark)
	res, err := s.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: cmds, Atomic: true}}})
	if err != nil {
		if res == nil || len(res.Batch) == 0 || res.Batch[0].Err != nil {
			return proposalError(err)
		}
		// Approved, but its change was refused (the step no longer failed,
		// the task ended): the atomic batch changed nothing, and the
		// proposal is recorded as approved and failed, with why, rather
		// than left pending for a change that cannot be made.
		s.a.log.WarnContext(ctx, "proposal could not be applied", "proposal", p.ID, "by", who, "err", err)
		fail := []*fsmv1.Command{decide, {Kind: &fsmv1.Command_MarkProposal{MarkProposal: &fsmv1.MarkProposal{Id: p.ID, State: consensus.ProposalFailed, By: who, Reason: truncate(err.Error(), 1000)}}}}
		if _, ferr := s.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: fail, Atomic: true}}}); ferr != nil {
			return proposalError(ferr)
		}
		s.noteTransition(p.ID, eventProposalFailed, who, err.Error())
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("proposal %s was approved but could not be applied, and is marked failed: %w", p.ID, err))
	}
	s.a.log.InfoContext(ctx, "proposal approved and applied", "proposal", p.ID, "action", p.Action, "by", who, "note", note)
	s.noteTransition(p.ID, eventProposalApplied, who, r.GetReason())
	return nil
}

func (s *proposalAPI) RejectProposal(ctx context.Context, req *connect.Request[taskerv1.RejectProposalRequest]) (*connect.Response[taskerv1.RejectProposalResponse], error) {
	if err := required("reason", req.Msg.GetReason()); err != nil {
		return nil, err
	}
	p, err := s.find(req.Msg.GetId(), consensus.ProposalPending, "rejected")
	if err != nil {
		return nil, err
	}
	who := by(ctx)
	if _, err := s.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_DecideProposal{DecideProposal: &fsmv1.DecideProposal{
		Id: p.ID, Decision: consensus.ProposalRejected, By: who, Reason: req.Msg.GetReason(),
	}}}); err != nil {
		return nil, proposalError(err)
	}
	s.a.log.InfoContext(ctx, "proposal rejected", "proposal", p.ID, "by", who, "reason", req.Msg.GetReason())
	s.noteTransition(p.ID, eventProposalRejected, who, req.Msg.GetReason())
	return respondProposal(s.a, p.ID, func(pp *taskerv1.Proposal) *connect.Response[taskerv1.RejectProposalResponse] {
		return connect.NewResponse(&taskerv1.RejectProposalResponse{Proposal: pp})
	})
}

func (s *proposalAPI) RollbackProposal(ctx context.Context, req *connect.Request[taskerv1.RollbackProposalRequest]) (*connect.Response[taskerv1.RollbackProposalResponse], error) {
	p, err := s.find(req.Msg.GetId(), consensus.ProposalApplied, "rolled back")
	if err != nil {
		return nil, err
	}
	if p.Kind != consensus.ProposalWorkflowChange {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("proposal %s is an operation (%s), which cannot be rolled back: %s", p.ID, p.Action, p.Undo))
	}
	if p.Action == consensus.ActionCreateWorkflow {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("proposal %s created workflow %s/%s, which cannot be rolled back: %s",
			p.ID, p.Namespace, p.Workflow, consensus.CreateWorkflowUndo))
	}
	cur, err := s.a.state.Workflow(p.Namespace, p.Workflow, "")
	if err != nil {
		return nil, toConnect(err)
	}
	if cur.Active != p.NewVersion {
		// Pinning the base again would silently replace what the operator
		// put in place since.
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"%s/%s is now at version %s, not %s, which proposal %s made active: a later change replaced it, so rolling back would undo that one too; apply the version you want instead",
			p.Namespace, p.Workflow, cur.Active, p.NewVersion, p.ID))
	}
	who := by(ctx)
	reason := req.Msg.GetReason()
	if reason == "" {
		reason = "version " + p.BaseVersion + " is active again"
	}
	cmds := []*fsmv1.Command{
		{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Namespace: p.Namespace, Workflow: p.Workflow, Version: p.BaseVersion}}},
		{Kind: &fsmv1.Command_MarkProposal{MarkProposal: &fsmv1.MarkProposal{Id: p.ID, State: consensus.ProposalRolledBack, By: who, Reason: reason}}},
	}
	if _, err := s.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: cmds, Atomic: true}}}); err != nil {
		return nil, proposalError(err)
	}
	s.a.log.InfoContext(ctx, "proposal rolled back", "proposal", p.ID, "by", who, "active_version", p.BaseVersion)
	s.noteTransition(p.ID, eventProposalRolledBack, who, reason)
	return respondProposal(s.a, p.ID, func(pp *taskerv1.Proposal) *connect.Response[taskerv1.RollbackProposalResponse] {
		return connect.NewResponse(&taskerv1.RollbackProposalResponse{Proposal: pp})
	})
}

// noteTransition records a committed transition as an event.
func (s *proposalAPI) noteTransition(id, typ, who, reason string) {
	if p, err := s.a.state.ProposalByID(id); err == nil {
		s.a.events.recordProposal(p, typ, who, reason, s.a.now())
	}
}

// respondProposal reads the proposal back after a commit.
func respondProposal[T any](a *Agent, id string, wrap func(*taskerv1.Proposal) *connect.Response[T]) (*connect.Response[T], error) {
	p, err := a.state.ProposalByID(id)
	if err != nil {
		return nil, toConnect(err)
	}
	return wrap(pbProposal(p, true)), nil
}

// proposalError maps a refused proposal command: an illegal transition
// (another operator decided first) is a precondition, not bad input.
func proposalError(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) && errors.Is(err, consensus.ErrInvalid) {
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return toConnect(err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// pbProposal converts a proposal; lists leave out the manifest and diff.
func pbProposal(p *consensus.Proposal, full bool) *taskerv1.Proposal {
	out := &taskerv1.Proposal{
		Id: p.ID, Kind: p.Kind, Action: p.Action, Title: p.Title, Summary: p.Summary, Namespace: p.Namespace, Workflow: p.Workflow,
		BaseVersion: p.BaseVersion, NewVersion: p.NewVersion, TaskId: p.TaskID, Step: p.Step, Params: p.Params,
		EvidenceJson: p.EvidenceJSON, Source: p.Source, Confidence: p.Confidence, State: p.State, Undo: p.Undo, Auto: p.Auto,
		CreatedAt: pbTime(p.CreatedAt), CreatedBy: p.CreatedBy,
	}
	if full {
		out.Manifest, out.Diff = p.Manifest, p.Diff
	}
	for _, h := range p.History {
		out.History = append(out.History, &taskerv1.ProposalTransition{State: h.State, By: h.By, At: pbTime(h.At), Reason: h.Reason})
	}
	return out
}
