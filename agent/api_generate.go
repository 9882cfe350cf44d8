package agent

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// GenerateWorkflow drafts a workflow from a description (issue #10).
func (s *insightAPI) GenerateWorkflow(context.Context, *connect.Request[taskerv1.GenerateWorkflowRequest]) (*connect.Response[taskerv1.GenerateWorkflowResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("workflow generation is not built yet"))
}
