package agent

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// GenerateWorkflow drafts a workflow from a description (issue #10).
func (s *insightAPI) GenerateWorkflow(context.Context, *connect.Request[taskerv1.GenerateWorkflowRequest]) (*connect.Response[taskerv1.GenerateWorkflowResponse], error) {
	// Until it is built, it is a precondition this agent does not meet, so
	// that clients see a refusal, not a server fault.
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("workflow generation is not available on this agent yet"))
}
