package insight

import (
	"fmt"
	"slices"
	"time"
)

// The types in this file are shared by the analyzers that produce findings,
// the language-model path that explains and ranks them (insight/llm), the
// healing policy that decides which may apply automatically
// (insight/heal), and the API. They are plain data with JSON tags: a
// finding is stored, sent and shown as is.

// Class is what kind of failure a finding is about.
type Class string

// Failure classes. A step that failed only because another one did is
// ClassDependency; the step that started it carries one of the others.
const (
	ClassTimeout            Class = "timeout"              // attempts ran past their timeout or lease
	ClassBreakerOpen        Class = "breaker_open"         // the agent's circuit breaker kept the step from being sent
	ClassCapabilityMissing  Class = "capability_missing"   // no agent offers the capability
	ClassCapabilityUnhealth Class = "capability_unhealthy" // agents offer it but none is healthy or has room
	ClassContractViolation  Class = "contract_violation"   // the result or error broke its contract
	ClassInputMapping       Class = "input_mapping"        // the step's input could not be built from upstream values
	ClassAppError           Class = "app_error"            // the app failed it permanently, with its own code
	ClassRetryExhausted     Class = "retry_exhausted"      // retryable failures until max_attempts ran out
	ClassDependency         Class = "dependency_failure"   // failed or blocked only because an upstream step did
	ClassLeaseLost          Class = "lease_lost"           // the worker stopped heartbeating or disconnected mid-attempt
	ClassUnknown            Class = "unknown"
)

// Classes lists every class, for validation and documentation.
var Classes = []Class{
	ClassTimeout, ClassBreakerOpen, ClassCapabilityMissing, ClassCapabilityUnhealth,
	ClassContractViolation, ClassInputMapping, ClassAppError, ClassRetryExhausted,
	ClassDependency, ClassLeaseLost, ClassUnknown,
}

// Action is a remediation from Tasker's fixed vocabulary. Nothing outside
// it is ever proposed, by the rules or by a language model.
type Action string

// The remediation vocabulary.
const (
	ActionRetryStep         Action = "retry_step"          // run the failed step again (params: task, step)
	ActionReroute           Action = "reroute"             // retry on another agent than the one that failed (params: task, step, avoid_agent)
	ActionChangeTimeout     Action = "change_timeout"      // new workflow version with a step's timeout changed (params: step, timeout)
	ActionChangeRetryPolicy Action = "change_retry_policy" // new workflow version with a step's retry.max_attempts changed (params: step, max_attempts)
	ActionResolveManually   Action = "resolve_manually"    // an operator supplies the step's result (params: task, step)
	ActionCancel            Action = "cancel"              // cancel the task (params: task)
	ActionEscalate          Action = "escalate"            // hand it to a human; nothing Tasker can do fixes it
)

// Actions lists the vocabulary.
var Actions = []Action{
	ActionRetryStep, ActionReroute, ActionChangeTimeout, ActionChangeRetryPolicy,
	ActionResolveManually, ActionCancel, ActionEscalate,
}

// ParseAction checks s against the vocabulary.
func ParseAction(s string) (Action, error) {
	a := Action(s)
	if slices.Contains(Actions, a) {
		return a, nil
	}
	return "", fmt.Errorf("unknown action %q: use one of %v", s, Actions)
}

// Evidence is one fact a finding rests on. ID is unique within a
// diagnosis ("e1", "e2", ...): remediations and model answers cite it.
type Evidence struct {
	ID   string    `json:"id"`
	Kind string    `json:"kind"` // "error", "attempt", "breaker", "member", "wait", "similar", "contract", "metric"
	At   time.Time `json:"at,omitzero"`
	Step string    `json:"step,omitempty"`
	Text string    `json:"text"`
}

// Remediation is one proposed action with its parameters, why, and the
// evidence it rests on. Params use the keys listed with each Action.
type Remediation struct {
	Action     Action            `json:"action"`
	Params     map[string]string `json:"params,omitempty"`
	Rationale  string            `json:"rationale"`
	Cites      []string          `json:"cites"`
	Confidence float64           `json:"confidence"` // 0..1
	// Source is "rules" or "model": who proposed or ranked it.
	Source string `json:"source"`
}

// Role says whether a finding is a root cause or a consequence of one.
type Role string

// Roles.
const (
	RoleRootCause   Role = "root_cause"
	RoleConsequence Role = "consequence"
)

// Finding is what the analyzers concluded about one step.
type Finding struct {
	Step       string   `json:"step"`
	Role       Role     `json:"role"`
	Class      Class    `json:"class"`
	Code       string   `json:"code,omitempty"` // the error code, for app errors
	Summary    string   `json:"summary"`
	Confidence float64  `json:"confidence"` // 0..1, from the rule and its evidence
	Evidence   []string `json:"evidence"`   // Evidence IDs
	// CausedBy names the root-cause step of a consequence.
	CausedBy     string        `json:"caused_by,omitempty"`
	Remediations []Remediation `json:"remediations,omitempty"`
}
