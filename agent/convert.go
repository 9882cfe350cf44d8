package agent

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

func pbTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// The API's enums number states one above the workflow package's, since
// proto enums reserve 0 for "unspecified".
func pbTaskState(s workflow.TaskState) taskerv1.TaskState { return taskerv1.TaskState(s + 1) }
func pbStepState(s workflow.StepState) taskerv1.StepState { return taskerv1.StepState(s + 1) }

func taskState(s taskerv1.TaskState) (workflow.TaskState, bool) {
	if s <= taskerv1.TaskState_TASK_STATE_UNSPECIFIED || s > taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY {
		return 0, false
	}
	return workflow.TaskState(s - 1), true
}

func pbTask(v *consensus.TaskView) *taskerv1.Task {
	t := &taskerv1.Task{
		Id: v.ID, Namespace: v.Namespace, Workflow: v.Workflow, Version: v.Version, State: pbTaskState(v.State),
		InputJson: v.InputJSON, IdempotencyKey: v.IdempotencyKey, CreatedAt: pbTime(v.CreatedAt), EndedAt: pbTime(v.EndedAt),
	}
	for _, s := range v.Steps {
		ps := &taskerv1.Step{
			Name: s.Name, Capability: s.Capability, State: pbStepState(s.State), DependsOn: s.DependsOn,
			Attempts: int32(s.Attempts), MaxAttempts: int32(s.MaxAttempts), ReadyAt: pbTime(s.ReadyAt),
			DispatchedAt: pbTime(s.DispatchedAt), StartedAt: pbTime(s.StartedAt), EndedAt: pbTime(s.EndedAt),
			ResultJson: s.ResultJSON, Agent: s.Agent, Worker: s.Worker,
		}
		if s.State == workflow.StepError && !s.Blocked {
			ps.NextAttemptAt = pbTime(s.RetryAt)
		}
		if e := s.LastError; e != nil {
			ps.LastError = &taskerv1.StepError{Code: e.Code, Message: e.Message, Retryable: e.Retryable, Attempt: int32(e.Attempt), At: pbTime(e.At)}
		}
		t.Steps = append(t.Steps, ps)
	}
	return t
}

func pbWorkflow(w *consensus.WorkflowView, withManifest bool) *taskerv1.Workflow {
	out := &taskerv1.Workflow{
		Namespace: w.Namespace, Name: w.Name, Version: w.Version, Description: w.Plan.Description,
		CreatedAt: pbTime(w.CreatedAt), Versions: w.Versions, ActiveVersion: w.Active, Pinned: w.Pinned,
	}
	if withManifest {
		out.Manifest = w.Manifest
	}
	for _, s := range w.Plan.Steps {
		out.Steps = append(out.Steps, &taskerv1.WorkflowStep{
			Name: s.Name, Capability: s.Capability, DependsOn: s.DependsOn,
			Timeout: durationpb.New(s.Timeout), MaxAttempts: int32(s.Retry.MaxAttempts),
		})
	}
	return out
}

func pbEvent(e consensus.Event) *taskerv1.TaskEvent {
	return &taskerv1.TaskEvent{Sequence: e.Seq, Type: e.Type, TaskId: e.TaskID, Step: e.Step, Attempt: int32(e.Attempt), At: pbTime(e.At), Message: e.Message}
}

// pbAssignment is an attempt as apps and other agents receive it.
func pbAssignment(asg *consensus.Assignment) *taskerv1.StepAssignment {
	return &taskerv1.StepAssignment{
		TaskId: asg.TaskID, Step: asg.Step, Capability: asg.Capability, Attempt: int32(asg.Attempt),
		InputJson: asg.InputJSON, IdempotencyKey: asg.IdempotencyKey, Deadline: timestamppb.New(asg.Deadline),
		Workflow: asg.Workflow, WorkflowVersion: asg.WorkflowVersion,
	}
}

// assignmentFromPB undoes pbAssignment (on the agent the leader delivers to).
func assignmentFromPB(p *taskerv1.StepAssignment) *consensus.Assignment {
	if p == nil {
		return nil
	}
	asg := &consensus.Assignment{
		TaskID: p.GetTaskId(), Step: p.GetStep(), Capability: p.GetCapability(), Attempt: int(p.GetAttempt()),
		InputJSON: p.GetInputJson(), IdempotencyKey: p.GetIdempotencyKey(),
		Workflow: p.GetWorkflow(), WorkflowVersion: p.GetWorkflowVersion(),
	}
	if p.GetDeadline() != nil {
		asg.Deadline = p.GetDeadline().AsTime()
		asg.Timeout = time.Until(asg.Deadline)
	}
	return asg
}
