package e2e

// The model of the API that TestClusterLinearizability checks histories
// against, with porcupine: one task per idempotency key, and the calls
// that create it, read it, cancel it and complete its one step.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// linOp is the kind of a recorded call.
type linOp int

const (
	// opStart is StartTask with the key: returns the task id and created.
	opStart linOp = iota
	// opGet is GetTask with Tasker-Consistency: consistent: returns the
	// task's phase.
	opGet
	// opCancel is CancelTask: ok, or refused (failed_precondition: the
	// task has ended).
	opCancel
	// opComplete is CompleteStep of the task's one step, for one attempt
	// the worker received: ok, or refused (failed_precondition).
	opComplete
)

func (o linOp) String() string {
	return [...]string{"StartTask", "GetTask", "CancelTask", "CompleteStep"}[o]
}

// linPhase is a task's state as the model knows it.
type linPhase int

const (
	// phaseRunning is pending or in progress: not ended.
	phaseRunning linPhase = iota
	phaseComplete
	phaseCancelled
	// phaseOther is any other state GetTask may report (error, resolved
	// manually): the model never reaches it, so a read of it is illegal.
	phaseOther
)

func (p linPhase) String() string {
	return [...]string{"running", "complete", "cancelled", "other"}[p]
}

// linInput is a call: every call names the idempotency key of the task it
// is about, which partitions the history.
type linInput struct {
	Op      linOp  `json:"op"`
	Key     string `json:"key"`
	Task    string `json:"task,omitempty"`    // opGet, opCancel, opComplete
	Attempt int32  `json:"attempt,omitempty"` // opComplete
	// Agent is the agent the call was sent to, for reading a history; the
	// model does not look at it.
	Agent string `json:"agent,omitempty"`
}

// linOutcome is how a call ended.
type linOutcome int

const (
	// outOK is a success.
	outOK linOutcome = iota
	// outRefused is failed_precondition: the call changed nothing.
	outRefused
	// outNotFound is not_found.
	outNotFound
	// outUnknown is a call whose outcome is unknown (timed out,
	// unavailable, connection lost): it may or may not have taken effect,
	// at any time after it was made. Its operation returns after every
	// other one.
	outUnknown
)

func (o linOutcome) String() string {
	return [...]string{"ok", "refused", "not found", "unknown"}[o]
}

// linOutput is what a call returned.
type linOutput struct {
	Outcome linOutcome `json:"outcome"`
	Task    string     `json:"task,omitempty"`  // opStart
	Created bool       `json:"created"`         // opStart
	Phase   linPhase   `json:"phase,omitempty"` // opGet
	Err     string     `json:"err,omitempty"`   // the error, for reading
}

// linState is the model's state of one key: whether its task exists, its
// id (empty while only a StartTask of unknown outcome may have created
// it), its phase, and the attempt whose result completed it.
type linState struct {
	Created bool
	Task    string
	Phase   linPhase
	Attempt int32
}

// linStep is the model's transition function: the states the key can be
// in after the call returned out in state s; none if it could not have.
//
// CompleteStep refused while the task runs is legal (the attempt may have
// been superseded: a lease lapsed, a worker handed it back): the model
// does not track which attempt is current. A result for the attempt that
// completed the step is acknowledged again, as the agent promises
// ("results are idempotent per attempt"); any other is refused.
//
// With bugs, the model also accepts those of the known bugs (linBugs): a
// write that took effect but answered as if another call had done it
// first.
func linStep(s linState, in linInput, out linOutput, bugs linBugs) []linState {
	if in.Op == opStart {
		switch {
		case out.Outcome == outUnknown:
			if !s.Created {
				return []linState{{Created: true, Phase: phaseRunning}, s}
			}
			return []linState{s}
		case out.Outcome != outOK:
			return nil
		case !s.Created:
			if out.Created || bugs&bugStartNotCreated != 0 {
				return []linState{{Created: true, Task: out.Task, Phase: phaseRunning}}
			}
			return nil
		case out.Created || (s.Task != "" && s.Task != out.Task):
			return nil
		}
		s.Task = out.Task // learned, if a call of unknown outcome created it
		return []linState{s}
	}
	// Every other call names a task id a StartTask returned for the key.
	if !s.Created || (s.Task != "" && s.Task != in.Task) {
		if out.Outcome == outUnknown {
			return []linState{s}
		}
		return nil
	}
	s.Task = in.Task
	switch in.Op {
	case opGet:
		switch {
		case out.Outcome == outUnknown, out.Outcome == outOK && out.Phase == s.Phase:
			return []linState{s}
		}
	case opCancel:
		cancelled := s
		cancelled.Phase = phaseCancelled
		switch {
		// Cancelling a cancelled task is acknowledged (idempotent); a
		// task that completed refuses it.
		case s.Phase == phaseCancelled && (out.Outcome != outRefused || bugs&bugCancelRefused != 0):
			return []linState{s}
		case s.Phase == phaseComplete && out.Outcome != outOK:
			return []linState{s}
		case s.Phase != phaseRunning:
		case out.Outcome == outUnknown:
			return []linState{cancelled, s}
		case out.Outcome == outOK, out.Outcome == outRefused && bugs&bugCancelRefused != 0:
			return []linState{cancelled}
		}
	case opComplete:
		completed := linState{Created: true, Task: s.Task, Phase: phaseComplete, Attempt: in.Attempt}
		switch {
		case s.Phase == phaseRunning && out.Outcome == outUnknown:
			return []linState{completed, s}
		case s.Phase == phaseRunning && out.Outcome == outOK:
			return []linState{completed}
		case s.Phase == phaseRunning && out.Outcome == outRefused && bugs&bugCompleteRefused != 0:
			return []linState{s, completed}
		case s.Phase == phaseRunning && out.Outcome == outRefused:
			return []linState{s}
		case out.Outcome == outUnknown:
			return []linState{s}
		case s.Phase == phaseComplete && s.Attempt == in.Attempt:
			if out.Outcome == outOK || (out.Outcome == outRefused && bugs&bugCompleteRefused != 0) {
				return []linState{s}
			}
		case out.Outcome == outRefused:
			return []linState{s}
		}
	}
	return nil
}

// linBugs are the ways the cluster broke the contract when this test was
// written. Each was a write that took effect, answered as if another call
// had done it first, each fixed since (docs/guarantees.md); the model
// test keeps them to show the checker tells each apart from the contract.
type linBugs int

const (
	// bugStartNotCreated: StartTask answers created=false to the call
	// that created the task. A forwarded StartTask committed by a leader
	// killed before it answered is sent again, with the same task id, to
	// the next leader, which finds the key taken (in the state, and in the
	// API's fast path that answers a taken key before proposing).
	bugStartNotCreated linBugs = 1 << iota
	// bugCancelRefused: CancelTask answers failed_precondition ("task
	// is cancelled") to the call that cancelled it, for the same reason.
	bugCancelRefused
	// bugCompleteRefused: CompleteStep answers failed_precondition
	// ("task is complete") to the result that completed the step, when it
	// is sent again, by the forwarding agent as above or by the worker
	// itself: State.alreadyCompleted requires the step's recorded worker
	// to be the reporting one, but a step delivered to a client agent's
	// worker has none until the asynchronous StartStep commits, so a
	// result that beats it is acknowledged once and refused after
	// (State.current, which accepted it, lets an unrecorded worker pass).
	bugCompleteRefused

	allLinBugs = bugStartNotCreated | bugCancelRefused | bugCompleteRefused
)

func (b linBugs) String() string {
	var out []string
	for _, x := range []struct {
		bug  linBugs
		what string
	}{
		{bugStartNotCreated, "StartTask created=false for the call that created the task"},
		{bugCancelRefused, "CancelTask refused to the call that cancelled the task"},
		{bugCompleteRefused, "CompleteStep refused for the result that completed the step"},
	} {
		if b&x.bug != 0 {
			out = append(out, x.what)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// newLinModel is linStep as a porcupine model, partitioned by key,
// accepting bugs.
func newLinModel(bugs linBugs) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: linModelBase.Partition,
		Init:      func() []any { return []any{linState{}} },
		Step: func(state, input, output any) []any {
			var out []any
			for _, s := range linStep(state.(linState), input.(linInput), output.(linOutput), bugs) {
				out = append(out, s)
			}
			return out
		},
		Equal:             func(a, b any) bool { return a.(linState) == b.(linState) },
		DescribeOperation: linModelBase.DescribeOperation,
		DescribeState:     linModelBase.DescribeState,
	}
	return nm.ToModel()
}

var (
	// linModel is the API's contract.
	linModel = newLinModel(0)
	// linModelKnownBugs also accepts the known bugs.
	linModelKnownBugs = newLinModel(allLinBugs)
)

// linModelBase holds the partition and descriptions of the models.
var linModelBase = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		var call string
		switch in.Op {
		case opStart:
			call = fmt.Sprintf("StartTask(%s)", in.Key)
		case opComplete:
			call = fmt.Sprintf("CompleteStep(%s, attempt %d)", in.Task, in.Attempt)
		default:
			call = fmt.Sprintf("%s(%s)", in.Op, in.Task)
		}
		var res string
		switch {
		case out.Outcome != outOK:
			res = out.Outcome.String()
			if out.Err != "" {
				res += ": " + out.Err
			}
		case in.Op == opStart:
			res = fmt.Sprintf("%s created=%v", out.Task, out.Created)
		case in.Op == opGet:
			res = out.Phase.String()
		default:
			res = "ok"
		}
		return call + " → " + res
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		switch {
		case !s.Created:
			return "no task"
		case s.Phase == phaseComplete:
			return fmt.Sprintf("%s complete (attempt %d)", orUnknownID(s.Task), s.Attempt)
		}
		return fmt.Sprintf("%s %s", orUnknownID(s.Task), s.Phase)
	},
}

func orUnknownID(id string) string {
	if id == "" {
		return "(id not yet known)"
	}
	return id
}

// TestLinearizabilityModel checks the model itself on small histories: it
// accepts what the API promises and rejects what it rules out, so that a
// history from the cluster that breaks a promise fails the check.
func TestLinearizabilityModel(t *testing.T) {
	t.Parallel()
	const never = 1 << 40 // the return time of a call of unknown outcome
	type op struct {
		client    int
		in        linInput
		out       linOutput
		call, ret int64
	}
	start := func(key string) linInput { return linInput{Op: opStart, Key: key} }
	get := func(key, task string) linInput { return linInput{Op: opGet, Key: key, Task: task} }
	cancel := func(key, task string) linInput { return linInput{Op: opCancel, Key: key, Task: task} }
	complete := func(key, task string, attempt int32) linInput {
		return linInput{Op: opComplete, Key: key, Task: task, Attempt: attempt}
	}
	created := linOutput{Outcome: outOK, Task: "t1", Created: true}
	existing := linOutput{Outcome: outOK, Task: "t1"}
	ok := linOutput{Outcome: outOK}
	refused := linOutput{Outcome: outRefused}
	unknown := linOutput{Outcome: outUnknown}
	phase := func(p linPhase) linOutput { return linOutput{Outcome: outOK, Phase: p} }
	for _, tc := range []struct {
		name  string
		legal bool
		// bug: illegal, but one of the known bugs (legal when they are).
		bug linBugs
		ops []op
	}{
		{"start, start again, complete, read", true, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, start("k"), existing, 20, 30},
			{0, complete("k", "t1", 1), ok, 40, 50},
			{1, get("k", "t1"), phase(phaseComplete), 60, 70},
		}},
		{"a second created=true for a key", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, start("k"), created, 20, 30},
		}},
		{"two concurrent starts of one key both created", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, start("k"), linOutput{Outcome: outOK, Task: "t2", Created: true}, 5, 15},
		}},
		{"created=false naming another task", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, start("k"), linOutput{Outcome: outOK, Task: "t2"}, 20, 30},
		}},
		{"a start of unknown outcome that happened, learned later", true, 0, []op{
			{0, start("k"), unknown, 0, never},
			{1, start("k"), existing, 20, 30},
			{1, cancel("k", "t1"), ok, 40, 50},
		}},
		{"a start of unknown outcome that did not happen", true, 0, []op{
			{0, start("k"), unknown, 0, never},
			{1, start("k"), created, 20, 30},
		}},
		{"complete and cancel both succeed", false, 0, []op{
			{0, complete("k", "t1", 1), ok, 20, 30},
			{1, cancel("k", "t1"), ok, 25, 35},
			{0, start("k"), created, 0, 10},
		}},
		{"cancel refused while the task runs", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), refused, 20, 30},
			{0, get("k", "t1"), phase(phaseRunning), 40, 50},
		}},
		{"a read that misses a cancel acknowledged before it", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), ok, 20, 30},
			{0, get("k", "t1"), phase(phaseRunning), 40, 50},
		}},
		{"a read concurrent with a cancel may miss it", true, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), ok, 20, 50},
			{0, get("k", "t1"), phase(phaseRunning), 30, 40},
		}},
		{"a cancel of unknown outcome seen by a later read", true, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), unknown, 20, never},
			{0, get("k", "t1"), phase(phaseCancelled), 40, 50},
			{0, complete("k", "t1", 1), refused, 60, 70},
		}},
		{"the completing attempt refused afterwards", false, bugCompleteRefused, []op{
			{0, start("k"), created, 0, 10},
			{1, complete("k", "t1", 1), ok, 20, 30},
			{0, complete("k", "t1", 1), refused, 40, 50},
		}},
		{"the completing attempt acknowledged again, another refused", true, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, complete("k", "t1", 2), ok, 20, 30},
			{0, complete("k", "t1", 2), ok, 40, 50},
			{0, complete("k", "t1", 1), refused, 60, 70},
		}},
		{"another attempt completes a completed step", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, complete("k", "t1", 1), ok, 20, 30},
			{0, complete("k", "t1", 2), ok, 40, 50},
		}},
		{"a completed task read as running", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, complete("k", "t1", 1), ok, 20, 30},
			{0, get("k", "t1"), phase(phaseRunning), 40, 50},
		}},
		{"a task read as not found", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{0, get("k", "t1"), linOutput{Outcome: outNotFound}, 40, 50},
		}},
		{"created=false from the only StartTask of a key", false, bugStartNotCreated, []op{
			{0, start("k"), existing, 0, 10},
			{1, get("k", "t1"), phase(phaseRunning), 20, 30},
		}},
		{"the only cancel refused, the task cancelled", false, bugCancelRefused, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), refused, 20, 30},
			{0, get("k", "t1"), phase(phaseCancelled), 40, 50},
		}},
		{"the only result refused, the task complete", false, bugCompleteRefused, []op{
			{0, start("k"), created, 0, 10},
			{1, complete("k", "t1", 1), refused, 20, 30},
			{0, get("k", "t1"), phase(phaseComplete), 40, 50},
		}},
		{"a cancel refused, the task running", false, 0, []op{
			{0, start("k"), created, 0, 10},
			{1, cancel("k", "t1"), refused, 20, 30},
			{0, get("k", "t1"), phase(phaseRunning), 40, 50},
		}},
	} {
		var history []porcupine.Operation
		for _, o := range tc.ops {
			history = append(history, porcupine.Operation{ClientId: o.client, Input: o.in, Output: o.out, Call: o.call, Return: o.ret})
		}
		verdict := map[bool]porcupine.CheckResult{true: porcupine.Ok, false: porcupine.Illegal}
		if res, want := porcupine.CheckOperationsTimeout(linModel, history, 10*time.Second), verdict[tc.legal]; res != want {
			t.Errorf("%s: %s, want %s", tc.name, res, want)
		}
		if res, want := porcupine.CheckOperationsTimeout(linModelKnownBugs, history, 10*time.Second), verdict[tc.legal || tc.bug != 0]; res != want {
			t.Errorf("%s, with the known bugs: %s, want %s", tc.name, res, want)
		}
		if tc.bug != 0 {
			if res := porcupine.CheckOperationsTimeout(newLinModel(allLinBugs&^tc.bug), history, 10*time.Second); res != porcupine.Illegal {
				t.Errorf("%s, with the other known bugs: %s, want Illegal", tc.name, res)
			}
		}
	}
}
