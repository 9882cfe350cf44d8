package mcpserver

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/durationpb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// Annotations: what a tool does to the cluster, for clients that ask a
// person before a change. No tool reaches beyond the cluster.
func readOnly() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
}

// additive tools change state without undoing anything: a new task, a new
// attempt, a new proposal.
func additive() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{DestructiveHint: new(false), OpenWorldHint: new(false)}
}

// destructive tools settle something for good: a step's result, a
// proposal's fate.
func destructive() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)}
}

// handler is a tool's typed handler; its context carries the caller's token.
type handler[In any] func(ctx context.Context, in In) (*mcp.CallToolResult, any, error)

// add registers a tool whose structured output is the API message named
// by output (see the package documentation, Outputs).
func add[In any](s *mcp.Server, t *mcp.Tool, output string, h handler[In]) {
	t.OutputSchema = &jsonschema.Schema{Type: "object", Description: output + " as JSON (protojson, proto field names)"}
	mcp.AddTool(s, t, func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, any, error) {
		return h(callerContext(ctx, req), in)
	})
}

// ToolNames lists the tools a server offers, the read-only ones first:
// with readOnly, only those that change nothing.
func ToolNames(readOnlyOnly bool) []string {
	read := []string{"list_workflows", "get_workflow", "get_task", "list_tasks", "list_failures", "list_dead_letters",
		"list_members", "list_capabilities", "analyze_workflow_performance", "diagnose_workflow_failure",
		"optimize_workflow_dependencies", "list_proposals", "get_proposal"}
	if readOnlyOnly {
		return read
	}
	return append(read, "start_task", "retry_step", "resolve_step", "create_workflow_from_description",
		"approve_proposal", "reject_proposal", "rollback_proposal")
}

type listWorkflowsIn struct {
	Namespace string `json:"namespace,omitempty" jsonschema:"only workflows in this namespace; every namespace when empty"`
}

type getWorkflowIn struct {
	Namespace string `json:"namespace" jsonschema:"the workflow's namespace, such as shop (default is the namespace of workflows that name none)"`
	Name      string `json:"name" jsonschema:"the workflow's name, such as order-fulfilment"`
	Version   string `json:"version,omitempty" jsonschema:"a version, such as 1.2.0; the active version when empty"`
}

type startTaskIn struct {
	Workflow       string         `json:"workflow" jsonschema:"the workflow's name, such as order-fulfilment"`
	Namespace      string         `json:"namespace,omitempty" jsonschema:"the workflow's namespace; default when empty"`
	Version        string         `json:"version,omitempty" jsonschema:"a version of the workflow; the active one when empty"`
	Input          map[string]any `json:"input,omitempty" jsonschema:"the task's input, a JSON object the workflow's input schema accepts; {} when absent"`
	IdempotencyKey string         `json:"idempotency_key,omitempty" jsonschema:"a key that makes a repeated start return the first task instead of starting another"`
}

type taskIDIn struct {
	ID string `json:"id" jsonschema:"the task's id, such as tsk_01J..."`
}

type listTasksIn struct {
	Namespace string `json:"namespace,omitempty" jsonschema:"only tasks in this namespace"`
	Workflow  string `json:"workflow,omitempty" jsonschema:"only tasks of this workflow"`
	State     string `json:"state,omitempty" jsonschema:"only tasks in this state: pending, in_progress, complete, error, cancelled or resolved_manually"`
	Limit     int    `json:"limit,omitempty" jsonschema:"at most this many tasks, newest first (1 to 500; default 50)"`
}

type listFailuresIn struct {
	Namespace string `json:"namespace,omitempty" jsonschema:"only failures in this namespace"`
	Workflow  string `json:"workflow,omitempty" jsonschema:"only failures of this workflow"`
	Limit     int    `json:"limit,omitempty" jsonschema:"at most this many failed tasks (1 to 500; default 50)"`
}

type listDeadLettersIn struct {
	Namespace string `json:"namespace,omitempty" jsonschema:"only dead letters in this namespace"`
	Workflow  string `json:"workflow,omitempty" jsonschema:"only dead letters of this workflow"`
	TaskID    string `json:"task_id,omitempty" jsonschema:"only dead letters of this task"`
	Status    string `json:"status,omitempty" jsonschema:"only dead letters in this status: open, replayed, resolved or cancelled"`
	Limit     int    `json:"limit,omitempty" jsonschema:"at most this many (1 to 500; default 50)"`
}

type retryStepIn struct {
	TaskID string `json:"task_id" jsonschema:"the task's id"`
	Step   string `json:"step" jsonschema:"the failed step's name"`
	Reason string `json:"reason,omitempty" jsonschema:"why, for the audit trail"`
}

type resolveStepIn struct {
	TaskID string         `json:"task_id" jsonschema:"the task's id"`
	Step   string         `json:"step" jsonschema:"the step's name"`
	Result map[string]any `json:"result" jsonschema:"the result to record for the step, a JSON object its result schema accepts"`
	Reason string         `json:"reason" jsonschema:"why the step is settled by hand, for the audit trail"`
}

type noIn struct{}

type analyzeIn struct {
	Namespace string `json:"namespace" jsonschema:"the workflow's namespace"`
	Workflow  string `json:"workflow" jsonschema:"the workflow's name"`
	Version   string `json:"version,omitempty" jsonschema:"only this version; every version when empty"`
	Window    string `json:"window,omitempty" jsonschema:"how far back: days (7d) or a duration (36h); default 7d"`
}

type diagnoseIn struct {
	TaskID  string `json:"task_id" jsonschema:"the failed task's id"`
	Window  string `json:"window,omitempty" jsonschema:"how far back to look for similar failures: days (7d) or a duration (36h); default 24h"`
	Explain bool   `json:"explain,omitempty" jsonschema:"also ask the agent's language model, if one is configured, to explain the findings"`
}

type optimizeIn struct {
	Namespace string `json:"namespace" jsonschema:"the workflow's namespace"`
	Workflow  string `json:"workflow" jsonschema:"the workflow's name"`
	Version   string `json:"version,omitempty" jsonschema:"the version to optimize; the active one when empty"`
}

type generateIn struct {
	Description string `json:"description" jsonschema:"what the workflow should do, in plain words: its steps, their order, what each needs"`
	Namespace   string `json:"namespace,omitempty" jsonschema:"the new workflow's namespace"`
	Name        string `json:"name,omitempty" jsonschema:"the new workflow's name; derived from the description when empty"`
	DryRun      bool   `json:"dry_run,omitempty" jsonschema:"only return the manifest; create no proposal"`
}

type listProposalsIn struct {
	State     string `json:"state,omitempty" jsonschema:"only proposals in this state, such as pending, applied, rejected or rolled_back"`
	Workflow  string `json:"workflow,omitempty" jsonschema:"only proposals about this workflow"`
	Namespace string `json:"namespace,omitempty" jsonschema:"only proposals in this namespace"`
	Limit     int    `json:"limit,omitempty" jsonschema:"at most this many"`
}

type proposalIDIn struct {
	ID string `json:"id" jsonschema:"the proposal's id, such as p-12"`
}

type decideIn struct {
	ID            string         `json:"id" jsonschema:"the proposal's id"`
	Reason        string         `json:"reason" jsonschema:"why, for the audit trail"`
	OperatorToken string         `json:"operator_token" jsonschema:"an operator's ACL token (management policy) that authorizes this decision; ask the operator for it, never guess it"`
	Result        map[string]any `json:"result,omitempty" jsonschema:"approve only: the result to record when the proposal resolves a step"`
}

// taskState reads list_tasks' state names.
func taskState(s string) (taskerv1.TaskState, error) {
	switch strings.ToLower(s) {
	case "":
		return taskerv1.TaskState_TASK_STATE_UNSPECIFIED, nil
	case "pending":
		return taskerv1.TaskState_TASK_STATE_PENDING, nil
	case "in_progress":
		return taskerv1.TaskState_TASK_STATE_IN_PROGRESS, nil
	case "complete":
		return taskerv1.TaskState_TASK_STATE_COMPLETE, nil
	case "error":
		return taskerv1.TaskState_TASK_STATE_ERROR, nil
	case "cancelled":
		return taskerv1.TaskState_TASK_STATE_CANCELLED, nil
	case "resolved_manually":
		return taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY, nil
	}
	return 0, fmt.Errorf("state: %q is not a task state: use pending, in_progress, complete, error, cancelled or resolved_manually, or leave it empty for all", s)
}

func deadLetterStatus(s string) (taskerv1.DeadLetterStatus, error) {
	switch strings.ToLower(s) {
	case "":
		return taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_UNSPECIFIED, nil
	case "open":
		return taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN, nil
	case "replayed":
		return taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED, nil
	case "resolved":
		return taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_RESOLVED, nil
	case "cancelled":
		return taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_CANCELLED, nil
	}
	return 0, fmt.Errorf("status: %q is not a dead-letter status: use open, replayed, resolved or cancelled, or leave it empty for all", s)
}

// limit checks a list's limit; 0 is the default.
func limit(n int) (int32, error) {
	switch {
	case n == 0:
		return 50, nil
	case n < 0 || n > 500:
		return 0, fmt.Errorf("limit: %d is out of range: use 1 to 500, or leave it out for 50", n)
	}
	return int32(n), nil
}

// stateName is a task or step state without its enum prefix: error,
// in_progress.
func stateName(s fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), prefix))
}

func taskLine(t *taskerv1.Task) string {
	line := fmt.Sprintf("task %s (%s/%s %s) is %s", t.GetId(), t.GetNamespace(), t.GetWorkflow(), t.GetVersion(), stateName(t.GetState(), "TASK_STATE_"))
	for _, st := range t.GetSteps() {
		if st.GetState() == taskerv1.StepState_STEP_STATE_ERROR {
			line += fmt.Sprintf("; step %s failed: %s %s", st.GetName(), st.GetLastError().GetCode(), st.GetLastError().GetMessage())
		}
	}
	return line
}

func addTools(s *mcp.Server, h *handlers, readOnlyOnly bool) {
	c := h.c
	add(s, &mcp.Tool{Name: "list_workflows", Title: "List workflows", Annotations: readOnly(),
		Description: "Lists the workflows applied to the cluster: namespace, name, active version, versions and steps."},
		"tasker.v1.ListWorkflowsResponse", func(ctx context.Context, in listWorkflowsIn) (*mcp.CallToolResult, any, error) {
			resp, err := c.Workflows.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: in.Namespace}))
			if err != nil {
				return nil, nil, apiError("list_workflows", err)
			}
			names := make([]string, 0, len(resp.Msg.GetWorkflows()))
			for _, w := range resp.Msg.GetWorkflows() {
				names = append(names, w.GetNamespace()+"/"+w.GetName())
			}
			return result(fmt.Sprintf("%d workflows: %s", len(names), strings.Join(names, ", ")), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "get_workflow", Title: "Get a workflow", Annotations: readOnly(),
		Description: "Gets one workflow: its steps with their capabilities, dependencies, timeouts and attempts, and its manifest (YAML)."},
		"tasker.v1.GetWorkflowResponse", func(ctx context.Context, in getWorkflowIn) (*mcp.CallToolResult, any, error) {
			if in.Namespace == "" || in.Name == "" {
				return nil, nil, required("namespace and name", "name the workflow, such as namespace shop and name order-fulfilment (list_workflows lists them)")
			}
			resp, err := c.Workflows.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: in.Namespace, Name: in.Name, Version: in.Version}))
			if err != nil {
				return nil, nil, apiError("get_workflow", err)
			}
			w := resp.Msg.GetWorkflow()
			return result(fmt.Sprintf("workflow %s/%s %s: %d steps", w.GetNamespace(), w.GetName(), w.GetVersion(), len(w.GetSteps())), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "get_task", Title: "Get a task", Annotations: readOnly(),
		Description: "Gets one task: its state, input, and each step's state, attempts, result and last error."},
		"tasker.v1.GetTaskResponse", func(ctx context.Context, in taskIDIn) (*mcp.CallToolResult, any, error) {
			if in.ID == "" {
				return nil, nil, required("id", "pass the task's id, such as tsk_01J... (list_tasks lists them)")
			}
			resp, err := c.Workflows.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: in.ID}))
			if err != nil {
				return nil, nil, apiError("get_task", err)
			}
			return result(taskLine(resp.Msg.GetTask()), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "list_tasks", Title: "List tasks", Annotations: readOnly(),
		Description: "Lists tasks, newest first, optionally of one namespace, workflow or state."},
		"tasker.v1.ListTasksResponse", func(ctx context.Context, in listTasksIn) (*mcp.CallToolResult, any, error) {
			st, err := taskState(in.State)
			if err != nil {
				return nil, nil, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Workflows.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: in.Namespace, Workflow: in.Workflow, State: st, PageSize: n}))
			if err != nil {
				return nil, nil, apiError("list_tasks", err)
			}
			counts := map[string]int{}
			for _, t := range resp.Msg.GetTasks() {
				counts[stateName(t.GetState(), "TASK_STATE_")]++
			}
			var parts []string
			for _, st := range slices.Sorted(maps.Keys(counts)) {
				parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
			}
			return result(fmt.Sprintf("%d tasks: %s", len(resp.Msg.GetTasks()), strings.Join(parts, ", ")), resp.Msg)
		})
	mcp.AddTool(s, &mcp.Tool{Name: "list_failures", Title: "List failed tasks", Annotations: readOnly(),
		Description: "Lists the tasks that ended in error, newest first, each with the step that failed and its error: where to start an investigation (then diagnose_workflow_failure)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in listFailuresIn) (*mcp.CallToolResult, failuresOut, error) {
			return h.listFailures(callerContext(ctx, req), in)
		})
	add(s, &mcp.Tool{Name: "list_dead_letters", Title: "List dead letters", Annotations: readOnly(),
		Description: "Lists dead letters: step attempts that failed for good, with their error and whether they were replayed, resolved or cancelled."},
		"tasker.v1.ListDeadLettersResponse", func(ctx context.Context, in listDeadLettersIn) (*mcp.CallToolResult, any, error) {
			st, err := deadLetterStatus(in.Status)
			if err != nil {
				return nil, nil, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Workflows.ListDeadLetters(ctx, connect.NewRequest(&taskerv1.ListDeadLettersRequest{Namespace: in.Namespace, Workflow: in.Workflow, TaskId: in.TaskID, Status: st, PageSize: n}))
			if err != nil {
				return nil, nil, apiError("list_dead_letters", err)
			}
			return result(fmt.Sprintf("%d dead letters", len(resp.Msg.GetDeadLetters())), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "list_members", Title: "List cluster members", Annotations: readOnly(),
		Description: "Lists the cluster's agents: name, address, status (alive, failed, left), role (server or client), version and the capabilities their services offer."},
		"tasker.v1.MembersResponse", func(ctx context.Context, _ noIn) (*mcp.CallToolResult, any, error) {
			resp, err := c.Cluster.Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{}))
			if err != nil {
				return nil, nil, apiError("list_members", err)
			}
			alive := 0
			for _, m := range resp.Msg.GetMembers() {
				if m.GetStatus() == "alive" {
					alive++
				}
			}
			return result(fmt.Sprintf("%d members, %d alive", len(resp.Msg.GetMembers()), alive), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "list_capabilities", Title: "List capabilities", Annotations: readOnly(),
		Description: "Lists the capabilities services offer (what a workflow step can call), and for each the agents offering it with their version, concurrency, description, and the JSON Schemas of its input and output (with a digest of them: equal digests, identical contracts)."},
		"tasker.v1.CapabilitiesResponse", func(ctx context.Context, _ noIn) (*mcp.CallToolResult, any, error) {
			resp, err := c.Cluster.Capabilities(ctx, connect.NewRequest(&taskerv1.CapabilitiesRequest{}))
			if err != nil {
				return nil, nil, apiError("list_capabilities", err)
			}
			names := make([]string, 0, len(resp.Msg.GetCapabilities()))
			for _, cp := range resp.Msg.GetCapabilities() {
				names = append(names, cp.GetName())
			}
			return result(fmt.Sprintf("%d capabilities: %s", len(names), strings.Join(names, ", ")), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "analyze_workflow_performance", Title: "Analyze a workflow's performance", Annotations: readOnly(),
		Description: "Measures a workflow's steps from the execution history over a window: durations (p50, p95, p99) and their trend, waits, retry rates, the critical path, bottlenecks, and advice on timeouts and attempts."},
		"tasker.v1.AnalyzeResponse", func(ctx context.Context, in analyzeIn) (*mcp.CallToolResult, any, error) {
			if in.Namespace == "" || in.Workflow == "" {
				return nil, nil, required("namespace and workflow", "name the workflow, such as namespace shop and workflow order-fulfilment")
			}
			w, err := parseWindow("window", cmp.Or(in.Window, "7d"))
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Insight.Analyze(ctx, connect.NewRequest(&taskerv1.AnalyzeRequest{Namespace: in.Namespace, Workflow: in.Workflow, Version: in.Version, Window: durationpb.New(w)}))
			if err != nil {
				return nil, nil, apiError("analyze_workflow_performance", err)
			}
			m := resp.Msg
			return result(fmt.Sprintf("%s/%s: %d tasks, %d attempts; critical path %s; bottlenecks %v; %d advice",
				m.GetNamespace(), m.GetWorkflow(), m.GetTasks(), m.GetAttempts(), strings.Join(m.GetCriticalPath(), " > "), m.GetBottlenecks(), len(m.GetAdvice())), m)
		})
	add(s, &mcp.Tool{Name: "diagnose_workflow_failure", Title: "Diagnose a failed task", Annotations: readOnly(),
		Description: "Diagnoses a failed task: the root-cause step and its class (app_error, timeout, ...), the steps it held back, the evidence each finding cites, similar failures and how they were settled, and remediations to propose."},
		"tasker.v1.DiagnoseResponse", func(ctx context.Context, in diagnoseIn) (*mcp.CallToolResult, any, error) {
			if in.TaskID == "" {
				return nil, nil, required("task_id", "pass the failed task's id (list_failures lists them)")
			}
			w, err := parseWindow("window", cmp.Or(in.Window, "24h"))
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Insight.Diagnose(ctx, connect.NewRequest(&taskerv1.DiagnoseRequest{TaskId: in.TaskID, Window: durationpb.New(w), Explain: in.Explain}))
			if err != nil {
				return nil, nil, apiError("diagnose_workflow_failure", err)
			}
			summary := fmt.Sprintf("task %s is %s: %s", resp.Msg.GetTaskId(), resp.Msg.GetStatus(), resp.Msg.GetSummary())
			for _, f := range resp.Msg.GetFindings() {
				if f.GetRole() == "root_cause" {
					summary += fmt.Sprintf(" (root cause %s: %s %s)", f.GetStep(), f.GetClass(), f.GetCode())
				}
			}
			return result(summary, resp.Msg)
		})
	add(s, &mcp.Tool{Name: "optimize_workflow_dependencies", Title: "Optimize a workflow's dependencies", Annotations: readOnly(),
		Description: "Finds dependencies between steps that their data does not need, and what removing them would save on the critical path, measured from the history; returns the changed manifest and its diff. Changes nothing: propose the result."},
		"tasker.v1.OptimizeResponse", func(ctx context.Context, in optimizeIn) (*mcp.CallToolResult, any, error) {
			if in.Namespace == "" || in.Workflow == "" {
				return nil, nil, required("namespace and workflow", "name the workflow, such as namespace shop and workflow order-fulfilment")
			}
			resp, err := c.Insight.Optimize(ctx, connect.NewRequest(&taskerv1.OptimizeRequest{Namespace: in.Namespace, Workflow: in.Workflow, Version: in.Version}))
			if err != nil {
				return nil, nil, apiError("optimize_workflow_dependencies", err)
			}
			m := resp.Msg
			return result(fmt.Sprintf("%s/%s %s: %d dependencies removable, %d redundant; saves %v", m.GetNamespace(), m.GetWorkflow(), m.GetVersion(),
				len(m.GetRemoved()), len(m.GetRedundant()), m.GetSaved().AsDuration()), m)
		})
	add(s, &mcp.Tool{Name: "list_proposals", Title: "List proposals", Annotations: readOnly(),
		Description: "Lists proposals: changes (a new workflow version, a retry, a resolution) waiting for an operator's approval, or decided."},
		"tasker.v1.ListProposalsResponse", func(ctx context.Context, in listProposalsIn) (*mcp.CallToolResult, any, error) {
			if in.Limit < 0 {
				return nil, nil, fmt.Errorf("limit: %d is negative: leave it out for all, or pass a positive number", in.Limit)
			}
			resp, err := c.Proposals.ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{State: in.State, Workflow: in.Workflow, Namespace: in.Namespace, Limit: int32(in.Limit)}))
			if err != nil {
				return nil, nil, apiError("list_proposals", err)
			}
			return result(fmt.Sprintf("%d proposals", len(resp.Msg.GetProposals())), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "get_proposal", Title: "Get a proposal", Annotations: readOnly(),
		Description: "Gets one proposal: what it changes (manifest diff, step, params), its evidence, state and history."},
		"tasker.v1.GetProposalResponse", func(ctx context.Context, in proposalIDIn) (*mcp.CallToolResult, any, error) {
			if in.ID == "" {
				return nil, nil, required("id", "pass the proposal's id (list_proposals lists them)")
			}
			resp, err := c.Proposals.GetProposal(ctx, connect.NewRequest(&taskerv1.GetProposalRequest{Id: in.ID}))
			if err != nil {
				return nil, nil, apiError("get_proposal", err)
			}
			return result(proposalLine(resp.Msg.GetProposal()), resp.Msg)
		})
	if readOnlyOnly {
		return
	}

	add(s, &mcp.Tool{Name: "start_task", Title: "Start a task", Annotations: additive(),
		Description: "Starts a task of a workflow with an input. With an idempotency_key, repeating the call returns the task it started instead of starting another."},
		"tasker.v1.StartTaskResponse", func(ctx context.Context, in startTaskIn) (*mcp.CallToolResult, any, error) {
			if in.Workflow == "" {
				return nil, nil, required("workflow", "name the workflow to start, such as order-fulfilment (list_workflows lists them)")
			}
			input, err := jsonText("input", in.Input)
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Workflows.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: in.Namespace, Workflow: in.Workflow, Version: in.Version, InputJson: input, IdempotencyKey: in.IdempotencyKey}))
			if err != nil {
				return nil, nil, apiError("start_task", err)
			}
			verb := "started"
			if !resp.Msg.GetCreated() {
				verb = "already started (same idempotency_key)"
			}
			return result(fmt.Sprintf("%s: %s", verb, taskLine(resp.Msg.GetTask())), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "retry_step", Title: "Retry a failed step", Annotations: additive(),
		Description: "Retries a failed step of a task: one more attempt, and the task goes on if it succeeds."},
		"tasker.v1.RetryStepResponse", func(ctx context.Context, in retryStepIn) (*mcp.CallToolResult, any, error) {
			if in.TaskID == "" || in.Step == "" {
				return nil, nil, required("task_id and step", "name the task and its failed step (get_task shows which failed)")
			}
			resp, err := c.Workflows.RetryStep(ctx, connect.NewRequest(&taskerv1.RetryStepRequest{TaskId: in.TaskID, Step: in.Step, Reason: in.Reason}))
			if err != nil {
				return nil, nil, apiError("retry_step", err)
			}
			return result("retrying step "+in.Step+": "+taskLine(resp.Msg.GetTask()), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "resolve_step", Title: "Resolve a step by hand", Annotations: destructive(),
		Description: "Settles a step by hand with a result, as if it had succeeded, so that the task goes on; for work done outside Tasker. Cannot be undone."},
		"tasker.v1.ResolveStepResponse", func(ctx context.Context, in resolveStepIn) (*mcp.CallToolResult, any, error) {
			if in.TaskID == "" || in.Step == "" {
				return nil, nil, required("task_id and step", "name the task and the step to resolve")
			}
			if in.Reason == "" {
				return nil, nil, required("reason", "say why the step is settled by hand; it is kept in the task's history")
			}
			res, err := jsonText("result", in.Result)
			if err != nil {
				return nil, nil, err
			}
			resp, err := c.Workflows.ResolveStep(ctx, connect.NewRequest(&taskerv1.ResolveStepRequest{TaskId: in.TaskID, Step: in.Step, ResultJson: res, Reason: in.Reason}))
			if err != nil {
				return nil, nil, apiError("resolve_step", err)
			}
			return result("resolved step "+in.Step+": "+taskLine(resp.Msg.GetTask()), resp.Msg)
		})
	add(s, &mcp.Tool{Name: "create_workflow_from_description", Title: "Create a workflow from a description", Annotations: additive(),
		Description: "Writes a workflow manifest from a plain description with the agent's language model, checked against the capabilities the cluster offers; unless dry_run, it becomes a proposal an operator approves. Applies nothing."},
		"tasker.v1.GenerateWorkflowResponse", func(ctx context.Context, in generateIn) (*mcp.CallToolResult, any, error) {
			if strings.TrimSpace(in.Description) == "" {
				return nil, nil, required("description", "describe the workflow: its steps, their order, what each needs")
			}
			resp, err := c.Insight.GenerateWorkflow(ctx, connect.NewRequest(&taskerv1.GenerateWorkflowRequest{Description: in.Description, Namespace: in.Namespace, Name: in.Name, DryRun: in.DryRun}))
			if err != nil {
				return nil, nil, apiError("create_workflow_from_description", err)
			}
			m := resp.Msg
			summary := fmt.Sprintf("manifest valid=%v, %d problems, missing capabilities %v", m.GetValid(), len(m.GetProblems()), m.GetMissingCapabilities())
			if m.GetProposalId() != "" {
				summary += "; proposal " + m.GetProposalId() + " waits for an operator's approval"
			}
			return result(summary, m)
		})
	decide := func(name, title, desc, output string, call func(ctx context.Context, in decideIn) (*taskerv1.Proposal, error)) {
		add(s, &mcp.Tool{Name: name, Title: title, Annotations: destructive(), Description: desc}, output,
			func(ctx context.Context, in decideIn) (*mcp.CallToolResult, any, error) {
				if in.ID == "" {
					return nil, nil, required("id", "pass the proposal's id (list_proposals lists them)")
				}
				if in.Reason == "" {
					return nil, nil, required("reason", "say why; it is kept in the proposal's history")
				}
				if in.OperatorToken == "" {
					return nil, nil, required("operator_token", "an operator must authorize this with their own ACL token (management policy); ask them for it, or have them run 'tasker ai proposals' themselves")
				}
				// The operator's token, for this call only: never the
				// session's, so an assistant cannot decide its own proposals.
				p, err := call(withToken(ctx, in.OperatorToken), in)
				if err != nil {
					return nil, nil, apiError(name, err)
				}
				return result(proposalLine(p), p)
			})
	}
	decide("approve_proposal", "Approve a proposal", "Approves a proposal, which applies it (a new workflow version, a retry, a resolution). Needs an operator's token in operator_token.",
		"tasker.v1.Proposal", func(ctx context.Context, in decideIn) (*taskerv1.Proposal, error) {
			res := ""
			if in.Result != nil {
				var err error
				if res, err = jsonText("result", in.Result); err != nil {
					return nil, err
				}
			}
			resp, err := c.Proposals.ApproveProposal(ctx, connect.NewRequest(&taskerv1.ApproveProposalRequest{Id: in.ID, Reason: in.Reason, ResultJson: res}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetProposal(), nil
		})
	decide("reject_proposal", "Reject a proposal", "Rejects a proposal: it is never applied. Needs an operator's token in operator_token.",
		"tasker.v1.Proposal", func(ctx context.Context, in decideIn) (*taskerv1.Proposal, error) {
			resp, err := c.Proposals.RejectProposal(ctx, connect.NewRequest(&taskerv1.RejectProposalRequest{Id: in.ID, Reason: in.Reason}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetProposal(), nil
		})
	decide("rollback_proposal", "Roll back a proposal", "Rolls back an applied proposal: the workflow's previous version becomes active again. Needs an operator's token in operator_token.",
		"tasker.v1.Proposal", func(ctx context.Context, in decideIn) (*taskerv1.Proposal, error) {
			resp, err := c.Proposals.RollbackProposal(ctx, connect.NewRequest(&taskerv1.RollbackProposalRequest{Id: in.ID, Reason: in.Reason}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.GetProposal(), nil
		})
}

func proposalLine(p *taskerv1.Proposal) string {
	return fmt.Sprintf("proposal %s (%s %s/%s): %s, %s", p.GetId(), p.GetAction(), p.GetNamespace(), p.GetWorkflow(), p.GetState(), p.GetTitle())
}

// failuresOut is list_failures' output.
type failuresOut struct {
	Failures []failure `json:"failures" jsonschema:"the failed tasks, newest first"`
}

type failure struct {
	TaskID     string `json:"task_id"`
	Namespace  string `json:"namespace"`
	Workflow   string `json:"workflow"`
	Version    string `json:"version"`
	Step       string `json:"step,omitempty" jsonschema:"the step that failed; empty when none did (the task was failed otherwise)"`
	Capability string `json:"capability,omitempty"`
	Attempts   int32  `json:"attempts,omitempty"`
	Code       string `json:"code,omitempty" jsonschema:"the error's code, such as card_declined or timeout"`
	Message    string `json:"message,omitempty"`
	EndedAt    string `json:"ended_at,omitempty" jsonschema:"when the task ended, RFC 3339"`
}

func (h *handlers) listFailures(ctx context.Context, in listFailuresIn) (*mcp.CallToolResult, failuresOut, error) {
	n, err := limit(in.Limit)
	if err != nil {
		return nil, failuresOut{}, err
	}
	resp, err := h.c.Workflows.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: in.Namespace, Workflow: in.Workflow, State: taskerv1.TaskState_TASK_STATE_ERROR, PageSize: n}))
	if err != nil {
		return nil, failuresOut{}, apiError("list_failures", err)
	}
	out := failuresOut{Failures: []failure{}}
	var lines []string
	for _, t := range resp.Msg.GetTasks() {
		f := failure{TaskID: t.GetId(), Namespace: t.GetNamespace(), Workflow: t.GetWorkflow(), Version: t.GetVersion()}
		if t.GetEndedAt() != nil {
			f.EndedAt = t.GetEndedAt().AsTime().UTC().Format("2006-01-02T15:04:05.000Z07:00")
		}
		steps := t.GetSteps()
		if len(steps) == 0 {
			// A list may leave the steps out: ask for the task.
			if got, err := h.c.Workflows.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: t.GetId()})); err == nil {
				steps = got.Msg.GetTask().GetSteps()
			}
		}
		for _, st := range steps {
			// The failed step is the one with an error of its own; the
			// steps it held back were cancelled, or never ran.
			if st.GetState() == taskerv1.StepState_STEP_STATE_ERROR {
				f.Step, f.Capability, f.Attempts = st.GetName(), st.GetCapability(), st.GetAttempts()
				f.Code, f.Message = st.GetLastError().GetCode(), st.GetLastError().GetMessage()
				break
			}
		}
		out.Failures = append(out.Failures, f)
		lines = append(lines, fmt.Sprintf("%s %s/%s step %s: %s", f.TaskID, f.Namespace, f.Workflow, f.Step, f.Code))
	}
	summary := fmt.Sprintf("%d failed tasks", len(out.Failures))
	if len(lines) > 0 {
		summary += ":\n" + strings.Join(lines, "\n")
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: summary}}}, out, nil
}
