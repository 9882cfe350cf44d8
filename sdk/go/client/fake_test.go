package client_test

// fakeWorkflows is a small scripted WorkflowService on loopback. It stands
// in for the tasker agent until the e2e tests run the real binary against
// this SDK: it records requests and answers as the proto's comments say
// the agent will.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

type fakeWorkflows struct {
	taskerv1connect.UnimplementedWorkflowServiceHandler

	mu       sync.Mutex
	starts   []*taskerv1.StartTaskRequest
	byKey    map[string]*taskerv1.Task
	tasks    map[string]*taskerv1.Task
	applied  []string
	cancels  []*taskerv1.CancelTaskRequest
	retries  []*taskerv1.RetryStepRequest
	resolves []*taskerv1.ResolveStepRequest
	watches  int

	// Scripted answers.
	applyErr error
	startErr error
	// scripts[i] is what the i-th WatchTask sends; the last one repeats.
	scripts []watchScript
}

// watchScript is one WatchTask stream: msgs, then end (nil: close
// normally), or, with hang, stay open until the client goes away.
type watchScript struct {
	msgs []*taskerv1.WatchTaskResponse
	end  error
	hang bool
}

func newFakeWorkflows() *fakeWorkflows {
	return &fakeWorkflows{byKey: map[string]*taskerv1.Task{}, tasks: map[string]*taskerv1.Task{}}
}

// start serves the fake on loopback with h2c, as the agent's local API.
func (f *fakeWorkflows) start(t testing.TB) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle(taskerv1connect.NewWorkflowServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	if t != nil {
		t.Cleanup(func() {
			srv.CloseClientConnections()
			srv.Close()
		})
	}
	return srv
}

func (f *fakeWorkflows) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeWorkflows) ApplyWorkflow(_ context.Context, req *connect.Request[taskerv1.ApplyWorkflowRequest]) (*connect.Response[taskerv1.ApplyWorkflowResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, req.Msg.GetManifest())
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	return connect.NewResponse(&taskerv1.ApplyWorkflowResponse{
		Workflow: &taskerv1.Workflow{Namespace: "default", Name: "order-fulfilment", Version: "1.0.0", Manifest: req.Msg.GetManifest()},
		Created:  true,
	}), nil
}

func (f *fakeWorkflows) StartTask(_ context.Context, req *connect.Request[taskerv1.StartTaskRequest]) (*connect.Response[taskerv1.StartTaskResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := req.Msg
	f.starts = append(f.starts, m)
	if f.startErr != nil {
		return nil, f.startErr
	}
	if k := m.GetIdempotencyKey(); k != "" && f.byKey[k] != nil {
		return connect.NewResponse(&taskerv1.StartTaskResponse{Task: f.byKey[k], Created: false}), nil
	}
	t := &taskerv1.Task{
		Id:             fmt.Sprintf("task-%d", len(f.tasks)+1),
		Namespace:      m.GetNamespace(),
		Workflow:       m.GetWorkflow(),
		Version:        m.GetVersion(),
		State:          taskerv1.TaskState_TASK_STATE_PENDING,
		InputJson:      m.GetInputJson(),
		IdempotencyKey: m.GetIdempotencyKey(),
	}
	f.tasks[t.Id] = t
	if k := m.GetIdempotencyKey(); k != "" {
		f.byKey[k] = t
	}
	return connect.NewResponse(&taskerv1.StartTaskResponse{Task: t, Created: true}), nil
}

func (f *fakeWorkflows) GetTask(_ context.Context, req *connect.Request[taskerv1.GetTaskRequest]) (*connect.Response[taskerv1.GetTaskResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tasks[req.Msg.GetId()]
	if t == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no task %q", req.Msg.GetId()))
	}
	return connect.NewResponse(&taskerv1.GetTaskResponse{Task: t}), nil
}

func (f *fakeWorkflows) CancelTask(_ context.Context, req *connect.Request[taskerv1.CancelTaskRequest]) (*connect.Response[taskerv1.CancelTaskResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancels = append(f.cancels, req.Msg)
	return connect.NewResponse(&taskerv1.CancelTaskResponse{Task: &taskerv1.Task{Id: req.Msg.GetId(), State: taskerv1.TaskState_TASK_STATE_CANCELLED}}), nil
}

func (f *fakeWorkflows) RetryStep(_ context.Context, req *connect.Request[taskerv1.RetryStepRequest]) (*connect.Response[taskerv1.RetryStepResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retries = append(f.retries, req.Msg)
	return connect.NewResponse(&taskerv1.RetryStepResponse{Task: &taskerv1.Task{Id: req.Msg.GetTaskId(), State: taskerv1.TaskState_TASK_STATE_IN_PROGRESS}}), nil
}

func (f *fakeWorkflows) ResolveStep(_ context.Context, req *connect.Request[taskerv1.ResolveStepRequest]) (*connect.Response[taskerv1.ResolveStepResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves = append(f.resolves, req.Msg)
	return connect.NewResponse(&taskerv1.ResolveStepResponse{Task: &taskerv1.Task{Id: req.Msg.GetTaskId(), State: taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY}}), nil
}

func (f *fakeWorkflows) WatchTask(ctx context.Context, req *connect.Request[taskerv1.WatchTaskRequest], stream *connect.ServerStream[taskerv1.WatchTaskResponse]) error {
	f.mu.Lock()
	i := min(f.watches, len(f.scripts)-1)
	f.watches++
	var s watchScript
	if i >= 0 {
		s = f.scripts[i]
	}
	f.mu.Unlock()
	for _, m := range s.msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	if s.hang {
		<-ctx.Done()
		return nil
	}
	return s.end
}

// task returns a task message in state s.
func task(id string, s taskerv1.TaskState) *taskerv1.Task {
	return &taskerv1.Task{Id: id, Workflow: "order-fulfilment", State: s}
}

// event returns a watch message: event typ number seq, then the task in
// state s.
func event(id string, seq uint64, typ, step string, s taskerv1.TaskState) *taskerv1.WatchTaskResponse {
	return &taskerv1.WatchTaskResponse{
		Event: &taskerv1.TaskEvent{Sequence: seq, Type: typ, TaskId: id, Step: step, Attempt: 1},
		Task:  task(id, s),
	}
}

// refuseManifests makes ApplyWorkflow fail as the agent does for an
// invalid manifest: InvalidArgument with a ValidationFailure detail.
func (f *fakeWorkflows) refuseManifests(problems ...*taskerv1.Problem) {
	err := connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d problems in the manifest", len(problems)))
	d, derr := connect.NewErrorDetail(&taskerv1.ValidationFailure{Problems: problems})
	if derr != nil {
		panic(derr)
	}
	err.AddDetail(d)
	f.with(func() { f.applyErr = err })
}

// closeServer drops the connections and stops srv.
func closeServer(srv *httptest.Server) {
	srv.CloseClientConnections()
	srv.Close()
}
