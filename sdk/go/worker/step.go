package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// Handler executes one attempt of a step. ctx carries the step's deadline
// and is cancelled when the attempt is lost (see [ErrLeaseLost]) or the
// worker's drain times out (see [ErrDrainTimeout]). The result is encoded
// as JSON; nil is sent as {}. See [Permanent] and [Retryable] for errors.
type Handler func(ctx context.Context, s *Step) (any, error)

// Step is one attempt of one step, as assigned to this worker.
type Step struct {
	// TaskID is the task (the workflow run) the step belongs to.
	TaskID string
	// Name is the step's name in the workflow, such as "charge".
	Name string
	// Capability is what the step asks for, such as "payments.charge".
	Capability string
	// Attempt counts from 1.
	Attempt int
	// IdempotencyKey is stable across the attempts of the step: use it to
	// make side effects happen once, for example as a payment provider's
	// idempotency key.
	IdempotencyKey string
	// Deadline is when the attempt times out unless it finishes first or
	// its lease is extended; zero when the sidecar set none. The handler's
	// context reports the current deadline, which moves as the worker
	// extends the lease.
	Deadline time.Time
	// Workflow is the name of the workflow the task runs.
	Workflow string
	// WorkflowVersion is the version of the workflow the task runs.
	WorkflowVersion string
	// Input is the step's input as JSON, built from the task input and the
	// results of upstream steps.
	Input json.RawMessage
	// TraceParent is the W3C traceparent of the attempt when the cluster
	// traces, "" otherwise. The handler's context already carries it as
	// the remote parent, so spans started from it (with any OpenTelemetry
	// tracer) join the task's trace; it is here for other tracers.
	TraceParent string
}

func newStep(a *taskerv1.StepAssignment) *Step {
	s := &Step{
		TaskID:          a.GetTaskId(),
		Name:            a.GetStep(),
		Capability:      a.GetCapability(),
		Attempt:         int(a.GetAttempt()),
		IdempotencyKey:  a.GetIdempotencyKey(),
		Workflow:        a.GetWorkflow(),
		WorkflowVersion: a.GetWorkflowVersion(),
		Input:           json.RawMessage(a.GetInputJson()),
		TraceParent:     a.GetTraceParent(),
	}
	if d := a.GetDeadline(); d != nil && d.IsValid() {
		s.Deadline = d.AsTime()
	}
	return s
}

// Bind decodes the step's input into v, which must be a pointer. Numbers
// decoded into interface values become [json.Number], so large integers
// keep every digit; fields of the input that v does not declare are
// ignored. An empty input decodes as {}. A failure is a permanent *[Error]
// with code "invalid_input": return it from the handler as it is.
func (s *Step) Bind(v any) error {
	in := bytes.TrimSpace(s.Input)
	if len(in) == 0 {
		in = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return invalidInput(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidInput(errors.New("unexpected data after the input value"))
	}
	return nil
}

func invalidInput(err error) error {
	return &Error{Code: CodeInvalidInput, Message: fmt.Sprintf("decode step input: %v", err), cause: err}
}

// Typed adapts a function of a decoded input to a [Handler]: the step's
// input is bound to a new In with [Step.Bind] (an input that does not fit
// fails the attempt permanently with code "invalid_input", and fn is not
// called), and fn's Out is the step's result.
func Typed[In, Out any](fn func(ctx context.Context, s *Step, in In) (Out, error)) Handler {
	return func(ctx context.Context, s *Step) (any, error) {
		var in In
		if err := s.Bind(&in); err != nil {
			return nil, err
		}
		out, err := fn(ctx, s, in)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}
