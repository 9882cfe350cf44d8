package consensus

import (
	"errors"
	"fmt"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// Errors the state returns for commands it refuses. The API maps them to
// codes: NotFound, FailedPrecondition, InvalidArgument.
var (
	// ErrNotFound: no such workflow, version, task or step.
	ErrNotFound = errors.New("not found")
	// ErrStaleAttempt: a report names an attempt that is not the step's
	// current one (it timed out and was dispatched again, or the step
	// moved on). The report changes nothing.
	ErrStaleAttempt = errors.New("stale attempt")
	// ErrVersionExists: a workflow version is stored with other content.
	ErrVersionExists = errors.New("workflow version exists with different content")
	// ErrTaskEnded: the task has reached a terminal state.
	ErrTaskEnded = errors.New("task has ended")
	// ErrInvalid: the command's content is invalid (a manifest, an input or
	// a result that breaks its contract). The wrapped error says why.
	ErrInvalid = errors.New("invalid")
	// ErrUnknownCommand: a log entry this server cannot decode: it is
	// older than the leader that wrote it and must be upgraded.
	ErrUnknownCommand = errors.New("unknown command")
)

// Event types, as in docs/events.md.
const (
	EventTaskCreated          = "task.created"
	EventTaskStarted          = "task.started"
	EventStepReady            = "step.ready"
	EventStepDispatched       = "step.dispatched"
	EventStepStarted          = "step.started"
	EventStepCompleted        = "step.completed"
	EventStepFailed           = "step.failed"
	EventStepRetryScheduled   = "step.retry_scheduled"
	EventStepDeadLettered     = "step.dead_lettered"
	EventStepReleased         = "step.released"
	EventStepRetryRequested   = "step.retry_requested"
	EventStepResolvedManually = "step.resolved_manually"
	EventStepLeaseExtended    = "step.lease_extended"
	EventStepLateReport       = "step.late_report"
	EventStepCancelled        = "step.cancelled"
	EventTaskCompleted        = "task.completed"
	EventTaskFailed           = "task.failed"
	EventTaskResumed          = "task.resumed"
	EventTaskCancelled        = "task.cancelled"
	EventTaskResolved         = "task.resolved_manually"
)

// Event is one entry of a task's history.
type Event struct {
	Seq     uint64
	Type    string
	TaskID  string
	Step    string
	Attempt int
	At      time.Time
	Message string
	// Index is the Raft log index of the entry that produced the event and
	// Position its place among that entry's events, from 1. Applying the
	// same log gives the same pair on every server, so ID is a key
	// consumers can de-duplicate on across servers and leader changes.
	Index    uint64
	Position int
	// Code is the error code, for step.failed, step.dead_lettered and
	// task.failed.
	Code string
}

// ID is the event's stable id, "<raft index>-<position>". Events restored
// from a snapshot taken before the index was recorded have none; they
// fall back to "<task id>-<seq>", stable too, but in another form.
func (e Event) ID() string {
	if e.Index == 0 {
		return fmt.Sprintf("%s-%d", e.TaskID, e.Seq)
	}
	return fmt.Sprintf("%d-%d", e.Index, e.Position)
}

// StepError is how an attempt failed.
type StepError struct {
	Code        string
	Message     string
	Retryable   bool
	Attempt     int
	At          time.Time
	DetailsJSON string
}

// StepView is a step of a task as readers see it.
type StepView struct {
	Name         string
	Capability   string
	DependsOn    []string
	State        workflow.StepState
	Attempts     int
	MaxAttempts  int
	RetryAt      time.Time
	Blocked      bool
	ResultJSON   string
	LastError    *StepError
	ReadyAt      time.Time
	DispatchedAt time.Time
	StartedAt    time.Time
	EndedAt      time.Time
	Deadline     time.Time
	Agent        string
	Worker       string
}

// TaskView is a task as readers see it: a copy, safe to keep.
type TaskView struct {
	ID             string
	Namespace      string
	Workflow       string
	Version        string
	State          workflow.TaskState
	InputJSON      string
	IdempotencyKey string
	CreatedAt      time.Time
	EndedAt        time.Time
	Number         uint64
	Steps          []StepView
}

// WorkflowView is a stored workflow version.
type WorkflowView struct {
	Namespace string
	Name      string
	Version   string
	Manifest  string
	CreatedAt time.Time
	Plan      *workflow.Plan
	// Versions lists every stored version of the workflow, oldest first.
	Versions []string
	// Active is the version tasks started without one get; Pinned says
	// it was pinned (SetActiveVersion) rather than being the highest.
	Active string
	Pinned bool
}

// StepRef names a step of a task, by index and name.
type StepRef struct {
	TaskID string
	Step   int
	Name   string
}

// Lease is an attempt an agent holds until Deadline.
type Lease struct {
	StepRef
	Attempt  int
	Deadline time.Time
}

// Effects is what a command did that the coordinator acts on: steps that
// became ready, retries to wake up for, leases to watch, and the events.
// They are produced on every server; only the leader's scheduler uses them.
type Effects struct {
	Ready    []StepRef
	Retries  []Lease // Deadline is when the retry is due
	Leases   []Lease
	Released []Lease // attempts that ended without a report (cancel)
	Events   []Event
	// BusCursor is the new cursor when a BusCursor command advanced it.
	BusCursor uint64
	// index is the Raft log index of the entry being applied, stamped on
	// every event it produces.
	index uint64
}

// Index is the Raft log index of the entry that had these effects.
func (e *Effects) Index() uint64 { return e.index }

func (e *Effects) empty() bool {
	return len(e.Ready) == 0 && len(e.Retries) == 0 && len(e.Leases) == 0 && len(e.Released) == 0 && len(e.Events) == 0 && e.BusCursor == 0
}

// Result is the response of an applied command.
type Result struct {
	Err error
	// TaskID of the task created or affected.
	TaskID string
	// Created is false when CreateTask found its idempotency key, or
	// PutWorkflow found the same version with the same content.
	Created bool
	// Attempt dispatched.
	Attempt int
	// Retry and RetryAt say what a failure led to.
	Retry   bool
	RetryAt time.Time
	// Results of a Batch, one per command.
	Batch []*Result
	// ProposalID is the id of the proposal PutProposal stored or a
	// transition changed.
	ProposalID string
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotFound}, args...)...)
}
