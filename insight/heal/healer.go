package heal

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tasker-run/tasker/insight"
)

// By is who a policy-applied proposal is recorded as approved and applied
// by.
const By = "healing-policy"

// dedupeSize bounds the Healer's memory of what it has proposed.
const dedupeSize = 10000

// Env is everything the [Healer] does to the world; the agent wires it to
// the analyzers, the workflow registry and the proposal store.
type Env interface {
	// Diagnose returns the findings (root causes first) for a failed task.
	Diagnose(ctx context.Context, taskID string) ([]insight.Finding, error)
	// StepSettings returns the step's current timeout and max attempts in
	// the task's workflow version, and the workflow "ns/name".
	StepSettings(ctx context.Context, taskID, step string) (workflow string, timeout time.Duration, maxAttempts int, err error)
	// Propose files a proposal for a remediation and returns its id; auto
	// marks it as the policy's.
	Propose(ctx context.Context, taskID string, f insight.Finding, r insight.Remediation, auto bool, reason string) (string, error)
	// Apply approves and applies a proposal as the healing policy ("by" =
	// [By]).
	Apply(ctx context.Context, id, reason string) error
	// Recent lists automatic actions applied since a time (from the
	// proposal store, so it survives leader changes).
	Recent(ctx context.Context, since time.Time) ([]Applied, error)
}

// Outcome is what the Healer did with one root-cause finding.
type Outcome struct {
	// ProposalID is the filed proposal, empty if filing failed.
	ProposalID string
	// Step and Action are what the remediation acts on and does.
	Step   string
	Action insight.Action
	// Auto says the policy allowed it to apply without a human.
	Auto bool
	// Applied says it was applied (Auto and Apply succeeded).
	Applied bool
	// Reason is the [Decision]'s reason, or why no decision was made.
	Reason string
	// Err is the Env error that cut this finding short, if any. Other
	// findings of the task are still handled.
	Err error
}

// Healer turns the diagnoses of failed tasks into proposals and applies the
// ones the [Policy] allows. Its methods are safe for concurrent use; Handle
// calls run one at a time so that two failures on one workflow cannot both
// pass the rate limit.
type Healer struct {
	policy Policy
	env    Env
	log    *slog.Logger
	now    func() time.Time

	mu   sync.Mutex // serializes Handle; guards seen
	seen *lru
}

// NewHealer returns a Healer for p, which must be valid. A nil log
// discards; a nil now is time.Now.
func NewHealer(p Policy, env Env, log *slog.Logger, now func() time.Time) *Healer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Healer{policy: p, env: env, log: log, now: now, seen: newLRU(dedupeSize)}
}

// Handle diagnoses one failed or dead-lettered task and, for each root-cause
// finding, decides its best remediation (the one with the highest
// confidence; the first on a tie), always proposes it so that humans see it,
// and applies it when the policy allows. The same task, step and action is
// proposed once: the Healer remembers the last 10,000 it proposed. That
// memory is the process's, so after a restart or a leader change a task
// handled again may be proposed again; the store then holds a duplicate
// pending proposal, which is harmless, and an automatic one is still
// bounded by the rate limit and cooldown, which come from the store.
//
// An error from Diagnose is returned; errors of later steps are per
// finding, in [Outcome.Err].
func (h *Healer) Handle(ctx context.Context, taskID string) ([]Outcome, error) {
	h.mu.Lock()
	defer h.mu.Unlock()

	findings, err := h.env.Diagnose(ctx, taskID)
	if err != nil {
		return nil, fmt.Errorf("heal: diagnose task %s: %w", taskID, err)
	}
	now := h.now()

	// The store's history, read once; actions applied below are added to
	// it so that one task's findings count against each other too.
	var recent []Applied
	var recentErr error
	if h.policy.Enabled {
		recent, recentErr = h.env.Recent(ctx, now.Add(-max(time.Hour, h.policy.Cooldown)))
		if recentErr != nil {
			recentErr = fmt.Errorf("heal: read recent automatic actions: %w", recentErr)
		}
	}

	var outs []Outcome
	for _, f := range findings {
		if f.Role != insight.RoleRootCause || len(f.Remediations) == 0 {
			continue
		}
		r := best(f.Remediations)
		step := f.Step
		if s := r.Params["step"]; s != "" {
			step = s
		}
		key := taskID + "\x00" + step + "\x00" + string(r.Action)
		if h.seen.contains(key) {
			h.log.DebugContext(ctx, "heal: already proposed", "task", taskID, "step", step, "action", r.Action)
			continue
		}
		out := Outcome{Step: step, Action: r.Action}

		workflow, timeout, attempts, err := h.env.StepSettings(ctx, taskID, step)
		if err != nil {
			out.Err = fmt.Errorf("heal: settings of task %s step %s: %w", taskID, step, err)
			out.Reason = "not proposed: the step's settings could not be read"
			outs = append(outs, out)
			h.log.WarnContext(ctx, "heal: no decision", "task", taskID, "step", step, "action", r.Action, "err", out.Err)
			continue
		}
		d := Decide(h.policy, Input{
			Workflow:           workflow,
			Step:               step,
			Remediation:        r,
			Alternatives:       f.Remediations,
			FindingConfidence:  f.Confidence,
			CurrentTimeout:     timeout,
			CurrentMaxAttempts: attempts,
			Recent:             recent,
			Now:                now,
		})
		if d.Auto && recentErr != nil {
			// Without the history the rate limit and cooldown cannot be
			// checked; fail closed.
			d = Decision{Reason: "recent automatic actions could not be read, so the rate limit and cooldown cannot be checked; a human decides", Remediation: r}
			out.Err = recentErr
		}
		out.Auto, out.Reason = d.Auto, d.Reason

		id, err := h.env.Propose(ctx, taskID, f, d.Remediation, d.Auto, d.Reason)
		if err != nil {
			out.Err = fmt.Errorf("heal: propose %s for task %s step %s: %w", r.Action, taskID, step, err)
			outs = append(outs, out)
			h.log.WarnContext(ctx, "heal: propose failed", "task", taskID, "step", step, "action", r.Action, "err", err)
			continue
		}
		out.ProposalID = id
		// Remembered once filed, whatever Apply does: the proposal exists
		// and a human can act on it.
		h.seen.add(key)

		if d.Auto {
			if err := h.env.Apply(ctx, id, d.Reason); err != nil {
				out.Err = fmt.Errorf("heal: apply proposal %s: %w", id, err)
			} else {
				out.Applied = true
				recent = append(recent, Applied{Action: r.Action, Workflow: workflow, Step: step, At: now})
			}
		}
		h.log.InfoContext(ctx, "heal: decision", "task", taskID, "workflow", workflow, "step", step,
			"action", r.Action, "proposal", id, "auto", out.Auto, "applied", out.Applied, "reason", out.Reason, "err", out.Err)
		outs = append(outs, out)
	}
	return outs, nil
}

// best returns the remediation with the highest confidence, the first on a
// tie (the analyzers list their preferred one first). rs is not empty.
func best(rs []insight.Remediation) insight.Remediation {
	b := rs[0]
	for _, r := range rs[1:] {
		if r.Confidence > b.Confidence {
			b = r
		}
	}
	return b
}

// Run handles the task ids received on failed, one at a time, until ctx is
// done (returning ctx's error) or failed is closed (returning nil). Errors
// are logged; a task whose diagnosis failed is not retried here.
func (h *Healer) Run(ctx context.Context, failed <-chan string) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case id, ok := <-failed:
			if !ok {
				return nil
			}
			if _, err := h.Handle(ctx, id); err != nil {
				h.log.WarnContext(ctx, "heal: task not handled", "task", id, "err", err)
			}
		}
	}
}

// lru is a bounded set that forgets the least recently added or seen key.
type lru struct {
	max   int
	order *list.List // front is newest; values are keys
	keys  map[string]*list.Element
}

func newLRU(size int) *lru {
	return &lru{max: size, order: list.New(), keys: make(map[string]*list.Element)}
}

func (l *lru) contains(key string) bool {
	e, ok := l.keys[key]
	if ok {
		l.order.MoveToFront(e)
	}
	return ok
}

func (l *lru) add(key string) {
	if e, ok := l.keys[key]; ok {
		l.order.MoveToFront(e)
		return
	}
	l.keys[key] = l.order.PushFront(key)
	if l.order.Len() > l.max {
		oldest := l.order.Back()
		l.order.Remove(oldest)
		delete(l.keys, oldest.Value.(string))
	}
}
