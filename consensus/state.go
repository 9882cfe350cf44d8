package consensus

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/tasker-run/tasker/workflow"
)

// State is Tasker's replicated workflow state: workflow versions, tasks
// with their steps, results, errors and history, and the scheduling index
// (workflow.Runs) of the active tasks. Commands change it only through
// Apply, on every server alike; everything a change depends on comes from
// the command, so replicas stay identical. Readers take copies.
type State struct {
	mu        sync.RWMutex
	limits    workflow.Limits
	workflows map[wfKey]*workflowRec
	tasks     map[string]*taskRec
	byNumber  []*taskRec // creation order; index = number-1
	idem      map[idemKey]*taskRec
	runs      *workflow.Runs
	plans     map[*workflow.Plan]workflow.PlanRef
	clusterID string    // set once by InitCluster
	busCursor uint64    // BusCursor: events up to this index are on the bus
	acl       aclTokens // ACL tokens (acl.go)
	history   history   // ended attempts (history.go)
	props     proposals // proposals.go
	// undo is the undo log of the atomic batch being applied (nil
	// otherwise): the commands it may hold append how to undo themselves.
	undo *[]func()
}

// ClusterID is the id the cluster's first leader gave it; empty until then.
func (s *State) ClusterID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusterID
}

// BusCursor is the log index up to which the leader's bus confirmed every
// event (BusCursor commands).
func (s *State) BusCursor() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.busCursor
}

// advanceBusCursor moves the cursor forward; an older cursor (a deposed
// leader's, applied late) changes nothing.
func (s *State) advanceBusCursor(index uint64, fx *Effects) *Result {
	if index > s.busCursor {
		s.busCursor = index
		fx.BusCursor = index
	}
	return &Result{}
}

// initCluster names the cluster once; naming it again with the same id is
// acknowledged, with another refused.
func (s *State) initCluster(id string) *Result {
	switch {
	case id == "":
		return &Result{Err: fmt.Errorf("%w: cluster id is empty", ErrInvalid)}
	case s.clusterID == "":
		s.clusterID = id
		return &Result{Created: true}
	case s.clusterID == id:
		return &Result{}
	}
	return &Result{Err: fmt.Errorf("%w: the cluster is already named %s", ErrInvalid, s.clusterID)}
}

type wfKey struct{ ns, name string }

type idemKey struct{ ns, key string }

type workflowRec struct {
	key      wfKey
	versions []*versionRec // apply order
	// active pins the version tasks started without one get
	// (SetActiveVersion); "" means the highest.
	active string
}

type versionRec struct {
	wf        *workflowRec
	version   string
	manifest  string
	plan      *workflow.Plan
	createdAt time.Time
	sites     []*histSite // by step, made as the history needs them
}

type taskRec struct {
	id, ns   string
	ver      *versionRec
	input    string
	inputVal any // decoded once, for building step inputs
	idem     string
	created  time.Time
	ended    time.Time
	number   uint64
	// traceParent is the W3C trace context the task was started in ("" if
	// untraced): its step attempts' spans join that trace.
	traceParent string
	state       workflow.TaskState
	ref         workflow.TaskRef
	active      bool // in runs
	steps       []stepRec
	events      []Event
	resultVal   []any // decoded results, by step; nil until needed
}

type stepRec struct {
	state        workflow.StepState
	attempts     int
	retryAt      time.Time
	blocked      bool
	result       string
	lastErr      *StepError
	readyAt      time.Time
	dispatchedAt time.Time
	startedAt    time.Time
	endedAt      time.Time
	deadline     time.Time
	agent        string
	worker       string
}

// NewState returns an empty state that validates manifests with limits.
func NewState(limits workflow.Limits) *State {
	return &State{
		limits:    limits,
		workflows: map[wfKey]*workflowRec{},
		tasks:     map[string]*taskRec{},
		idem:      map[idemKey]*taskRec{},
		runs:      workflow.NewRuns(),
		plans:     map[*workflow.Plan]workflow.PlanRef{},
		acl:       newACLTokens(),
		history:   newHistory(HistoryRetention{}),
		props:     newProposals(),
	}
}

func nsOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

// --- commands -------------------------------------------------------------

// putWorkflow stores a workflow version.
func (s *State) putWorkflow(manifest string, now time.Time, _ *Effects) *Result {
	_, res := s.storeWorkflow(manifest, now)
	return res
}

// storeWorkflow stores a workflow version and returns it (nil when
// refused).
func (s *State) storeWorkflow(manifest string, now time.Time) (*versionRec, *Result) {
	plan, err := workflow.Load([]byte(manifest), s.limits)
	if err != nil {
		return nil, &Result{Err: fmt.Errorf("%w: %w", ErrInvalid, err)}
	}
	k := wfKey{plan.Namespace, plan.Name}
	wf := s.workflows[k]
	if wf != nil {
		for _, v := range wf.versions {
			if v.version == plan.Version {
				if v.manifest == manifest {
					return v, &Result{Created: false}
				}
				return nil, &Result{Err: fmt.Errorf("%w: %s/%s %s; apply it under a new version", ErrVersionExists, k.ns, k.name, plan.Version)}
			}
		}
	}
	if wf == nil {
		wf = &workflowRec{key: k}
		s.workflows[k] = wf
		s.record(func() { delete(s.workflows, k) })
	} else if s.undo != nil {
		n, active := len(wf.versions), wf.active
		s.record(func() { wf.versions, wf.active = wf.versions[:n], active })
	}
	v := &versionRec{wf: wf, version: plan.Version, manifest: manifest, plan: plan, createdAt: now}
	wf.versions = append(wf.versions, v)
	// A new version means the operator moved on: the pin an approved
	// proposal set (or a rollback) no longer says which version is current.
	wf.active = ""
	return v, &Result{Created: true}
}

func (s *State) planRef(p *workflow.Plan) workflow.PlanRef {
	ref, ok := s.plans[p]
	if !ok {
		ref = s.runs.AddPlan(p)
		s.plans[p] = ref
	}
	return ref
}

// createTask starts a task, or finds the one its idempotency key started.
// maxInFlight caps the tasks in flight (0: no cap); the retry of a task
// already created is answered even at the cap.
func (s *State) createTask(id, ns, name, version, input, key string, maxInFlight int, now time.Time, fx *Effects) *Result {
	ns = nsOr(ns)
	// Task ids are chosen once per StartTask call (D19), so finding this id
	// means this call's command was applied before: a forwarded StartTask
	// retried after a leader change left its outcome unknown. It gets the
	// answer of the apply that created the task, created = true; answering
	// false would tell the one caller that created it that someone else
	// did (found by the linearizability test).
	if key != "" {
		if t, ok := s.idem[idemKey{ns, key}]; ok {
			return &Result{TaskID: t.id, Created: t.id == id}
		}
	}
	if t, dup := s.tasks[id]; dup {
		// Another task under that id is refused.
		if t.ns == ns && t.ver.wf.key.name == name && (version == "" || t.ver.version == version) && t.input == orJSON(input) && t.idem == key {
			return &Result{TaskID: id, Created: true}
		}
		return &Result{Err: fmt.Errorf("%w: task id %q is taken", ErrInvalid, id)}
	}
	if id == "" {
		return &Result{Err: fmt.Errorf("%w: task id is empty", ErrInvalid)}
	}
	if err := s.checkInFlight(maxInFlight); err != nil {
		return &Result{Err: err}
	}
	v, err := s.version(ns, name, version)
	if err != nil {
		return &Result{Err: err}
	}
	if input == "" {
		input = "{}"
	}
	val, err := workflow.DecodeJSON([]byte(input))
	if err != nil {
		return &Result{Err: fmt.Errorf("%w: input: %w", ErrInvalid, err)}
	}
	if err := v.plan.Input.Check("input", val); err != nil {
		return &Result{Err: fmt.Errorf("%w: %w", ErrInvalid, err)}
	}
	t := &taskRec{
		id: id, ns: ns, ver: v, input: input, inputVal: val, idem: key, created: now,
		number: uint64(len(s.byNumber) + 1), state: workflow.TaskPending, active: true,
		steps: make([]stepRec, v.plan.Len()),
	}
	var ready []int32
	t.ref, ready = s.runs.Add(s.planRef(v.plan), now, nil)
	s.tasks[id] = t
	s.byNumber = append(s.byNumber, t)
	if key != "" {
		s.idem[idemKey{ns, key}] = t
	}
	t.emit(fx, now, EventTaskCreated, "", 0, fmt.Sprintf("%s/%s %s", ns, name, v.version))
	s.becameReady(t, ready, now, fx)
	return &Result{TaskID: id, Created: true}
}

func orJSON(input string) string {
	if input == "" {
		return "{}"
	}
	return input
}

// version finds a workflow version; "" means the active one (the pinned
// version, else the highest).
func (s *State) version(ns, name, version string) (*versionRec, error) {
	wf := s.workflows[wfKey{nsOr(ns), name}]
	if wf == nil || len(wf.versions) == 0 {
		return nil, notFound("workflow %s/%s", nsOr(ns), name)
	}
	if version == "" {
		return wf.activeOf(), nil
	}
	for _, v := range wf.versions {
		if v.version == version {
			return v, nil
		}
	}
	return nil, notFound("workflow %s/%s version %s", nsOr(ns), name, version)
}

// latest is the highest semantic version, not the last applied: applying
// a fix to an old line must not redirect new tasks to it.
func (wf *workflowRec) latest() *versionRec {
	best := wf.versions[0]
	for _, v := range wf.versions[1:] {
		if compareSemver(v.version, best.version) > 0 {
			best = v
		}
	}
	return best
}

// task finds an active task and one of its steps by name.
func (s *State) taskStep(id, step string) (*taskRec, int, error) {
	t := s.tasks[id]
	if t == nil {
		return nil, 0, notFound("task %s", id)
	}
	i, ok := t.ver.plan.StepIndex(step)
	if !ok {
		return nil, 0, notFound("step %q in task %s (workflow %s)", step, id, t.ver.wf.key.name)
	}
	if !t.active {
		return nil, 0, fmt.Errorf("%w: task %s is %s", ErrTaskEnded, id, t.state)
	}
	return t, i, nil
}

// current checks that attempt is the step's current, in-flight attempt.
func (t *taskRec) current(i, attempt int, worker string) error {
	st := &t.steps[i]
	if attempt != st.attempts || !st.state.InFlight() {
		return fmt.Errorf("%w: step %s attempt %d is not in flight (the step is %s at attempt %d)", ErrStaleAttempt, t.ver.plan.Steps[i].Name, attempt, st.state, st.attempts)
	}
	// A handed-back attempt is dispatched again under the same number; the
	// worker that gave it up must not report for the one that holds it now.
	if worker != "" && st.worker != "" && worker != st.worker {
		return fmt.Errorf("%w: step %s attempt %d is held by worker %s, not %s", ErrStaleAttempt, t.ver.plan.Steps[i].Name, attempt, st.worker, worker)
	}
	return nil
}

func (s *State) dispatch(id, step string, attempt int, agent, worker string, deadline, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	if want := t.steps[i].attempts + 1; attempt != want {
		return &Result{Err: fmt.Errorf("%w: dispatch of step %s attempt %d, but the next attempt is %d", ErrStaleAttempt, step, attempt, want)}
	}
	was := t.state
	n, err := s.runs.Dispatch(t.ref, i, now)
	if err != nil {
		return &Result{Err: err}
	}
	st := &t.steps[i]
	st.dispatchedAt, st.startedAt, st.deadline, st.agent, st.worker = now, time.Time{}, deadline, agent, worker
	s.sync(t)
	if was == workflow.TaskPending && t.state == workflow.TaskInProgress {
		t.emit(fx, now, EventTaskStarted, "", 0, "")
	}
	t.emit(fx, now, EventStepDispatched, step, n, "to "+AgentLabel(agent, worker))
	fx.Leases = append(fx.Leases, Lease{t.stepRef(i), n, deadline})
	return &Result{TaskID: id, Attempt: n}
}

// AgentLabel names where an attempt runs: "agent/worker".
func AgentLabel(agent, worker string) string {
	switch {
	case agent == "":
		return worker
	case worker == "":
		return agent
	}
	return agent + "/" + worker
}

func (s *State) start(id, step string, attempt int, worker string, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	if err := t.current(i, attempt, ""); err != nil {
		return &Result{Err: err}
	}
	if err := s.runs.Started(t.ref, i); err != nil {
		return &Result{Err: err}
	}
	t.steps[i].startedAt = now
	if t.steps[i].worker == "" {
		t.steps[i].worker = worker
	}
	s.sync(t)
	t.emit(fx, now, EventStepStarted, step, attempt, "")
	return &Result{TaskID: id}
}

func (s *State) complete(id, step string, attempt int, result, worker string, now time.Time, fx *Effects) *Result {
	if s.alreadyCompleted(id, step, attempt, result, worker) {
		// A worker re-sending a result whose acknowledgement it lost (the
		// agent crashed after the commit) gets success: nothing changes.
		return &Result{TaskID: id}
	}
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	if err := t.current(i, attempt, worker); err != nil {
		t.noteLate(fx, now, i, attempt, "a result")
		return &Result{Err: err}
	}
	val, err := checkResult(t.ver.plan, i, result)
	if err != nil {
		return &Result{Err: err}
	}
	ready, err := s.runs.Succeed(t.ref, i, nil)
	if err != nil {
		return &Result{Err: err}
	}
	st := &t.steps[i]
	if result == "" {
		result = "{}"
	}
	s.recordAttempt(t, i, outCompleted, nil, now)
	s.history.settle(t.id, i, resRetrySucceeded, now)
	st.result, st.endedAt, st.deadline = result, now, time.Time{}
	t.setResult(i, val)
	s.sync(t)
	t.emit(fx, now, EventStepCompleted, step, attempt, "")
	s.becameReady(t, ready, now, fx)
	s.maybeEnd(t, now, fx, "")
	return &Result{TaskID: id}
}

// alreadyCompleted reports whether this exact attempt already completed
// with this exact result.
func (s *State) alreadyCompleted(id, step string, attempt int, result, worker string) bool {
	t := s.tasks[id]
	if t == nil {
		return false
	}
	i, ok := t.ver.plan.StepIndex(step)
	if !ok {
		return false
	}
	st := &t.steps[i]
	if result == "" {
		result = "{}"
	}
	// The worker rule is current()'s: an attempt completed before its start
	// was recorded holds no worker, and its worker's re-sent result must
	// be acknowledged like the first (found by the linearizability test).
	return st.state == workflow.StepComplete && st.attempts == attempt && st.result == result && (worker == "" || st.worker == "" || worker == st.worker)
}

// checkResult decodes a result and checks it against the step's contract.
func checkResult(p *workflow.Plan, i int, result string) (any, error) {
	if result == "" {
		result = "{}"
	}
	val, err := workflow.DecodeJSON([]byte(result))
	if err != nil {
		return nil, fmt.Errorf("%w: result of step %s: %w", ErrInvalid, p.Steps[i].Name, err)
	}
	if err := p.Steps[i].Result.Check("result of step "+p.Steps[i].Name, val); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return val, nil
}

func (s *State) fail(c failure, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(c.taskID, c.step)
	if err != nil {
		return &Result{Err: err}
	}
	if err := t.current(i, c.attempt, c.worker); err != nil {
		t.noteLate(fx, now, i, c.attempt, "a failure ("+c.code+")")
		return &Result{Err: err}
	}
	was := t.state
	out, err := s.runs.Fail(t.ref, i, workflow.Failure{Code: c.code, Retryable: c.retryable, RetryAfter: c.retryAfter, Rand: c.rand}, now)
	if err != nil {
		return &Result{Err: err}
	}
	st := &t.steps[i]
	st.deadline = time.Time{}
	st.lastErr = &StepError{Code: c.code, Message: c.message, Retryable: c.retryable, Attempt: c.attempt, At: now, DetailsJSON: c.details}
	s.recordAttempt(t, i, failOutcome(c.code), st.lastErr, now)
	if !out.Retry {
		s.history.settle(t.id, i, resDeadLettered, now)
	}
	s.sync(t)
	msg := c.code
	if c.message != "" {
		msg += ": " + c.message
	}
	t.emitCode(fx, now, EventStepFailed, c.step, c.attempt, msg, c.code)
	if out.Retry {
		t.emit(fx, now, EventStepRetryScheduled, c.step, c.attempt, "next attempt at "+out.RetryAt.UTC().Format(time.RFC3339Nano))
		fx.Retries = append(fx.Retries, Lease{t.stepRef(i), c.attempt, out.RetryAt})
	} else {
		st.endedAt = now
		t.emitCode(fx, now, EventStepDeadLettered, c.step, c.attempt, msg, c.code)
		if was != workflow.TaskError && t.state == workflow.TaskError {
			t.emitCode(fx, now, EventTaskFailed, c.step, c.attempt, "step "+c.step+" failed: "+msg, c.code)
		}
	}
	return &Result{TaskID: c.taskID, Retry: out.Retry, RetryAt: out.RetryAt}
}

type failure struct {
	taskID, step  string
	attempt       int
	code, message string
	retryable     bool
	retryAfter    time.Duration
	rand          float64
	details       string
	worker        string // the reporting worker; "" skips the holder check
}

func (s *State) release(id, step string, attempt int, reason string, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	if err := t.current(i, attempt, ""); err != nil {
		return &Result{Err: err}
	}
	ready, err := s.runs.Release(t.ref, i, nil)
	if err != nil {
		return &Result{Err: err}
	}
	st := &t.steps[i]
	s.recordAttempt(t, i, outReleased, nil, now)
	st.deadline, st.agent, st.worker = time.Time{}, "", ""
	s.sync(t)
	t.emit(fx, now, EventStepReleased, step, attempt, reason)
	s.becameReady(t, ready, now, fx)
	return &Result{TaskID: id}
}

func (s *State) retry(id, step, reason string, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	was := t.state
	ready, err := s.runs.Retry(t.ref, i, nil)
	if err != nil {
		return &Result{Err: err}
	}
	t.steps[i].endedAt = time.Time{}
	s.history.settle(t.id, i, resRetriedManually, now)
	s.sync(t)
	t.emit(fx, now, EventStepRetryRequested, step, 0, reason)
	if was == workflow.TaskError && t.state == workflow.TaskInProgress {
		t.emit(fx, now, EventTaskResumed, step, 0, "")
	}
	s.becameReady(t, ready, now, fx)
	return &Result{TaskID: id}
}

func (s *State) resolve(id, step, result, reason string, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	val, err := checkResult(t.ver.plan, i, result)
	if err != nil {
		return &Result{Err: err}
	}
	was := t.state
	ready, err := s.runs.Resolve(t.ref, i, nil)
	if err != nil {
		return &Result{Err: err}
	}
	st := &t.steps[i]
	if result == "" {
		result = "{}"
	}
	st.result, st.endedAt = result, now
	s.history.settle(t.id, i, resResolvedManually, now)
	t.setResult(i, val)
	s.sync(t)
	t.emit(fx, now, EventStepResolvedManually, step, 0, reason)
	if was == workflow.TaskError && t.state == workflow.TaskInProgress {
		t.emit(fx, now, EventTaskResumed, step, 0, "")
	}
	s.becameReady(t, ready, now, fx)
	s.maybeEnd(t, now, fx, "")
	return &Result{TaskID: id}
}

func (s *State) cancel(id, reason string, now time.Time, fx *Effects) *Result {
	t := s.tasks[id]
	if t == nil {
		return &Result{Err: notFound("task %s", id)}
	}
	if !t.active {
		if t.state == workflow.TaskCancelled {
			// Cancelling is idempotent: a retried CancelTask (its first
			// answer lost with a leader) must not be told it failed.
			return &Result{TaskID: id}
		}
		return &Result{Err: fmt.Errorf("%w: task %s is %s", ErrTaskEnded, id, t.state)}
	}
	inflight, err := s.runs.Cancel(t.ref, nil)
	if err != nil {
		return &Result{Err: err}
	}
	for _, i := range inflight {
		fx.Released = append(fx.Released, Lease{t.stepRef(int(i)), t.steps[i].attempts, t.steps[i].deadline})
		s.recordAttempt(t, int(i), outCancelled, nil, now)
	}
	for i := range t.steps {
		s.history.settle(t.id, i, resCancelled, now)
	}
	s.sync(t)
	for i := range t.steps {
		if t.steps[i].state == workflow.StepCancelled && t.steps[i].endedAt.IsZero() {
			t.steps[i].endedAt = now
			t.steps[i].deadline = time.Time{}
			t.emit(fx, now, EventStepCancelled, t.ver.plan.Steps[i].Name, t.steps[i].attempts, "")
		}
	}
	s.maybeEnd(t, now, fx, reason)
	return &Result{TaskID: id}
}

func (s *State) extend(id, step string, attempt int, worker string, deadline, now time.Time, fx *Effects) *Result {
	t, i, err := s.taskStep(id, step)
	if err != nil {
		return &Result{Err: err}
	}
	if err := t.current(i, attempt, worker); err != nil {
		return &Result{Err: err}
	}
	t.steps[i].deadline = deadline
	t.emit(fx, now, EventStepLeaseExtended, step, attempt, "until "+deadline.UTC().Format(time.RFC3339Nano))
	fx.Leases = append(fx.Leases, Lease{t.stepRef(i), attempt, deadline})
	return &Result{TaskID: id}
}

// --- helpers --------------------------------------------------------------

// sync copies the scheduling state of every step (and the task) from runs
// into the records readers see.
func (s *State) sync(t *taskRec) {
	ts, err := s.runs.TaskState(t.ref)
	if err != nil {
		return
	}
	t.state = ts
	for i := range t.steps {
		v, err := s.runs.Step(t.ref, i)
		if err != nil {
			return
		}
		st := &t.steps[i]
		st.state, st.attempts, st.retryAt, st.blocked = v.State, v.Attempts, v.RetryAt, v.Blocked
	}
}

func (s *State) becameReady(t *taskRec, ready []int32, now time.Time, fx *Effects) {
	for _, i := range ready {
		t.steps[i].readyAt = now
		fx.Ready = append(fx.Ready, t.stepRef(int(i)))
		t.emit(fx, now, EventStepReady, t.ver.plan.Steps[i].Name, t.steps[i].attempts+1, "")
	}
}

// maybeEnd retires a task that reached a terminal state from the
// scheduling index; its records stay for readers.
func (s *State) maybeEnd(t *taskRec, now time.Time, fx *Effects, msg string) {
	if !t.state.Terminal() || !t.active {
		return
	}
	t.ended = now
	t.active = false
	_ = s.runs.Remove(t.ref)
	switch t.state {
	case workflow.TaskComplete:
		t.emit(fx, now, EventTaskCompleted, "", 0, msg)
	case workflow.TaskResolvedManually:
		t.emit(fx, now, EventTaskResolved, "", 0, msg)
	case workflow.TaskCancelled:
		t.emit(fx, now, EventTaskCancelled, "", 0, msg)
	}
	t.resultVal = nil
	t.inputVal = nil
}

// noteLate records, once per attempt, that a report arrived for an
// attempt a later one superseded (its agent was declared dead, its lease
// lapsed): the report is refused — the step never completes twice — but
// the history shows the old attempt did finish, for whoever wonders
// whether its side effect happened.
func (t *taskRec) noteLate(fx *Effects, now time.Time, i, attempt int, what string) {
	st := &t.steps[i]
	if attempt < 1 || attempt >= st.attempts {
		return
	}
	name := t.ver.plan.Steps[i].Name
	for _, e := range t.events {
		if e.Type == EventStepLateReport && e.Step == name && e.Attempt == attempt {
			return
		}
	}
	t.emit(fx, now, EventStepLateReport, name, attempt,
		fmt.Sprintf("%s arrived for attempt %d after attempt %d superseded it; not applied", what, attempt, st.attempts))
}

func (t *taskRec) emit(fx *Effects, at time.Time, typ, step string, attempt int, msg string) {
	t.emitCode(fx, at, typ, step, attempt, msg, "")
}

// emitCode is emit for events that carry an error code.
func (t *taskRec) emitCode(fx *Effects, at time.Time, typ, step string, attempt int, msg, code string) {
	e := Event{
		Seq: uint64(len(t.events) + 1), Type: typ, TaskID: t.id, Step: step, Attempt: attempt, At: at, Message: msg,
		Index: fx.index, Position: len(fx.Events) + 1, Code: code,
	}
	t.events = append(t.events, e)
	fx.Events = append(fx.Events, e)
}

func (t *taskRec) stepRef(i int) StepRef {
	return StepRef{TaskID: t.id, Step: i, Name: t.ver.plan.Steps[i].Name}
}

func (t *taskRec) setResult(i int, v any) {
	if t.resultVal == nil {
		t.resultVal = make([]any, len(t.steps))
	}
	t.resultVal[i] = v
}

// --- reads ----------------------------------------------------------------

// Task returns a copy of a task.
func (s *State) Task(id string) (*TaskView, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tasks[id]
	if t == nil {
		return nil, notFound("task %s", id)
	}
	return t.view(true), nil
}

// TaskByKey returns the task an idempotency key started, if any.
func (s *State) TaskByKey(ns, key string) (*TaskView, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.idem[idemKey{nsOr(ns), key}]
	if !ok {
		return nil, false
	}
	return t.view(true), true
}

func (t *taskRec) view(withPayloads bool) *TaskView {
	p := t.ver.plan
	v := &TaskView{
		ID: t.id, Namespace: t.ns, Workflow: t.ver.wf.key.name, Version: t.ver.version, State: t.state,
		IdempotencyKey: t.idem, CreatedAt: t.created, EndedAt: t.ended, Number: t.number,
		Steps: make([]StepView, len(t.steps)),
	}
	if withPayloads {
		v.InputJSON = t.input
	}
	for i := range t.steps {
		st, ps := &t.steps[i], &p.Steps[i]
		sv := StepView{
			Name: ps.Name, Capability: ps.Capability, DependsOn: ps.DependsOn, State: st.state,
			Attempts: st.attempts, MaxAttempts: ps.Retry.MaxAttempts, RetryAt: st.retryAt, Blocked: st.blocked,
			ReadyAt: st.readyAt, DispatchedAt: st.dispatchedAt, StartedAt: st.startedAt, EndedAt: st.endedAt,
			Deadline: st.deadline, Agent: st.agent, Worker: st.worker,
		}
		if withPayloads {
			sv.ResultJSON = st.result
		}
		if st.lastErr != nil {
			e := *st.lastErr
			sv.LastError = &e
		}
		v.Steps[i] = sv
	}
	return v
}

// TaskFilter selects tasks for ListTasks.
type TaskFilter struct {
	Namespace string
	Workflow  string
	State     *workflow.TaskState
	// Before lists tasks created before the task with this number (the
	// page token); 0 starts with the newest.
	Before uint64
	Limit  int
}

// ListTasks returns tasks newest first, without payloads, and the number
// to pass as Before for the next page (0 on the last page).
func (s *State) ListTasks(f TaskFilter) ([]*TaskView, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f.Limit <= 0 {
		f.Limit = 100
	}
	start := len(s.byNumber)
	if f.Before > 0 && int(f.Before)-1 < start {
		start = int(f.Before) - 1
	}
	var out []*TaskView
	for i := start - 1; i >= 0; i-- {
		t := s.byNumber[i]
		if f.Namespace != "" && t.ns != f.Namespace || f.Workflow != "" && t.ver.wf.key.name != f.Workflow || f.State != nil && t.state != *f.State {
			continue
		}
		if len(out) == f.Limit {
			return out, out[len(out)-1].Number
		}
		out = append(out, t.view(false))
	}
	return out, 0
}

// TraceParent returns a task's W3C trace context: the one it was started
// in, "" when it has none or no such task is known. Events carry its trace id.
func (s *State) TraceParent(id string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t := s.tasks[id]; t != nil {
		return t.traceParent
	}
	return ""
}

// Events returns a task's history after seq.
func (s *State) Events(id string, after uint64) ([]Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tasks[id]
	if t == nil {
		return nil, notFound("task %s", id)
	}
	if after >= uint64(len(t.events)) {
		return nil, nil
	}
	return slices.Clone(t.events[after:]), nil
}

// Workflow returns a stored version ("" for the latest).
func (s *State) Workflow(ns, name, version string) (*WorkflowView, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, err := s.version(ns, name, version)
	if err != nil {
		return nil, err
	}
	return v.view(), nil
}

func (v *versionRec) view() *WorkflowView {
	w := &WorkflowView{
		Namespace: v.wf.key.ns, Name: v.wf.key.name, Version: v.version, Manifest: v.manifest, CreatedAt: v.createdAt, Plan: v.plan,
		Active: v.wf.activeOf().version, Pinned: v.wf.active != "",
	}
	for _, o := range v.wf.versions {
		w.Versions = append(w.Versions, o.version)
	}
	sort.Slice(w.Versions, func(i, j int) bool { return compareSemver(w.Versions[i], w.Versions[j]) < 0 })
	return w
}

// Workflows returns the latest version of every workflow, by namespace and
// name, optionally in one namespace.
func (s *State) Workflows(ns string) []*WorkflowView {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*WorkflowView
	for k, wf := range s.workflows {
		if ns != "" && k.ns != ns {
			continue
		}
		out = append(out, wf.latest().view())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Counts returns the number of workflow versions and tasks.
func (s *State) Counts() (versions, tasks int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, wf := range s.workflows {
		versions += len(wf.versions)
	}
	return versions, len(s.tasks)
}

// Assignment is what an agent needs to run one attempt.
type Assignment struct {
	TaskID          string
	Step            string
	StepIndex       int
	Capability      string
	Attempt         int
	InputJSON       string
	IdempotencyKey  string
	Deadline        time.Time
	Timeout         time.Duration
	Workflow        string
	WorkflowVersion string
	Namespace       string
}

// StepInfo describes a step for dispatch: its capability, owner, timeout
// and the next attempt number.
type StepInfo struct {
	Capability  string
	Owner       string
	Timeout     time.Duration
	NextAttempt int
	State       workflow.StepState
	Ready       bool
	// TraceParent is the task's trace context, "" if it has none.
	TraceParent string
}

// StepInfo returns what the scheduler needs to dispatch a step at now.
func (s *State) StepInfo(ref StepRef, now time.Time) (StepInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tasks[ref.TaskID]
	if t == nil || ref.Step < 0 || ref.Step >= len(t.steps) {
		return StepInfo{}, notFound("task %s step %d", ref.TaskID, ref.Step)
	}
	ps := &t.ver.plan.Steps[ref.Step]
	info := StepInfo{Capability: ps.Capability, Owner: ps.Owner, Timeout: ps.Timeout, NextAttempt: t.steps[ref.Step].attempts + 1, State: t.steps[ref.Step].state, TraceParent: t.traceParent}
	if t.active {
		info.Ready = s.runs.StepReady(t.ref, ref.Step, now)
	}
	return info, nil
}

// PlanOf returns the plan of a task's workflow version.
func (s *State) PlanOf(taskID string) (*workflow.Plan, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tasks[taskID]
	if t == nil {
		return nil, notFound("task %s", taskID)
	}
	return t.ver.plan, nil
}

// Assignment builds the assignment of a step's current attempt: its input
// from the task input and upstream results.
func (s *State) Assignment(ref StepRef) (*Assignment, error) {
	s.mu.Lock() // decoding caches into the task record
	defer s.mu.Unlock()
	t := s.tasks[ref.TaskID]
	if t == nil || ref.Step < 0 || ref.Step >= len(t.steps) {
		return nil, notFound("task %s step %d", ref.TaskID, ref.Step)
	}
	p := t.ver.plan
	ps := &p.Steps[ref.Step]
	st := &t.steps[ref.Step]
	if t.inputVal == nil {
		v, err := workflow.DecodeJSON([]byte(t.input))
		if err != nil {
			return nil, fmt.Errorf("task %s input: %w", t.id, err)
		}
		t.inputVal = v
	}
	var mapErr error
	in, err := ps.Input.Resolve(t.inputVal, func(i int) any {
		if t.resultVal != nil && t.resultVal[i] != nil {
			return t.resultVal[i]
		}
		v, err := workflow.DecodeJSON([]byte(orEmpty(t.steps[i].result)))
		if err != nil {
			mapErr = err
			return nil
		}
		t.setResult(i, v)
		return v
	})
	if err == nil {
		err = mapErr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: input of step %s: %w", ErrInvalid, ps.Name, err)
	}
	raw, err := marshalJSON(in)
	if err != nil {
		return nil, fmt.Errorf("input of step %s: %w", ps.Name, err)
	}
	return &Assignment{
		TaskID: t.id, Step: ps.Name, StepIndex: ref.Step, Capability: ps.Capability, Attempt: st.attempts,
		InputJSON: raw, IdempotencyKey: t.id + "/" + ps.Name, Deadline: st.deadline, Timeout: ps.Timeout,
		Workflow: t.ver.wf.key.name, WorkflowVersion: t.ver.version, Namespace: t.ns,
	}, nil
}

func orEmpty(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

// Pending is the scheduling work of one active task, for a new leader.
type Pending struct {
	Ready   []StepRef
	Leases  []Lease
	Retries []Lease
}

// ScanActive lists, for every active task, the steps ready at now, the
// attempts in flight and the retries waiting: what a new leader rebuilds
// its timers and queue from.
func (s *State) ScanActive(now time.Time) Pending {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out Pending
	var buf []int32
	for _, t := range s.byNumber {
		if !t.active {
			continue
		}
		buf, _ = s.runs.Ready(t.ref, now, buf[:0])
		for _, i := range buf {
			out.Ready = append(out.Ready, t.stepRef(int(i)))
		}
		for i := range t.steps {
			st := &t.steps[i]
			switch {
			case st.state.InFlight():
				out.Leases = append(out.Leases, Lease{t.stepRef(i), st.attempts, st.deadline})
			case st.state == workflow.StepError && !st.blocked && st.retryAt.After(now):
				out.Retries = append(out.Retries, Lease{t.stepRef(i), st.attempts, st.retryAt})
			}
		}
	}
	return out
}

// compareSemver orders versions the workflow package validated; an
// unparsable one (impossible after validation) sorts first.
func compareSemver(a, b string) int {
	va, errA := semver.StrictNewVersion(a)
	vb, errB := semver.StrictNewVersion(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	return va.Compare(vb)
}

// marshalJSON encodes a step input without HTML escaping, so payloads
// reach apps as the upstream systems wrote them.
func marshalJSON(v any) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func sortVersions(vs []*versionRec) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, b := vs[i], vs[j]
		if !a.createdAt.Equal(b.createdAt) {
			return a.createdAt.Before(b.createdAt)
		}
		if a.wf.key != b.wf.key {
			return a.wf.key.ns+"/"+a.wf.key.name < b.wf.key.ns+"/"+b.wf.key.name
		}
		return false // same workflow: keep apply order
	})
}
