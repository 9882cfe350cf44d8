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

func register(t *testing.T, ta *testAgent, id string, caps ...string) {
	t.Helper()
	var cs []*taskerv1.Capability
	for _, c := range caps {
		cs = append(cs, &taskerv1.Capability{Name: c})
	}
	if _, err := ta.wk.RegisterCapabilities(context.Background(), connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{WorkerId: id, Capabilities: cs})); err != nil {
		t.Fatal(err)
	}
}

func claim(t *testing.T, ta *testAgent, id string, max int32, wait time.Duration) []*taskerv1.StepAssignment {
	t.Helper()
	req := &taskerv1.ClaimStepsRequest{WorkerId: id, MaxSteps: max}
	if wait > 0 {
		req.WaitFor = durationpb.New(wait)
	}
	res, err := ta.wk.ClaimSteps(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetAssignments()
}

// A worker that pulls with unary ClaimSteps calls runs a whole workflow:
// the long poll returns as soon as a step is assigned, and a call that
// finds nothing waiting answers at once.
func TestClaimStepsRunsAWorkflow(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	register(t, ta, "curl-1", "test.first", "test.second")
	if got := claim(t, ta, "curl-1", 0, 0); len(got) != 0 {
		t.Fatalf("nothing is assigned yet, got %v", got)
	}
	id := startQuick(t, ta, "")
	first := claim(t, ta, "curl-1", 4, 10*time.Second)
	if len(first) != 1 || first[0].GetStep() != "first" || first[0].GetAttempt() != 1 || first[0].GetIdempotencyKey() != id+"/first" {
		t.Fatalf("first claim: %v", first)
	}
	if _, err := ta.wk.CompleteStep(context.Background(), connect.NewRequest(&taskerv1.CompleteStepRequest{
		TaskId: id, Step: "first", Attempt: 1, ResultJson: `{"id":"claimed"}`, WorkerId: "curl-1",
	})); err != nil {
		t.Fatal(err)
	}
	second := claim(t, ta, "curl-1", 1, 10*time.Second)
	if len(second) != 1 || second[0].GetStep() != "second" || !strings.Contains(second[0].GetInputJson(), `12345678901234567890`) {
		t.Fatalf("second claim: %v", second)
	}
	if _, err := ta.wk.CompleteStep(context.Background(), connect.NewRequest(&taskerv1.CompleteStepRequest{
		TaskId: id, Step: "second", Attempt: 1, ResultJson: `{}`, WorkerId: "curl-1",
	})); err != nil {
		t.Fatal(err)
	}
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	if w := task.GetSteps()[0].GetWorker(); w != "curl-1" {
		t.Fatalf("first step's worker %q, want curl-1", w)
	}
}

// A claimer that stops calling is disconnected after the linger, and the
// steps it held go back after the reclaim grace.
func TestClaimStepsLingerThenReclaim(t *testing.T) {
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.ReclaimGrace = 100 * time.Millisecond })
	ta.workers.linger = 200 * time.Millisecond
	applyQuick(t, ta)
	register(t, ta, "gone", "test.first", "test.second")
	id := startQuick(t, ta, "")
	got := claim(t, ta, "gone", 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("claim: %v", got)
	}
	// The worker never reports nor claims again; another one takes over.
	p := newPoller(t, ta, "w2", "test.first")
	a := p.next()
	if a.GetTaskId() != id || a.GetStep() != "first" || a.GetAttempt() != 2 {
		t.Fatalf("after the claimer left, want attempt 2 of first, got %+v", a)
	}
	if ta.workers.connected("gone") {
		t.Fatal("the claimer is still connected after its linger")
	}
}

func TestClaimStepsRefusesBadInput(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	register(t, ta, "w1", "test.first")
	for _, tc := range []struct {
		name string
		req  *taskerv1.ClaimStepsRequest
		code connect.Code
		want string
	}{
		{"no worker", &taskerv1.ClaimStepsRequest{}, connect.CodeInvalidArgument, "worker_id"},
		{"unknown worker", &taskerv1.ClaimStepsRequest{WorkerId: "nobody"}, connect.CodeNotFound, "RegisterCapabilities first"},
		{"too many", &taskerv1.ClaimStepsRequest{WorkerId: "w1", MaxSteps: 65}, connect.CodeInvalidArgument, "max_steps: 65 is out of range: use 1 to 64"},
		{"negative", &taskerv1.ClaimStepsRequest{WorkerId: "w1", MaxSteps: -1}, connect.CodeInvalidArgument, "max_steps"},
		{"long wait", &taskerv1.ClaimStepsRequest{WorkerId: "w1", WaitFor: durationpb.New(31 * time.Second)}, connect.CodeInvalidArgument, "wait_for: 31s is out of range: use 0s to 30s"},
		{"negative wait", &taskerv1.ClaimStepsRequest{WorkerId: "w1", WaitFor: durationpb.New(-time.Second)}, connect.CodeInvalidArgument, "wait_for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ta.wk.ClaimSteps(context.Background(), connect.NewRequest(tc.req))
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.want)
			}
		})
	}
	if ta.workers.connected("w1") {
		t.Fatal("refused calls must not connect the worker")
	}
}

// A worker that keeps claiming stays connected past its linger, however
// often it calls; once it stops, it is disconnected after the linger.
func TestClaimStepsKeepsAClaimerConnected(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ta.workers.linger = 200 * time.Millisecond
	register(t, ta, "busy", "test.first")
	for end := time.Now().Add(700 * time.Millisecond); time.Now().Before(end); {
		claim(t, ta, "busy", 1, 20*time.Millisecond)
		if !ta.workers.connected("busy") {
			t.Fatal("a worker claiming every 20ms was disconnected")
		}
	}
	waitFor(t, 5*time.Second, "the claimer to be disconnected after it stopped", func() bool {
		return !ta.workers.connected("busy")
	})
}
