package workflow

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Runs is the scheduling state of many active tasks: for each task its
// state and, for each step, its state, attempts, unmet dependencies and
// earliest retry time, packed in flat slices of small integers (8 bytes a
// step, 24 a task). It holds no payloads: inputs and results live in the
// replicated store, keyed by task, and are read only to build a step's input.
//
// Runs is pure and not safe for concurrent use; the coordinator owns one and
// drives it from a single goroutine. Every method that depends on time takes
// it as an argument.
type Runs struct {
	plans     []*Plan
	tasks     []taskSlot
	steps     []stepSlot
	freeTasks []uint32
	freeSteps map[uint32][]uint32 // step count → free offsets in steps
	live      int
}

// PlanRef names a Plan registered with AddPlan.
type PlanRef uint32

// TaskRef names a task in a Runs. A ref is reused after Remove.
type TaskRef uint32

type taskSlot struct {
	epoch int64  // Unix milliseconds; steps' notBefore count from here
	first uint32 // offset of the task's first step in Runs.steps
	plan  PlanRef
	open  uint16 // steps not yet done
	state TaskState
	flags uint8
}

const (
	flagLive   uint8 = 1 << iota // slot in use
	flagManual                   // some step was resolved manually
)

type stepSlot struct {
	state     StepState
	attempts  uint8  // attempts begun (dispatches not released)
	unmet     uint16 // parents not yet done
	notBefore uint32 // ms after the task's epoch before which a retry must wait
}

// blocked in notBefore marks a failed step that will not be retried.
const blocked = math.MaxUint32

// ErrUnknownTask is returned for a TaskRef that names no live task.
var ErrUnknownTask = errors.New("unknown task")

// NotReadyError is returned when a step is dispatched before it is ready.
type NotReadyError struct {
	Step   string
	Reason string
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("step %s is not ready: %s", e.Step, e.Reason)
}

// NewRuns returns an empty Runs.
func NewRuns() *Runs { return &Runs{freeSteps: map[uint32][]uint32{}} }

// AddPlan registers a plan and returns its ref. Tasks of one workflow
// version share one plan.
func (r *Runs) AddPlan(p *Plan) PlanRef {
	r.plans = append(r.plans, p)
	return PlanRef(len(r.plans) - 1)
}

// Plan returns a registered plan.
func (r *Runs) Plan(ref PlanRef) *Plan { return r.plans[ref] }

// Len returns the number of live tasks.
func (r *Runs) Len() int { return r.live }

// Add starts tracking a new task of plan, created at now, and appends its
// ready steps (the roots) to ready.
func (r *Runs) Add(plan PlanRef, now time.Time, ready []int32) (TaskRef, []int32) {
	p := r.plans[plan]
	n := uint32(len(p.Steps))
	var first uint32
	if free := r.freeSteps[n]; len(free) > 0 {
		first = free[len(free)-1]
		r.freeSteps[n] = free[:len(free)-1]
	} else {
		first = uint32(len(r.steps))
		r.steps = slices.Grow(r.steps, int(n))[:len(r.steps)+int(n)]
	}
	slot := taskSlot{epoch: now.UnixMilli(), first: first, plan: plan, open: uint16(n), state: TaskPending, flags: flagLive}
	var t TaskRef
	if k := len(r.freeTasks); k > 0 {
		t = TaskRef(r.freeTasks[k-1])
		r.freeTasks = r.freeTasks[:k-1]
		r.tasks[t] = slot
	} else {
		t = TaskRef(len(r.tasks))
		r.tasks = append(r.tasks, slot)
	}
	r.live++
	steps := r.steps[first : first+n]
	for i := range steps {
		steps[i] = stepSlot{unmet: uint16(p.parentOff[i+1] - p.parentOff[i])}
		if steps[i].unmet == 0 {
			ready = append(ready, int32(i))
		}
	}
	return t, ready
}

// Remove forgets a task, typically once it is terminal, and frees its slots.
func (r *Runs) Remove(t TaskRef) error {
	ts, err := r.task(t)
	if err != nil {
		return err
	}
	n := uint32(len(r.plans[ts.plan].Steps))
	r.freeSteps[n] = append(r.freeSteps[n], ts.first)
	*ts = taskSlot{}
	r.freeTasks = append(r.freeTasks, uint32(t))
	r.live--
	return nil
}

func (r *Runs) task(t TaskRef) (*taskSlot, error) {
	if int(t) >= len(r.tasks) || r.tasks[t].flags&flagLive == 0 {
		return nil, fmt.Errorf("%w: ref %d", ErrUnknownTask, t)
	}
	return &r.tasks[t], nil
}

func (r *Runs) stepsOf(ts *taskSlot) []stepSlot {
	return r.steps[ts.first : ts.first+uint32(len(r.plans[ts.plan].Steps))]
}

// TaskState returns the state of a task.
func (r *Runs) TaskState(t TaskRef) (TaskState, error) {
	ts, err := r.task(t)
	if err != nil {
		return 0, err
	}
	return ts.state, nil
}

// PlanOf returns the plan of a task.
func (r *Runs) PlanOf(t TaskRef) (*Plan, error) {
	ts, err := r.task(t)
	if err != nil {
		return nil, err
	}
	return r.plans[ts.plan], nil
}

// StepView is a step's scheduling state, for inspection.
type StepView struct {
	State    StepState
	Attempts int
	// Unmet counts parents not yet done.
	Unmet int
	// RetryAt is when a failed step may be dispatched again; zero when it
	// need not wait, and Blocked is true when it will not be retried.
	RetryAt time.Time
	Blocked bool
}

// Step returns the scheduling state of step s of task t.
func (r *Runs) Step(t TaskRef, s int) (StepView, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return StepView{}, err
	}
	v := StepView{State: st.state, Attempts: int(st.attempts), Unmet: int(st.unmet)}
	switch {
	case st.notBefore == blocked:
		v.Blocked = true
	case st.notBefore > 0:
		v.RetryAt = time.UnixMilli(ts.epoch + int64(st.notBefore)).UTC()
	}
	return v, nil
}

func (r *Runs) step(t TaskRef, s int) (*taskSlot, *stepSlot, error) {
	ts, err := r.task(t)
	if err != nil {
		return nil, nil, err
	}
	steps := r.stepsOf(ts)
	if s < 0 || s >= len(steps) {
		return nil, nil, fmt.Errorf("task %d has no step %d", t, s)
	}
	return ts, &steps[s], nil
}

// notReady says why a step cannot be dispatched; notReady(0) means it can.
// A code rather than a string keeps the readiness scan allocation-free.
type notReady uint8

const (
	isReady notReady = iota
	waitingForParents
	notDispatchable
	exhausted
	backingOff
)

// ready reports whether a step may be dispatched at nowRel (milliseconds
// after the task's epoch).
func ready(p *Plan, s int, st *stepSlot, nowRel int64) notReady {
	switch {
	case st.unmet > 0:
		return waitingForParents
	case st.state == StepPending:
		return isReady
	case st.state != StepError:
		return notDispatchable
	case st.notBefore == blocked || int(st.attempts) >= p.Steps[s].Retry.MaxAttempts:
		return exhausted
	case int64(st.notBefore) > nowRel:
		return backingOff
	}
	return isReady
}

func (why notReady) explain(st *stepSlot) string {
	switch why {
	case waitingForParents:
		return fmt.Sprintf("%d dependencies not done", st.unmet)
	case notDispatchable:
		return "it is " + st.state.String()
	case exhausted:
		return "it failed and will not be retried"
	case backingOff:
		return "its backoff has not elapsed"
	}
	return "it is ready"
}

func (ts *taskSlot) rel(now time.Time) int64 { return now.UnixMilli() - ts.epoch }

// Dispatch begins an attempt of a ready step (pending, or failed with its
// backoff elapsed) and returns the attempt number, counting from 1.
func (r *Runs) Dispatch(t TaskRef, s int, now time.Time) (int, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return 0, err
	}
	if ts.state.Terminal() {
		return 0, &TransitionError{What: "step of a task", State: ts.state.String(), Event: EvDispatch.String()}
	}
	p := r.plans[ts.plan]
	if why := ready(p, s, st, ts.rel(now)); why != isReady {
		return 0, &NotReadyError{Step: p.Steps[s].Name, Reason: why.explain(st)}
	}
	next, err := NextStep(st.state, EvDispatch)
	if err != nil {
		return 0, err
	}
	if ts.state == TaskPending {
		ts.state, _ = NextTask(ts.state, TaskEvStart)
	}
	st.state = next
	st.attempts++
	st.notBefore = 0
	return int(st.attempts), nil
}

// Started records that the app took the step.
func (r *Runs) Started(t TaskRef, s int) error {
	_, st, err := r.step(t, s)
	if err != nil {
		return err
	}
	next, err := NextStep(st.state, EvStart)
	if err != nil {
		return err
	}
	st.state = next
	return nil
}

// Succeed completes a step and appends to ready the children it made ready
// (the incremental update: only the step's children are touched).
func (r *Runs) Succeed(t TaskRef, s int, ready []int32) ([]int32, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return ready, err
	}
	next, err := NextStep(st.state, EvSucceed)
	if err != nil {
		return ready, err
	}
	st.state = next
	return r.done(ts, s, ready), nil
}

// done propagates a step becoming done to its children and the task.
func (r *Runs) done(ts *taskSlot, s int, ready []int32) []int32 {
	p := r.plans[ts.plan]
	steps := r.stepsOf(ts)
	for _, c := range p.Children(s) {
		cs := &steps[c]
		cs.unmet--
		if cs.unmet == 0 && cs.state == StepPending {
			ready = append(ready, c)
		}
	}
	ts.open--
	if ts.open == 0 {
		ev := TaskEvSucceed
		if ts.flags&flagManual != 0 {
			ev = TaskEvSucceedManual
		}
		if next, err := NextTask(ts.state, ev); err == nil {
			ts.state = next
		}
	}
	return ready
}

// Failure describes a failed attempt.
type Failure struct {
	// Code is the error code: the app's, or CodeTimeout, or
	// CodeContractViolation.
	Code string
	// Retryable is the app's judgement; the step's policy may override it.
	Retryable bool
	// RetryAfter is the earliest retry the app asked for, if any.
	RetryAfter time.Duration
	// Rand is a uniform random number in [0, 1) for the backoff jitter,
	// drawn by the coordinator and recorded so replicas agree.
	Rand float64
}

// Outcome is what a failure leads to.
type Outcome struct {
	// Retry is true when the step will be attempted again at RetryAt.
	// When false the step has failed for good: the caller records a dead
	// letter, and the step waits for an operator (Retry or Resolve).
	Retry   bool
	RetryAt time.Time
	// TaskBlocked is true when this failure moved the task to error.
	TaskBlocked bool
}

// Fail records a failed attempt at now and decides, by the step's retry
// policy, whether and when it is retried.
func (r *Runs) Fail(t TaskRef, s int, f Failure, now time.Time) (Outcome, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return Outcome{}, err
	}
	next, err := NextStep(st.state, EvFail)
	if err != nil {
		return Outcome{}, err
	}
	st.state = next
	pol := r.plans[ts.plan].Steps[s].Retry
	if pol.Retries(f.Code, f.Retryable) && int(st.attempts) < pol.MaxAttempts {
		at := now.Add(pol.Backoff.Delay(int(st.attempts), f.Rand, f.RetryAfter))
		r.setNotBefore(ts, st, at)
		return Outcome{Retry: true, RetryAt: time.UnixMilli(ts.epoch + int64(st.notBefore)).UTC()}, nil
	}
	st.notBefore = blocked
	out := Outcome{}
	if next, err := NextTask(ts.state, TaskEvBlock); err == nil {
		ts.state = next
		out.TaskBlocked = true
	}
	return out, nil
}

// setNotBefore stores an absolute time relative to the task's epoch,
// moving the epoch forward if a long-lived task outgrows 32 bits of
// milliseconds (about 49 days).
func (r *Runs) setNotBefore(ts *taskSlot, st *stepSlot, at time.Time) {
	atMs := ceilMilli(at)
	rel := atMs - ts.epoch
	if rel >= blocked {
		r.rebase(ts, atMs-blocked/2)
		rel = atMs - ts.epoch
	}
	// Round up so that a retry is never earlier than asked, and keep 0
	// meaning "no wait".
	st.notBefore = uint32(max(rel, 1))
}

// ceilMilli is t in Unix milliseconds, rounded up.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return ms
}

func (r *Runs) rebase(ts *taskSlot, epoch int64) {
	steps := r.stepsOf(ts)
	for i := range steps {
		st := &steps[i]
		if st.notBefore == 0 || st.notBefore == blocked {
			continue
		}
		abs := ts.epoch + int64(st.notBefore)
		st.notBefore = uint32(max(abs-epoch, 1))
	}
	ts.epoch = epoch
}

// Release hands an in-flight step back without spending an attempt (the
// agent drained, or never started it because its breaker was open) and
// appends it to ready: its dependencies were already met.
func (r *Runs) Release(t TaskRef, s int, ready []int32) ([]int32, error) {
	_, st, err := r.step(t, s)
	if err != nil {
		return ready, err
	}
	next, err := NextStep(st.state, EvRelease)
	if err != nil {
		return ready, err
	}
	st.state = next
	st.attempts--
	st.notBefore = 0
	return append(ready, int32(s)), nil
}

// Retry gives a failed step a fresh round of attempts, by an operator's
// request, and appends it to ready if its dependencies are done.
func (r *Runs) Retry(t TaskRef, s int, ready []int32) ([]int32, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return ready, err
	}
	if ts.state.Terminal() {
		return ready, &TransitionError{What: "step of a task", State: ts.state.String(), Event: EvRetry.String()}
	}
	next, err := NextStep(st.state, EvRetry)
	if err != nil {
		return ready, err
	}
	st.state, st.attempts, st.notBefore = next, 0, 0
	r.resume(ts)
	if st.unmet == 0 {
		ready = append(ready, int32(s))
	}
	return ready, nil
}

// Resolve marks a pending or failed step as resolved by an operator, which
// satisfies its children like a completion.
func (r *Runs) Resolve(t TaskRef, s int, ready []int32) ([]int32, error) {
	ts, st, err := r.step(t, s)
	if err != nil {
		return ready, err
	}
	if ts.state.Terminal() {
		return ready, &TransitionError{What: "step of a task", State: ts.state.String(), Event: EvResolve.String()}
	}
	next, err := NextStep(st.state, EvResolve)
	if err != nil {
		return ready, err
	}
	st.state, st.notBefore = next, 0
	ts.flags |= flagManual
	r.resume(ts)
	return r.done(ts, s, ready), nil
}

// resume moves a blocked task back to in progress once no step blocks it.
func (r *Runs) resume(ts *taskSlot) {
	if ts.state != TaskError {
		return
	}
	for _, st := range r.stepsOf(ts) {
		if st.state == StepError && st.notBefore == blocked {
			return
		}
	}
	ts.state, _ = NextTask(ts.state, TaskEvResume)
}

// Cancel cancels a task and every step not yet finished, and appends to
// inFlight the steps an agent was holding, so their apps can be told.
func (r *Runs) Cancel(t TaskRef, inFlight []int32) ([]int32, error) {
	ts, err := r.task(t)
	if err != nil {
		return inFlight, err
	}
	next, err := NextTask(ts.state, TaskEvCancel)
	if err != nil {
		return inFlight, err
	}
	ts.state = next
	steps := r.stepsOf(ts)
	for i := range steps {
		st := &steps[i]
		if st.state.Terminal() {
			continue
		}
		if st.state.InFlight() {
			inFlight = append(inFlight, int32(i))
		}
		st.state, _ = NextStep(st.state, EvCancel)
	}
	return inFlight, nil
}

// Ready appends to buf the steps of t that may be dispatched at now, using
// the incrementally maintained dependency counts.
func (r *Runs) Ready(t TaskRef, now time.Time, buf []int32) ([]int32, error) {
	ts, err := r.task(t)
	if err != nil {
		return buf, err
	}
	if ts.state.Terminal() {
		return buf, nil
	}
	p := r.plans[ts.plan]
	rel := ts.rel(now)
	steps := r.stepsOf(ts)
	for i := range steps {
		if ready(p, i, &steps[i], rel) == isReady {
			buf = append(buf, int32(i))
		}
	}
	return buf, nil
}

// StepReady reports whether step s of t may be dispatched at now, in
// constant time: the check the coordinator makes before each dispatch.
func (r *Runs) StepReady(t TaskRef, s int, now time.Time) bool {
	ts, st, err := r.step(t, s)
	if err != nil || ts.state.Terminal() {
		return false
	}
	return ready(r.plans[ts.plan], s, st, ts.rel(now)) == isReady
}

// Recompute rebuilds t's dependency counts and open-step count from the
// step states alone (the full recompute used after recovery) and appends
// the ready steps to buf.
func (r *Runs) Recompute(t TaskRef, now time.Time, buf []int32) ([]int32, error) {
	ts, err := r.task(t)
	if err != nil {
		return buf, err
	}
	p := r.plans[ts.plan]
	steps := r.stepsOf(ts)
	open := 0
	for i := range steps {
		unmet := 0
		for _, par := range p.parents[p.parentOff[i]:p.parentOff[i+1]] {
			if !steps[par].state.Done() {
				unmet++
			}
		}
		steps[i].unmet = uint16(unmet)
		if !steps[i].state.Done() {
			open++
		}
	}
	ts.open = uint16(open)
	return r.Ready(t, now, buf)
}

// NextRetry returns the earliest time a failed step of t may be retried,
// so the caller can set one timer; ok is false when none is waiting.
func (r *Runs) NextRetry(t TaskRef) (at time.Time, ok bool, err error) {
	ts, err := r.task(t)
	if err != nil {
		return time.Time{}, false, err
	}
	best := uint32(blocked)
	for _, st := range r.stepsOf(ts) {
		if st.state == StepError && st.notBefore != blocked && st.notBefore < best {
			best = st.notBefore
		}
	}
	if best == blocked {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(ts.epoch + int64(best)).UTC(), true, nil
}

// StepRecord is a step's persisted scheduling state, from which Restore
// rebuilds a task after a restart or a leader change.
type StepRecord struct {
	State    StepState
	Attempts int
	// RetryAt is when a failed step may be retried; zero means now.
	RetryAt time.Time
	// Blocked marks a failed step that will not be retried.
	Blocked bool
}

// Restore adds a task whose steps are already under way, as recorded in
// the replicated store, and appends its ready steps at now to ready.
func (r *Runs) Restore(plan PlanRef, epoch time.Time, state TaskState, manual bool, rec []StepRecord, now time.Time, ready []int32) (TaskRef, []int32, error) {
	p := r.plans[plan]
	if len(rec) != len(p.Steps) {
		return 0, ready, fmt.Errorf("restore: %d step records for a plan of %d steps", len(rec), len(p.Steps))
	}
	for i, sr := range rec {
		if sr.State >= numStepStates || sr.Attempts < 0 || sr.Attempts > 255 {
			return 0, ready, fmt.Errorf("restore: step %d: invalid record %+v", i, sr)
		}
	}
	if state >= numTaskStates {
		return 0, ready, fmt.Errorf("restore: invalid task state %d", state)
	}
	t, _ := r.Add(plan, epoch, nil)
	ts := &r.tasks[t]
	ts.state = state
	if manual {
		ts.flags |= flagManual
	}
	steps := r.stepsOf(ts)
	for i, sr := range rec {
		st := &steps[i]
		st.state, st.attempts = sr.State, uint8(sr.Attempts)
		switch {
		case sr.Blocked:
			st.notBefore = blocked
		case !sr.RetryAt.IsZero() && sr.RetryAt.UnixMilli() > ts.epoch:
			r.setNotBefore(ts, st, sr.RetryAt)
		}
	}
	ready, err := r.Recompute(t, now, ready)
	return t, ready, err
}
