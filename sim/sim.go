// Package sim is a deterministic discrete-event simulator of a Tasker
// coordinator: it drives the pure engine in package workflow (a
// workflow.Runs) the way the leader will, against simulated apps, on a
// virtual clock.
//
// Nothing in it reads the real clock or sleeps. Time is a time.Time that
// jumps from one scheduled event to the next; randomness (the backoff
// jitter the coordinator draws) comes from a source seeded by the caller.
// The same plan, handlers and seed therefore give the same transition log,
// which makes the simulator a test harness for the engine and a demo of it:
//
//	s, err := sim.New(plan, sim.Config{Seed: 1, Handlers: handlers})
//	t, err := s.AddTask(input) // checked against the input contract
//	err = s.Run()              // until no event is left
//	for _, r := range s.Log() { ... }
//	report, err := s.Report(t)
package sim

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// Handler simulates the app behind a capability. Given a step's input and
// the attempt number (from 1) it returns either a result or a failure,
// and how long the attempt takes. An attempt that takes longer than the
// step's timeout fails with workflow.CodeTimeout when the timeout expires.
type Handler func(input any, attempt int) (result any, duration time.Duration, failure *workflow.Failure)

// Config configures a simulation.
type Config struct {
	// Start is the virtual time at which the simulation begins; the zero
	// value means DefaultStart.
	Start time.Time
	// Seed seeds the random source that draws each failure's backoff jitter.
	Seed uint64
	// Latency is how long a dispatched step waits before its app starts it.
	Latency time.Duration
	// Handlers simulate the apps, by capability.
	Handlers map[string]Handler
	// Steps override Handlers for single steps, by step name, for
	// scenarios where one step of a shared capability misbehaves.
	Steps map[string]Handler
}

// DefaultStart is the virtual start time when Config.Start is zero: fixed,
// so that logs are identical from run to run.
func DefaultStart() time.Time { return time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC) }

// Record is one transition of a step or of a task, in the order they
// happened.
type Record struct {
	// At is the virtual time since the simulation's start.
	At   time.Duration    `json:"at_ns"`
	Task workflow.TaskRef `json:"task"`
	// Step names the step; "" when the record is about the task itself.
	Step string `json:"step,omitempty"`
	From string `json:"from"`
	To   string `json:"to"`
	// Attempt is the step's attempt the transition belongs to (from 1).
	Attempt int `json:"attempt,omitempty"`
	// Code is the failure code on a move to error.
	Code string `json:"code,omitempty"`
	// Detail says why, when the code alone does not: the contract
	// violation or the mapping error.
	Detail string `json:"detail,omitempty"`
	// Retry is true when a failed step will be retried, at RetryAt (since
	// the simulation's start).
	Retry   bool          `json:"retry,omitempty"`
	RetryAt time.Duration `json:"retry_at_ns,omitempty"`
}

// TaskReport is a task's state at the end of a run.
type TaskReport struct {
	State workflow.TaskState
	// Elapsed runs from the task's creation to its last transition.
	Elapsed time.Duration
	Steps   []StepReport
}

// StepReport is a step's state at the end of a run.
type StepReport struct {
	Name     string
	State    workflow.StepState
	Attempts int
	// Result is the result the step completed with, nil otherwise.
	Result any
}

// maxEvents bounds a run: a plan has at most a few thousand steps with at
// most 255 attempts each, so more events than this means a bug.
const maxEvents = 10_000_000

// Sim is one simulation. It is not safe for concurrent use.
type Sim struct {
	plan     *workflow.Plan
	ref      workflow.PlanRef
	runs     *workflow.Runs
	start    time.Time
	now      time.Time
	rng      *rand.Rand
	latency  time.Duration
	handlers []Handler // by step index
	queue    queue
	seq      uint64
	tasks    map[workflow.TaskRef]*task
	log      []Record
}

type task struct {
	input   any
	results []any
	created time.Time
	last    time.Time
}

// New prepares a simulation of plan. Every step needs a handler, from
// cfg.Steps or cfg.Handlers; the error names the capabilities without one.
func New(plan *workflow.Plan, cfg Config) (*Sim, error) {
	start := cfg.Start
	if start.IsZero() {
		start = DefaultStart()
	}
	s := &Sim{
		plan:     plan,
		runs:     workflow.NewRuns(),
		start:    start,
		now:      start,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		latency:  max(cfg.Latency, 0),
		handlers: make([]Handler, len(plan.Steps)),
		tasks:    map[workflow.TaskRef]*task{},
	}
	s.ref = s.runs.AddPlan(plan)
	var missing []string
	for i, st := range plan.Steps {
		h := cfg.Steps[st.Name]
		if h == nil {
			h = cfg.Handlers[st.Capability]
		}
		if h == nil {
			missing = append(missing, st.Capability)
		}
		s.handlers[i] = h
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("no handler for %s", strings.Join(slices.Compact(missing), ", "))
	}
	return s, nil
}

// Now returns the virtual time.
func (s *Sim) Now() time.Time { return s.now }

// Elapsed returns the virtual time since the simulation's start.
func (s *Sim) Elapsed() time.Duration { return s.now.Sub(s.start) }

// Log returns every transition so far. The slice must not be modified.
func (s *Sim) Log() []Record { return s.log }

// AddTask starts a task with input at the current virtual time, as
// StartTask does: the input is checked against the plan's input contract
// and refused with a *workflow.ContractError if it breaks it. The task's
// root steps are dispatched when Run runs.
func (s *Sim) AddTask(input any) (workflow.TaskRef, error) {
	in, err := normalize(input)
	if err != nil {
		return 0, fmt.Errorf("task input: %w", err)
	}
	if err := s.plan.Input.Check("input", in); err != nil {
		return 0, err
	}
	t, ready := s.runs.Add(s.ref, s.now, nil)
	s.tasks[t] = &task{input: in, results: make([]any, len(s.plan.Steps)), created: s.now, last: s.now}
	for _, i := range ready {
		s.push(event{at: s.now, kind: evDispatch, task: t, step: int(i)})
	}
	return t, nil
}

// Run processes events until none is left: every task is then complete,
// blocked or waiting on nothing. An error means the engine refused a
// transition the simulator asked for, which is a bug in one of them.
func (s *Sim) Run() error {
	for n := 0; s.queue.Len() > 0; n++ {
		if n >= maxEvents {
			return fmt.Errorf("simulation did not settle after %d events", maxEvents)
		}
		ev := heap.Pop(&s.queue).(event)
		s.now = ev.at
		var err error
		switch ev.kind {
		case evDispatch:
			err = s.dispatch(ev)
		case evStart:
			err = s.begin(ev)
		case evFinish:
			err = s.finish(ev)
		}
		if err != nil {
			return fmt.Errorf("at +%v, task %d step %s: %w", s.Elapsed(), ev.task, s.plan.Steps[ev.step].Name, err)
		}
	}
	return nil
}

// Report returns the state of task t.
func (s *Sim) Report(t workflow.TaskRef) (TaskReport, error) {
	tk, ok := s.tasks[t]
	if !ok {
		return TaskReport{}, fmt.Errorf("%w: ref %d", workflow.ErrUnknownTask, t)
	}
	state, err := s.runs.TaskState(t)
	if err != nil {
		return TaskReport{}, err
	}
	r := TaskReport{State: state, Elapsed: tk.last.Sub(tk.created), Steps: make([]StepReport, len(s.plan.Steps))}
	for i, st := range s.plan.Steps {
		v, err := s.runs.Step(t, i)
		if err != nil {
			return TaskReport{}, err
		}
		r.Steps[i] = StepReport{Name: st.Name, State: v.State, Attempts: v.Attempts, Result: tk.results[i]}
	}
	return r, nil
}

// dispatch begins an attempt and builds the step's input from the task
// input and upstream results, as the coordinator does before sending it.
func (s *Sim) dispatch(ev event) error {
	tk := s.tasks[ev.task]
	from, taskFrom, err := s.states(ev.task, ev.step)
	if err != nil {
		return err
	}
	attempt, err := s.runs.Dispatch(ev.task, ev.step, s.now)
	if err != nil {
		return err
	}
	s.taskMoved(ev.task, taskFrom)
	s.record(ev.task, ev.step, Record{From: from.String(), To: workflow.StepEnqueued.String(), Attempt: attempt})
	input, err := s.plan.Steps[ev.step].Input.Resolve(tk.input, func(i int) any { return tk.results[i] })
	if err != nil {
		// An upstream result met its contract but not this mapping: no
		// attempt of this step can fix that.
		return s.fail(ev.task, ev.step, attempt, workflow.StepEnqueued, &workflow.Failure{Code: workflow.CodeContractViolation}, "input mapping: "+err.Error())
	}
	s.push(event{at: s.now.Add(s.latency), kind: evStart, task: ev.task, step: ev.step, attempt: attempt, input: input})
	return nil
}

// begin hands the step to its app and schedules the attempt's end.
func (s *Sim) begin(ev event) error {
	if err := s.runs.Started(ev.task, ev.step); err != nil {
		return err
	}
	s.record(ev.task, ev.step, Record{From: workflow.StepEnqueued.String(), To: workflow.StepInProgress.String(), Attempt: ev.attempt})
	result, d, f := s.handlers[ev.step](ev.input, ev.attempt)
	if timeout := s.plan.Steps[ev.step].Timeout; timeout > 0 && d > timeout {
		d, result, f = timeout, nil, &workflow.Failure{Code: workflow.CodeTimeout, Retryable: true}
	}
	s.push(event{at: s.now.Add(max(d, 0)), kind: evFinish, task: ev.task, step: ev.step, attempt: ev.attempt, result: result, failure: f})
	return nil
}

// finish checks the attempt's outcome against the step's contracts and
// applies it.
func (s *Sim) finish(ev event) error {
	st := s.plan.Steps[ev.step]
	if f := ev.failure; f != nil {
		detail := ""
		if len(st.ErrorCodes) > 0 && f.Code != workflow.CodeTimeout && f.Code != workflow.CodeContractViolation && !slices.Contains(st.ErrorCodes, f.Code) {
			detail = fmt.Sprintf("error code %q is not in the error contract (%s)", f.Code, strings.Join(st.ErrorCodes, ", "))
			f = &workflow.Failure{Code: workflow.CodeContractViolation}
		}
		return s.fail(ev.task, ev.step, ev.attempt, workflow.StepInProgress, f, detail)
	}
	result, err := normalize(ev.result)
	if err == nil {
		err = st.Result.Check("result of step "+st.Name, result)
	}
	if err != nil {
		return s.fail(ev.task, ev.step, ev.attempt, workflow.StepInProgress, &workflow.Failure{Code: workflow.CodeContractViolation}, violation(err))
	}
	tk := s.tasks[ev.task]
	tk.results[ev.step] = result
	taskFrom, _ := s.runs.TaskState(ev.task)
	ready, err := s.runs.Succeed(ev.task, ev.step, nil)
	if err != nil {
		return err
	}
	s.record(ev.task, ev.step, Record{From: workflow.StepInProgress.String(), To: workflow.StepComplete.String(), Attempt: ev.attempt})
	s.taskMoved(ev.task, taskFrom)
	for _, i := range ready {
		s.push(event{at: s.now, kind: evDispatch, task: ev.task, step: int(i)})
	}
	return nil
}

// fail records a failed attempt, drawing the jitter as the coordinator
// does, and schedules the retry the policy allows.
func (s *Sim) fail(t workflow.TaskRef, step, attempt int, from workflow.StepState, f *workflow.Failure, detail string) error {
	fc := *f
	fc.Rand = s.rng.Float64()
	taskFrom, _ := s.runs.TaskState(t)
	out, err := s.runs.Fail(t, step, fc, s.now)
	if err != nil {
		return err
	}
	r := Record{From: from.String(), To: workflow.StepError.String(), Attempt: attempt, Code: fc.Code, Detail: detail}
	if out.Retry {
		// The engine keeps retry times in whole milliseconds; never let
		// the virtual clock run backwards because of that.
		at := out.RetryAt
		if at.Before(s.now) {
			at = s.now
		}
		r.Retry, r.RetryAt = true, at.Sub(s.start)
		s.push(event{at: at, kind: evDispatch, task: t, step: step})
	}
	s.record(t, step, r)
	s.taskMoved(t, taskFrom)
	return nil
}

func (s *Sim) states(t workflow.TaskRef, step int) (workflow.StepState, workflow.TaskState, error) {
	v, err := s.runs.Step(t, step)
	if err != nil {
		return 0, 0, err
	}
	ts, err := s.runs.TaskState(t)
	return v.State, ts, err
}

// taskMoved records the task's transition, if the last call made one.
func (s *Sim) taskMoved(t workflow.TaskRef, from workflow.TaskState) {
	to, err := s.runs.TaskState(t)
	if err != nil || to == from {
		return
	}
	s.record(t, -1, Record{From: from.String(), To: to.String()})
}

func (s *Sim) record(t workflow.TaskRef, step int, r Record) {
	r.At, r.Task = s.now.Sub(s.start), t
	if step >= 0 {
		r.Step = s.plan.Steps[step].Name
	}
	s.log = append(s.log, r)
	s.tasks[t].last = s.now
}

func (s *Sim) push(ev event) {
	ev.seq = s.seq
	s.seq++
	heap.Push(&s.queue, ev)
}

// normalize turns a handler's Go value into the decoded JSON the engine
// and contracts expect, as if it had crossed the wire.
func normalize(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return workflow.DecodeJSON(raw)
}

// violation renders a contract error without the contract's name, which
// the record already carries in its step.
func violation(err error) string {
	var ce *workflow.ContractError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	parts := make([]string, len(ce.Violations))
	for i, v := range ce.Violations {
		parts[i] = v.String()
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

type eventKind uint8

const (
	evDispatch eventKind = iota // a step is ready: begin an attempt
	evStart                     // the app takes the step
	evFinish                    // the attempt ends with a result or a failure
)

type event struct {
	at      time.Time
	seq     uint64 // insertion order: events at one instant keep it, for determinism
	kind    eventKind
	task    workflow.TaskRef
	step    int
	attempt int
	input   any
	result  any
	failure *workflow.Failure
}

// queue is a min-heap of events by time, then insertion order.
type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any {
	old := *q
	ev := old[len(old)-1]
	*q = old[:len(old)-1]
	return ev
}
