package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight"
	"github.com/tasker-run/tasker/insight/heal"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// healQueueSize bounds the failed tasks waiting for the healer. A burst
// beyond it is dropped (and logged): the healer is advice and guarded
// automation, and a failed task stays failed for a person to see.
const healQueueSize = 1024

// healWindow is how far back a healing diagnosis looks for similar
// failures.
const healWindow = 24 * time.Hour

// errNoChange: the remediation asks for what the active version already
// has (another task's failure healed it first).
var errNoChange = errors.New("the active version already has this setting")

// startHealing loads the policy and runs the healer on this server until
// ctx ends. Only the leader feeds it (observe), so only the leader heals;
// after a leader change the new leader takes the next failures.
func (a *Agent) startHealing(ctx context.Context) {
	p, err := loadHealing(a.cfg.HealingFile)
	if err != nil { // validated at start; the file changed since
		a.log.Error("self-healing is off: its policy does not load", "file", a.cfg.HealingFile, "err", err)
		return
	}
	h := heal.NewHealer(p, healEnv{a}, a.log.With("component", "healing"), a.now)
	a.log.Info("self-healing policy loaded", "file", a.cfg.HealingFile, "enabled", p.Enabled, "rules", len(p.Rules))
	if err := h.Run(ctx, a.healQ); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Error("self-healing stopped", "err", err)
	}
}

// noteFailures hands the tasks that just failed to the healer, on the
// leader. It runs on Raft's apply goroutine: it never blocks.
func (a *Agent) noteFailures(fx *consensus.Effects) {
	if a.healQ == nil || !a.isLeader() {
		return
	}
	for _, e := range fx.Events {
		if e.Type != consensus.EventTaskFailed {
			continue
		}
		select {
		case a.healQ <- e.TaskID:
		default:
			a.log.Warn("self-healing queue full: failed task not considered", "task_id", e.TaskID, "queue", healQueueSize)
		}
	}
}

// healEnv is the healer's view of the cluster: it diagnoses with the
// leader's analyzers and files and applies proposals through the same
// code as ProposalService, as "healing-policy".
type healEnv struct{ a *Agent }

func (e healEnv) Diagnose(_ context.Context, taskID string) ([]insight.Finding, error) {
	d, err := e.a.diagnose(taskID, healWindow)
	if err != nil {
		return nil, err
	}
	return d.Findings, nil
}

// StepSettings reads the step in the workflow's active version, the one
// a workflow change would edit and new tasks would get.
func (e healEnv) StepSettings(_ context.Context, taskID, step string) (string, time.Duration, int, error) {
	v, err := e.a.state.Task(taskID)
	if err != nil {
		return "", 0, 0, err
	}
	w, err := e.a.state.Workflow(v.Namespace, v.Workflow, "")
	if err != nil {
		return "", 0, 0, err
	}
	i, ok := w.Plan.StepIndex(step)
	if !ok {
		return "", 0, 0, fmt.Errorf("step %s is not in %s/%s %s", step, v.Namespace, v.Workflow, w.Version)
	}
	ps := w.Plan.Steps[i]
	return v.Namespace + "/" + v.Workflow, ps.Timeout, ps.Retry.MaxAttempts, nil
}

func (e healEnv) Propose(ctx context.Context, taskID string, f insight.Finding, r insight.Remediation, auto bool, reason string) (string, error) {
	v, err := e.a.state.Task(taskID)
	if err != nil {
		return "", err
	}
	step := r.Params["step"]
	if step == "" {
		step = f.Step
	}
	req := &taskerv1.CreateProposalRequest{
		Action: string(r.Action), Namespace: v.Namespace, Workflow: v.Workflow, Step: step, Params: r.Params,
		Source: "healing", Confidence: r.Confidence, Summary: r.Rationale + " (" + reason + ")",
	}
	switch r.Action {
	case insight.ActionChangeTimeout, insight.ActionChangeRetryPolicy:
		if err := e.changes(v, step, r); err != nil {
			return "", err
		}
	default:
		req.TaskId = taskID
	}
	ev, err := json.Marshal(map[string]any{"task_id": taskID, "finding": f, "remediation": r, "policy": reason})
	if err != nil {
		return "", err
	}
	req.EvidenceJson = string(ev)
	p, err := (&proposalAPI{e.a}).create(ctx, req, heal.By, auto)
	if err != nil {
		return "", err
	}
	return p.ID, nil
}

// changes refuses a workflow change the active version already has.
func (e healEnv) changes(v *consensus.TaskView, step string, r insight.Remediation) error {
	_, timeout, maxAttempts, err := e.StepSettings(context.Background(), v.ID, step)
	if err != nil {
		return err
	}
	switch r.Action {
	case insight.ActionChangeTimeout:
		if d, err := time.ParseDuration(r.Params["timeout"]); err == nil && d <= timeout {
			return fmt.Errorf("%w: step %s's timeout is %v, the remediation asks for %v", errNoChange, step, timeout, d)
		}
	case insight.ActionChangeRetryPolicy:
		if n, err := strconv.Atoi(r.Params["max_attempts"]); err == nil && n <= maxAttempts {
			return fmt.Errorf("%w: step %s allows %d attempts, the remediation asks for %d", errNoChange, step, maxAttempts, n)
		}
	}
	return nil
}

func (e healEnv) Apply(ctx context.Context, id, reason string) error {
	return (&proposalAPI{e.a}).approve(ctx, &taskerv1.ApproveProposalRequest{Id: id, Reason: reason}, heal.By)
}

// Recent lists the automatic actions applied since a time, from the
// replicated proposals: the rate limits hold across leader changes.
func (e healEnv) Recent(_ context.Context, since time.Time) ([]heal.Applied, error) {
	var out []heal.Applied
	for _, p := range e.a.state.Proposals(consensus.ProposalFilter{}) {
		if !p.Auto {
			continue
		}
		for _, t := range p.History {
			if t.State == consensus.ProposalApplied && !t.At.Before(since) {
				out = append(out, heal.Applied{Action: insight.Action(p.Action), Workflow: p.Namespace + "/" + p.Workflow, Step: p.Step, At: t.At})
			}
		}
	}
	slices.SortFunc(out, func(a, b heal.Applied) int { return a.At.Compare(b.At) })
	return out, nil
}
