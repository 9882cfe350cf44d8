package agent

// Dead letters on the API: ListDeadLetters, GetDeadLetter and
// ReplayDeadLetter of WorkflowService. They are WorkflowService calls so
// that they follow its rules with no routing of their own: the leader
// answers, other agents forward to it, and reads honour
// Tasker-Consistency (stale, consistent) like GetTask and ListTasks.
// The records are derived from the tasks' histories (consensus/deadletters.go).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func (w *workflowAPI) ListDeadLetters(_ context.Context, req *connect.Request[taskerv1.ListDeadLettersRequest]) (*connect.Response[taskerv1.ListDeadLettersResponse], error) {
	r := req.Msg
	f := consensus.DeadLetterFilter{Namespace: r.GetNamespace(), Workflow: r.GetWorkflow(), TaskID: r.GetTaskId(), Limit: int(r.GetPageSize()), PageToken: r.GetPageToken()}
	switch {
	case f.Limit < 0 || f.Limit > 1000:
		return nil, invalid("page_size", "%d is out of range: use 1 to 1000 (0 means 100)", f.Limit)
	case f.Limit == 0:
		f.Limit = 100
	}
	if st := r.GetStatus(); st != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_UNSPECIFIED {
		s, ok := deadLetterStatus(st)
		if !ok {
			return nil, invalid("status", "unknown status %d: use DEAD_LETTER_STATUS_OPEN, _REPLAYED, _RESOLVED or _CANCELLED, or leave it unset for all", st)
		}
		f.Status = &s
	}
	list, next, err := w.a.state.DeadLetters(f)
	if errors.Is(err, consensus.ErrInvalid) {
		return nil, invalid("page_token", "%q is not a token from a previous response; leave it empty for the first page", f.PageToken)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	out := &taskerv1.ListDeadLettersResponse{NextPageToken: next}
	for i := range list {
		out.DeadLetters = append(out.DeadLetters, pbDeadLetter(&list[i]))
	}
	return connect.NewResponse(out), nil
}

func (w *workflowAPI) GetDeadLetter(_ context.Context, req *connect.Request[taskerv1.GetDeadLetterRequest]) (*connect.Response[taskerv1.GetDeadLetterResponse], error) {
	if err := required("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	d, err := w.a.deadLetter(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.GetDeadLetterResponse{DeadLetter: pbDeadLetter(d), InputJson: d.InputJSON}), nil
}

func (w *workflowAPI) ReplayDeadLetter(ctx context.Context, req *connect.Request[taskerv1.ReplayDeadLetterRequest]) (*connect.Response[taskerv1.ReplayDeadLetterResponse], error) {
	id := req.Msg.GetId()
	if err := required("id", id); err != nil {
		return nil, err
	}
	w.a.replays.Lock()
	defer w.a.replays.Unlock()
	d, err := w.a.deadLetter(id)
	if err != nil {
		return nil, err
	}
	if err := replayable(d); err != nil {
		return nil, err
	}
	// The retry's event records which dead letter it replays, and why.
	reason := "replay of dead letter " + id
	if r := req.Msg.GetReason(); r != "" {
		reason += ": " + r
	}
	if _, err := w.a.proposeHere(ctx, &fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: d.TaskID, Step: d.Step, Reason: reason}}}); err != nil {
		return nil, toConnect(fmt.Errorf("replay dead letter %s (step %s of task %s): %w", id, d.Step, d.TaskID, err))
	}
	w.a.log.InfoContext(ctx, "dead letter replayed", "id", id, "task", d.TaskID, "step", d.Step, "reason", req.Msg.GetReason())
	if after, err := w.a.state.DeadLetter(id); err == nil {
		d = after
	}
	t, err := w.a.state.Task(d.TaskID)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.ReplayDeadLetterResponse{DeadLetter: pbDeadLetter(d), Task: w.a.taskOut(t)}), nil
}

// deadLetter reads a dead letter; a malformed id is InvalidArgument
// naming the field, an unknown one NotFound.
func (a *Agent) deadLetter(id string) (*consensus.DeadLetter, error) {
	d, err := a.state.DeadLetter(id)
	if errors.Is(err, consensus.ErrInvalid) {
		return nil, invalid("id", "%q is not a dead letter id: use an id 'tasker dlq list' shows, like 1234-2", id)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return d, nil
}

// replayable refuses, with FailedPrecondition naming the dead letter, its
// status and what became of it, a dead letter that is not open.
func replayable(d *consensus.DeadLetter) error {
	var why string
	switch d.Status {
	case consensus.DeadLetterOpen:
		return nil
	case consensus.DeadLetterReplayed:
		why = fmt.Sprintf("step %s of task %s got a new round of attempts at %s (event %s)", d.Step, d.TaskID, d.ClosedAt.UTC().Format(time.RFC3339), d.ClosedBy)
		if d.NextID != "" {
			why += fmt.Sprintf(", which failed for good too: replay dead letter %s instead", d.NextID)
		}
	case consensus.DeadLetterResolved:
		why = fmt.Sprintf("step %s of task %s was resolved by hand at %s (event %s)", d.Step, d.TaskID, d.ClosedAt.UTC().Format(time.RFC3339), d.ClosedBy)
	case consensus.DeadLetterCancelled:
		why = fmt.Sprintf("task %s was cancelled at %s (event %s), and a cancelled task does not run again", d.TaskID, d.ClosedAt.UTC().Format(time.RFC3339), d.ClosedBy)
	}
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("dead letter %s is %s: %s; only an open dead letter can be replayed", d.ID, d.Status, why))
}

// The API's dead letter statuses are one above the consensus package's,
// since proto enums reserve 0 for "unspecified".
func pbDeadLetterStatus(s consensus.DeadLetterStatus) taskerv1.DeadLetterStatus {
	return taskerv1.DeadLetterStatus(s + 1)
}

func deadLetterStatus(s taskerv1.DeadLetterStatus) (consensus.DeadLetterStatus, bool) {
	if s <= taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_UNSPECIFIED || s > taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_CANCELLED {
		return 0, false
	}
	return consensus.DeadLetterStatus(s - 1), true
}

func pbDeadLetter(d *consensus.DeadLetter) *taskerv1.DeadLetter {
	return &taskerv1.DeadLetter{
		Id: d.ID, TaskId: d.TaskID, Namespace: d.Namespace, Workflow: d.Workflow, Version: d.Version,
		Step: d.Step, Capability: d.Capability, Attempts: int32(d.Attempts), MaxAttempts: int32(d.MaxAttempts),
		Code: d.Code, Message: d.Message, DetailsJson: d.DetailsJSON, At: pbTime(d.At),
		Status: pbDeadLetterStatus(d.Status), ClosedBy: d.ClosedBy, ClosedAt: pbTime(d.ClosedAt), ClosedReason: d.ClosedReason,
		ReplayAttempt: int32(d.ReplayAttempt), NextId: d.NextID,
		TaskState: pbTaskState(d.TaskState), StepState: pbStepState(d.StepState), Sequence: d.Seq,
	}
}
