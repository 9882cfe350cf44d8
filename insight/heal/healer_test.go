package heal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight"
)

// fakeEnv records calls and answers from its fields. Errors keyed by step
// (or by proposal id for Apply) let one finding fail while others pass.
type fakeEnv struct {
	mu          sync.Mutex
	findings    map[string][]insight.Finding // by task
	diagnoseErr error
	settingsErr map[string]error // by step
	proposeErr  map[string]error // by step
	applyErr    map[string]error // by proposal id
	recent      []Applied
	recentErr   error

	proposed     []proposal
	applied      []string // proposal ids
	recentSince  []time.Time
	handledTasks chan string // if set, receives each diagnosed task
}

type proposal struct {
	id, task, step string
	r              insight.Remediation
	auto           bool
	reason         string
}

func (e *fakeEnv) Diagnose(_ context.Context, taskID string) ([]insight.Finding, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.handledTasks != nil {
		e.handledTasks <- taskID
	}
	return e.findings[taskID], e.diagnoseErr
}

func (e *fakeEnv) StepSettings(_ context.Context, _, step string) (string, time.Duration, int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return "default/orders", 30 * time.Second, 3, e.settingsErr[step]
}

func (e *fakeEnv) Propose(_ context.Context, taskID string, f insight.Finding, r insight.Remediation, auto bool, reason string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.proposeErr[f.Step]; err != nil {
		return "", err
	}
	id := fmt.Sprintf("p%d", len(e.proposed)+1)
	e.proposed = append(e.proposed, proposal{id: id, task: taskID, step: f.Step, r: r, auto: auto, reason: reason})
	return id, nil
}

func (e *fakeEnv) Apply(_ context.Context, id, _ string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.applyErr[id]; err != nil {
		return err
	}
	e.applied = append(e.applied, id)
	return nil
}

func (e *fakeEnv) Recent(_ context.Context, since time.Time) ([]Applied, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.recentSince = append(e.recentSince, since)
	return e.recent, e.recentErr
}

func finding(step string, role insight.Role, conf float64, rs ...insight.Remediation) insight.Finding {
	return insight.Finding{Step: step, Role: role, Class: insight.ClassTimeout, Confidence: conf, Remediations: rs}
}

// stepRem is a rules remediation on step.
func stepRem(step string, a insight.Action, conf float64, params ...string) insight.Remediation {
	r := rem(a, conf, params...)
	r.Params["step"] = step
	return r
}

func TestHealerHandle(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		policy   func(*Policy)
		env      *fakeEnv // findings are for task "t1"
		outcomes []Outcome
		applied  []string
		propose  []bool // auto flag of each Propose call
	}{
		{
			name: "auto path proposes as the policy's and applies",
			env: &fakeEnv{findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionChangeTimeout, 0.9, "timeout", "3m")),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionChangeTimeout, Auto: true, Applied: true,
				Reason: "timeout clamped from 3m to 1m"}},
			applied: []string{"p1"},
			propose: []bool{true},
		},
		{
			name: "guarded path only proposes",
			env: &fakeEnv{findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.5, stepRem("charge", insight.ActionRetryStep, 0.9)),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionRetryStep, Reason: "below the policy's 0.80"}},
			propose:  []bool{false},
		},
		{
			name:   "disabled proposes, never applies, never reads the history",
			policy: func(p *Policy) { p.Enabled = false },
			env: &fakeEnv{recentErr: boom, findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 1, stepRem("charge", insight.ActionRetryStep, 1)),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionRetryStep, Reason: "self-healing is disabled"}},
			propose:  []bool{false},
		},
		{
			name: "only root causes, best remediation each",
			env: &fakeEnv{findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.9,
					stepRem("charge", insight.ActionEscalate, 0.3),
					stepRem("charge", insight.ActionRetryStep, 0.9),
					stepRem("charge", insight.ActionReroute, 0.9)),
				finding("ship", insight.RoleConsequence, 0.9, stepRem("ship", insight.ActionRetryStep, 0.9)),
				finding("notify", insight.RoleRootCause, 0.9),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionRetryStep, Auto: true, Applied: true}},
			applied:  []string{"p1"},
			propose:  []bool{true},
		},
		{
			name: "same task step and action proposed once",
			env: &fakeEnv{findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionRetryStep, 0.9)),
				finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionRetryStep, 0.9)),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionRetryStep, Auto: true, Applied: true}},
			applied:  []string{"p1"},
			propose:  []bool{true},
		},
		{
			name: "an action applied earlier in the task counts for the next finding",
			env: &fakeEnv{findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionChangeRetryPolicy, 0.9, "max_attempts", "5")),
				finding("ship", insight.RoleRootCause, 0.9, stepRem("ship", insight.ActionChangeRetryPolicy, 0.9, "max_attempts", "5")),
			}}},
			outcomes: []Outcome{
				{ProposalID: "p1", Step: "charge", Action: insight.ActionChangeRetryPolicy, Auto: true, Applied: true},
				{ProposalID: "p2", Step: "ship", Action: insight.ActionChangeRetryPolicy, Reason: "1 change_retry_policy actions on default/orders in the last hour; the policy allows 1"},
			},
			applied: []string{"p1"},
			propose: []bool{true, false},
		},
		{
			name: "the store's history feeds the rate limit",
			env: &fakeEnv{
				recent: []Applied{{Action: insight.ActionChangeRetryPolicy, Workflow: "default/orders", Step: "x", At: t0().Add(-time.Minute)}},
				findings: map[string][]insight.Finding{"t1": {
					finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionChangeRetryPolicy, 0.9, "max_attempts", "5")),
				}},
			},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionChangeRetryPolicy, Reason: "the policy allows 1"}},
			propose:  []bool{false},
		},
		{
			name: "env errors surface per finding and do not stop the others",
			env: &fakeEnv{
				settingsErr: map[string]error{"a": boom},
				proposeErr:  map[string]error{"b": boom},
				applyErr:    map[string]error{"p1": boom},
				findings: map[string][]insight.Finding{"t1": {
					finding("a", insight.RoleRootCause, 0.9, stepRem("a", insight.ActionRetryStep, 0.9)),
					finding("b", insight.RoleRootCause, 0.9, stepRem("b", insight.ActionRetryStep, 0.9)),
					finding("c", insight.RoleRootCause, 0.9, stepRem("c", insight.ActionRetryStep, 0.9)),
					finding("d", insight.RoleRootCause, 0.9, stepRem("d", insight.ActionRetryStep, 0.9)),
				}},
			},
			outcomes: []Outcome{
				{Step: "a", Action: insight.ActionRetryStep, Reason: "not proposed", Err: boom},
				{Step: "b", Action: insight.ActionRetryStep, Auto: true, Err: boom},
				{ProposalID: "p1", Step: "c", Action: insight.ActionRetryStep, Auto: true, Err: boom},
				{ProposalID: "p2", Step: "d", Action: insight.ActionRetryStep, Auto: true, Applied: true},
			},
			applied: []string{"p2"},
			propose: []bool{true, true},
		},
		{
			name: "unreadable history fails closed",
			env: &fakeEnv{recentErr: boom, findings: map[string][]insight.Finding{"t1": {
				finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionRetryStep, 0.9)),
			}}},
			outcomes: []Outcome{{ProposalID: "p1", Step: "charge", Action: insight.ActionRetryStep, Reason: "could not be read", Err: boom}},
			propose:  []bool{false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			env := tt.env
			h := NewHealer(p, env, nil, t0)

			outs, err := h.Handle(context.Background(), "t1")
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) != len(tt.outcomes) {
				t.Fatalf("%d outcomes, want %d: %+v", len(outs), len(tt.outcomes), outs)
			}
			for i, got := range outs {
				want := tt.outcomes[i]
				if got.ProposalID != want.ProposalID || got.Step != want.Step || got.Action != want.Action ||
					got.Auto != want.Auto || got.Applied != want.Applied {
					t.Errorf("outcome %d = %+v, want %+v", i, got, want)
				}
				if !strings.Contains(got.Reason, want.Reason) || got.Reason == "" {
					t.Errorf("outcome %d reason %q, want it to contain %q", i, got.Reason, want.Reason)
				}
				if !errors.Is(got.Err, want.Err) || (want.Err == nil) != (got.Err == nil) {
					t.Errorf("outcome %d err %v, want %v", i, got.Err, want.Err)
				}
			}
			if fmt.Sprint(env.applied) != fmt.Sprint(tt.applied) {
				t.Errorf("applied %v, want %v", env.applied, tt.applied)
			}
			var autos []bool
			for _, pr := range env.proposed {
				autos = append(autos, pr.auto)
				if pr.task != "t1" || pr.reason == "" {
					t.Errorf("proposal %+v: want task t1 and a reason", pr)
				}
			}
			if fmt.Sprint(autos) != fmt.Sprint(tt.propose) {
				t.Errorf("Propose auto flags %v, want %v", autos, tt.propose)
			}
		})
	}
}

func TestHealerProposesClampedRemediation(t *testing.T) {
	env := &fakeEnv{findings: map[string][]insight.Finding{"t1": {
		finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionChangeTimeout, 0.9, "timeout", "3m")),
	}}}
	h := NewHealer(testPolicy(), env, nil, t0)
	if _, err := h.Handle(context.Background(), "t1"); err != nil {
		t.Fatal(err)
	}
	if got := env.proposed[0].r.Params["timeout"]; got != "1m0s" {
		t.Errorf("proposed timeout %q, want the clamped 1m0s", got)
	}
	if want := t0().Add(-time.Hour); len(env.recentSince) != 1 || !env.recentSince[0].Equal(want) {
		t.Errorf("Recent since %v, want once since %v", env.recentSince, want)
	}
}

func TestHealerDedupeAcrossCalls(t *testing.T) {
	env := &fakeEnv{findings: map[string][]insight.Finding{
		"t1": {finding("charge", insight.RoleRootCause, 0.5, stepRem("charge", insight.ActionRetryStep, 0.9))},
		"t2": {finding("charge", insight.RoleRootCause, 0.5, stepRem("charge", insight.ActionRetryStep, 0.9))},
	}}
	h := NewHealer(testPolicy(), env, nil, t0)
	h.seen = newLRU(1) // small enough to see eviction
	for _, task := range []string{"t1", "t1", "t2", "t1"} {
		if _, err := h.Handle(context.Background(), task); err != nil {
			t.Fatal(err)
		}
	}
	var tasks []string
	for _, p := range env.proposed {
		tasks = append(tasks, p.task)
	}
	// t1 again is a duplicate; t2 evicts t1, so t1 is proposed once more.
	if want := []string{"t1", "t2", "t1"}; fmt.Sprint(tasks) != fmt.Sprint(want) {
		t.Errorf("proposed for %v, want %v", tasks, want)
	}
}

func TestHealerDiagnoseError(t *testing.T) {
	boom := errors.New("boom")
	env := &fakeEnv{diagnoseErr: boom}
	outs, err := NewHealer(testPolicy(), env, nil, t0).Handle(context.Background(), "t1")
	if !errors.Is(err, boom) || outs != nil || !strings.Contains(err.Error(), "t1") {
		t.Errorf("got %v, %v; want the wrapped diagnose error naming the task", outs, err)
	}
}

func TestHealerProposeErrorIsRetried(t *testing.T) {
	// A proposal that failed to file is not remembered, so the task's next
	// handling tries again.
	env := &fakeEnv{
		proposeErr: map[string]error{"charge": errors.New("no leader")},
		findings: map[string][]insight.Finding{"t1": {
			finding("charge", insight.RoleRootCause, 0.5, stepRem("charge", insight.ActionRetryStep, 0.9)),
		}},
	}
	h := NewHealer(testPolicy(), env, nil, t0)
	if _, err := h.Handle(context.Background(), "t1"); err != nil {
		t.Fatal(err)
	}
	env.proposeErr = nil
	outs, err := h.Handle(context.Background(), "t1")
	if err != nil || len(outs) != 1 || outs[0].ProposalID != "p1" {
		t.Errorf("second Handle: %+v, %v; want proposal p1", outs, err)
	}
}

func TestHealerRun(t *testing.T) {
	tests := []struct {
		name  string
		close bool // close the channel instead of cancelling
		want  error
	}{
		{"stops on cancel", false, context.Canceled},
		{"stops when the channel closes", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &fakeEnv{
				handledTasks: make(chan string, 10),
				findings: map[string][]insight.Finding{"t1": {
					finding("charge", insight.RoleRootCause, 0.9, stepRem("charge", insight.ActionRetryStep, 0.9)),
				}},
			}
			h := NewHealer(testPolicy(), env, nil, t0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			failed := make(chan string)
			done := make(chan error, 1)
			go func() { done <- h.Run(ctx, failed) }()

			failed <- "t1"
			failed <- "t2" // unbuffered: t1 has been taken and Run is back for more
			if got := <-env.handledTasks; got != "t1" {
				t.Fatalf("handled %q, want t1", got)
			}
			if tt.close {
				close(failed)
			} else {
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Errorf("Run returned %v, want %v", err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			env.mu.Lock()
			defer env.mu.Unlock()
			if len(env.applied) != 1 {
				t.Errorf("applied %v, want t1's one proposal", env.applied)
			}
		})
	}
}
