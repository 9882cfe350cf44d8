package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/insight"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

func aiCommand() command {
	return group("ai", "analyse workflows from their execution and review proposed changes", `
Analyses workflows from what the cluster knows about them and proposes
changes, which it never applies by itself: a person reviews each one
(docs/insight.md), and approves, rejects or rolls it back with 'tasker ai
proposals' (docs/proposals.md), unless a self-healing policy allows it. The
analyzers are deterministic; a language model, when one is configured,
only explains and ranks what they found.
`, aiDiagnoseCommand(), aiAnalyzeCommand(), aiOptimizeCommand(), aiProposalsCommand(), aiHistoryCommand())
}

const aiOptimizeUsage = `
Usage: tasker ai optimize [NAMESPACE/]WORKFLOW [-version V] [-tasks N] [-propose] [-addr URL] [-o table|json]

Finds the depends_on edges of a workflow version that carry no data (the
child's input reads nothing from the parent), proposes to drop them so
that the steps run in parallel, and estimates the time saved on the
critical path from measured step durations: the median of each step's
started-to-ended time over the version's last -tasks complete tasks (a
step never measured counts at its timeout, and the output says so). It
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

// defaultOptimizeTasks is how many complete tasks the durations come from.
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
	tasks := fs.Int("tasks", defaultOptimizeTasks, "measure durations over the last `N` complete tasks of the version")
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
	plan, err := workflow.Load([]byte(w.GetManifest()), workflow.Limits{})
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: the stored manifest of %s %s does not load: %v\n", c.name, workflowName(w.GetNamespace(), w.GetName()), w.GetVersion(), err)
		return exitFail
	}
	samples, measured, err := stepDurations(ctx, cn, w, *tasks)
	if err != nil {
		return cn.fail(err)
	}
	p50 := map[string]time.Duration{}
	for step, ds := range samples {
		slices.Sort(ds)
		p50[step] = ds[len(ds)/2]
	}
	prop, err := insight.Optimize(plan, []byte(w.GetManifest()), p50)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitFail
	}
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
	fmt.Fprintf(stdout, "Durations: the median over %d complete task(s) of %s %s.\n\n", measured, workflowName(w.GetNamespace(), w.GetName()), w.GetVersion())
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
		Summary: fmt.Sprintf("The removed edges carry no data; measured over %s. Check that no child relies on a side effect of its parent.", plural(measured, "complete task")),
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

// stepDurations reads up to max complete tasks of workflow version w, the
// newest first, and returns each step's measured durations (started to
// ended) and how many tasks were read.
func stepDurations(ctx context.Context, cn *conn, w *taskerv1.Workflow, max int) (map[string][]time.Duration, int, error) {
	out := map[string][]time.Duration{}
	n := 0
	token := ""
	for n < max {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := cn.workflows.ListTasks(cctx, connect.NewRequest(&taskerv1.ListTasksRequest{
			Namespace: w.GetNamespace(), Workflow: w.GetName(), State: taskerv1.TaskState_TASK_STATE_COMPLETE,
			PageSize: int32(min(max-n, 500)), PageToken: token,
		}))
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("list tasks: %w", err)
		}
		for _, t := range resp.Msg.GetTasks() {
			if t.GetVersion() != w.GetVersion() || n >= max {
				continue
			}
			n++
			for _, s := range t.GetSteps() {
				if s.GetStartedAt() == nil || s.GetEndedAt() == nil {
					continue
				}
				if d := s.GetEndedAt().AsTime().Sub(s.GetStartedAt().AsTime()); d >= 0 {
					out[s.GetName()] = append(out[s.GetName()], d)
				}
			}
		}
		if token = resp.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, n, nil
}
