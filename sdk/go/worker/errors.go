package worker

import (
	"errors"
	"time"
)

// Error codes the worker reports on its own.
const (
	// CodeError is the code of a plain error returned by a handler.
	CodeError = "error"
	// CodePanic is the code of a handler that panicked.
	CodePanic = "panic"
	// CodeInvalidInput is the code of a step input that does not decode
	// into the handler's type.
	CodeInvalidInput = "invalid_input"
	// CodeInvalidResult is the code of a handler result that cannot be
	// encoded as JSON.
	CodeInvalidResult = "invalid_result"
	// CodeUnknownCapability is the code of a step assigned for a
	// capability this worker does not handle.
	CodeUnknownCapability = "unknown_capability"
)

// ErrLeaseLost is the cause (see [context.Cause]) of a handler's context
// being cancelled because the sidecar no longer holds the attempt for this
// worker: the step was cancelled, timed out, or given to another worker.
// The handler's result will not be reported.
var ErrLeaseLost = errors.New("worker: lease lost: the attempt is no longer this worker's")

// ErrDrainTimeout is the cause (see [context.Cause]) of a handler's context
// being cancelled because the worker was shutting down and the step did
// not finish within [Options].DrainTimeout. If the handler then returns an
// error, the attempt is not reported, and the sidecar gives the step to
// another worker without spending an attempt.
var ErrDrainTimeout = errors.New("worker: drain timeout: the worker is shutting down")

// Error is a step failure with the fields FailStep reports. Handlers
// usually build one with [Permanent] or [Retryable]; build it directly to
// attach Details. A handler may wrap it (fmt.Errorf with %w): the worker
// finds it with [errors.As].
type Error struct {
	// Code names the failure, such as "card_declined". A workflow's
	// error_schema lists the codes a step may report, and its retry policy
	// may name the ones worth another attempt.
	Code string
	// Message says what went wrong, for people.
	Message string
	// Retryable says whether another attempt could succeed. The step's
	// retry policy, when it lists retryable codes, decides instead.
	Retryable bool
	// RetryAfter is the earliest time worth retrying after, such as a rate
	// limit's reset; zero leaves it to the step's backoff.
	RetryAfter time.Duration
	// Details, when not nil, is encoded as JSON and reported with the
	// failure.
	Details any

	cause error
}

// Error returns "code: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the error that caused this one, if any.
func (e *Error) Unwrap() error { return e.cause }

// Permanent returns an error that fails the attempt with code and message
// and asks for no further attempt.
func Permanent(code, message string) error {
	return &Error{Code: code, Message: message}
}

// Retryable returns an error that fails the attempt with code and message
// and asks for another attempt no sooner than retryAfter (zero: the step's
// backoff decides).
func Retryable(code, message string, retryAfter time.Duration) error {
	return &Error{Code: code, Message: message, Retryable: true, RetryAfter: retryAfter}
}

// failureOf maps a handler's error to the failure the worker reports: an
// *Error anywhere in the chain as it is, any other error as retryable with
// code "error".
func failureOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		f := *e
		if f.Code == "" {
			f.Code = CodeError
		}
		return &f
	}
	return &Error{Code: CodeError, Message: err.Error(), Retryable: true, cause: err}
}
