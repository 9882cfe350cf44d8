package workflow

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// model is what a coordinator knows from the incremental API alone: the
// steps it was told are ready (by Add, Succeed, Resolve, Retry, Release)
// and the retry timers it was told to set (by Fail). The property is that
// this knowledge always equals a full recompute of readiness.
type model struct {
	announced map[int32]bool
	timers    map[int32]time.Time
}

// TestIncrementalMatchesFullRecompute drives random workflows through
// random legal and illegal events and checks, after every event, that the
// incrementally maintained readiness equals a full recompute, that the
// steps announced ready are exactly the ready ones, and that an illegal
// event changes nothing.
func TestIncrementalMatchesFullRecompute(t *testing.T) {
	const seeds = 400
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 0x7a5c))
		n := 1 + rng.IntN(24)
		p := mustCompile(t, randomManifest(rng, n, rng.Float64()*0.4))
		runs := NewRuns()
		// A few unrelated tasks share the slabs, to catch cross-task corruption.
		ref := runs.AddPlan(p)
		start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		for range rng.IntN(3) {
			runs.Add(ref, start, nil)
		}
		task, ready := runs.Add(ref, start, nil)
		md := model{announced: map[int32]bool{}, timers: map[int32]time.Time{}}
		for _, s := range ready {
			md.announced[s] = true
		}
		now := start
		for op := range 300 {
			ctx := fmt.Sprintf("seed %d op %d", seed, op)
			now = propStep(t, rng, runs, task, p, &md, now, ctx)
			checkAgreement(t, runs, task, now, ctx)
			// Fire the timers that are due, as the coordinator would.
			for s, at := range md.timers {
				if !at.After(now) {
					md.announced[s] = true
					delete(md.timers, s)
				}
			}
			got, _ := runs.Recompute(task, now, nil)
			var want []int32
			for s := range md.announced {
				want = append(want, s)
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: ready %v but the incremental API announced %v", ctx, got, want)
			}
			if ts, _ := runs.TaskState(task); ts.Terminal() {
				checkTerminal(t, runs, task, p, ts, ctx)
				break
			}
		}
	}
}

// checkTerminal asserts a terminal task's steps agree with its state.
func checkTerminal(t *testing.T, runs *Runs, task TaskRef, p *Plan, ts TaskState, ctx string) {
	t.Helper()
	manual := false
	for i := range p.Len() {
		v, _ := runs.Step(task, i)
		switch ts {
		case TaskComplete, TaskResolvedManually:
			if !v.State.Done() {
				t.Fatalf("%s: task %s but step %d is %s", ctx, ts, i, v.State)
			}
		case TaskCancelled:
			if !v.State.Terminal() {
				t.Fatalf("%s: task cancelled but step %d is %s", ctx, i, v.State)
			}
		}
		manual = manual || v.State == StepResolvedManually
	}
	if ts == TaskComplete && manual || ts == TaskResolvedManually && !manual {
		t.Fatalf("%s: task %s, some step resolved manually: %v", ctx, ts, manual)
	}
}

func snapshot(runs *Runs, task TaskRef, p *Plan) []StepView {
	out := make([]StepView, p.Len())
	for i := range out {
		out[i], _ = runs.Step(task, i)
	}
	return out
}

// propStep applies one random event and updates the model from what the
// API returned. It returns the new time.
func propStep(t *testing.T, rng *rand.Rand, runs *Runs, task TaskRef, p *Plan, md *model, now time.Time, ctx string) time.Time {
	t.Helper()
	s := rng.IntN(p.Len())
	s32 := int32(s)
	before := snapshot(runs, task, p)
	tsBefore, _ := runs.TaskState(task)

	announce := func(list []int32) {
		for _, x := range list {
			md.announced[x] = true
		}
	}
	var err error
	switch k := rng.IntN(100); {
	case k < 10:
		return now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
	case k < 35:
		_, err = runs.Dispatch(task, s, now)
		if err == nil {
			delete(md.announced, s32)
		}
	case k < 45:
		err = runs.Started(task, s)
	case k < 65:
		var ready []int32
		ready, err = runs.Succeed(task, s, nil)
		announce(ready)
	case k < 82:
		var o Outcome
		o, err = runs.Fail(task, s, Failure{
			Code:       []string{"boom", CodeTimeout, CodeContractViolation}[rng.IntN(3)],
			Retryable:  rng.IntN(4) > 0,
			RetryAfter: time.Duration(rng.IntN(3)) * time.Second,
			Rand:       rng.Float64(),
		}, now)
		if err == nil && o.Retry {
			if o.RetryAt.Before(now) {
				t.Fatalf("%s: retry at %v is before the failure at %v", ctx, o.RetryAt, now)
			}
			md.timers[s32] = o.RetryAt
		}
	case k < 87:
		var ready []int32
		ready, err = runs.Release(task, s, nil)
		announce(ready)
	case k < 93:
		var ready []int32
		ready, err = runs.Retry(task, s, nil)
		if err == nil {
			delete(md.timers, s32)
		}
		announce(ready)
	case k < 98:
		var ready []int32
		ready, err = runs.Resolve(task, s, nil)
		if err == nil {
			delete(md.announced, s32)
			delete(md.timers, s32)
		}
		announce(ready)
	default:
		_, err = runs.Cancel(task, nil)
		if err == nil {
			clear(md.announced)
			clear(md.timers)
		}
	}
	if err != nil {
		var te *TransitionError
		var nr *NotReadyError
		if !errors.As(err, &te) && !errors.As(err, &nr) {
			t.Fatalf("%s: unexpected error type %T: %v", ctx, err, err)
		}
		if after := snapshot(runs, task, p); !slices.Equal(after, before) {
			t.Fatalf("%s: a rejected event (%v) changed step state\nbefore %+v\nafter  %+v", ctx, err, before, after)
		}
		if ts, _ := runs.TaskState(task); ts != tsBefore {
			t.Fatalf("%s: a rejected event changed the task from %s to %s", ctx, tsBefore, ts)
		}
	}
	return now
}

// TestRestoreRebuildsReadiness: a task restored from its step records (as
// after a restart or leader change) has the same readiness as the original.
func TestRestoreRebuildsReadiness(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 42))
		p := mustCompile(t, randomManifest(rng, 2+rng.IntN(20), 0.3))
		orig := NewRuns()
		ref := orig.AddPlan(p)
		start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		task, ready := orig.Add(ref, start, nil)
		md := model{announced: map[int32]bool{}, timers: map[int32]time.Time{}}
		for _, s := range ready {
			md.announced[s] = true
		}
		now := start
		for op := range rng.IntN(80) {
			now = propStep(t, rng, orig, task, p, &md, now, fmt.Sprintf("seed %d op %d", seed, op))
		}
		ts, _ := orig.TaskState(task)
		recs := make([]StepRecord, p.Len())
		manual := false
		for i := range recs {
			v, _ := orig.Step(task, i)
			recs[i] = StepRecord{State: v.State, Attempts: v.Attempts, RetryAt: v.RetryAt, Blocked: v.Blocked}
			manual = manual || v.State == StepResolvedManually
		}
		restored := NewRuns()
		rt, got, err := restored.Restore(restored.AddPlan(p), start, ts, manual, recs, now, nil)
		if err != nil {
			t.Fatalf("seed %d: restore: %v", seed, err)
		}
		want, _ := orig.Ready(task, now, nil)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: restored ready %v, original %v", seed, got, want)
		}
		for i := range recs {
			a, _ := orig.Step(task, i)
			b, _ := restored.Step(rt, i)
			if a != b {
				t.Fatalf("seed %d step %d: original %+v, restored %+v", seed, i, a, b)
			}
		}
		if later := now.Add(time.Hour); true {
			a, _ := orig.Ready(task, later, nil)
			b, _ := restored.Ready(rt, later, nil)
			if !slices.Equal(a, b) {
				t.Fatalf("seed %d: an hour later, original ready %v, restored %v", seed, a, b)
			}
		}
	}
}

func TestRestoreRejectsBadRecords(t *testing.T) {
	p := mustCompile(t, chainManifest(3))
	now := time.Now()
	tests := []struct {
		name  string
		state TaskState
		recs  []StepRecord
	}{
		{"too few records", TaskInProgress, make([]StepRecord, 2)},
		{"unknown step state", TaskInProgress, []StepRecord{{State: 99}, {}, {}}},
		{"negative attempts", TaskInProgress, []StepRecord{{Attempts: -1}, {}, {}}},
		{"unknown task state", 42, make([]StepRecord, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRuns()
			if _, _, err := r.Restore(r.AddPlan(p), now, tt.state, false, tt.recs, now, nil); err == nil {
				t.Fatal("bad records were accepted")
			}
			if r.Len() != 0 {
				t.Fatalf("a rejected restore left %d tasks behind", r.Len())
			}
		})
	}
}

// TestSlotsAreReused: removed tasks give their slots back, so the state of
// a long-running coordinator is bounded by its active tasks, not history.
func TestSlotsAreReused(t *testing.T) {
	p := mustCompile(t, fanManifest(7))
	r := NewRuns()
	ref := r.AddPlan(p)
	now := time.Now()
	var tasks []TaskRef
	for range 100 {
		tk, _ := r.Add(ref, now, nil)
		tasks = append(tasks, tk)
	}
	stepsCap, tasksCap := len(r.steps), len(r.tasks)
	for round := range 50 {
		for _, tk := range tasks {
			if err := r.Remove(tk); err != nil {
				t.Fatal(err)
			}
		}
		if r.Len() != 0 {
			t.Fatalf("round %d: %d live tasks after removing all", round, r.Len())
		}
		tasks = tasks[:0]
		for range 100 {
			tk, ready := r.Add(ref, now, nil)
			if len(ready) != 1 {
				t.Fatalf("a reused slot starts with ready %v, want only the root", ready)
			}
			v, _ := r.Step(tk, p.Len()-1)
			if v.Unmet != p.Len()-2 || v.State != StepPending || v.Attempts != 0 {
				t.Fatalf("a reused slot kept old state: %+v", v)
			}
			tasks = append(tasks, tk)
		}
	}
	if len(r.steps) != stepsCap || len(r.tasks) != tasksCap {
		t.Fatalf("slabs grew from %d/%d to %d/%d with a constant number of tasks", stepsCap, tasksCap, len(r.steps), len(r.tasks))
	}
	if err := r.Remove(tasks[0]); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(tasks[0]); !errors.Is(err, ErrUnknownTask) {
		t.Fatalf("removing twice: %v, want ErrUnknownTask", err)
	}
	if _, err := r.Dispatch(tasks[0], 0, now); !errors.Is(err, ErrUnknownTask) {
		t.Fatalf("dispatching a removed task: %v, want ErrUnknownTask", err)
	}
}

// TestLongLivedTaskRetryTimes: retry times stay exact for a task that lives
// longer than 32 bits of milliseconds (about 49.7 days).
func TestLongLivedTaskRetryTimes(t *testing.T) {
	one := 100
	m := &Manifest{Name: "slow", Version: "1.0.0", Steps: []Step{
		{Name: "a", Capability: "x.a", Retry: &RetrySpec{MaxAttempts: &one, Backoff: &BackoffSpec{Initial: "1h", Max: "1h"}}},
		{Name: "b", Capability: "x.b", Retry: &RetrySpec{MaxAttempts: &one, Backoff: &BackoffSpec{Initial: "1h", Max: "1h"}}},
	}}
	p := mustCompile(t, m)
	r := NewRuns()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	task, _ := r.Add(r.AddPlan(p), start, nil)
	// b fails early and waits; a fails 60 days later, forcing a new epoch.
	if _, err := r.Dispatch(task, 1, start); err != nil {
		t.Fatal(err)
	}
	ob, err := r.Fail(task, 1, Failure{Code: "x", Retryable: true, Rand: 0.5}, start)
	if err != nil || !ob.RetryAt.Equal(start.Add(time.Hour)) {
		t.Fatalf("b: %+v, %v", ob, err)
	}
	later := start.Add(60 * 24 * time.Hour)
	if _, err := r.Dispatch(task, 0, later); err != nil {
		t.Fatal(err)
	}
	oa, err := r.Fail(task, 0, Failure{Code: "x", Retryable: true, RetryAfter: 2 * time.Hour, Rand: 0.5}, later)
	if err != nil || !oa.RetryAt.Equal(later.Add(2*time.Hour)) {
		t.Fatalf("a: retry at %v, want %v (err %v)", oa.RetryAt, later.Add(2*time.Hour), err)
	}
	va, _ := r.Step(task, 0)
	vb, _ := r.Step(task, 1)
	if !va.RetryAt.Equal(later.Add(2 * time.Hour)) {
		t.Fatalf("a retry at %v after rebase, want %v", va.RetryAt, later.Add(2*time.Hour))
	}
	// b's wait was long over; after the rebase it must still be due, not pushed out.
	if vb.RetryAt.After(later) {
		t.Fatalf("b retry moved to %v by the rebase; it was due at %v", vb.RetryAt, start.Add(time.Hour))
	}
	ready, _ := r.Ready(task, later, nil)
	if !slices.Equal(ready, []int32{1}) {
		t.Fatalf("ready %v at day 60, want [1] (b)", ready)
	}
}

// TestRetryNeverEarly: retry times are rounded up to the millisecond, so a
// retry is never dispatched before the backoff (or retry_after) asked.
func TestRetryNeverEarly(t *testing.T) {
	p := mustCompile(t, chainManifest(1))
	r := NewRuns()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	task, _ := r.Add(r.AddPlan(p), start, nil)
	failAt := start.Add(1500 * time.Microsecond) // between two milliseconds
	if _, err := r.Dispatch(task, 0, start); err != nil {
		t.Fatal(err)
	}
	o, err := r.Fail(task, 0, Failure{Code: "x", Retryable: true, Rand: 0.5}, failAt)
	if err != nil || !o.Retry {
		t.Fatalf("%+v, %v", o, err)
	}
	want := failAt.Add(DefaultBackoff().Initial)
	if o.RetryAt.Before(want) {
		t.Fatalf("retry at %v, before the backoff ends at %v", o.RetryAt, want)
	}
	if o.RetryAt.Sub(want) >= time.Millisecond {
		t.Fatalf("retry at %v, more than a millisecond after %v", o.RetryAt, want)
	}
	if ready, _ := r.Ready(task, want.Add(-time.Microsecond), nil); len(ready) != 0 {
		t.Fatalf("ready before the backoff ended: %v", ready)
	}
}
