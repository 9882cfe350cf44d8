package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/workflow"
)

// fakeAgent stands in for a running agent until the e2e tests run the
// real binary against a real cluster: it implements the generated
// WorkflowService and ClusterService handlers with canned data and
// scripted answers, and is served like the agent's local API, over HTTP/2
// without TLS on loopback. Manifests, task inputs and resolved results are
// checked with package workflow, as the agent will check them, so that
// refusals carry real ValidationFailure and ContractFailure details.
type fakeAgent struct {
	taskerv1connect.UnimplementedWorkflowServiceHandler
	taskerv1connect.UnimplementedClusterServiceHandler

	t    *testing.T
	addr string

	mu sync.Mutex
	// plans and workflows by "namespace/name", versions oldest first.
	plans     map[string][]*workflow.Plan
	workflows map[string][]*taskerv1.Workflow
	tasks     []*taskerv1.Task // newest first
	keys      map[string]string
	nextID    int
	// pageSize caps ListTasks pages, to exercise pagination.
	pageSize int
	// Requests as received.
	starts   []*taskerv1.StartTaskRequest
	lists    []*taskerv1.ListTasksRequest
	cancels  []*taskerv1.CancelTaskRequest
	resolves []*taskerv1.ResolveStepRequest
	// fail makes a procedure return an error instead.
	fail map[string]error
	// watch is what WatchTask sends, in order; then watchErr, or the end
	// of the stream. beforeSend runs before message i is sent.
	watch      []*taskerv1.WatchTaskResponse
	watchErr   error
	beforeSend func(i int)
	// eventStreams is what each WatchEvents call sends, one script per
	// call, then eventErrs[i] (nil: the end of the stream); eventReqs are
	// the requests as received.
	eventStreams [][]*taskerv1.WatchEventsResponse
	eventErrs    []error
	eventReqs    []*taskerv1.WatchEventsRequest
	// snapshot is what SnapshotSave sends in chunks of snapshotChunk; when
	// snapshotFailAfter > 0, it fails after sending that many chunks.
	snapshot          []byte
	snapshotChunk     int
	snapshotFailAfter int
	// restored are the chunks SnapshotRestore received.
	restored [][]byte
	members  []*taskerv1.Member
	peers    *taskerv1.RaftPeersResponse
	// capabilities and breakers are what Capabilities and Breakers return.
	capabilities []*taskerv1.CapabilityProviders
	breakers     *taskerv1.BreakersResponse
	// Operator calls as received: the servers RemovePeer removed, how
	// many times Leave was called, the nodes ForceLeave removed.
	removedPeers []string
	leaves       int
	forceLeaves  []string
	// consistency holds, by procedure, the Tasker-Consistency header of
	// every read call ("" when absent), in order.
	consistency map[string][]string
}

// base is when everything in the fake happened.
var base = time.Date(2026, 10, 20, 14, 0, 0, 0, time.UTC)

// at is base plus d, as a timestamp.
func at(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(base.Add(d)) }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// startFake serves a fake agent holding the order-fulfilment workflow and
// three tasks of it (t_run in progress, t_err blocked, t_done complete).
func startFake(t *testing.T) *fakeAgent {
	t.Helper()
	f := &fakeAgent{
		t:             t,
		plans:         map[string][]*workflow.Plan{},
		workflows:     map[string][]*taskerv1.Workflow{},
		keys:          map[string]string{},
		fail:          map[string]error{},
		snapshotChunk: 1000,
		consistency:   map[string][]string{},
		members: []*taskerv1.Member{
			{Name: "s1", Address: "10.0.0.1:7421", GossipAddress: "10.0.0.1:7422", Status: "alive", Role: "server", Version: "0.1.0"},
			{Name: "shop-api-7f9", Address: "10.0.1.7:7421", GossipAddress: "10.0.1.7:7422", Status: "alive", Role: "client", Version: "0.1.0", Capabilities: []string{"orders.validate", "payments.charge"}, System: "shop"},
			// An agent of a version that reports no gossip address (nor system).
			{Name: "warehouse-2", Address: "10.0.2.3:7421", Status: "suspect", Role: "client", Version: "0.0.9", Capabilities: []string{"inventory.reserve", "shipping.book", "shipping.track"}},
			{Name: "s4", Address: "10.0.0.4:7421", GossipAddress: "10.0.0.4:7422", Status: "left", Role: "server"},
		},
		peers: &taskerv1.RaftPeersResponse{
			Peers: []*taskerv1.RaftPeer{
				{Id: "s1", Address: "10.0.0.1:7423", Voter: true, Leader: true, LastIndex: 1207},
				{Id: "s2", Address: "10.0.0.2:7423", Voter: true, LastIndex: 1205},
				// Unreachable: it reports no index.
				{Id: "s3", Address: "10.0.0.3:7423", Voter: false},
			},
			Leader: "s1", Term: 4, CommitIndex: 1207, AppliedIndex: 1207,
		},
		capabilities: []*taskerv1.CapabilityProviders{
			{Name: "inventory.reserve", Providers: []*taskerv1.CapabilityProvider{
				{Agent: "warehouse-1", RpcAddress: "10.0.2.2:7421", Version: "2.0.0", MaxConcurrency: 8, SchemaDigest: "9f2c41ab07d3"},
				{Agent: "warehouse-2", RpcAddress: "10.0.2.3:7421", Version: "2.1.0", MaxConcurrency: 8, SchemaDigest: "4e7d0c13a5b1"},
			}},
			{Name: "payments.charge", Providers: []*taskerv1.CapabilityProvider{
				{Agent: "shop-api-7f9", RpcAddress: "10.0.1.7:7421", Version: "1.4.2", MaxConcurrency: 16, SchemaDigest: "c0ffee12d9e4"},
			}},
			{Name: "shipping.book", Providers: []*taskerv1.CapabilityProvider{
				{Agent: "warehouse-2", RpcAddress: "10.0.2.3:7421", SchemaDigest: "51ab7730fe02"},
			}},
		},
		breakers: &taskerv1.BreakersResponse{
			Leader: "s1",
			Breakers: []*taskerv1.Breaker{
				{Target: "shop-api-7f9/payments.charge", State: "closed", Requests: 412, Successes: 409, Failures: 3, ConsecutiveFailures: 0, Since: at(-time.Hour), InFlight: 6},
				{Target: "warehouse-2/shipping.book", State: "open", Requests: 20, Successes: 15, Failures: 5, ConsecutiveFailures: 5, Since: at(-2 * time.Minute), OpenUntil: at(30 * time.Second)},
				{Target: "warehouse-3/inventory.reserve", State: "half_open", Requests: 1, InFlight: 1, Since: at(ms(4274))},
			},
		},
	}
	src, err := os.ReadFile(order)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store(string(src)); err != nil {
		t.Fatal(err)
	}
	f.tasks = []*taskerv1.Task{runningTask(), blockedTask(), doneTask()}

	mux := http.NewServeMux()
	mux.Handle(taskerv1connect.NewWorkflowServiceHandler(f))
	mux.Handle(taskerv1connect.NewClusterServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	// Like the agent's local API: HTTP/2 without TLS, and nothing else, so
	// a client that cannot speak it fails here.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	f.addr = srv.URL
	return f
}

// tasker runs the command line against the fake, bounded in time.
func (f *fakeAgent) tasker(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runBounded(t, nil, append(args, "-addr", f.addr)...)
}

// runBounded runs the command line in-process and fails the test if it
// has not returned within 10s. stdout may be given to watch the output as
// it is written.
func runBounded(t *testing.T, stdout *syncBuffer, args ...string) (int, string, string) {
	t.Helper()
	if stdout == nil {
		stdout = &syncBuffer{}
	}
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(args, stdout, &stderr) }()
	select {
	case code := <-done:
		return code, stdout.String(), stderr.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("tasker %s did not return within 10s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout.String(), stderr.String())
		return 0, "", ""
	}
}

// syncBuffer is a bytes.Buffer that one goroutine writes while another
// reads, and that wakes a waiter on every write.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // receives after a write, made by waitFor
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.written != nil {
		select {
		case b.written <- struct{}{}:
		default:
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer contains s, for at most 5s.
func (b *syncBuffer) waitFor(s string) bool {
	b.mu.Lock()
	if b.written == nil {
		b.written = make(chan struct{}, 1)
	}
	written := b.written
	b.mu.Unlock()
	timeout := time.After(5 * time.Second)
	for !strings.Contains(b.String(), s) {
		select {
		case <-written:
		case <-timeout:
			return false
		}
	}
	return true
}

func (f *fakeAgent) failure(procedure string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[procedure]
}

// store validates and stores a manifest as the agent would.
func (f *fakeAgent) store(manifest string) (*taskerv1.Workflow, bool, error) {
	plan, err := workflow.Load([]byte(manifest), workflow.Limits{})
	var ve *workflow.ValidationError
	if errors.As(err, &ve) {
		detail := &taskerv1.ValidationFailure{}
		for _, p := range ve.Problems {
			detail.Problems = append(detail.Problems, &taskerv1.Problem{Path: p.Path, Line: int32(p.Line), Message: p.Message})
		}
		return nil, false, withDetail(connect.NewError(connect.CodeInvalidArgument, err), detail)
	}
	if err != nil {
		return nil, false, connect.NewError(connect.CodeInvalidArgument, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := plan.Namespace + "/" + plan.Name
	for _, w := range f.workflows[key] {
		if w.Version != plan.Version {
			continue
		}
		if w.Manifest != manifest {
			return nil, false, connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("%s %s is already stored with other content; give the manifest a new version", key, plan.Version))
		}
		return w, false, nil
	}
	w := &taskerv1.Workflow{
		Namespace: plan.Namespace, Name: plan.Name, Version: plan.Version, Description: plan.Description,
		Manifest: manifest, CreatedAt: at(time.Duration(len(f.workflows[key])) * time.Hour),
	}
	for _, s := range plan.Steps {
		w.Steps = append(w.Steps, &taskerv1.WorkflowStep{
			Name: s.Name, Capability: s.Capability, DependsOn: s.DependsOn,
			Timeout: durationpb.New(s.Timeout), MaxAttempts: int32(s.Retry.MaxAttempts),
		})
	}
	f.plans[key] = append(f.plans[key], plan)
	f.workflows[key] = append(f.workflows[key], w)
	for _, v := range f.workflows[key] {
		v.Versions = append(v.Versions[:0:0], versions(f.workflows[key])...)
		v.ActiveVersion = w.Version
	}
	return w, true, nil
}

func versions(ws []*taskerv1.Workflow) []string {
	var vs []string
	for _, w := range ws {
		vs = append(vs, w.Version)
	}
	return vs
}

func withDetail(err *connect.Error, m proto.Message) *connect.Error {
	d, derr := connect.NewErrorDetail(m)
	if derr != nil {
		panic(derr)
	}
	err.AddDetail(d)
	return err
}

// lookup finds a workflow version (the latest when version is empty).
func (f *fakeAgent) lookup(namespace, name, version string) (*workflow.Plan, *taskerv1.Workflow, error) {
	if namespace == "" {
		namespace = "default"
	}
	key := namespace + "/" + name
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := f.workflows[key]
	for i := len(ws) - 1; i >= 0; i-- {
		if version == "" || ws[i].Version == version {
			return f.plans[key][i], ws[i], nil
		}
	}
	if len(ws) == 0 {
		return nil, nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("workflow %s does not exist", key))
	}
	return nil, nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("workflow %s has no version %s", key, version))
}

func (f *fakeAgent) task(id string) (*taskerv1.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tasks {
		if t.Id == id {
			return t, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("task %s does not exist", id))
}

// sawRead records the Tasker-Consistency header of a read call.
func (f *fakeAgent) sawRead(procedure string, h http.Header) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.consistency[procedure] = append(f.consistency[procedure], h.Get("Tasker-Consistency"))
}

func (f *fakeAgent) ApplyWorkflow(_ context.Context, req *connect.Request[taskerv1.ApplyWorkflowRequest]) (*connect.Response[taskerv1.ApplyWorkflowResponse], error) {
	if err := f.failure(taskerv1connect.WorkflowServiceApplyWorkflowProcedure); err != nil {
		return nil, err
	}
	w, created, err := f.store(req.Msg.Manifest)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.ApplyWorkflowResponse{Workflow: w, Created: created}), nil
}

func (f *fakeAgent) GetWorkflow(_ context.Context, req *connect.Request[taskerv1.GetWorkflowRequest]) (*connect.Response[taskerv1.GetWorkflowResponse], error) {
	f.sawRead(taskerv1connect.WorkflowServiceGetWorkflowProcedure, req.Header())
	_, w, err := f.lookup(req.Msg.Namespace, req.Msg.Name, req.Msg.Version)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.GetWorkflowResponse{Workflow: w}), nil
}

func (f *fakeAgent) ListWorkflows(_ context.Context, req *connect.Request[taskerv1.ListWorkflowsRequest]) (*connect.Response[taskerv1.ListWorkflowsResponse], error) {
	f.sawRead(taskerv1connect.WorkflowServiceListWorkflowsProcedure, req.Header())
	if err := f.failure(taskerv1connect.WorkflowServiceListWorkflowsProcedure); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.workflows {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	resp := &taskerv1.ListWorkflowsResponse{}
	for _, k := range keys {
		ws := f.workflows[k]
		latest := proto.Clone(ws[len(ws)-1]).(*taskerv1.Workflow)
		if req.Msg.Namespace != "" && latest.Namespace != req.Msg.Namespace {
			continue
		}
		latest.Manifest = ""
		resp.Workflows = append(resp.Workflows, latest)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeAgent) StartTask(_ context.Context, req *connect.Request[taskerv1.StartTaskRequest]) (*connect.Response[taskerv1.StartTaskResponse], error) {
	f.mu.Lock()
	f.starts = append(f.starts, req.Msg)
	f.mu.Unlock()
	if err := f.failure(taskerv1connect.WorkflowServiceStartTaskProcedure); err != nil {
		return nil, err
	}
	f.mu.Lock()
	id, seen := f.keys[req.Msg.IdempotencyKey]
	f.mu.Unlock()
	if seen && req.Msg.IdempotencyKey != "" {
		t, err := f.task(id)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&taskerv1.StartTaskResponse{Task: t}), nil
	}
	plan, w, err := f.lookup(req.Msg.Namespace, req.Msg.Workflow, req.Msg.Version)
	if err != nil {
		return nil, err
	}
	input := req.Msg.InputJson
	if input == "" {
		input = "{}"
	}
	if err := plan.Input.CheckJSON("input", []byte(input)); err != nil {
		return nil, contractError(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	t := &taskerv1.Task{
		Id: fmt.Sprintf("t_new%d", f.nextID), Namespace: w.Namespace, Workflow: w.Name, Version: w.Version,
		State: taskerv1.TaskState_TASK_STATE_PENDING, InputJson: input, IdempotencyKey: req.Msg.IdempotencyKey, CreatedAt: at(time.Hour),
	}
	for _, s := range w.Steps {
		t.Steps = append(t.Steps, &taskerv1.Step{Name: s.Name, Capability: s.Capability, State: taskerv1.StepState_STEP_STATE_PENDING, DependsOn: s.DependsOn, MaxAttempts: s.MaxAttempts})
	}
	f.tasks = append([]*taskerv1.Task{t}, f.tasks...)
	if req.Msg.IdempotencyKey != "" {
		f.keys[req.Msg.IdempotencyKey] = t.Id
	}
	return connect.NewResponse(&taskerv1.StartTaskResponse{Task: t, Created: true}), nil
}

// contractError is how the agent refuses a value that breaks a contract.
func contractError(err error) error {
	var ce *workflow.ContractError
	if !errors.As(err, &ce) {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	detail := &taskerv1.ContractFailure{Contract: ce.Contract}
	for _, v := range ce.Violations {
		detail.Violations = append(detail.Violations, &taskerv1.Violation{Pointer: v.Pointer, Message: v.Message})
	}
	return withDetail(connect.NewError(connect.CodeInvalidArgument, err), detail)
}

func (f *fakeAgent) GetTask(_ context.Context, req *connect.Request[taskerv1.GetTaskRequest]) (*connect.Response[taskerv1.GetTaskResponse], error) {
	f.sawRead(taskerv1connect.WorkflowServiceGetTaskProcedure, req.Header())
	t, err := f.task(req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.GetTaskResponse{Task: t}), nil
}

func (f *fakeAgent) ListTasks(_ context.Context, req *connect.Request[taskerv1.ListTasksRequest]) (*connect.Response[taskerv1.ListTasksResponse], error) {
	f.sawRead(taskerv1connect.WorkflowServiceListTasksProcedure, req.Header())
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req.Msg)
	var match []*taskerv1.Task
	for _, t := range f.tasks {
		if (req.Msg.Namespace == "" || t.Namespace == req.Msg.Namespace) && (req.Msg.Workflow == "" || t.Workflow == req.Msg.Workflow) &&
			(req.Msg.State == 0 || t.State == req.Msg.State) {
			match = append(match, t)
		}
	}
	from := 0
	if req.Msg.PageToken != "" {
		var err error
		if from, err = strconv.Atoi(req.Msg.PageToken); err != nil || from > len(match) {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad page token"))
		}
	}
	size := int(req.Msg.PageSize)
	if size == 0 {
		size = 100
	}
	if f.pageSize > 0 {
		size = min(size, f.pageSize)
	}
	to := min(from+size, len(match))
	resp := &taskerv1.ListTasksResponse{}
	for _, t := range match[from:to] {
		c := proto.Clone(t).(*taskerv1.Task)
		for _, s := range c.Steps {
			s.ResultJson = ""
		}
		resp.Tasks = append(resp.Tasks, c)
	}
	if to < len(match) {
		resp.NextPageToken = strconv.Itoa(to)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeAgent) CancelTask(_ context.Context, req *connect.Request[taskerv1.CancelTaskRequest]) (*connect.Response[taskerv1.CancelTaskResponse], error) {
	f.mu.Lock()
	f.cancels = append(f.cancels, req.Msg)
	f.mu.Unlock()
	t, err := f.task(req.Msg.Id)
	if err != nil {
		return nil, err
	}
	switch t.State {
	case taskerv1.TaskState_TASK_STATE_COMPLETE, taskerv1.TaskState_TASK_STATE_CANCELLED, taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("task %s has ended (%s); only an unfinished task can be cancelled", t.Id, taskState(t.State)))
	}
	c := proto.Clone(t).(*taskerv1.Task)
	c.State, c.EndedAt = taskerv1.TaskState_TASK_STATE_CANCELLED, at(5*time.Second)
	for _, s := range c.Steps {
		if s.State != taskerv1.StepState_STEP_STATE_COMPLETE && s.State != taskerv1.StepState_STEP_STATE_RESOLVED_MANUALLY {
			s.State = taskerv1.StepState_STEP_STATE_CANCELLED
		}
	}
	return connect.NewResponse(&taskerv1.CancelTaskResponse{Task: c}), nil
}

func (f *fakeAgent) RetryStep(_ context.Context, req *connect.Request[taskerv1.RetryStepRequest]) (*connect.Response[taskerv1.RetryStepResponse], error) {
	t, err := f.task(req.Msg.TaskId)
	if err != nil {
		return nil, err
	}
	c := proto.Clone(t).(*taskerv1.Task)
	for _, s := range c.Steps {
		if s.Name != req.Msg.Step {
			continue
		}
		if s.State != taskerv1.StepState_STEP_STATE_ERROR {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("step %s is %s; only a step that failed for good can be retried", s.Name, stepState(s.State)))
		}
		s.State, s.Attempts = taskerv1.StepState_STEP_STATE_PENDING, 0
		c.State = taskerv1.TaskState_TASK_STATE_IN_PROGRESS
		return connect.NewResponse(&taskerv1.RetryStepResponse{Task: c}), nil
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("task %s has no step %s", t.Id, req.Msg.Step))
}

func (f *fakeAgent) ResolveStep(_ context.Context, req *connect.Request[taskerv1.ResolveStepRequest]) (*connect.Response[taskerv1.ResolveStepResponse], error) {
	f.mu.Lock()
	f.resolves = append(f.resolves, req.Msg)
	f.mu.Unlock()
	t, err := f.task(req.Msg.TaskId)
	if err != nil {
		return nil, err
	}
	plan, _, err := f.lookup(t.Namespace, t.Workflow, t.Version)
	if err != nil {
		return nil, err
	}
	i, ok := plan.StepIndex(req.Msg.Step)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("task %s has no step %s", t.Id, req.Msg.Step))
	}
	if err := plan.Steps[i].Result.CheckJSON("result of step "+req.Msg.Step, []byte(req.Msg.ResultJson)); err != nil {
		return nil, contractError(err)
	}
	c := proto.Clone(t).(*taskerv1.Task)
	s := c.Steps[i]
	s.State, s.ResultJson, s.EndedAt = taskerv1.StepState_STEP_STATE_RESOLVED_MANUALLY, req.Msg.ResultJson, at(time.Minute)
	c.State = taskerv1.TaskState_TASK_STATE_IN_PROGRESS
	return connect.NewResponse(&taskerv1.ResolveStepResponse{Task: c}), nil
}

func (f *fakeAgent) WatchTask(ctx context.Context, req *connect.Request[taskerv1.WatchTaskRequest], stream *connect.ServerStream[taskerv1.WatchTaskResponse]) error {
	f.sawRead(taskerv1connect.WorkflowServiceWatchTaskProcedure, req.Header())
	if _, err := f.task(req.Msg.Id); err != nil {
		return err
	}
	f.mu.Lock()
	script, end, before := f.watch, f.watchErr, f.beforeSend
	f.mu.Unlock()
	for i, m := range script {
		if before != nil {
			before(i)
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return end
}

func (f *fakeAgent) WatchEvents(_ context.Context, req *connect.Request[taskerv1.WatchEventsRequest], stream *connect.ServerStream[taskerv1.WatchEventsResponse]) error {
	f.mu.Lock()
	i := len(f.eventReqs)
	f.eventReqs = append(f.eventReqs, req.Msg)
	var script []*taskerv1.WatchEventsResponse
	var end error
	if i < len(f.eventStreams) {
		script = f.eventStreams[i]
	}
	if i < len(f.eventErrs) {
		end = f.eventErrs[i]
	}
	f.mu.Unlock()
	if err := f.failure(taskerv1connect.WorkflowServiceWatchEventsProcedure); err != nil {
		return err
	}
	for _, m := range script {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return end
}

func (f *fakeAgent) Members(context.Context, *connect.Request[taskerv1.MembersRequest]) (*connect.Response[taskerv1.MembersResponse], error) {
	if err := f.failure(taskerv1connect.ClusterServiceMembersProcedure); err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.MembersResponse{Members: f.members}), nil
}

func (f *fakeAgent) RaftPeers(context.Context, *connect.Request[taskerv1.RaftPeersRequest]) (*connect.Response[taskerv1.RaftPeersResponse], error) {
	return connect.NewResponse(f.peers), nil
}

// isPeer reports whether id is a server of the Raft configuration.
func (f *fakeAgent) isPeer(id string) bool {
	for _, p := range f.peers.Peers {
		if p.Id == id {
			return true
		}
	}
	return false
}

func (f *fakeAgent) RemovePeer(_ context.Context, req *connect.Request[taskerv1.RemovePeerRequest]) (*connect.Response[taskerv1.RemovePeerResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.isPeer(req.Msg.Id) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("server %s is not in the Raft configuration", req.Msg.Id))
	}
	f.removedPeers = append(f.removedPeers, req.Msg.Id)
	return connect.NewResponse(&taskerv1.RemovePeerResponse{}), nil
}

func (f *fakeAgent) Leave(context.Context, *connect.Request[taskerv1.LeaveRequest]) (*connect.Response[taskerv1.LeaveResponse], error) {
	if err := f.failure(taskerv1connect.ClusterServiceLeaveProcedure); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaves++
	return connect.NewResponse(&taskerv1.LeaveResponse{}), nil
}

// ForceLeave removes a known member; it was removed from Raft when it is
// one of the peers.
func (f *fakeAgent) ForceLeave(_ context.Context, req *connect.Request[taskerv1.ForceLeaveRequest]) (*connect.Response[taskerv1.ForceLeaveResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	known := f.isPeer(req.Msg.Node)
	for _, m := range f.members {
		known = known || m.Name == req.Msg.Node
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no agent named %s", req.Msg.Node))
	}
	f.forceLeaves = append(f.forceLeaves, req.Msg.Node)
	return connect.NewResponse(&taskerv1.ForceLeaveResponse{RemovedFromRaft: f.isPeer(req.Msg.Node)}), nil
}

func (f *fakeAgent) Capabilities(context.Context, *connect.Request[taskerv1.CapabilitiesRequest]) (*connect.Response[taskerv1.CapabilitiesResponse], error) {
	return connect.NewResponse(&taskerv1.CapabilitiesResponse{Capabilities: f.capabilities}), nil
}

func (f *fakeAgent) Breakers(context.Context, *connect.Request[taskerv1.BreakersRequest]) (*connect.Response[taskerv1.BreakersResponse], error) {
	if err := f.failure(taskerv1connect.ClusterServiceBreakersProcedure); err != nil {
		return nil, err
	}
	return connect.NewResponse(f.breakers), nil
}

func (f *fakeAgent) SnapshotSave(_ context.Context, _ *connect.Request[taskerv1.SnapshotSaveRequest], stream *connect.ServerStream[taskerv1.SnapshotSaveResponse]) error {
	for i, data := 0, f.snapshot; len(data) > 0; i++ {
		if f.snapshotFailAfter > 0 && i == f.snapshotFailAfter {
			return connect.NewError(connect.CodeInternal, errors.New("snapshot store: disk full"))
		}
		n := min(f.snapshotChunk, len(data))
		if err := stream.Send(&taskerv1.SnapshotSaveResponse{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (f *fakeAgent) SnapshotRestore(_ context.Context, stream *connect.ClientStream[taskerv1.SnapshotRestoreRequest]) (*connect.Response[taskerv1.SnapshotRestoreResponse], error) {
	var chunks [][]byte
	for stream.Receive() {
		chunks = append(chunks, stream.Msg().Data)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.restored = chunks
	f.mu.Unlock()
	return connect.NewResponse(&taskerv1.SnapshotRestoreResponse{Tasks: 3, Workflows: 1}), nil
}

// The tasks the fake starts with, all of shop/order-fulfilment 1.0.0.

func orderSteps() []*taskerv1.Step {
	steps := []*taskerv1.Step{
		{Name: "validate", Capability: "orders.validate", MaxAttempts: 3},
		{Name: "reserve", Capability: "inventory.reserve", DependsOn: []string{"validate"}, MaxAttempts: 3},
		{Name: "charge", Capability: "payments.charge", DependsOn: []string{"validate"}, MaxAttempts: 5},
		{Name: "ship", Capability: "shipping.book", DependsOn: []string{"reserve", "charge"}, MaxAttempts: 3},
		{Name: "notify", Capability: "notifications.email", DependsOn: []string{"ship"}, MaxAttempts: 10},
	}
	for _, s := range steps {
		s.State = taskerv1.StepState_STEP_STATE_PENDING
	}
	return steps
}

func orderTask(id string, state taskerv1.TaskState) *taskerv1.Task {
	return &taskerv1.Task{
		Id: id, Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", State: state,
		InputJson: `{"order_id":"ord_7"}`, IdempotencyKey: "order-" + id, CreatedAt: at(0), Steps: orderSteps(),
	}
}

// done marks a step complete after one attempt that ran from start to end.
func done(s *taskerv1.Step, agent string, start, end time.Duration, result string) {
	s.State, s.Attempts, s.Agent, s.ResultJson = taskerv1.StepState_STEP_STATE_COMPLETE, 1, agent, result
	s.DispatchedAt, s.StartedAt, s.EndedAt = at(start-ms(3)), at(start), at(end)
}

// runningTask: validate, reserve and charge (on its second attempt) are
// complete, ship is running, notify waits.
func runningTask() *taskerv1.Task {
	t := orderTask("t_run", taskerv1.TaskState_TASK_STATE_IN_PROGRESS)
	s := t.Steps
	done(s[0], "shop-api-7f9", ms(3), ms(931), `{"risk_score":0.1}`)
	done(s[1], "warehouse-2", ms(934), ms(1628), `{"reservation_id":"res_1"}`)
	done(s[2], "shop-api-7f9", ms(2043), ms(2571), `{"charge_id":"ch_1"}`)
	s[2].Attempts = 2
	s[2].LastError = &taskerv1.StepError{Code: "gateway_unavailable", Message: "upstream returned 503", Retryable: true, Attempt: 1, At: at(ms(1198))}
	s[3].State, s[3].Attempts, s[3].Agent = taskerv1.StepState_STEP_STATE_IN_PROGRESS, 1, "warehouse-2"
	s[3].DispatchedAt, s[3].StartedAt = at(ms(2571)), at(ms(2574))
	return t
}

// blockedTask: ship broke its result contract, so the task is blocked.
func blockedTask() *taskerv1.Task {
	t := runningTask()
	t.Id, t.IdempotencyKey, t.State = "t_err", "order-t_err", taskerv1.TaskState_TASK_STATE_ERROR
	s := t.Steps[3]
	s.State, s.EndedAt = taskerv1.StepState_STEP_STATE_ERROR, at(ms(3083))
	s.LastError = &taskerv1.StepError{Code: "contract_violation", Message: "/tracking_number: is required", Attempt: 1, At: at(ms(3083))}
	return t
}

func doneTask() *taskerv1.Task {
	t := runningTask()
	t.Id, t.IdempotencyKey, t.State, t.EndedAt = "t_done", "order-t_done", taskerv1.TaskState_TASK_STATE_COMPLETE, at(ms(3985))
	done(t.Steps[3], "warehouse-2", ms(2574), ms(3083), `{"carrier":"dhl","tracking_number":"JD0001"}`)
	done(t.Steps[4], "shop-api-7f9", ms(3086), ms(3985), `{"message_id":"m_1"}`)
	return t
}
