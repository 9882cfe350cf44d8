package mcpserver

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// The resources: a workflow's manifest and a task.
const (
	workflowPrefix   = "tasker://workflows/"
	taskPrefix       = "tasker://tasks/"
	maxListResources = 100
)

func addResources(s *mcp.Server, h *handlers) {
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name: "workflow", Title: "Workflow manifest", URITemplate: workflowPrefix + "{namespace}/{name}", MIMEType: "text/yaml",
		Description: "The manifest (YAML) of a workflow's active version.",
	}, h.readWorkflow)
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name: "task", Title: "Task", URITemplate: taskPrefix + "{id}", MIMEType: "application/json",
		Description: "A task with its steps, as JSON (proto field names).",
	}, h.readTask)
	// The workflows change as they are applied, so resources/list asks the
	// API each time instead of listing resources registered once.
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "resources/list" {
				return next(ctx, method, req)
			}
			return h.listResources(callerContext(ctx, req))
		}
	})
}

func (h *handlers) listResources(ctx context.Context) (*mcp.ListResourcesResult, error) {
	resp, err := h.c.Workflows.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	if err != nil {
		return nil, apiError("resources/list", err)
	}
	res := &mcp.ListResourcesResult{Resources: []*mcp.Resource{}}
	for _, w := range resp.Msg.GetWorkflows() {
		if len(res.Resources) == maxListResources {
			break
		}
		res.Resources = append(res.Resources, &mcp.Resource{
			URI:         workflowPrefix + url.PathEscape(w.GetNamespace()) + "/" + url.PathEscape(w.GetName()),
			Name:        w.GetNamespace() + "/" + w.GetName(),
			Description: w.GetDescription(),
			MIMEType:    "text/yaml",
		})
	}
	return res, nil
}

func (h *handlers) readWorkflow(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	ns, name, ok := strings.Cut(strings.TrimPrefix(uri, workflowPrefix), "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%s: want %s{namespace}/{name}", uri, workflowPrefix)
	}
	ns, err1 := url.PathUnescape(ns)
	name, err2 := url.PathUnescape(name)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%s: the namespace or name is not a valid URI path segment", uri)
	}
	resp, err := h.c.Workflows.GetWorkflow(callerContext(ctx, req), connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: ns, Name: name}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		return nil, apiError("resources/read", err)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "text/yaml", Text: resp.Msg.GetWorkflow().GetManifest()}}}, nil
}

func (h *handlers) readTask(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	id := strings.TrimPrefix(uri, taskPrefix)
	if id == "" || strings.Contains(id, "/") {
		return nil, fmt.Errorf("%s: want %s{id}", uri, taskPrefix)
	}
	resp, err := h.c.Workflows.GetTask(callerContext(ctx, req), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		return nil, apiError("resources/read", err)
	}
	b, err := protoJSON(resp.Msg.GetTask())
	if err != nil {
		return nil, err
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
}

// The prompt.
func addPrompts(s *mcp.Server) {
	s.AddPrompt(&mcp.Prompt{
		Name: "diagnose_failed_task", Title: "Diagnose a failed task",
		Description: "Walks through a failed task: its state, the diagnosis with its evidence, and a remediation to propose (not apply).",
		Arguments:   []*mcp.PromptArgument{{Name: "task_id", Description: "the failed task's id (list_failures lists them)", Required: true}},
	}, diagnosePrompt)
}

func diagnosePrompt(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	id := strings.TrimSpace(req.Params.Arguments["task_id"])
	if id == "" {
		return nil, fmt.Errorf("task_id is required: pass the failed task's id (list_failures lists them)")
	}
	text := fmt.Sprintf(`Investigate the failed Tasker task %[1]s. Work in this order:

1. Call get_task with id %[1]q. Note the task's state, which step failed, its attempts and its last error (code and message). If the task did not fail, say so and stop.
2. Call diagnose_workflow_failure with task_id %[1]q. Its findings name the root-cause step and its class (app_error, timeout, worker_lost, ...), the steps that failed only because of it (consequences), and the evidence ids each finding cites.
3. Read the evidence the root cause cites: the error, earlier attempts, similar failures in the window and how they were settled. Base every claim on evidence ids; say when the evidence is thin.
4. Propose a remediation: prefer one the diagnosis lists (retry the step, resolve it by hand, change a timeout or max_attempts, fix the calling service), and explain why it addresses the root cause. For a timeout or retry policy, analyze_workflow_performance shows what the step usually takes.
5. Do not apply it. Retrying or resolving a step changes the task, and proposals are approved by an operator: approve_proposal, reject_proposal and rollback_proposal need the operator's own token, which you must ask them for and never guess. Ask the operator before any change.`, id)
	return &mcp.GetPromptResult{
		Description: "Diagnose failed task " + id,
		Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: text}}},
	}, nil
}
