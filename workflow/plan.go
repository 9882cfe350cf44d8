package workflow

import (
	"time"
)

// Plan is a compiled, validated workflow version: steps indexed 0..n-1 in
// manifest order, the DAG in compressed adjacency form, compiled contracts
// and mappings. A Plan is immutable and safe for concurrent use; every task
// of one workflow version shares it.
type Plan struct {
	Name        string
	Namespace   string
	Version     string
	Description string
	// Input is the contract of the task input; nil accepts any input.
	Input *Contract
	Steps []PlanStep

	index map[string]int
	// parents of step i are parents[parentOff[i]:parentOff[i+1]]; the same
	// layout for children. Flat int32 slices keep readiness cache-friendly.
	parentOff, parents []int32
	childOff, children []int32
	order              []int32 // a topological order
	levels             int
	manifest           *Manifest
	// lines are the source lines of the fields CheckCapability reports on
	// (each step, its input mapping and its result_schema), kept from Load
	// so that problems found after compiling still point at a line. Only
	// those: a plan lives as long as its workflow version.
	lines map[string]int
}

// PlanStep is one compiled step.
type PlanStep struct {
	Name        string
	Description string
	// Capability is what executes a sidecar step; "" for a bus step.
	Capability string
	Owner      string
	// Transport is TransportSidecar or TransportBus (never "").
	Transport string
	// Subject is where a bus step's requests are published; "" otherwise.
	Subject string
	// DependsOn names the direct parents, as written.
	DependsOn []string
	Timeout   time.Duration
	Retry     RetryPolicy
	Input     *Mapping
	// Result is the success contract; nil accepts any result.
	Result *Contract
	// Error is the failure contract; nil accepts any error.
	Error *Contract
	// ErrorCodes are the codes the error contract enumerates, if it does.
	ErrorCodes []string
	// Level is the length of the longest chain of ancestors: roots are 0.
	Level int
}

// RetryPolicy is a step's resolved retry policy.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included.
	MaxAttempts int
	Backoff     Backoff
	// Retryable lists the error codes that are retried; empty means the
	// app's retryable flag decides.
	Retryable []string
}

// Step transports: how a step reaches what executes it.
const (
	// TransportSidecar dispatches the step to an app, attached to a Tasker
	// agent, that offers its capability. The default.
	TransportSidecar = "sidecar"
	// TransportBus publishes a request for the step on the service bus, to
	// its subject, with a reply_to subject and a correlation id; the reply
	// completes (or fails) the attempt.
	TransportBus = "bus"
)

// IsBus reports whether the step runs over the service bus.
func (s *PlanStep) IsBus() bool { return s.Transport == TransportBus }

// Retries reports whether a failure with code, flagged retryable or not by
// the app, is worth another attempt under this policy.
func (r RetryPolicy) Retries(code string, appRetryable bool) bool {
	if code == CodeContractViolation || code == CodeInputMapping {
		return false
	}
	if len(r.Retryable) == 0 {
		return appRetryable
	}
	for _, c := range r.Retryable {
		if c == code {
			return true
		}
	}
	return false
}

// Error codes that Tasker itself assigns to failures.
const (
	// CodeTimeout marks an attempt that did not finish within its timeout
	// or lease. It is retryable.
	CodeTimeout = "timeout"
	// CodeContractViolation marks a result or error that broke its
	// contract. It is never retried: the same code would break it again.
	CodeContractViolation = "contract_violation"
	// CodeInputMapping marks a step whose input could not be built from
	// the real upstream values (a field of an unexpected type). It is never
	// retried: the same values would fail again.
	CodeInputMapping = "input_mapping"
)

// Defaults used when neither the step nor the workflow's defaults say.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 3
)

// DefaultBackoff is the backoff used when none is written.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}
}

// Len returns the number of steps.
func (p *Plan) Len() int { return len(p.Steps) }

// StepIndex returns the index of the named step.
func (p *Plan) StepIndex(name string) (int, bool) {
	i, ok := p.index[name]
	return i, ok
}

// Parents returns the direct parents of step i. The slice must not be modified.
func (p *Plan) Parents(i int) []int32 { return p.parents[p.parentOff[i]:p.parentOff[i+1]] }

// Children returns the direct children of step i. The slice must not be modified.
func (p *Plan) Children(i int) []int32 { return p.children[p.childOff[i]:p.childOff[i+1]] }

// Order returns the steps in a topological order (parents before children).
func (p *Plan) Order() []int32 { return p.order }

// Levels returns the number of levels: the length of the longest chain.
func (p *Plan) Levels() int { return p.levels }

// Manifest returns the manifest the plan was compiled from.
func (p *Plan) Manifest() *Manifest { return p.manifest }

// CriticalPath returns the chain of steps with the largest total weight and
// that weight. weight gives each step's expected (or worst-case) duration.
func (p *Plan) CriticalPath(weight func(step int) time.Duration) ([]int, time.Duration) {
	n := len(p.Steps)
	if n == 0 {
		return nil, 0
	}
	best := make([]time.Duration, n)
	prev := make([]int32, n)
	end := -1
	for _, s := range p.order {
		prev[s] = -1
		var in time.Duration
		for _, par := range p.Parents(int(s)) {
			if prev[s] == -1 || best[par] > in {
				in, prev[s] = best[par], par
			}
		}
		best[s] = in + weight(int(s))
		if end == -1 || best[s] > best[end] {
			end = int(s)
		}
	}
	var path []int
	for s := int32(end); s != -1; s = prev[s] {
		path = append(path, int(s))
	}
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	return path, best[end]
}

// Summary describes the shape of a workflow for people.
type Summary struct {
	Steps  int `json:"steps"`
	Edges  int `json:"edges"`
	Levels int `json:"levels"`
	// MaxParallelism is the number of steps in the widest level: steps
	// that can run at the same time when every step takes as long.
	MaxParallelism int `json:"max_parallelism"`
	// CriticalPath is the chain with the largest sum of step timeouts, and
	// WorstCase that sum: the longest a task can take without retries.
	CriticalPath []string      `json:"critical_path"`
	WorstCase    time.Duration `json:"worst_case_ns"`
	Roots        []string      `json:"roots"`
	Leaves       []string      `json:"leaves"`
}

// Summarize computes the plan's Summary.
func (p *Plan) Summarize() Summary {
	s := Summary{Steps: len(p.Steps), Edges: len(p.parents), Levels: p.levels}
	width := make([]int, p.levels)
	for i, st := range p.Steps {
		width[st.Level]++
		if len(p.Parents(i)) == 0 {
			s.Roots = append(s.Roots, st.Name)
		}
		if len(p.Children(i)) == 0 {
			s.Leaves = append(s.Leaves, st.Name)
		}
	}
	for _, w := range width {
		s.MaxParallelism = max(s.MaxParallelism, w)
	}
	path, total := p.CriticalPath(func(i int) time.Duration { return p.Steps[i].Timeout })
	for _, i := range path {
		s.CriticalPath = append(s.CriticalPath, p.Steps[i].Name)
	}
	s.WorstCase = total
	return s
}
