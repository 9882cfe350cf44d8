package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func aiProposalsCommand() command {
	return group("ai proposals", "review, approve, reject and roll back proposed changes", `
Proposals are changes waiting for an operator (docs/proposals.md): a new
workflow version (change_timeout, change_retry_policy, or the dependency
optimizer's optimize_dependencies, filed by 'tasker ai optimize -propose')
or an operation on a task (retry_step, reroute, resolve_manually, cancel,
escalate). Nothing is applied until a management token approves it.
Approving a workflow change stores the new version and makes it the one
tasks started without a version get; rolling it back makes the base
version that again. Tasks keep the version they started with.
`, aiProposalsListCommand(), aiProposalsShowCommand(), aiProposalsApproveCommand(), aiProposalsRejectCommand(), aiProposalsRollbackCommand())
}

const aiProposalsListUsage = `
Usage: tasker ai proposals list [-state S] [-workflow [NAMESPACE/]W] [-limit N] [-addr URL] [-o table|json]

Lists proposals, newest first: ID STATE ACTION WORKFLOW TARGET SOURCE
CREATED TITLE. TARGET is BASE -> NEW version for a workflow change, the
task (and step) for an operation. -state keeps one state: pending,
approved, rejected, applied, rolled_back or failed.
` + apiFlagsHelp + apiExit

func aiProposalsListCommand() command {
	return command{name: "ai proposals list", synopsis: "list proposals, newest first", usage: aiProposalsListUsage, run: runAIProposalsList}
}

func runAIProposalsList(args []string, stdout, stderr io.Writer) int {
	c := aiProposalsListCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	state := fs.String("state", "", "only proposals in state `S`")
	wf := fs.String("workflow", "", "only proposals about workflow `W` (NAMESPACE/NAME or NAME)")
	limit := fs.Int("limit", 100, "at most `N` proposals, 1 to 1000")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *limit < 1 || *limit > 1000 {
		return usageError(stderr, c, "-limit %d is out of range: use 1 to 1000", *limit)
	}
	req := &taskerv1.ListProposalsRequest{State: *state, Limit: int32(*limit)}
	if *wf != "" {
		if ns, name, found := strings.Cut(*wf, "/"); found {
			req.Namespace, req.Workflow = ns, name
		} else {
			req.Workflow = *wf
		}
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.proposals.ListProposals(ctx, connect.NewRequest(req))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	if len(resp.Msg.GetProposals()) == 0 {
		fmt.Fprintln(stderr, "no proposals")
		return exitOK
	}
	tw := table(stdout)
	row(tw, "ID", "STATE", "ACTION", "WORKFLOW", "TARGET", "SOURCE", "CREATED", "TITLE")
	for _, p := range resp.Msg.GetProposals() {
		row(tw, p.GetId(), p.GetState(), p.GetAction(), dash(workflowName(p.GetNamespace(), p.GetWorkflow())), proposalTarget(p), p.GetSource(), timestamp(p.GetCreatedAt()), p.GetTitle())
	}
	tw.Flush()
	return exitOK
}

func proposalTarget(p *taskerv1.Proposal) string {
	switch {
	case p.GetKind() == "workflow_change":
		return p.GetBaseVersion() + " -> " + p.GetNewVersion()
	case p.GetStep() != "":
		return p.GetTaskId() + "/" + p.GetStep()
	}
	return dash(p.GetTaskId())
}

const aiProposalsShowUsage = `
Usage: tasker ai proposals show ID [-addr URL] [-o table|json]

Shows a proposal: what it changes and why, how to undo it, its history
(who created, approved or rejected, applied or rolled it back, when and
why), the evidence it rests on, and for a workflow change the diff from
the base version's manifest.
` + apiFlagsHelp + apiExit

func aiProposalsShowCommand() command {
	return command{name: "ai proposals show", synopsis: "show a proposal with its diff, evidence and history", usage: aiProposalsShowUsage, run: runAIProposalsShow}
}

func runAIProposalsShow(args []string, stdout, stderr io.Writer) int {
	c := aiProposalsShowCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one proposal ID, got %d", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.proposals.GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: pos[0]}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	writeProposal(stdout, resp.Msg.GetProposal())
	return exitOK
}

func writeProposal(w io.Writer, p *taskerv1.Proposal) {
	tw := table(w)
	row(tw, "Proposal:", p.GetId())
	row(tw, "Title:", dash(p.GetTitle()))
	row(tw, "State:", p.GetState())
	row(tw, "Action:", p.GetAction()+" ("+strings.ReplaceAll(p.GetKind(), "_", " ")+")")
	row(tw, "Workflow:", dash(workflowName(p.GetNamespace(), p.GetWorkflow())))
	if p.GetKind() == "workflow_change" {
		row(tw, "Versions:", p.GetBaseVersion()+" -> "+p.GetNewVersion())
	} else {
		row(tw, "Target:", proposalTarget(p))
	}
	for _, k := range slices.Sorted(maps.Keys(p.GetParams())) {
		row(tw, "Param "+k+":", p.GetParams()[k])
	}
	row(tw, "Source:", fmt.Sprintf("%s (confidence %.2f)", p.GetSource(), p.GetConfidence()))
	row(tw, "Created:", timestamp(p.GetCreatedAt())+" by "+dash(p.GetCreatedBy()))
	row(tw, "Undo:", dash(p.GetUndo()))
	row(tw, "Summary:", dash(p.GetSummary()))
	tw.Flush()
	fmt.Fprintln(w)
	tw = table(w)
	row(tw, "AT", "STATE", "BY", "REASON")
	for _, h := range p.GetHistory() {
		row(tw, timestamp(h.GetAt()), h.GetState(), dash(h.GetBy()), dash(h.GetReason()))
	}
	tw.Flush()
	if e := p.GetEvidenceJson(); e != "" {
		fmt.Fprintln(w, "\nEvidence:")
		var b bytes.Buffer
		if json.Indent(&b, []byte(e), "  ", "  ") == nil {
			e = b.String()
		}
		fmt.Fprintln(w, "  "+e)
	}
	if d := p.GetDiff(); d != "" {
		fmt.Fprintln(w, "\nDiff:")
		fmt.Fprint(w, d)
		if !strings.HasSuffix(d, "\n") {
			fmt.Fprintln(w)
		}
	}
}

const aiProposalsApproveUsage = `
Usage: tasker ai proposals approve ID [-reason R] [-result JSON|@FILE] [-addr URL] [-token TOKEN] [-o table|json]

Approves a pending proposal and applies it, all or nothing: a workflow
change stores its new version and makes it active (tasks started without
a version get it; running tasks keep theirs); retry_step and reroute
retry the step (the scheduler picks the agent); resolve_manually
completes the step with -result, which must satisfy its result_schema;
cancel cancels the task; escalate only records that a person took it
over. A change that can no longer be made (the step no longer failed,
the task ended) leaves the proposal failed, with why. Needs a management
token.
` + apiFlagsHelp + apiExit

func aiProposalsApproveCommand() command {
	return command{name: "ai proposals approve", synopsis: "approve a proposal and apply it", usage: aiProposalsApproveUsage, run: runAIProposalsApprove}
}

func runAIProposalsApprove(args []string, stdout, stderr io.Writer) int {
	c := aiProposalsApproveCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	reason := fs.String("reason", "", "the reason `R`, for the record")
	result := fs.String("result", "", "resolve_manually only: the step's result, `JSON` text, @FILE, or @- for standard input")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one proposal ID, got %d", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	resultJSON := ""
	if *result != "" {
		var err error
		if resultJSON, err = jsonArg("result", *result); err != nil {
			return argError(stderr, c, err)
		}
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.proposals.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: pos[0], Reason: *reason, ResultJson: resultJSON}))
	if err != nil {
		return cn.fail(err)
	}
	return cn.writeDecision(resp.Msg.GetProposal(), resp.Msg)
}

const aiProposalsRejectUsage = `
Usage: tasker ai proposals reject ID -reason R [-addr URL] [-token TOKEN] [-o table|json]

Rejects a pending proposal; -reason is required and recorded. Needs a
management token.
` + apiFlagsHelp + apiExit

func aiProposalsRejectCommand() command {
	return command{name: "ai proposals reject", synopsis: "reject a pending proposal", usage: aiProposalsRejectUsage, run: runAIProposalsReject}
}

func runAIProposalsReject(args []string, stdout, stderr io.Writer) int {
	c := aiProposalsRejectCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	reason := fs.String("reason", "", "why it is rejected: `R` (required)")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one proposal ID, got %d", len(pos))
	}
	if strings.TrimSpace(*reason) == "" {
		return usageError(stderr, c, "no reason given: use -reason R")
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.proposals.RejectProposal(ctx, connect.NewRequest(&taskerv1.RejectProposalRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return cn.fail(err)
	}
	return cn.writeDecision(resp.Msg.GetProposal(), resp.Msg)
}

const aiProposalsRollbackUsage = `
Usage: tasker ai proposals rollback ID [-reason R] [-addr URL] [-token TOKEN] [-o table|json]

Rolls back an applied workflow change: its base version becomes the
active one again, so tasks started from now on get it; tasks already
running keep the version they started with. Refused when another version
was made active since (rolling back would undo that too), and for
operations, which cannot be undone (show prints how to undo one by
hand). Needs a management token.
` + apiFlagsHelp + apiExit

func aiProposalsRollbackCommand() command {
	return command{name: "ai proposals rollback", synopsis: "roll back an applied workflow change", usage: aiProposalsRollbackUsage, run: runAIProposalsRollback}
}

func runAIProposalsRollback(args []string, stdout, stderr io.Writer) int {
	c := aiProposalsRollbackCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	reason := fs.String("reason", "", "the reason `R`, for the record")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one proposal ID, got %d", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.proposals.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return cn.fail(err)
	}
	return cn.writeDecision(resp.Msg.GetProposal(), resp.Msg)
}

// writeDecision prints what an approve, reject or rollback did: one line
// with the proposal's new state and the last transition's note.
func (c *conn) writeDecision(p *taskerv1.Proposal, msg proto.Message) int {
	if c.json() {
		return c.writeProto(msg, false)
	}
	note := ""
	if h := p.GetHistory(); len(h) > 0 && h[len(h)-1].GetReason() != "" {
		note = ": " + h[len(h)-1].GetReason()
	}
	fmt.Fprintf(c.stdout, "proposal %s %s%s\n", p.GetId(), strings.ReplaceAll(p.GetState(), "_", " "), note)
	return exitOK
}
