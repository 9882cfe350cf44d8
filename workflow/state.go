package workflow

import "fmt"

// StepState is where a step is in its life. Small integers, so that a
// task's scheduling state stays a few bytes per step.
type StepState uint8

// Step states. Terminal: Complete, Cancelled, ResolvedManually.
const (
	StepPending          StepState = iota // waiting for parents, or for its first attempt
	StepEnqueued                          // dispatched to an agent, not yet started
	StepInProgress                        // the app is executing it
	StepComplete                          // succeeded with a result
	StepError                             // last attempt failed; retried if attempts and policy allow
	StepCancelled                         // the task was cancelled first
	StepResolvedManually                  // an operator supplied the result
	numStepStates
)

var stepStateNames = [numStepStates]string{"pending", "enqueued", "in_progress", "complete", "error", "cancelled", "resolved_manually"}

func (s StepState) String() string {
	if s < numStepStates {
		return stepStateNames[s]
	}
	return fmt.Sprintf("StepState(%d)", s)
}

// MarshalText encodes the state as its name, so JSON says "in_progress".
func (s StepState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a state name.
func (s *StepState) UnmarshalText(b []byte) error {
	v, err := ParseStepState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Terminal reports whether no event can move the step on.
func (s StepState) Terminal() bool {
	return s == StepComplete || s == StepCancelled || s == StepResolvedManually
}

// Done reports whether the step satisfies its children's dependency.
func (s StepState) Done() bool { return s == StepComplete || s == StepResolvedManually }

// InFlight reports whether an agent holds the step.
func (s StepState) InFlight() bool { return s == StepEnqueued || s == StepInProgress }

// ParseStepState is the inverse of String.
func ParseStepState(s string) (StepState, error) {
	for i, n := range stepStateNames {
		if n == s {
			return StepState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown step state %q", s)
}

// StepEvent is something that happens to a step.
type StepEvent uint8

// Step events.
const (
	EvDispatch StepEvent = iota // the coordinator hands the step to an agent (an attempt begins)
	EvStart                     // the app took the step
	EvSucceed                   // the app returned a result that met the contract
	EvFail                      // the attempt failed: app error, timeout, lease lost, contract violation
	EvRelease                   // handed back unstarted or drained: no attempt is spent
	EvRetry                     // an operator asks for a fresh round of attempts
	EvResolve                   // an operator supplies the result
	EvCancel                    // the task is cancelled
	numStepEvents
)

var stepEventNames = [numStepEvents]string{"dispatch", "start", "succeed", "fail", "release", "retry", "resolve", "cancel"}

func (e StepEvent) String() string {
	if e < numStepEvents {
		return stepEventNames[e]
	}
	return fmt.Sprintf("StepEvent(%d)", e)
}

// invalid marks a forbidden transition in the tables below.
const invalid = 0xff

// stepTable is the step state machine: stepTable[state][event] is the next
// state, or invalid. It is the single source of truth, read-only.
var stepTable = [numStepStates][numStepEvents]StepState{
	//                  dispatch         start           succeed        fail        release      retry        resolve               cancel
	StepPending:          {StepEnqueued, invalid, invalid, invalid, invalid, invalid, StepResolvedManually, StepCancelled},
	StepEnqueued:         {invalid, StepInProgress, StepComplete, StepError, StepPending, invalid, invalid, StepCancelled},
	StepInProgress:       {invalid, invalid, StepComplete, StepError, StepPending, invalid, invalid, StepCancelled},
	StepComplete:         {invalid, invalid, invalid, invalid, invalid, invalid, invalid, invalid},
	StepError:            {StepEnqueued, invalid, invalid, invalid, invalid, StepPending, StepResolvedManually, StepCancelled},
	StepCancelled:        {invalid, invalid, invalid, invalid, invalid, invalid, invalid, invalid},
	StepResolvedManually: {invalid, invalid, invalid, invalid, invalid, invalid, invalid, invalid},
}

// TransitionError is an illegal transition: the event cannot happen in the
// state the step or task is in. The API maps it to FailedPrecondition.
type TransitionError struct {
	What  string // "step" or "task"
	State string
	Event string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s a %s that is %s", e.Event, e.What, e.State)
}

// NextStep returns the state that event ev moves a step in state s to.
func NextStep(s StepState, ev StepEvent) (StepState, error) {
	if s >= numStepStates || ev >= numStepEvents || stepTable[s][ev] == invalid {
		return s, &TransitionError{What: "step", State: s.String(), Event: ev.String()}
	}
	return stepTable[s][ev], nil
}

// TaskState is where a task is in its life.
type TaskState uint8

// Task states. Terminal: Complete, Cancelled, ResolvedManually.
const (
	TaskPending          TaskState = iota // accepted, nothing dispatched yet
	TaskInProgress                        // steps are running or waiting
	TaskComplete                          // every step complete
	TaskError                             // a step failed for good; the task is blocked until an operator acts
	TaskCancelled                         // cancelled by a user
	TaskResolvedManually                  // every step done, at least one by an operator
	numTaskStates
)

var taskStateNames = [numTaskStates]string{"pending", "in_progress", "complete", "error", "cancelled", "resolved_manually"}

func (s TaskState) String() string {
	if s < numTaskStates {
		return taskStateNames[s]
	}
	return fmt.Sprintf("TaskState(%d)", s)
}

// MarshalText encodes the state as its name.
func (s TaskState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a state name.
func (s *TaskState) UnmarshalText(b []byte) error {
	v, err := ParseTaskState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Terminal reports whether the task has ended.
func (s TaskState) Terminal() bool {
	return s == TaskComplete || s == TaskCancelled || s == TaskResolvedManually
}

// ParseTaskState is the inverse of String.
func ParseTaskState(s string) (TaskState, error) {
	for i, n := range taskStateNames {
		if n == s {
			return TaskState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown task state %q", s)
}

// TaskEvent is something that happens to a task.
type TaskEvent uint8

// Task events.
const (
	TaskEvStart         TaskEvent = iota // its first step is dispatched
	TaskEvSucceed                        // its last step completed
	TaskEvSucceedManual                  // its last step was resolved manually (or completed after one was)
	TaskEvBlock                          // a step failed for good
	TaskEvResume                         // an operator retried or resolved the failed step
	TaskEvCancel                         // a user cancelled it
	numTaskEvents
)

var taskEventNames = [numTaskEvents]string{"start", "succeed", "succeed_manually", "block", "resume", "cancel"}

func (e TaskEvent) String() string {
	if e < numTaskEvents {
		return taskEventNames[e]
	}
	return fmt.Sprintf("TaskEvent(%d)", e)
}

// taskTable is the task state machine, read-only.
var taskTable = [numTaskStates][numTaskEvents]TaskState{
	//                  start            succeed       succeed_manually      block      resume          cancel
	TaskPending:          {TaskInProgress, invalid, invalid, invalid, invalid, TaskCancelled},
	TaskInProgress:       {invalid, TaskComplete, TaskResolvedManually, TaskError, invalid, TaskCancelled},
	TaskComplete:         {invalid, invalid, invalid, invalid, invalid, invalid},
	TaskError:            {invalid, invalid, TaskResolvedManually, invalid, TaskInProgress, TaskCancelled},
	TaskCancelled:        {invalid, invalid, invalid, invalid, invalid, invalid},
	TaskResolvedManually: {invalid, invalid, invalid, invalid, invalid, invalid},
}

// NextTask returns the state that event ev moves a task in state s to.
func NextTask(s TaskState, ev TaskEvent) (TaskState, error) {
	if s >= numTaskStates || ev >= numTaskEvents || taskTable[s][ev] == invalid {
		return s, &TransitionError{What: "task", State: s.String(), Event: ev.String()}
	}
	return taskTable[s][ev], nil
}
