package client

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/internal/transport"
)

// RetryAfter is how long a refused call was asked to wait before it is
// sent again: the sidecar attaches a hint when its rate limit refuses a
// call (code ResourceExhausted). It is 0 when err carries none.
func RetryAfter(err error) time.Duration { return transport.RetryAfter(err) }

// ErrStreamEnded is returned (wrapped) by [Client.Watch] when the sidecar
// closed the watch before the task ended, for example because it is
// shutting down.
var ErrStreamEnded = errors.New("the watch ended before the task did")

// ValidationError is how ApplyWorkflow reports an invalid manifest: every
// problem found at once. It wraps the Connect error (code
// InvalidArgument).
type ValidationError struct {
	// Problems lists what is wrong, in the order the sidecar reported it.
	Problems []Problem
	err      error
}

// Problem is one thing wrong with a manifest.
type Problem struct {
	// Path is the field, such as "steps[2].retry.max_attempts"; empty when
	// the problem is not about one field.
	Path string
	// Line is the 1-based line in the manifest, 0 when unknown.
	Line int
	// Message says what is wrong and how to fix it.
	Message string
}

// String returns "line 14: steps[2].retry.max_attempts: message", leaving
// out the parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error describes the problem, or counts the problems and lists them one
// per line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("apply workflow: invalid manifest")
	switch len(e.Problems) {
	case 0:
	case 1:
		b.WriteString(": " + e.Problems[0].String())
	default:
		fmt.Fprintf(&b, ": %d problems:", len(e.Problems))
		for _, p := range e.Problems {
			b.WriteString("\n\t" + p.String())
		}
	}
	return b.String()
}

// Unwrap returns the Connect error.
func (e *ValidationError) Unwrap() error { return e.err }

// ContractError is how StartTask and ResolveStep report a value (a task
// input, a step result) that breaks its JSON Schema contract. It wraps the
// Connect error (code InvalidArgument).
type ContractError struct {
	// Contract names the contract, such as "input" or "result of step
	// charge".
	Contract string
	// Violations lists every way the value breaks it.
	Violations []Violation
	err        error
}

// Violation is one way a value breaks a contract.
type Violation struct {
	// Pointer is the JSON pointer of the offending value, "" for the
	// whole value.
	Pointer string
	// Message says what is wrong.
	Message string
}

// String returns "pointer: message".
func (v Violation) String() string {
	if v.Pointer == "" {
		return "(value): " + v.Message
	}
	return v.Pointer + ": " + v.Message
}

// Error lists the violations.
func (e *ContractError) Error() string {
	var b strings.Builder
	b.WriteString("value breaks the " + e.Contract + " contract")
	for i, v := range e.Violations {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// Unwrap returns the Connect error.
func (e *ContractError) Unwrap() error { return e.err }

// validationError turns an InvalidArgument error into a *ValidationError,
// from its ValidationFailure detail or, without one, its message.
func validationError(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !connect.IsWireError(ce) {
		return nil
	}
	ve := &ValidationError{err: err}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if vf, ok := v.(*taskerv1.ValidationFailure); ok {
			for _, p := range vf.GetProblems() {
				ve.Problems = append(ve.Problems, Problem{Path: p.GetPath(), Line: int(p.GetLine()), Message: p.GetMessage()})
			}
		}
	}
	if len(ve.Problems) == 0 {
		ve.Problems = []Problem{{Message: ce.Message()}}
	}
	return ve
}

// contractError turns an InvalidArgument error with a ContractFailure
// detail into a *ContractError; it returns nil for any other error.
func contractError(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		return nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if cf, ok := v.(*taskerv1.ContractFailure); ok {
			e := &ContractError{Contract: cf.GetContract(), err: err}
			for _, vi := range cf.GetViolations() {
				e.Violations = append(e.Violations, Violation{Pointer: vi.GetPointer(), Message: vi.GetMessage()})
			}
			return e
		}
	}
	return nil
}
