package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// fuzzProcedure is one unary procedure of the public API.
type fuzzProcedure struct {
	path string // "/tasker.v1.WorkflowService/StartTask"
	name string // "StartTask"
	out  protoreflect.MessageType
}

// fuzzSkipped are unary procedures the fuzzer must not call.
var fuzzSkipped = map[string]string{
	// Leave is not input handling: whatever the body, the agent answers
	// and shuts down, by design. (RemovePeer and ForceLeave are fuzzed:
	// the agent is the only voter and refuses to remove itself.)
	taskerv1connect.ClusterServiceLeaveProcedure: "shuts the agent down by design",
}

// unaryProcedures lists every unary procedure of WorkflowService,
// WorkerService, ClusterService, AclService, ProposalService and InsightService from their descriptors, so that a new
// call is fuzzed without touching this file. Streaming calls (WatchTask,
// WatchEvents, PollSteps, SnapshotSave, SnapshotRestore) are not: a
// Connect streaming body is enveloped, and their request decoding is the
// same code as the unary calls'.
func unaryProcedures(tb testing.TB) []fuzzProcedure {
	var out []fuzzProcedure
	for _, fd := range []protoreflect.FileDescriptor{taskerv1.File_tasker_v1_workflow_proto, taskerv1.File_tasker_v1_worker_proto, taskerv1.File_tasker_v1_cluster_proto, taskerv1.File_tasker_v1_acl_proto, taskerv1.File_tasker_v1_proposal_proto, taskerv1.File_tasker_v1_insight_proto} {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				path := fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())
				if md.IsStreamingClient() || md.IsStreamingServer() || fuzzSkipped[path] != "" {
					continue
				}
				mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
				if err != nil {
					tb.Fatal(err)
				}
				out = append(out, fuzzProcedure{path: path, name: string(md.Name()), out: mt})
			}
		}
	}
	return out
}

// Task ids the fuzz agent's state holds from the start, so that seeds
// (and their mutations) reach the handlers past "task not found".
const (
	fuzzTaskRunning = "tsk_fuzzrun"    // validate in flight: attempt 1 held by w-fuzz
	fuzzTaskDead    = "tsk_fuzzdead"   // validate failed for good: for RetryStep and ResolveStep
	fuzzTaskDLQ     = "tsk_fuzzdlq"    // validate failed for good: the open dead letter of the DLQ calls
	fuzzTaskPending = "tsk_fuzzpend"   // validate ready, not dispatched
	fuzzTaskCancel  = "tsk_fuzzcancel" // for CancelTask
)

// fuzzState gives the agent a workflow and tasks in every interesting
// state, committed directly (the scheduler has no worker to give them
// to), and returns the open dead letter's id.
func fuzzState(tb testing.TB, ta *testAgent, manifest string) string {
	tb.Helper()
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		tb.Fatal(err)
	}
	deadline := timestamppb.New(time.Now().Add(time.Hour))
	cmds := []*fsmv1.Command{}
	for _, id := range []string{fuzzTaskRunning, fuzzTaskDead, fuzzTaskDLQ, fuzzTaskPending, fuzzTaskCancel} {
		cmds = append(cmds, &fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{
			TaskId: id, Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", InputJson: orderInput,
		}}})
	}
	for _, id := range []string{fuzzTaskRunning, fuzzTaskDead, fuzzTaskDLQ} {
		cmds = append(cmds, &fsmv1.Command{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{
			TaskId: id, Step: "validate", Attempt: 1, Agent: ta.cfg.NodeName, Worker: "w-fuzz", Deadline: deadline,
		}}})
	}
	for _, id := range []string{fuzzTaskDead, fuzzTaskDLQ} {
		cmds = append(cmds, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
			TaskId: id, Step: "validate", Attempt: 1, Code: "invalid_order", Message: "no such customer", Worker: "w-fuzz",
		}}})
	}
	for _, c := range cmds {
		if _, err := ta.propose(ctx, c); err != nil {
			tb.Fatalf("%v: %v", c.Kind, err)
		}
	}
	dls, _, err := ta.state.DeadLetters(consensus.DeadLetterFilter{TaskID: fuzzTaskDLQ})
	if err != nil || len(dls) != 1 {
		tb.Fatalf("dead letter of %s: %v %v", fuzzTaskDLQ, dls, err)
	}
	return dls[0].ID
}

// fuzzRequests are real requests, one or more per procedure.
func fuzzRequests(manifest, deadLetter string) map[string][]proto.Message {
	validate := `{"valid":true,"risk_score":0.1}`
	return map[string][]proto.Message{
		"Diagnose": {
			&taskerv1.DiagnoseRequest{TaskId: fuzzTaskDead},
			&taskerv1.DiagnoseRequest{TaskId: fuzzTaskRunning, Window: durationpb.New(time.Hour)},
		},
		"ListAttempts": {&taskerv1.ListAttemptsRequest{Namespace: "shop", Workflow: "order-fulfilment", Outcome: "failed", Limit: 10}},
		"Analyze":      {&taskerv1.AnalyzeRequest{Namespace: "shop", Workflow: "order-fulfilment", Window: durationpb.New(time.Hour)}},
		"Optimize":     {&taskerv1.OptimizeRequest{Namespace: "shop", Workflow: "order-fulfilment", Tasks: 5}},
		// No model is configured: refused as a precondition, after the
		// checks of the fields.
		"Status": {&taskerv1.StatusRequest{}},
		"GenerateWorkflow": {
			&taskerv1.GenerateWorkflowRequest{Description: "validate each order, then charge the card", Namespace: "shop", Name: "drafted", DryRun: true},
			&taskerv1.GenerateWorkflowRequest{Description: "charge the card", Name: "Not A Name"},
			&taskerv1.GenerateWorkflowRequest{BaseManifest: "name: partial\nsteps: []\n", DryRun: true},
		},
		"ApplyWorkflow": {
			&taskerv1.ApplyWorkflowRequest{Manifest: manifest},
			&taskerv1.ApplyWorkflowRequest{Manifest: "name: tiny\nversion: 1.0.0\nsteps:\n- {name: a, capability: tiny.a}\n- {name: b, capability: tiny.b, depends_on: [a], input: {x: $.steps.a.result.x}}\n"},
		},
		"CreateToken": {
			&taskerv1.CreateTokenRequest{Policy: "app", Capabilities: []string{"payments.*"}, Workflows: []string{"shop/*"}, Description: "fuzz"},
			&taskerv1.CreateTokenRequest{Policy: "writer"},
		},
		"DeleteToken":   {&taskerv1.DeleteTokenRequest{AccessorId: "acc_0123456789abcdef01234567"}},
		"GetWorkflow":   {&taskerv1.GetWorkflowRequest{Namespace: "shop", Name: "order-fulfilment", Version: "1.0.0"}},
		"ListWorkflows": {&taskerv1.ListWorkflowsRequest{Namespace: "shop"}},
		"StartTask": {
			&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "fuzz-1"},
			&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", InputJson: `{"order_id":"ord_2"}`},
		},
		"GetTask":   {&taskerv1.GetTaskRequest{Id: fuzzTaskRunning}},
		"ListTasks": {&taskerv1.ListTasksRequest{Namespace: "shop", Workflow: "order-fulfilment", State: taskerv1.TaskState_TASK_STATE_IN_PROGRESS, PageSize: 2, PageToken: "3"}},
		"CancelTask": {
			&taskerv1.CancelTaskRequest{Id: fuzzTaskCancel, Reason: "fuzz"},
		},
		"RetryStep":   {&taskerv1.RetryStepRequest{TaskId: fuzzTaskDead, Step: "validate", Reason: "fuzz"}},
		"ResolveStep": {&taskerv1.ResolveStepRequest{TaskId: fuzzTaskDead, Step: "validate", ResultJson: validate, Reason: "fuzz"}},
		"ListDeadLetters": {
			&taskerv1.ListDeadLettersRequest{Namespace: "shop", TaskId: fuzzTaskDLQ, Status: taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN, PageSize: 5},
			&taskerv1.ListDeadLettersRequest{PageToken: deadLetter},
		},
		"GetDeadLetter":    {&taskerv1.GetDeadLetterRequest{Id: deadLetter}},
		"ReplayDeadLetter": {&taskerv1.ReplayDeadLetterRequest{Id: deadLetter, Reason: "fuzz"}},
		"RegisterCapabilities": {&taskerv1.RegisterCapabilitiesRequest{
			WorkerId: "w-fuzz-2", PushUrl: "http://127.0.0.1:1/push", HealthUrl: "http://127.0.0.1:1/health",
			Capabilities: []*taskerv1.Capability{{Name: "fuzz.only", Version: "1.0.0", MaxConcurrency: 2, InputSchemaJson: `{"type":"object"}`, OutputSchemaJson: `{"type":"object","required":["x"]}`}},
		}},
		"CompleteStep": {&taskerv1.CompleteStepRequest{TaskId: fuzzTaskRunning, Step: "validate", Attempt: 1, ResultJson: validate, WorkerId: "w-fuzz"}},
		"FailStep": {&taskerv1.FailStepRequest{
			TaskId: fuzzTaskRunning, Step: "validate", Attempt: 1, Code: "invalid_order", Message: "m", Retryable: true,
			RetryAfter: durationpb.New(time.Second), DetailsJson: `{"k":1}`, WorkerId: "w-fuzz",
		}},
		"ExtendLease": {&taskerv1.ExtendLeaseRequest{TaskId: fuzzTaskRunning, Step: "validate", Attempt: 1, ExtendBy: durationpb.New(time.Minute), WorkerId: "w-fuzz"}},
		"RemovePeer":  {&taskerv1.RemovePeerRequest{Id: "test"}, &taskerv1.RemovePeerRequest{Id: "s9"}},
		"ForceLeave":  {&taskerv1.ForceLeaveRequest{Node: "gone"}},
		"CreateProposal": {
			&taskerv1.CreateProposalRequest{Action: "change_timeout", Namespace: "shop", Workflow: "order-fulfilment", Step: "charge", Params: map[string]string{"timeout": "45s"}, Source: "rules", Confidence: 0.5},
			&taskerv1.CreateProposalRequest{Action: "change_retry_policy", Namespace: "shop", Workflow: "order-fulfilment", Params: map[string]string{"step": "ship", "max_attempts": "4"}},
			&taskerv1.CreateProposalRequest{Action: "optimize_dependencies", Namespace: "shop", Workflow: "order-fulfilment", Manifest: manifest, NewVersion: "1.0.1-ai.9"},
			&taskerv1.CreateProposalRequest{Action: "retry_step", TaskId: fuzzTaskDead, Step: "validate", EvidenceJson: `{"e":1}`},
			&taskerv1.CreateProposalRequest{Action: "resolve_manually", TaskId: fuzzTaskDead, Step: "validate"},
		},
		"ListProposals":    {&taskerv1.ListProposalsRequest{State: "pending", Namespace: "shop", Workflow: "order-fulfilment", Limit: 5}},
		"GetProposal":      {&taskerv1.GetProposalRequest{Id: "p-1"}},
		"ApproveProposal":  {&taskerv1.ApproveProposalRequest{Id: "p-1", Reason: "fuzz"}, &taskerv1.ApproveProposalRequest{Id: "p-5", ResultJson: validate}},
		"RejectProposal":   {&taskerv1.RejectProposalRequest{Id: "p-2", Reason: "fuzz"}},
		"RollbackProposal": {&taskerv1.RollbackProposalRequest{Id: "p-1", Reason: "fuzz"}},
	}
}

// Request modes: bit 0 picks the codec, bits 1-2 a header set.
const (
	fuzzProto = 1 << iota
)

var fuzzHeaders = [4]map[string]string{
	{},
	{hdrConsistency: "stale"},
	{hdrConsistency: "consistent"},
	// As if another agent forwarded it, with the task id it chose.
	{hdrForwarded: "fuzz-peer", hdrTaskID: "tsk_fuzzfwd"},
}

// FuzzAPIRequests sends arbitrary bodies to every unary procedure of the
// public API of one running agent, as Connect unary calls in JSON and in
// binary protobuf. Whatever the body: the agent answers (no panic, no
// hang), a refusal is a client error naming what is wrong
// (invalid_argument, not_found, failed_precondition, ...), never a 5xx,
// internal or unknown, a success decodes as the procedure's response, and
// the agent stays the healthy leader it was.
func FuzzAPIRequests(f *testing.F) {
	manifest, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		f.Fatal(err)
	}
	ta := startAgent(f, f.TempDir())
	deadLetter := fuzzState(f, ta, string(manifest))
	procs := unaryProcedures(f)
	seeds := fuzzRequests(string(manifest), deadLetter)
	for i, p := range procs {
		msgs := seeds[p.name]
		if len(msgs) == 0 {
			msgs = []proto.Message{p.emptyRequest(f)}
		}
		for _, m := range msgs {
			js, err := protojson.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			pb, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), uint8(0), js)
			f.Add(uint8(i), uint8(fuzzProto), pb)
		}
		f.Add(uint8(i), uint8(0), []byte(`{"unknown_field":1}`))
		f.Add(uint8(i), uint8(fuzzProto), []byte{0xff, 0x01})
	}
	if err := checkServing(ta); err != nil {
		f.Fatal(err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	var calls atomic.Int64
	f.Fuzz(func(t *testing.T, proc, mode uint8, body []byte) {
		p := procs[int(proc)%len(procs)]
		code, err := call(client, ta.Addr(), p, mode, body)
		if err != nil {
			t.Fatalf("%s (mode %d): %v", p.path, mode, err)
		}
		if !ta.isLeader() || ta.draining.Load() {
			t.Fatalf("%s (mode %d) answered %s, and the agent is no longer a serving leader", p.path, mode, code)
		}
		if calls.Add(1)%64 == 0 {
			if err := checkServing(ta); err != nil {
				t.Fatalf("after %s (mode %d): %v", p.path, mode, err)
			}
		}
	})
}

func (p fuzzProcedure) emptyRequest(tb testing.TB) proto.Message {
	name := strings.TrimSuffix(string(p.out.Descriptor().FullName()), "Response") + "Request"
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	if err != nil {
		tb.Fatalf("%s: %v", p.path, err)
	}
	return mt.New().Interface()
}

// call sends one Connect unary call and checks the answer: a response of
// the procedure's type, or an error with a client error code. It returns
// the code ("ok" for a response).
func call(client *http.Client, base string, p fuzzProcedure, mode uint8, body []byte) (string, error) {
	// Longer than any wait a request may ask for (ClaimSteps' wait_for,
	// up to maxClaimWait), so that a long poll is not taken for a hang.
	ctx, cancel := context.WithTimeout(context.Background(), maxClaimWait+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+p.path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	ct := "application/json"
	if mode&fuzzProto != 0 {
		ct = "application/proto"
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Connect-Protocol-Version", "1")
	for k, v := range fuzzHeaders[(mode>>1)&3] {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("no answer (a panic in the handler?): %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading the answer (a panic in the handler?): %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		out := p.out.New().Interface()
		if ct == "application/json" {
			err = protojson.Unmarshal(b, out)
		} else {
			err = proto.Unmarshal(b, out)
		}
		if err != nil {
			return "", fmt.Errorf("200 with an undecodable %s: %v", ct, err)
		}
		return "ok", nil
	}
	// Connect unary errors are JSON whatever the codec.
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil || e.Code == "" {
		return "", fmt.Errorf("HTTP %d without a Connect error: %q", resp.StatusCode, b)
	}
	switch e.Code {
	case connect.CodeInternal.String(), connect.CodeUnknown.String(), connect.CodeDataLoss.String(),
		connect.CodeUnimplemented.String(), connect.CodeUnavailable.String(), connect.CodeDeadlineExceeded.String():
		return "", fmt.Errorf("HTTP %d %s for a client's request: %s", resp.StatusCode, e.Code, e.Message)
	}
	if resp.StatusCode >= 500 {
		return "", fmt.Errorf("HTTP %d (%s): %s", resp.StatusCode, e.Code, e.Message)
	}
	return e.Code, nil
}

// checkServing asks the agent's gRPC health service, as a load balancer
// would, whether it is SERVING.
func checkServing(ta *testAgent) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ta.Addr()+"/grpc.health.v1.Health/Check", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "SERVING") || strings.Contains(string(b), "NOT_SERVING") {
		return fmt.Errorf("health check: HTTP %d %s", resp.StatusCode, b)
	}
	return nil
}
