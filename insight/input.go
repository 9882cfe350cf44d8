package insight

import "time"

// The inputs of the failure analyzers. They are plain records: the API
// fills them from the task's state, the execution history and the gossip
// and breaker events, and the evaluation set stores them as JSON.

// Attempt is one attempt of one step, as the execution history records it.
// It mirrors that record field for field, so the API can pass it through.
type Attempt struct {
	TaskID       string    `json:"task_id"`
	Namespace    string    `json:"namespace,omitempty"`
	Workflow     string    `json:"workflow"`
	Version      string    `json:"version,omitempty"`
	Step         string    `json:"step"`
	Capability   string    `json:"capability,omitempty"`
	Attempt      int       `json:"attempt"`
	ReadyAt      time.Time `json:"ready_at,omitzero"`
	DispatchedAt time.Time `json:"dispatched_at,omitzero"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	EndedAt      time.Time `json:"ended_at,omitzero"`
	Agent        string    `json:"agent,omitempty"`
	Worker       string    `json:"worker,omitempty"`
	// Outcome is "completed", "failed", "timed_out", "released" or
	// "cancelled".
	Outcome     string        `json:"outcome"`
	Code        string        `json:"code,omitempty"`
	Message     string        `json:"message,omitempty"`
	Retryable   bool          `json:"retryable,omitempty"`
	DetailsJSON string        `json:"details_json,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	MaxAttempts int           `json:"max_attempts,omitempty"`
	// Resolution is how the step's failure was settled in the end:
	// "retry_succeeded", "resolved_manually", "retried_manually",
	// "cancelled", "dead_lettered", or "" while unsettled.
	Resolution string    `json:"resolution,omitempty"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
}

// Attempt outcomes.
const (
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
	OutcomeTimedOut  = "timed_out"
	OutcomeReleased  = "released"
	OutcomeCancelled = "cancelled"
)

// Resolutions of a failed step.
const (
	ResolutionRetrySucceeded   = "retry_succeeded"
	ResolutionResolvedManually = "resolved_manually"
	ResolutionRetriedManually  = "retried_manually"
	ResolutionCancelled        = "cancelled"
	ResolutionDeadLettered     = "dead_lettered"
)

// TaskSnapshot is a task's state at one moment. States use the names of
// workflow.TaskState and workflow.StepState ("pending", "enqueued",
// "in_progress", "complete", "error", "cancelled", "resolved_manually").
type TaskSnapshot struct {
	ID        string         `json:"id"`
	Namespace string         `json:"namespace,omitempty"`
	Workflow  string         `json:"workflow"`
	Version   string         `json:"version,omitempty"`
	State     string         `json:"state"`
	CreatedAt time.Time      `json:"created_at,omitzero"`
	EndedAt   time.Time      `json:"ended_at,omitzero"`
	Steps     []StepSnapshot `json:"steps"`
}

// StepSnapshot is one step of a TaskSnapshot.
type StepSnapshot struct {
	Name       string   `json:"name"`
	Capability string   `json:"capability,omitempty"`
	DependsOn  []string `json:"depends_on,omitempty"`
	State      string   `json:"state"`
	// Attempts counts the attempts made so far.
	Attempts        int    `json:"attempts,omitempty"`
	MaxAttempts     int    `json:"max_attempts,omitempty"`
	LastCode        string `json:"last_code,omitempty"`
	LastMessage     string `json:"last_message,omitempty"`
	LastDetailsJSON string `json:"last_details_json,omitempty"`
	LastRetryable   bool   `json:"last_retryable,omitempty"`
	// WaitReason is the scheduler's account of why a ready step is not
	// dispatched ("circuit breaker open for ...", "no agent offers ...").
	WaitReason   string    `json:"wait_reason,omitempty"`
	ReadyAt      time.Time `json:"ready_at,omitzero"`
	DispatchedAt time.Time `json:"dispatched_at,omitzero"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	EndedAt      time.Time `json:"ended_at,omitzero"`
	// Deadline is when the attempt in flight times out.
	Deadline time.Time `json:"deadline,omitzero"`
	Agent    string    `json:"agent,omitempty"`
}

// ClusterEvent is one change in the cluster around a task: a breaker
// changing state, a member joining, failing or leaving, a capability losing
// or regaining its healthy providers.
type ClusterEvent struct {
	At time.Time `json:"at"`
	// Kind is one of the EventXxx constants.
	Kind string `json:"kind"`
	// Subject is the agent (for a breaker, the agent or its
	// "agent/capability" target) or the capability.
	Subject string `json:"subject"`
	Detail  string `json:"detail,omitempty"`
}

// Cluster event kinds.
const (
	EventBreakerOpen         = "breaker_open"
	EventBreakerHalfOpen     = "breaker_half_open"
	EventBreakerClosed       = "breaker_closed"
	EventMemberJoined        = "member_joined"
	EventMemberFailed        = "member_failed"
	EventMemberLeft          = "member_left"
	EventCapabilityUnhealthy = "capability_unhealthy"
	EventCapabilityHealthy   = "capability_healthy"
)

// Step and task state names, as workflow.StepState and
// workflow.TaskState spell them.
const (
	statePending          = "pending"
	stateEnqueued         = "enqueued"
	stateInProgress       = "in_progress"
	stateComplete         = "complete"
	stateError            = "error"
	stateCancelled        = "cancelled"
	stateResolvedManually = "resolved_manually"
)
