package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/workflow"
)

type workflowAPI struct{ a *Agent }

var _ taskerv1connect.WorkflowServiceHandler = (*workflowAPI)(nil)

func (w *workflowAPI) ApplyWorkflow(ctx context.Context, req *connect.Request[taskerv1.ApplyWorkflowRequest]) (*connect.Response[taskerv1.ApplyWorkflowResponse], error) {
	m := req.Msg.GetManifest()
	if err := required("manifest", m); err != nil {
		return nil, err
	}
	if err := checkSize("manifest", m, w.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	// Validate here for a precise error without a Raft round trip; the
	// FSM validates again, identically, on every server.
	plan, err := workflow.Load([]byte(m), fsmLimits())
	if err != nil {
		return validateOnly(req.Msg, nil, err)
	}
	if err := w.a.checkWorkflow(plan); err != nil {
		return nil, err
	}
	// Against the capabilities the cluster offers now: a step no agent
	// can serve as advertised is refused before anything is stored.
	warnings, err := w.a.checkCapabilities(plan)
	if err == nil && req.Msg.GetValidateOnly() {
		err = w.a.checkVersionFree(plan, m)
	}
	if err != nil || req.Msg.GetValidateOnly() {
		return validateOnly(req.Msg, warnings, err)
	}
	if w.a.cfg.ApprovalRequired {
		// Re-applying the very same content changes nothing and is kept.
		if v, err := w.a.state.Workflow(plan.Namespace, plan.Name, plan.Version); err != nil || v.Manifest != m {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(errApprovalRequired))
		}
	}
	res, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_PutWorkflow{PutWorkflow: &fsmv1.PutWorkflow{Manifest: m}}})
	if err != nil {
		return nil, toConnect(err)
	}
	v, err := w.a.state.Workflow(plan.Namespace, plan.Name, plan.Version)
	if err != nil {
		return nil, toConnect(err)
	}
	w.a.log.Info("workflow applied", "namespace", v.Namespace, "workflow", v.Name, "version", v.Version, "created", res.Created, "warnings", len(warnings))
	for _, warning := range warnings {
		w.a.log.Warn("workflow applied with a warning", "namespace", v.Namespace, "workflow", v.Name, "version", v.Version, "warning", warning)
	}
	return connect.NewResponse(&taskerv1.ApplyWorkflowResponse{Workflow: pbWorkflow(v, true), Created: res.Created, Warnings: warnings}), nil
}

// errApprovalRequired is ApplyWorkflow's answer for a change on a cluster
// with approval_required.
const errApprovalRequired = "approvals are required on this cluster (approval_required): file the manifest as a proposal (tasker ai proposals, CreateProposal) for an operator to approve"

// checkVersionFree is, for a dry run, the check the FSM makes on apply: a
// version already stored with other content is refused. An editor learns
// it before Save (and that the version needs a bump) rather than after.
func (a *Agent) checkVersionFree(plan *workflow.Plan, manifest string) error {
	v, err := a.state.Workflow(plan.Namespace, plan.Name, plan.Version)
	if err != nil || v.Manifest == manifest {
		// Not stored (or the very same content, which an apply accepts).
		return nil
	}
	return &workflow.ValidationError{Problems: []workflow.Problem{{
		Path:    "version",
		Message: fmt.Sprintf("%s/%s %s is already stored with other content: apply it under a new version", plan.Namespace, plan.Name, plan.Version),
	}}}
}

// validateOnly answers an apply that stops before the store: a dry run
// gets the manifest's problems as data, since an editor checking as one
// types wants them on every keystroke and an error is the exceptional
// path; a real apply keeps the InvalidArgument error with its
// ValidationFailure detail. Errors that are not about the manifest (a
// limit, an internal fault) stay errors either way.
func validateOnly(req *taskerv1.ApplyWorkflowRequest, warnings []string, err error) (*connect.Response[taskerv1.ApplyWorkflowResponse], error) {
	var ve *workflow.ValidationError
	switch {
	case !req.GetValidateOnly():
		return nil, toConnect(err)
	case err == nil:
		return connect.NewResponse(&taskerv1.ApplyWorkflowResponse{Warnings: warnings}), nil
	case errors.As(err, &ve):
		out := &taskerv1.ApplyWorkflowResponse{Warnings: warnings}
		for _, p := range ve.Problems {
			out.Problems = append(out.Problems, &taskerv1.Problem{Path: p.Path, Line: int32(p.Line), Message: p.Message})
		}
		return connect.NewResponse(out), nil
	}
	return nil, toConnect(err)
}

func (w *workflowAPI) GetWorkflow(_ context.Context, req *connect.Request[taskerv1.GetWorkflowRequest]) (*connect.Response[taskerv1.GetWorkflowResponse], error) {
	if err := required("name", req.Msg.GetName()); err != nil {
		return nil, err
	}
	v, err := w.a.state.Workflow(req.Msg.GetNamespace(), req.Msg.GetName(), req.Msg.GetVersion())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.GetWorkflowResponse{Workflow: pbWorkflow(v, true)}), nil
}

func (w *workflowAPI) ListWorkflows(_ context.Context, req *connect.Request[taskerv1.ListWorkflowsRequest]) (*connect.Response[taskerv1.ListWorkflowsResponse], error) {
	out := &taskerv1.ListWorkflowsResponse{}
	for _, v := range w.a.state.Workflows(req.Msg.GetNamespace()) {
		out.Workflows = append(out.Workflows, pbWorkflow(v, false))
	}
	return connect.NewResponse(out), nil
}

func (w *workflowAPI) StartTask(ctx context.Context, req *connect.Request[taskerv1.StartTaskRequest]) (*connect.Response[taskerv1.StartTaskResponse], error) {
	r := req.Msg
	if err := required("workflow", r.GetWorkflow()); err != nil {
		return nil, err
	}
	if err := checkSize("input_json", r.GetInputJson(), w.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	if len(r.GetIdempotencyKey()) > 256 {
		return nil, invalid("idempotency_key", "is %d characters, over the limit of 256", len(r.GetIdempotencyKey()))
	}
	// The agent that forwarded the call chose the task id, so that sending
	// it again after a leader change cannot start a second task.
	fid := ""
	if req.Header().Get(hdrForwarded) != "" {
		fid = req.Header().Get(hdrTaskID)
	}
	if key := r.GetIdempotencyKey(); key != "" {
		if t, ok := w.a.state.TaskByKey(r.GetNamespace(), key); ok {
			// A task with the forwarded id is this very call's, committed
			// by a leader that died before answering: it created the task.
			return connect.NewResponse(&taskerv1.StartTaskResponse{Task: pbTask(t), Created: fid != "" && t.ID == fid}), nil
		}
	}
	v, err := w.a.state.Workflow(r.GetNamespace(), r.GetWorkflow(), r.GetVersion())
	if err != nil {
		return nil, toConnect(err)
	}
	input := r.GetInputJson()
	if input == "" {
		input = "{}"
	}
	val, err := workflow.DecodeJSON([]byte(input))
	if err != nil {
		return nil, invalid("input_json", "%v", err)
	}
	if err := v.Plan.Input.Check("input", val); err != nil {
		return nil, toConnect(err)
	}
	id := w.a.newTaskID()
	if fid != "" {
		if !validTaskID(fid) {
			return nil, invalid(hdrTaskID, "%q is not a task id (tsk_ followed by up to 40 letters and digits)", fid)
		}
		id = fid
	}
	if err := w.a.checkInFlight(id); err != nil {
		return nil, err
	}
	// The steps' spans join this call's trace, on whichever server leads.
	traceParent := ""
	if w.a.tel.Tracing {
		traceParent = w.a.tel.TraceParent(ctx)
	}
	res, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{
		TaskId: id, Namespace: v.Namespace, Workflow: v.Name, Version: v.Version, InputJson: input, IdempotencyKey: r.GetIdempotencyKey(),
		TraceParent: traceParent,
	}}})
	if err != nil {
		return nil, toConnect(err)
	}
	t, err := w.a.state.Task(res.TaskID)
	if err != nil {
		return nil, toConnect(err)
	}
	if res.Created {
		w.a.log.InfoContext(ctx, "task started", "task_id", t.ID, "workflow", t.Workflow, "version", t.Version)
	}
	return connect.NewResponse(&taskerv1.StartTaskResponse{Task: pbTask(t), Created: res.Created}), nil
}

func (w *workflowAPI) GetTask(_ context.Context, req *connect.Request[taskerv1.GetTaskRequest]) (*connect.Response[taskerv1.GetTaskResponse], error) {
	if err := required("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	t, err := w.a.state.Task(req.Msg.GetId())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.GetTaskResponse{Task: w.a.taskOut(t)}), nil
}

func (w *workflowAPI) ListTasks(_ context.Context, req *connect.Request[taskerv1.ListTasksRequest]) (*connect.Response[taskerv1.ListTasksResponse], error) {
	r := req.Msg
	f := consensus.TaskFilter{Namespace: r.GetNamespace(), Workflow: r.GetWorkflow(), Limit: int(r.GetPageSize())}
	switch {
	case f.Limit < 0 || f.Limit > 1000:
		return nil, invalid("page_size", "%d is out of range: use 1 to 1000 (0 means 100)", f.Limit)
	case f.Limit == 0:
		f.Limit = 100
	}
	if r.GetState() != taskerv1.TaskState_TASK_STATE_UNSPECIFIED {
		st, ok := taskState(r.GetState())
		if !ok {
			return nil, invalid("state", "unknown state %d", r.GetState())
		}
		f.State = &st
	}
	if tok := r.GetPageToken(); tok != "" {
		n, err := strconv.ParseUint(tok, 10, 64)
		if err != nil || n == 0 {
			return nil, invalid("page_token", "%q is not a token from a previous response", tok)
		}
		f.Before = n
	}
	tasks, next := w.a.state.ListTasks(f)
	out := &taskerv1.ListTasksResponse{}
	for _, t := range tasks {
		out.Tasks = append(out.Tasks, pbTask(t))
	}
	if next != 0 {
		out.NextPageToken = strconv.FormatUint(next, 10)
	}
	return connect.NewResponse(out), nil
}

func (w *workflowAPI) CancelTask(ctx context.Context, req *connect.Request[taskerv1.CancelTaskRequest]) (*connect.Response[taskerv1.CancelTaskResponse], error) {
	if err := required("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	if _, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: req.Msg.GetId(), Reason: req.Msg.GetReason()}}}); err != nil {
		return nil, toConnect(err)
	}
	t, err := w.a.state.Task(req.Msg.GetId())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.CancelTaskResponse{Task: pbTask(t)}), nil
}

func (w *workflowAPI) RetryStep(ctx context.Context, req *connect.Request[taskerv1.RetryStepRequest]) (*connect.Response[taskerv1.RetryStepResponse], error) {
	if err := required("task_id", req.Msg.GetTaskId(), "step", req.Msg.GetStep()); err != nil {
		return nil, err
	}
	if _, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: req.Msg.GetTaskId(), Step: req.Msg.GetStep(), Reason: req.Msg.GetReason()}}}); err != nil {
		return nil, toConnect(err)
	}
	t, err := w.a.state.Task(req.Msg.GetTaskId())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.RetryStepResponse{Task: pbTask(t)}), nil
}

func (w *workflowAPI) ResolveStep(ctx context.Context, req *connect.Request[taskerv1.ResolveStepRequest]) (*connect.Response[taskerv1.ResolveStepResponse], error) {
	r := req.Msg
	if err := required("task_id", r.GetTaskId(), "step", r.GetStep()); err != nil {
		return nil, err
	}
	if err := checkSize("result_json", r.GetResultJson(), w.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	if err := w.a.checkResult(r.GetTaskId(), r.GetStep(), r.GetResultJson()); err != nil {
		return nil, err
	}
	if _, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{
		TaskId: r.GetTaskId(), Step: r.GetStep(), ResultJson: r.GetResultJson(), Reason: r.GetReason(),
	}}}); err != nil {
		return nil, toConnect(err)
	}
	t, err := w.a.state.Task(r.GetTaskId())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.ResolveStepResponse{Task: pbTask(t)}), nil
}

// planStep is the compiled step of a task's workflow version, as a Connect
// error when the task or step is unknown.
func (a *Agent) planStep(taskID, step string) (*workflow.PlanStep, error) {
	plan, err := a.state.PlanOf(taskID)
	if err != nil {
		return nil, toConnect(err)
	}
	i, ok := plan.StepIndex(step)
	if !ok {
		return nil, toConnect(fmt.Errorf("%w: step %q in task %s", consensus.ErrNotFound, step, taskID))
	}
	return &plan.Steps[i], nil
}

// checkResult validates a result against its step's contract, returning
// InvalidArgument with every violation.
func (a *Agent) checkResult(taskID, step, result string) error {
	ps, err := a.planStep(taskID, step)
	if err != nil {
		return err
	}
	if result == "" {
		result = "{}"
	}
	val, err := workflow.DecodeJSON([]byte(result))
	if err != nil {
		return invalid("result_json", "%v", err)
	}
	if err := ps.Result.Check("result of step "+step, val); err != nil {
		return toConnect(err)
	}
	return nil
}

// checkError checks an error an app reported against the step's error
// contract: the object {code, message, retry_after, details} the manifest's
// error_schema describes. Codes Tasker assigns itself always pass.
func (a *Agent) checkError(taskID, step string, f failReport) error {
	if f.code == workflow.CodeTimeout || f.code == workflow.CodeContractViolation {
		return nil
	}
	ps, err := a.planStep(taskID, step)
	if err != nil {
		return err
	}
	ct := ps.Error
	if ct == nil {
		return nil
	}
	obj := map[string]any{"code": f.code}
	if f.message != "" {
		obj["message"] = f.message
	}
	if f.retryAfter > 0 {
		obj["retry_after"] = f.retryAfter.String()
	}
	if f.details != "" {
		d, err := workflow.DecodeJSON([]byte(f.details))
		if err != nil {
			return invalid("details_json", "%v", err)
		}
		obj["details"] = d
	}
	if err := ct.Check("error of step "+step, obj); err != nil {
		return toConnect(err)
	}
	return nil
}

// WatchTask sends the task as it is, then each new event with the task
// after it, until the task ends. Watchers are woken by the hub and read
// the history from the state, so none misses an event however slow.
func (w *workflowAPI) WatchTask(ctx context.Context, req *connect.Request[taskerv1.WatchTaskRequest], stream *connect.ServerStream[taskerv1.WatchTaskResponse]) error {
	id := req.Msg.GetId()
	if err := required("id", id); err != nil {
		return err
	}
	release, err := w.a.lim.watch()
	if err != nil {
		return err
	}
	defer release()
	wake, unsubscribe := w.a.hub.subscribe(id)
	defer unsubscribe()
	history, err := w.a.state.Events(id, 0)
	if err != nil {
		return toConnect(err)
	}
	t, err := w.a.state.Task(id)
	if err != nil {
		return toConnect(err)
	}
	if err := stream.Send(&taskerv1.WatchTaskResponse{Task: w.a.taskOut(t)}); err != nil {
		return err
	}
	sent := uint64(len(history))
	if after := req.Msg.GetAfterSequence(); after > 0 && after < sent {
		sent = after // resume: replay what the watcher missed
	}
	for ended := t.State.Terminal() && sent == uint64(len(history)); !ended; {
		events, err := w.a.state.Events(id, sent)
		if err != nil {
			return toConnect(err)
		}
		if len(events) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.a.streams.Done():
				return connect.NewError(connect.CodeUnavailable, errShuttingDown)
			case <-wake:
			}
			continue
		}
		if t, err = w.a.state.Task(id); err != nil {
			return toConnect(err)
		}
		for _, e := range events {
			if err := stream.Send(&taskerv1.WatchTaskResponse{Event: pbEvent(e), Task: w.a.taskOut(t)}); err != nil {
				return err
			}
			sent = e.Seq
			ended = ended || terminalEvent(e.Type)
		}
	}
	return nil
}

// terminalEvent reports whether an event ends its task; it is always the
// task's last.
func terminalEvent(typ string) bool {
	return typ == consensus.EventTaskCompleted || typ == consensus.EventTaskCancelled || typ == consensus.EventTaskResolved
}

// validTaskID reports whether id looks like an id newTaskID makes.
func validTaskID(id string) bool {
	rest, ok := strings.CutPrefix(id, "tsk_")
	if !ok || rest == "" || len(rest) > 40 {
		return false
	}
	for _, r := range rest {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'z') {
			return false
		}
	}
	return true
}
