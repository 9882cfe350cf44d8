package agent

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

// toConnect maps an error from the state or the workflow rules to the
// Connect code a client can act on, with structured details where there
// are several problems: InvalidArgument for bad input, NotFound,
// FailedPrecondition for illegal transitions and stale reports,
// Unavailable when there is no leader, ResourceExhausted for limits.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var (
		ve *workflow.ValidationError
		ct *workflow.ContractError
		te *workflow.TransitionError
		nr *workflow.NotReadyError
	)
	switch {
	case errors.As(err, &ve):
		e := connect.NewError(connect.CodeInvalidArgument, err)
		d := &taskerv1.ValidationFailure{}
		for _, p := range ve.Problems {
			d.Problems = append(d.Problems, &taskerv1.Problem{Path: p.Path, Line: int32(p.Line), Message: p.Message})
		}
		if detail, derr := connect.NewErrorDetail(d); derr == nil {
			e.AddDetail(detail)
		}
		return e
	case errors.As(err, &ct):
		e := connect.NewError(connect.CodeInvalidArgument, err)
		d := &taskerv1.ContractFailure{Contract: ct.Contract}
		for _, v := range ct.Violations {
			d.Violations = append(d.Violations, &taskerv1.Violation{Pointer: v.Pointer, Message: v.Message})
		}
		if detail, derr := connect.NewErrorDetail(d); derr == nil {
			e.AddDetail(detail)
		}
		return e
	case errors.Is(err, consensus.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, consensus.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.As(err, &te), errors.As(err, &nr),
		errors.Is(err, consensus.ErrStaleAttempt), errors.Is(err, consensus.ErrTaskEnded), errors.Is(err, consensus.ErrVersionExists):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrLeadershipLost), errors.Is(err, errShuttingDown):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, errTooLarge):
		return connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, consensus.ErrLimit):
		return exhausted(limitInFlight, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

var (
	errShuttingDown = errors.New("agent is shutting down")
	errTooLarge     = errors.New("payload too large")
)

// invalid is an InvalidArgument error naming the field and the fix.
func invalid(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// checkSize enforces the payload limit on a JSON field.
func checkSize(field, v string, limit int) error {
	if len(v) > limit {
		return exhausted(limitPayload, fmt.Errorf("%w: %s is %d bytes, over the limit of %d (max_payload_bytes); keep large data elsewhere and pass a reference, or raise the limit", errTooLarge, field, len(v), limit))
	}
	return nil
}

// required checks that string fields are set.
func required(fields ...string) error {
	var missing []string
	for i := 0; i+1 < len(fields); i += 2 {
		if strings.TrimSpace(fields[i+1]) == "" {
			missing = append(missing, fields[i])
		}
	}
	if len(missing) > 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: required", strings.Join(missing, ", ")))
	}
	return nil
}
