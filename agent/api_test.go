package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// quick is a workflow with short timeouts and fast retries, so tests of
// timeouts and backoff run in milliseconds.
const quick = `name: quick
version: 1.0.0
input_schema: {type: object, properties: {n: {type: integer}}}
steps:
  - name: first
    capability: test.first
    timeout: 300ms
    retry: {max_attempts: 3, backoff: {initial: 20ms, max: 50ms, jitter: 0}}
    result_schema: {type: object, required: [id], properties: {id: {type: string}}}
  - name: second
    capability: test.second
    depends_on: [first]
    retry: {max_attempts: 1}
    input: {id: $.steps.first.result.id, n: $.input.n}
`

func applyQuick(t *testing.T, ta *testAgent) {
	t.Helper()
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick})); err != nil {
		t.Fatal(err)
	}
}

func startQuick(t *testing.T, ta *testAgent, key string) string {
	t.Helper()
	r, err := ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", InputJson: `{"n": 12345678901234567890}`, IdempotencyKey: key}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetTask().GetId()
}

// poller is a hand-driven pull worker: the test decides each answer.
type poller struct {
	t      *testing.T
	ta     *testAgent
	stream *connect.ServerStreamForClient[taskerv1.PollStepsResponse]
}

func newPoller(t *testing.T, ta *testAgent, id string, caps ...string) *poller {
	t.Helper()
	var cs []*taskerv1.Capability
	for _, c := range caps {
		cs = append(cs, &taskerv1.Capability{Name: c, MaxConcurrency: 4})
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := ta.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{WorkerId: id, Capabilities: cs})); err != nil {
		t.Fatal(err)
	}
	s, err := ta.wk.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: id}))
	if err != nil {
		t.Fatal(err)
	}
	return &poller{t: t, ta: ta, stream: s}
}

// next waits for the next assignment.
func (p *poller) next() *taskerv1.StepAssignment {
	p.t.Helper()
	got := make(chan *taskerv1.StepAssignment, 1)
	go func() {
		if p.stream.Receive() {
			got <- p.stream.Msg().GetAssignment()
		}
		close(got)
	}()
	select {
	case a, ok := <-got:
		if !ok {
			p.t.Fatalf("poll stream ended: %v", p.stream.Err())
		}
		return a
	case <-time.After(10 * time.Second):
		p.t.Fatal("no assignment within 10s")
	}
	return nil
}

func (p *poller) complete(a *taskerv1.StepAssignment, result string) error {
	_, err := p.ta.wk.CompleteStep(context.Background(), connect.NewRequest(&taskerv1.CompleteStepRequest{TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), ResultJson: result}))
	return err
}

func TestRetryAfterBackoffAndTimeout(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")

	a1 := p.next()
	if a1.GetStep() != "first" || a1.GetAttempt() != 1 || a1.GetIdempotencyKey() != id+"/first" {
		t.Fatalf("first assignment %+v", a1)
	}
	fr, err := ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{TaskId: id, Step: "first", Attempt: 1, Code: "busy", Retryable: true}))
	if err != nil || !fr.Msg.GetWillRetry() {
		t.Fatalf("fail: %v %+v", err, fr.Msg)
	}
	// Attempt 2 comes after the backoff, by itself.
	a2 := p.next()
	if a2.GetAttempt() != 2 {
		t.Fatalf("second assignment is attempt %d", a2.GetAttempt())
	}
	// Attempt 2 is never answered: its 300ms lease lapses and attempt 3 follows.
	a3 := p.next()
	if a3.GetAttempt() != 3 {
		t.Fatalf("after a timeout, attempt %d", a3.GetAttempt())
	}
	// The late answer to attempt 2 is refused and changes nothing.
	if err := p.complete(a2, `{"id":"late"}`); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("late result: %v, want FailedPrecondition", err)
	}
	if err := p.complete(a3, `{"id":"x-1"}`); err != nil {
		t.Fatal(err)
	}
	b := p.next()
	// The second step's input carries the upstream result and the big number exactly.
	if b.GetStep() != "second" || b.GetInputJson() != `{"id":"x-1","n":12345678901234567890}` {
		t.Fatalf("second step input %s", b.GetInputJson())
	}
	if err := p.complete(b, `{}`); err != nil {
		t.Fatal(err)
	}
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	first := task.GetSteps()[0]
	if first.GetAttempts() != 3 || first.GetLastError().GetCode() != "timeout" || first.GetResultJson() != `{"id":"x-1"}` {
		t.Fatalf("first step %+v", first)
	}
}

func TestContractViolationFailsTheStep(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	a := p.next()
	err := p.complete(a, `{"id": 7}`)
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(ce.Message(), "/id") || len(ce.Details()) != 1 {
		t.Fatalf("contract violation: %v", err)
	}
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_ERROR)
	if e := task.GetSteps()[0].GetLastError(); e.GetCode() != "contract_violation" || e.GetRetryable() {
		t.Fatalf("last error %+v", e)
	}
	// An operator resolves it; a result breaking the contract is refused first.
	_, err = ta.wf.ResolveStep(context.Background(), connect.NewRequest(&taskerv1.ResolveStepRequest{TaskId: id, Step: "first", ResultJson: `{}`}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("resolve with a bad result: %v", err)
	}
	if _, err := ta.wf.ResolveStep(context.Background(), connect.NewRequest(&taskerv1.ResolveStepRequest{TaskId: id, Step: "first", ResultJson: `{"id":"manual"}`, Reason: "fixed by hand"})); err != nil {
		t.Fatal(err)
	}
	b := p.next()
	if !strings.Contains(b.GetInputJson(), `"id":"manual"`) {
		t.Fatalf("second step input %s", b.GetInputJson())
	}
	if err := p.complete(b, `{}`); err != nil {
		t.Fatal(err)
	}
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY)
}

func TestRetryStepAndCancel(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	a := p.next()
	if _, err := ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{TaskId: id, Step: "first", Attempt: a.GetAttempt(), Code: "bad", Retryable: false})); err != nil {
		t.Fatal(err)
	}
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_ERROR)
	if _, err := ta.wf.RetryStep(context.Background(), connect.NewRequest(&taskerv1.RetryStepRequest{TaskId: id, Step: "first"})); err != nil {
		t.Fatal(err)
	}
	if a := p.next(); a.GetStep() != "first" || a.GetAttempt() != 1 {
		t.Fatalf("after RetryStep: %+v", a)
	}
	// Cancel while first is held by the worker.
	if _, err := ta.wf.CancelTask(context.Background(), connect.NewRequest(&taskerv1.CancelTaskRequest{Id: id, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_CANCELLED)
	if task.GetSteps()[0].GetState() != taskerv1.StepState_STEP_STATE_CANCELLED {
		t.Fatalf("first step %s", task.GetSteps()[0].GetState())
	}
	again, err := ta.wf.CancelTask(context.Background(), connect.NewRequest(&taskerv1.CancelTaskRequest{Id: id}))
	if err != nil || again.Msg.GetTask().GetState() != taskerv1.TaskState_TASK_STATE_CANCELLED {
		t.Fatalf("cancel twice: %v; cancelling is idempotent", err)
	}
	_, err = ta.wf.RetryStep(context.Background(), connect.NewRequest(&taskerv1.RetryStepRequest{TaskId: id, Step: "first"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("retry on a cancelled task: %v", err)
	}
}

func TestWatchTaskStreamsEveryEventInOrder(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := ta.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		a := p.next()
		_ = p.complete(a, `{"id":"w"}`)
		b := p.next()
		_ = p.complete(b, `{}`)
	}()
	var types []string
	last := uint64(0)
	for stream.Receive() {
		m := stream.Msg()
		if e := m.GetEvent(); e != nil {
			if e.GetSequence() <= last {
				t.Fatalf("event %d after %d", e.GetSequence(), last)
			}
			last = e.GetSequence()
			types = append(types, e.GetType())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(types, " ")
	for _, want := range []string{"step.dispatched", "step.completed", "task.completed"} {
		if !strings.Contains(got, want) {
			t.Fatalf("events %q lack %s", got, want)
		}
	}
	if types[len(types)-1] != "task.completed" {
		t.Fatalf("last event %s; the stream must end with the task", types[len(types)-1])
	}
}

// TestPushMode: an app with no SDK registers a URL; the agent POSTs each
// step as JSON and takes the HTTP response as the result.
func TestPushMode(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	var calls atomic.Int32
	var mu sync.Mutex
	var bodies []map[string]any
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		n := calls.Add(1)
		switch {
		case body["step"] == "first" && n == 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":"warming_up","message":"try again"}`))
		case body["step"] == "first":
			_, _ = w.Write([]byte(`{"id":"pushed"}`))
		default:
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte(`{"code":"rejected","message":"no","details":{"field":"n","limit":10}}`))
		}
	}))
	defer app.Close()
	if _, err := ta.wk.RegisterCapabilities(context.Background(), connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId: "pusher", PushUrl: app.URL, Capabilities: []*taskerv1.Capability{{Name: "test.first"}, {Name: "test.second"}},
	})); err != nil {
		t.Fatal(err)
	}
	id := startQuick(t, ta, "")
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_ERROR)
	first, second := task.GetSteps()[0], task.GetSteps()[1]
	if first.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE || first.GetAttempts() != 2 || first.GetResultJson() != `{"id":"pushed"}` {
		t.Fatalf("first: %+v", first)
	}
	if e := second.GetLastError(); e.GetCode() != "rejected" || e.GetRetryable() {
		t.Fatalf("a 4xx must fail permanently with the app's code: %+v", e)
	}
	if dl := listDLQ(t, ta, &taskerv1.ListDeadLettersRequest{}); len(dl) != 1 || dl[0].GetDetailsJson() != `{"field":"n","limit":10}` {
		t.Fatalf("the push failure's details must reach its dead letter: %+v", dl)
	}
	mu.Lock()
	defer mu.Unlock()
	b := bodies[0]
	if b["task_id"] != id || b["idempotency_key"] != id+"/first" || b["attempt"] != float64(1) {
		t.Fatalf("push body %v", b)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	ta := startAgent(t, dir, func(c *Config) { c.ShutdownTimeout = 300 * time.Millisecond })
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "key-1")
	a := p.next()
	if err := p.complete(a, `{"id":"before"}`); err != nil {
		t.Fatal(err)
	}
	p.next() // second is in flight when the agent stops: it is handed back
	if err := ta.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	tb := startAgent(t, dir)
	again, err := tb.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", IdempotencyKey: "key-1"}))
	if err != nil || again.Msg.GetCreated() || again.Msg.GetTask().GetId() != id {
		t.Fatalf("idempotency key after restart: %v %+v", err, again.Msg)
	}
	p2 := newPoller(t, tb, "w2", "test.first", "test.second")
	b := p2.next()
	if b.GetStep() != "second" || !strings.Contains(b.GetInputJson(), `"before"`) {
		t.Fatalf("after restart: %+v", b)
	}
	if err := p2.complete(b, `{}`); err != nil {
		t.Fatal(err)
	}
	if b.GetAttempt() != 1 {
		t.Fatalf("the handed-back step came back as attempt %d; handing back spends no attempt", b.GetAttempt())
	}
	task := waitTask(t, tb, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	if task.GetSteps()[0].GetAttempts() != 1 {
		t.Fatal("a completed step ran again after the restart")
	}
}

func TestSnapshotSaveAndRestore(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	id := startQuick(t, ta, "")
	ctx := context.Background()
	s, err := ta.cl.SnapshotSave(ctx, connect.NewRequest(&taskerv1.SnapshotSaveRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	for s.Receive() {
		archive.Write(s.Msg().GetData())
	}
	if err := s.Err(); err != nil || archive.Len() == 0 {
		t.Fatalf("save: %v (%d bytes)", err, archive.Len())
	}
	tb := startAgent(t, t.TempDir())
	restore := func(data []byte) (*connect.Response[taskerv1.SnapshotRestoreResponse], error) {
		cs := tb.cl.SnapshotRestore(ctx)
		for len(data) > 0 {
			n := min(len(data), 1000)
			if err := cs.Send(&taskerv1.SnapshotRestoreRequest{Data: data[:n]}); err != nil {
				return nil, err
			}
			data = data[n:]
		}
		return cs.CloseAndReceive()
	}
	if _, err := restore(archive.Bytes()[:archive.Len()/2]); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a truncated snapshot: %v, want InvalidArgument", err)
	}
	var res *connect.Response[taskerv1.SnapshotRestoreResponse]
	waitFor(t, 10*time.Second, "a restore the new agent accepts", func() bool {
		res, err = restore(archive.Bytes())
		return connect.CodeOf(err) != connect.CodeUnavailable // Raft may ask to wait just after an election
	})
	if err != nil || res.Msg.GetTasks() != 1 || res.Msg.GetWorkflows() != 1 {
		t.Fatalf("restore: %v %+v", err, res)
	}
	got, err := tb.wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if err != nil || got.Msg.GetTask().GetWorkflow() != "quick" {
		t.Fatalf("task after restore: %v", err)
	}
	// The restored task is scheduled on the new agent.
	p := newPoller(t, tb, "w1", "test.first", "test.second")
	if a := p.next(); a.GetTaskId() != id {
		t.Fatalf("restored task not scheduled: %+v", a)
	}
}

func TestExtendLeaseKeepsALongStep(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	a := p.next()
	// Hold the step for four times its 300ms timeout, extending as we go.
	end := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(end) {
		if _, err := ta.wk.ExtendLease(context.Background(), connect.NewRequest(&taskerv1.ExtendLeaseRequest{TaskId: id, Step: "first", Attempt: a.GetAttempt(), ExtendBy: durationpb.New(300 * time.Millisecond)})); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the heartbeat period of a real worker
	}
	if err := p.complete(a, `{"id":"slow"}`); err != nil {
		t.Fatalf("result after extending the lease: %v", err)
	}
	task, _ := ta.wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if n := task.Msg.GetTask().GetSteps()[0].GetAttempts(); n != 1 {
		t.Fatalf("the step was retried %d times despite heartbeats", n-1)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-server", "-bootstrap-expect", "1"}, nil, "data-dir: is required"},
		{[]string{"-dev", "-client", "localhost:1"}, nil, `client: "localhost:1" is not an IP address`},
		{[]string{"-dev", "-http-port", "70000"}, nil, "http-port: 70000 is not a port"},
		{[]string{"-dev", "-log-level", "loud"}, nil, `log-level: "loud"`},
		{[]string{"-dev"}, map[string]string{"TASKER_HTTP_PORT": "abc"}, `TASKER_HTTP_PORT: "abc" is not a whole number`},
		{[]string{"-dev", "-max-payload", "10"}, nil, "max-payload: 10 is out of range"},
		{[]string{"-dev", "stray"}, nil, `unexpected argument "stray"`},
		{[]string{"-dev", "-bus", "mqtt://broker:1883"}, nil, `bus: unknown scheme "mqtt"`},
		{[]string{"-dev", "-bus", "redis://"}, nil, `bus: "redis://" names no host: write redis://host:port`},
		{[]string{"-dev", "-bus-outbox-max", "0"}, nil, "bus-outbox-max: 0 must be at least 1"},
		{[]string{"-data-dir", "/tmp/x", "-join", "127.0.0.1:7422", "-bus", "nats://127.0.0.1:4222"}, nil, "bus: only servers publish events"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
	cfg, err := Load([]string{"-dev", "-http-port", "9999"}, func(k string) string {
		return map[string]string{"TASKER_HTTP_PORT": "8888", "TASKER_LOG_LEVEL": "debug"}[k]
	})
	if err != nil || cfg.HTTPPort != 9999 || cfg.LogLevel != "debug" {
		t.Fatalf("flags must beat env, env must beat defaults: %+v %v", cfg, err)
	}
}

// TestWatchResumes: a watcher that lost its stream resumes after the last
// sequence it saw and misses nothing, even once the task has ended.
func TestWatchResumes(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	_ = p.complete(p.next(), `{"id":"r"}`)
	_ = p.complete(p.next(), `{}`)
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := ta.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id, AfterSequence: 2}))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for stream.Receive() {
		if e := stream.Msg().GetEvent(); e != nil {
			seqs = append(seqs, e.GetSequence())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seqs) < 3 || seqs[0] != 3 {
		t.Fatalf("resumed events %v, want 3, 4, ... up to task.completed", seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("gap in resumed events: %v", seqs)
		}
	}
	// Without after_sequence, watching an ended task sends it and ends.
	stream, err = ta.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for stream.Receive() {
		n++
	}
	if n != 1 || stream.Err() != nil {
		t.Fatalf("watching an ended task: %d messages, %v", n, stream.Err())
	}
}

// TestRestoreReclaimsOrphanedAttempts: after a snapshot restore, an attempt
// the snapshot records in flight that no worker here holds is retried
// after the reclaim grace, not after its whole lease.
func TestRestoreReclaimsOrphanedAttempts(t *testing.T) {
	slow := strings.Replace(quick, "timeout: 300ms", "timeout: 10m", 1)
	// Workers here never report, so shutdowns need not wait for them.
	short := func(c *Config) { c.ShutdownTimeout = 100 * time.Millisecond }
	ta := startAgent(t, t.TempDir(), short)
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: slow})); err != nil {
		t.Fatal(err)
	}
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "")
	if a := p.next(); a.GetAttempt() != 1 {
		t.Fatalf("first attempt %d", a.GetAttempt())
	}
	s, err := ta.cl.SnapshotSave(ctx, connect.NewRequest(&taskerv1.SnapshotSaveRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	for s.Receive() {
		archive.Write(s.Msg().GetData())
	}
	tb := startAgent(t, t.TempDir(), short, func(c *Config) { c.ReclaimGrace = 200 * time.Millisecond })
	p2 := newPoller(t, tb, "w2", "test.first", "test.second")
	waitFor(t, 10*time.Second, "the restore", func() bool {
		cs := tb.cl.SnapshotRestore(ctx)
		if err := cs.Send(&taskerv1.SnapshotRestoreRequest{Data: archive.Bytes()}); err != nil {
			return false
		}
		_, err := cs.CloseAndReceive()
		return err == nil
	})
	start := time.Now()
	a := p2.next()
	if a.GetTaskId() != id || a.GetStep() != "first" || a.GetAttempt() != 2 {
		t.Fatalf("after restore: %+v", a)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the orphaned attempt waited %v; its lease is 10m, the grace 200ms", waited)
	}
}
