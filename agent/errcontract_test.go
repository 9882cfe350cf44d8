package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const charging = `name: charging
version: 1.0.0
steps:
  - name: charge
    capability: test.charge
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms, jitter: 0}, retryable: [gateway_down, timeout]}
    error_schema:
      type: object
      required: [code]
      properties:
        code: {enum: [declined, gateway_down]}
        message: {type: string}
`

// An error an app reports is checked against the step's error contract,
// like a result: a code the contract does not list fails the attempt as
// contract_violation, for good, and the app is told which field broke it.
func TestErrorContract(t *testing.T) {
	tests := []struct {
		name      string
		code      string
		wantErr   string // in the FailStep error, "" for none
		wantRetry bool
	}{
		{"listed, retryable", "gateway_down", "", true},
		{"listed, not retryable", "declined", "", false},
		{"Tasker's own code", "timeout", "", true},
		{"not listed", "oops", "/code", false},
	}
	ta := startAgent(t, t.TempDir())
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: charging})); err != nil {
		t.Fatal(err)
	}
	p := newPoller(t, ta, "w1", "test.charge")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "charging"}))
			if err != nil {
				t.Fatal(err)
			}
			id := r.Msg.GetTask().GetId()
			a := p.next()
			resp, err := ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{
				TaskId: id, Step: a.GetStep(), Attempt: a.GetAttempt(), Code: tt.code, Message: "it broke", Retryable: true,
			}))
			if tt.wantErr != "" {
				if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FailStep(%s) = %v, want invalid_argument naming %s", tt.code, err, tt.wantErr)
				}
				task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_ERROR)
				st := task.GetSteps()[0]
				if st.GetAttempts() != 1 || st.GetLastError().GetCode() != "contract_violation" || !strings.Contains(st.GetLastError().GetMessage(), `"oops"`) {
					t.Fatalf("step after a broken error contract: %d attempts, last error %+v", st.GetAttempts(), st.GetLastError())
				}
				return
			}
			if err != nil {
				t.Fatalf("FailStep(%s): %v", tt.code, err)
			}
			if resp.Msg.GetWillRetry() != tt.wantRetry {
				t.Fatalf("FailStep(%s): will retry %v, want %v", tt.code, resp.Msg.GetWillRetry(), tt.wantRetry)
			}
			if tt.wantRetry {
				b := p.next()
				if err := p.complete(b, `{}`); err != nil {
					t.Fatal(err)
				}
				waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
			}
		})
	}
}

// An app cannot park a retry weeks away: retry_after is bounded like a
// manifest's backoff, and the refusal says so and changes nothing.
func TestRetryAfterIsBounded(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: charging})); err != nil {
		t.Fatal(err)
	}
	p := newPoller(t, ta, "w1", "test.charge")
	r, err := ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "charging"}))
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	a := p.next()
	_, err = ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{
		TaskId: id, Step: a.GetStep(), Attempt: a.GetAttempt(), Code: "gateway_down", Retryable: true,
		RetryAfter: durationpb.New(60 * 24 * time.Hour),
	}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "retry_after: 1440h0m0s is over the limit of 24h0m0s") {
		t.Fatalf("FailStep with a 60-day retry_after = %v, want invalid_argument naming the limit", err)
	}
	task, err := ta.wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if st := task.Msg.GetTask().GetSteps()[0]; st.GetState() != taskerv1.StepState_STEP_STATE_IN_PROGRESS && st.GetState() != taskerv1.StepState_STEP_STATE_ENQUEUED {
		t.Fatalf("the refused failure changed the step: %s", st.GetState())
	}
}
