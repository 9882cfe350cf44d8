package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/insight"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func aiCommand() command {
	return group("ai", "analyse workflows from their execution and review proposed changes", `
Analyses workflows from what the cluster knows about them and proposes
changes, which it never applies by itself: a person reviews each one
(docs/insight.md), and approves, rejects or rolls it back with 'tasker ai
proposals' (docs/proposals.md), unless a self-healing policy allows it. The
analyzers are deterministic; a language model, when one is configured,
explains and ranks what they found, and drafts workflows from a
description ('tasker ai generate'), which are proposals too.
`, aiDiagnoseCommand(), aiAnalyzeCommand(), aiOptimizeCommand(), aiGenerateCommand(), aiProposalsCommand(), aiHistoryCommand())
}

const aiOptimizeUsage = `
Usage: tasker ai optimize [NAMESPACE/]WORKFLOW [-version V] [-tasks N] [-propose] [-addr URL] [-o table|json]

Finds the depends_on edges of a workflow version that carry no data (the
child's input reads nothing from the parent), proposes to drop them so
that the steps run in parallel, and estimates the time saved on the
critical path from measured step durations: the median started-to-ended
time of each step's completed attempts in the execution history, over
the version's last -tasks tasks that completed one (a step never
measured counts at its timeout, and the output says so). It
prints the proposal and the manifest change as a unified diff; with
-o json, the proposal as JSON, with the proposed manifest.

An edge that carries no data may still be intended: the child may rely on
a side effect of the parent (a charge before a shipment, an email
verified before an account is used). Review each one; apply the result
as a new version with 'tasker workflow apply', or file it with -propose
as a proposal (the next prerelease version, 1.2.0 -> 1.2.1-ai.1) that an
operator approves with 'tasker ai proposals approve ID': approving makes
it the version new tasks get, and 'tasker ai proposals rollback ID' goes
back. -propose files nothing when there is nothing to propose.
` + apiFlagsHelp + apiExit

// defaultOptimizeTasks is how many tasks the durations come from.
const defaultOptimizeTasks = 200

func aiOptimizeCommand() command {
	return command{name: "ai optimize", synopsis: "propose depends_on edges to drop, with the time saved", usage: aiOptimizeUsage, run: runAIOptimize}
}

// optimizeJSON is the -o json form of a proposal.
type optimizeJSON struct {
	Workflow    string           `json:"workflow"`
	Version     string           `json:"version"`
	Removed     []insight.Edge   `json:"removed"`
	Added       []insight.Edge   `json:"added"`
	Redundant   []insight.Edge   `json:"redundant"`
	Before      []string         `json:"critical_path_before"`
	After       []string         `json:"critical_path_after"`
	BeforeMS    int64            `json:"critical_path_before_ms"`
	AfterMS     int64            `json:"critical_path_after_ms"`
	SavedMS     int64            `json:"saved_ms"`
	Measured    map[string]int64 `json:"measured_p50_ms"`
	Tasks       int              `json:"tasks_measured"`
	Estimated   []string         `json:"estimated_from_timeouts"`
	Diff        string           `json:"diff"`
	NewManifest string           `json:"manifest"`
	// ProposalID is the proposal -propose filed.
	ProposalID string `json:"proposal_id,omitempty"`
}

func runAIOptimize(args []string, stdout, stderr io.Writer) int {
	c := aiOptimizeCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	namespace := fs.String("namespace", "", "the workflow's namespace `N`; \"default\" when empty")
	version := fs.String("version", "", "version `V` rather than the active one (the latest unless a proposal pinned another)")
	tasks := fs.Int("tasks", defaultOptimizeTasks, "measure durations over the last `N` tasks of the version")
	propose := fs.Bool("propose", false, "file the result as a proposal for an operator to approve")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one workflow name, got %d", len(pos))
	}
	if *tasks < 0 || *tasks > 100000 {
		return usageError(stderr, c, "-tasks %d is out of range: use 0 to 100000", *tasks)
	}
	if *propose && *api.stale {
		return usageError(stderr, c, "-propose files a proposal through the leader; it does not combine with -stale")
	}
	ns, name, err := splitWorkflow(pos[0], *namespace)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.context()
	defer cancel()
	cctx, ccancel := context.WithTimeout(ctx, callTimeout)
	resp, err := cn.workflows.GetWorkflow(cctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: ns, Name: name, Version: *version}))
	ccancel()
	if err != nil {
		return cn.fail(err)
	}
	w := resp.Msg.GetWorkflow()
	cctx, ccancel = context.WithTimeout(ctx, callTimeout)
	oresp, err := cn.insight.Optimize(cctx, connect.NewRequest(&taskerv1.OptimizeRequest{Namespace: w.GetNamespace(), Workflow: w.GetName(), Version: w.GetVersion(), Tasks: uint32(*tasks)}))
	ccancel()
	if err != nil {
		return cn.fail(err)
	}
	o := oresp.Msg
	prop := proposalOf(o)
	p50 := map[string]time.Duration{}
	for step, d := range o.GetMeasured() {
		p50[step] = d.AsDuration()
	}
	measured := int(o.GetTasksMeasured())
	var filed *taskerv1.Proposal
	if *propose && prop.Diff != "" {
		if filed, err = fileOptimization(ctx, cn, w, prop, p50, measured); err != nil {
			return cn.fail(err)
		}
	}
	if cn.json() {
		out := optimizeJSON{
			Workflow: prop.Workflow, Version: prop.Version, Removed: prop.Removed, Added: prop.Added, Redundant: prop.Redundant,
			Before: prop.Before, After: prop.After, BeforeMS: prop.BeforeTime.Milliseconds(), AfterMS: prop.AfterTime.Milliseconds(),
			SavedMS: prop.Saved.Milliseconds(), Measured: map[string]int64{}, Tasks: measured, Estimated: prop.Estimated,
			Diff: prop.Diff, NewManifest: string(prop.Manifest),
		}
		for step, d := range p50 {
			out.Measured[step] = d.Milliseconds()
		}
		out.ProposalID = filed.GetId()
		return writeJSON(stdout, stderr, out)
	}
	fmt.Fprintf(stdout, "Durations: the median of completed attempts over the last %d task(s) of %s %s.\n\n", measured, workflowName(w.GetNamespace(), w.GetName()), w.GetVersion())
	fmt.Fprint(stdout, prop.String())
	switch {
	case filed != nil:
		fmt.Fprintf(stdout, "\nFiled as proposal %s (%s, version %s). Review it with 'tasker ai proposals show %s'; approve it with 'tasker ai proposals approve %s'.\n",
			filed.GetId(), filed.GetState(), filed.GetNewVersion(), filed.GetId(), filed.GetId())
	case *propose:
		fmt.Fprintln(stdout, "\nNothing to propose: no proposal filed.")
	}
	return exitOK
}

// proposalOf is the optimizer's proposal as the server sent it.
func proposalOf(o *taskerv1.OptimizeResponse) *insight.Proposal {
	edges := func(es []*taskerv1.Edge) []insight.Edge {
		out := make([]insight.Edge, len(es))
		for i, e := range es {
			out[i] = insight.Edge{Parent: e.GetParent(), Child: e.GetChild(), Why: e.GetWhy()}
		}
		return out
	}
	return &insight.Proposal{
		Workflow: o.GetWorkflow(), Version: o.GetVersion(),
		Removed: edges(o.GetRemoved()), Added: edges(o.GetAdded()), Redundant: edges(o.GetRedundant()),
		Before: o.GetCriticalPathBefore(), After: o.GetCriticalPathAfter(),
		BeforeTime: o.GetBefore().AsDuration(), AfterTime: o.GetAfter().AsDuration(), Saved: o.GetSaved().AsDuration(),
		Estimated: o.GetEstimated(), Manifest: []byte(o.GetManifest()), Diff: o.GetDiff(),
	}
}

// fileOptimization files the optimizer's proposal for workflow version w,
// under the next prerelease version, with the measurements it rests on as
// its evidence.
func fileOptimization(ctx context.Context, cn *conn, w *taskerv1.Workflow, prop *insight.Proposal, p50 map[string]time.Duration, measured int) (*taskerv1.Proposal, error) {
	next := insight.NextVersion(w.GetVersion(), w.GetVersions(), "ai")
	manifest, err := insight.SetVersion(prop.Manifest, next)
	if err != nil {
		return nil, fmt.Errorf("set the proposed version: %w", err)
	}
	evidence := map[string]any{
		"removed": prop.Removed, "added": prop.Added, "critical_path_before": prop.Before, "critical_path_after": prop.After,
		"critical_path_before_ms": prop.BeforeTime.Milliseconds(), "critical_path_after_ms": prop.AfterTime.Milliseconds(),
		"saved_ms": prop.Saved.Milliseconds(), "tasks_measured": measured, "estimated_from_timeouts": prop.Estimated,
		"measured_p50_ms": msOf(p50),
	}
	ev, err := json.Marshal(evidence)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := cn.proposals.CreateProposal(cctx, connect.NewRequest(&taskerv1.CreateProposalRequest{
		Action: "optimize_dependencies", Namespace: w.GetNamespace(), Workflow: w.GetName(), BaseVersion: w.GetVersion(), NewVersion: next,
		Manifest: string(manifest), Source: "optimizer", EvidenceJson: string(ev),
		Title:   fmt.Sprintf("drop %s of %s: critical path %s -> %s", plural(len(prop.Removed), "depends_on edge"), w.GetName(), duration(prop.BeforeTime), duration(prop.AfterTime)),
		Summary: fmt.Sprintf("The removed edges carry no data; measured over %s. Check that no child relies on a side effect of its parent.", plural(measured, "task")),
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetProposal(), nil
}

func msOf(ds map[string]time.Duration) map[string]int64 {
	out := make(map[string]int64, len(ds))
	for k, d := range ds {
		out[k] = d.Milliseconds()
	}
	return out
}
