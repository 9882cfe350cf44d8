package worker_test

// fakeAgent is a small scripted WorkerService on loopback. It stands in for
// the tasker agent until the e2e tests run the real binary against this
// SDK: it records what the worker sends and answers as the proto's
// comments say the agent will.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

type fakeAgent struct {
	taskerv1connect.UnimplementedWorkerServiceHandler

	// assign queues assignments for the open (or next) poll stream.
	assign chan *taskerv1.StepAssignment

	mu            sync.Mutex
	registrations []*taskerv1.RegisterCapabilitiesRequest
	polls         []string // worker id of each PollSteps
	open          int      // poll streams open now
	sent          int      // assignments sent
	breakStream   chan struct{}
	completed     []*taskerv1.CompleteStepRequest
	openAtReport  []int // open streams when each CompleteStep arrived
	failed        []*taskerv1.FailStepRequest
	extended      []*taskerv1.ExtendLeaseRequest
	events        []string // "register", "complete task/step", ...
	// reports receives a line per CompleteStep and FailStep, for examples.
	reports chan string

	// Scripted answers.
	assignedID  string        // worker id to hand out when the worker sends none
	registerErr error         // returned by RegisterCapabilities
	completeErr error         // returned by CompleteStep
	failErr     error         // returned by FailStep
	extendErr   error         // returned by ExtendLease
	leaseFor    time.Duration // new lease on ExtendLease
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{
		assign:     make(chan *taskerv1.StepAssignment, 100),
		reports:    make(chan string, 100),
		assignedID: "worker-1",
		leaseFor:   time.Minute,
	}
}

// serve starts the agent on addr ("" for any free port), speaking h2c as
// the real agent's local API does.
func (f *fakeAgent) serve(addr string) *agentServer {
	mux := http.NewServeMux()
	mux.Handle(taskerv1connect.NewWorkerServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	if addr != "" {
		srv.Listener.Close()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			panic(fmt.Sprintf("listen on %s: %v", addr, err))
		}
		srv.Listener = ln
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	return &agentServer{Server: srv}
}

// agentServer is a running fake agent; Kill drops every connection, as a
// crashing sidecar does.
type agentServer struct {
	*httptest.Server
	once sync.Once
}

func (s *agentServer) Kill() {
	s.once.Do(func() {
		s.CloseClientConnections()
		s.Close()
	})
}

func (f *fakeAgent) start(t *testing.T) *agentServer {
	s := f.serve("")
	t.Cleanup(s.Kill)
	return s
}

func (f *fakeAgent) RegisterCapabilities(_ context.Context, req *connect.Request[taskerv1.RegisterCapabilitiesRequest]) (*connect.Response[taskerv1.RegisterCapabilitiesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registrations = append(f.registrations, req.Msg)
	f.events = append(f.events, "register")
	if f.registerErr != nil {
		return nil, f.registerErr
	}
	id := req.Msg.GetWorkerId()
	if id == "" {
		id = f.assignedID
	}
	return connect.NewResponse(&taskerv1.RegisterCapabilitiesResponse{WorkerId: id}), nil
}

func (f *fakeAgent) PollSteps(ctx context.Context, req *connect.Request[taskerv1.PollStepsRequest], stream *connect.ServerStream[taskerv1.PollStepsResponse]) error {
	brk := make(chan struct{})
	f.mu.Lock()
	f.polls = append(f.polls, req.Msg.GetWorkerId())
	f.open++
	f.breakStream = brk
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-brk:
			return connect.NewError(connect.CodeUnavailable, errors.New("stream broken by the test"))
		case a := <-f.assign:
			if err := stream.Send(&taskerv1.PollStepsResponse{Assignment: a}); err != nil {
				f.assign <- a
				return err
			}
			f.mu.Lock()
			f.sent++
			f.mu.Unlock()
		}
	}
}

func (f *fakeAgent) CompleteStep(_ context.Context, req *connect.Request[taskerv1.CompleteStepRequest]) (*connect.Response[taskerv1.CompleteStepResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "complete "+req.Msg.GetTaskId()+"/"+req.Msg.GetStep())
	if f.completeErr != nil {
		return nil, f.completeErr
	}
	f.completed = append(f.completed, req.Msg)
	f.openAtReport = append(f.openAtReport, f.open)
	f.report(fmt.Sprintf("completed %s/%s attempt %d: %s", req.Msg.GetTaskId(), req.Msg.GetStep(), req.Msg.GetAttempt(), req.Msg.GetResultJson()))
	return connect.NewResponse(&taskerv1.CompleteStepResponse{}), nil
}

func (f *fakeAgent) FailStep(_ context.Context, req *connect.Request[taskerv1.FailStepRequest]) (*connect.Response[taskerv1.FailStepResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "fail "+req.Msg.GetTaskId()+"/"+req.Msg.GetStep())
	f.failed = append(f.failed, req.Msg)
	if f.failErr != nil {
		return nil, f.failErr
	}
	f.report(fmt.Sprintf("failed %s/%s attempt %d: %s (retryable: %v): %s", req.Msg.GetTaskId(), req.Msg.GetStep(),
		req.Msg.GetAttempt(), req.Msg.GetCode(), req.Msg.GetRetryable(), req.Msg.GetMessage()))
	res := &taskerv1.FailStepResponse{WillRetry: req.Msg.GetRetryable()}
	if res.WillRetry {
		res.NextAttemptAt = timestamppb.New(time.Now().Add(req.Msg.GetRetryAfter().AsDuration()))
	}
	return connect.NewResponse(res), nil
}

func (f *fakeAgent) ExtendLease(_ context.Context, req *connect.Request[taskerv1.ExtendLeaseRequest]) (*connect.Response[taskerv1.ExtendLeaseResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "extend "+req.Msg.GetTaskId()+"/"+req.Msg.GetStep())
	f.extended = append(f.extended, req.Msg)
	if f.extendErr != nil {
		return nil, f.extendErr
	}
	return connect.NewResponse(&taskerv1.ExtendLeaseResponse{Deadline: timestamppb.New(time.Now().Add(f.leaseFor))}), nil
}

func (f *fakeAgent) report(line string) {
	select {
	case f.reports <- line:
	default: // tests that do not read reports
	}
}

// nextReport waits for the next CompleteStep or FailStep, as a line.
func (f *fakeAgent) nextReport() string {
	select {
	case r := <-f.reports:
		return r
	case <-time.After(10 * time.Second):
		return "no report within 10s"
	}
}

// with runs fn under the agent's lock, to read or script it.
func (f *fakeAgent) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// breakPoll ends the open poll stream with Unavailable.
func (f *fakeAgent) breakPoll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.breakStream != nil {
		close(f.breakStream)
		f.breakStream = nil
	}
}

// step makes an assignment of attempt 1 with a deadline a minute away.
func step(task, name, capability, input string) *taskerv1.StepAssignment {
	return &taskerv1.StepAssignment{
		TaskId:         task,
		Step:           name,
		Capability:     capability,
		Attempt:        1,
		InputJson:      input,
		IdempotencyKey: task + "/" + name,
		Deadline:       timestamppb.New(time.Now().Add(time.Minute)),
		Workflow:       "order-fulfilment",
	}
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// receive waits for a value on ch, failing the test after 10 seconds.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// logBuffer collects a test's logs; they are printed when the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// running is a worker's Run in a goroutine.
type running struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, w interface{ Run(context.Context) error }) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop() error {
	r.t.Helper()
	r.cancel()
	err := receive(r.t, "Run to return", r.done)
	r.done <- err // for the cleanup
	return err
}
