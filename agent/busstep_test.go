package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/bus/natsbus"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/internal/brokers"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

// The bus step tests run a one-server agent with a bus, and a "service"
// written here that has no sidecar: it subscribes to the step's subject on
// its own connection to the broker and publishes its replies to the
// request's reply_to, as a service in any language would.

const busSubject = "billing.invoice.create"

// busManifest has one bus step, invoice, with a result contract, a short
// timeout (long enough for a round trip on a loaded machine: an answered
// attempt must not time out) and quick retries, then a second bus step
// reading its result, so that a round trip also checks the input mapping.
const busManifest = `name: bx
version: 1.0.0
input_schema:
  type: object
  required: [order_id, mode]
  properties:
    order_id: {type: string}
    mode: {type: string}
steps:
  - name: invoice
    transport: bus
    subject: billing.invoice.create
    timeout: 3s
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
    input:
      order_id: $.input.order_id
      mode: $.input.mode
    result_schema:
      type: object
      required: [invoice_id]
      properties: {invoice_id: {type: string}}
  - name: mail
    transport: bus
    subject: billing.invoice.mail
    depends_on: [invoice]
    input: {invoice: $.steps.invoice.result.invoice_id}
`

// busService answers the requests on its subjects; reply decides the
// answer to each (nil: stay silent). It records the requests it saw.
type busService struct {
	t     *testing.T
	b     bus.Bus
	reply func(req busRequest) any

	mu   sync.Mutex
	seen []bus.Message
}

func header(m bus.Message, name string) string {
	for k, v := range m.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// runBusService subscribes the service to subjects until the test ends.
func runBusService(t *testing.T, b bus.Bus, reply func(req busRequest) any, subjects ...string) *busService {
	t.Helper()
	s := &busService{t: t, b: b, reply: reply}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if sa, ok := b.(subjectAdder); ok {
		// JetStream stores only the subjects its stream lists: a service
		// that subscribes before the first request adds its own.
		if err := sa.AddSubjects(ctx, subjects...); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range subjects {
		// A group per subject: on NATS a group is one durable consumer with
		// one filter, so two patterns need two groups.
		if err := b.Subscribe(ctx, subj, "svc-"+subj, s.handle); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *busService) handle(ctx context.Context, m bus.Message) error {
	s.mu.Lock()
	s.seen = append(s.seen, m)
	s.mu.Unlock()
	var req busRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.t.Errorf("request %s: %v", m.ID, err)
		return nil
	}
	replies, ok := s.reply(req).([]any)
	if !ok {
		replies = []any{s.reply(req)}
	}
	for i, r := range replies {
		if r == nil {
			continue
		}
		data, err := json.Marshal(r)
		if err != nil {
			s.t.Error(err)
			return nil
		}
		cid := header(m, "correlation_id")
		if body, ok := r.(map[string]any)["correlation_id"].(string); ok {
			cid = body // a reply for another attempt than the request's
		}
		if err := s.b.Publish(ctx, bus.Message{
			ID: fmt.Sprintf("reply/%s/%d", m.ID, i), Subject: header(m, "reply_to"), Data: data,
			Headers: map[string]string{"correlation_id": cid},
		}); err != nil {
			return err
		}
	}
	return nil
}

func (s *busService) requests() []bus.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bus.Message(nil), s.seen...)
}

// byMode answers as the task input's mode says:
//
//	ok          a result
//	bad         a result that breaks the contract
//	fail-once   a retryable error, then a result
//	silent-once nothing (the attempt times out), then a result
//	fatal       a permanent error
//	late        nothing, then, on attempt 2, a (late) result for attempt 1
//	            before attempt 2's
//
// A reply carries its correlation id in the header, some also in the body.
func byMode(req busRequest) any {
	if req.Step == "mail" {
		return map[string]any{"result": map[string]any{"sent": true}}
	}
	var in struct{ Mode string }
	_ = json.Unmarshal(req.Input, &in)
	ok := map[string]any{"correlation_id": busCorrelationID(leaseKey{req.TaskID, req.Step, req.Attempt}), "result": map[string]any{"invoice_id": "inv-" + strconv.Itoa(req.Attempt)}}
	switch {
	case in.Mode == "bad":
		return map[string]any{"result": map[string]any{"invoice": 1}}
	case in.Mode == "fail-once" && req.Attempt == 1:
		return map[string]any{"error": map[string]any{"code": "ledger_busy", "message": "try later", "retryable": true, "retry_after_ms": 30}}
	case (in.Mode == "silent-once" || in.Mode == "late") && req.Attempt == 1:
		return nil
	case in.Mode == "late":
		first := busCorrelationID(leaseKey{req.TaskID, req.Step, 1})
		return []any{map[string]any{"correlation_id": first, "result": map[string]any{"invoice_id": "inv-1"}}, ok}
	case in.Mode == "fatal":
		return map[string]any{"error": map[string]any{"code": "unknown_customer", "message": "no such customer", "details": map[string]any{"customer": "c1"}}}
	}
	return ok
}

// startBusTask applies busManifest (once per agent) and starts a task.
func startBusTask(t *testing.T, ta *testAgent, mode string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: busManifest})); err != nil {
		t.Fatal(err)
	}
	r, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "bx", InputJson: `{"order_id":"o-` + mode + `","mode":"` + mode + `"}`}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetTask().GetId()
}

func busStepOf(task *taskerv1.Task, name string) *taskerv1.Step {
	for _, s := range task.GetSteps() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// stepEventsOf lists all of a step's events as "type:attempt".
func stepEventsOf(t *testing.T, ta *testAgent, task, step string) []string {
	t.Helper()
	evs, err := ta.state.Events(task, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Step == step {
			out = append(out, e.Type+":"+strconv.Itoa(e.Attempt))
		}
	}
	return out
}

// stepOutcomes lists a step's dispatches and their outcomes as
// "type:attempt[:code]". Starts are left out: recorded asynchronously, a
// start loses to a quick reply and is dropped as stale.
func stepOutcomes(t *testing.T, ta *testAgent, task, step string) []string {
	t.Helper()
	evs, err := ta.state.Events(task, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		switch {
		case e.Step != step:
			continue
		case e.Type != consensus.EventStepDispatched && e.Type != consensus.EventStepFailed && e.Type != consensus.EventStepRetryScheduled &&
			e.Type != consensus.EventStepDeadLettered && e.Type != consensus.EventStepCompleted:
			continue
		}
		s := e.Type + ":" + strconv.Itoa(e.Attempt)
		if e.Code != "" {
			s += ":" + e.Code
		}
		out = append(out, s)
	}
	return out
}

// TestBusSteps runs every outcome of a bus step against one agent on
// embedded NATS and one service: a round trip, a broken result contract,
// an error reply retried, no reply (timeout) retried, a permanent error.
func TestBusSteps(t *testing.T) {
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = "embedded" })
	svcBus, err := natsbus.New(context.Background(), natsbus.Config{URL: ta.bus.(*natsbus.Bus).ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcBus.Close() })
	svc := runBusService(t, svcBus, byMode, busSubject, "billing.invoice.mail")

	tests := []struct {
		mode      string
		state     taskerv1.TaskState
		attempts  int32
		code      string // the invoice step's last error
		retryable bool
		events    []string // the invoice step's outcomes (stepOutcomes)
		late      bool     // a reply for attempt 1 came after attempt 2 began
	}{
		{"ok", taskerv1.TaskState_TASK_STATE_COMPLETE, 1, "", false,
			[]string{"step.dispatched:1", "step.completed:1"}, false},
		{"bad", taskerv1.TaskState_TASK_STATE_ERROR, 1, workflow.CodeContractViolation, false,
			[]string{"step.dispatched:1", "step.failed:1:contract_violation", "step.dead_lettered:1:contract_violation"}, false},
		{"fail-once", taskerv1.TaskState_TASK_STATE_COMPLETE, 2, "ledger_busy", true,
			[]string{"step.dispatched:1", "step.failed:1:ledger_busy", "step.retry_scheduled:1", "step.dispatched:2", "step.completed:2"}, false},
		{"silent-once", taskerv1.TaskState_TASK_STATE_COMPLETE, 2, workflow.CodeTimeout, true,
			[]string{"step.dispatched:1", "step.failed:1:timeout", "step.retry_scheduled:1", "step.dispatched:2", "step.completed:2"}, false},
		{"late", taskerv1.TaskState_TASK_STATE_COMPLETE, 2, workflow.CodeTimeout, true,
			[]string{"step.dispatched:1", "step.failed:1:timeout", "step.retry_scheduled:1", "step.dispatched:2", "step.completed:2"}, true},
		{"fatal", taskerv1.TaskState_TASK_STATE_ERROR, 1, "unknown_customer", false,
			[]string{"step.dispatched:1", "step.failed:1:unknown_customer", "step.dead_lettered:1:unknown_customer"}, false},
	}
	t.Run("outcomes", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.mode, func(t *testing.T) {
				t.Parallel()
				id := startBusTask(t, ta, tt.mode)
				task := waitTask(t, ta, id, tt.state)
				inv := busStepOf(task, "invoice")
				if inv.GetAttempts() != tt.attempts || inv.GetAgent() != "bus:"+busSubject {
					t.Errorf("invoice: %d attempts on %q; want %d on bus:%s", inv.GetAttempts(), inv.GetAgent(), tt.attempts, busSubject)
				}
				if e := inv.GetLastError(); e.GetCode() != tt.code || (e != nil && e.GetRetryable() != tt.retryable) {
					t.Errorf("invoice last error %v; want code %q retryable %v", e, tt.code, tt.retryable)
				}
				if evs := stepOutcomes(t, ta, id, "invoice"); !slices.Equal(evs, tt.events) {
					t.Errorf("invoice events %v; want %v", evs, tt.events)
				}
				if tt.late && !slices.Contains(stepEventsOf(t, ta, id, "invoice"), consensus.EventStepLateReport+":1") {
					t.Errorf("no %s event for attempt 1", consensus.EventStepLateReport)
				}
				if tt.state == taskerv1.TaskState_TASK_STATE_COMPLETE {
					if got, want := inv.GetResultJson(), fmt.Sprintf(`{"invoice_id":"inv-%d"}`, tt.attempts); got != want {
						t.Errorf("invoice result %s; want %s", got, want)
					}
					if m := busStepOf(task, "mail"); m.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE {
						t.Errorf("mail step %s", m.GetState())
					}
				}
			})
		}
	})
	t.Run("requests", func(t *testing.T) {
		// Once every task ended: the requests the service saw.
		cid := ta.state.ClusterID()
		var found int
		for _, m := range svc.requests() {
			var req busRequest
			if err := json.Unmarshal(m.Data, &req); err != nil || req.Step != "mail" {
				continue
			}
			found++
			wantID := busCorrelationID(leaseKey{req.TaskID, "mail", req.Attempt})
			if m.ID != wantID || header(m, "correlation_id") != wantID || header(m, "reply_to") != "tasker.replies."+cid {
				t.Errorf("request id %q, headers %v; want id and correlation_id %q, reply_to tasker.replies.%s", m.ID, m.Headers, wantID, cid)
			}
			if !strings.HasPrefix(string(req.Input), `{"invoice":"inv-`) || req.Deadline.IsZero() || req.Attempt != 1 ||
				req.IdempotencyKey != req.TaskID+"/mail" || req.Workflow != "bx" || req.Version != "1.0.0" {
				t.Errorf("request %s", m.Data)
			}
		}
		if found == 0 {
			t.Error("the service saw no request for the mail step")
		}
		var breakers []string
		for _, st := range ta.breakers.Snapshot() {
			breakers = append(breakers, st.Target)
		}
		if slices.Index(breakers, "bus:"+busSubject) < 0 {
			t.Errorf("breakers %v lack bus:%s", breakers, busSubject)
		}
	})
}

// TestBusStepPublishFails: a request the bus does not take fails its
// attempt at once, retryably, and the retry goes through once the bus
// takes it. JetStream refuses the subject while another stream holds it.
func TestBusStepPublishFails(t *testing.T) {
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = "embedded" })
	url := ta.bus.(*natsbus.Bus).ClientURL()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const subject = "billing.blocked"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{subject}}); err != nil {
		t.Fatal(err)
	}
	manifest := `name: blocked
version: 1.0.0
steps:
  - name: invoice
    transport: bus
    subject: ` + subject + `
    timeout: 5s
    retry: {max_attempts: 5, backoff: {initial: 200ms, max: 200ms, jitter: 0}}
`
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	r, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "blocked"}))
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	var lastErr *taskerv1.StepError
	waitFor(t, 5*time.Second, "the first attempt to fail", func() bool {
		r, err := ta.wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		lastErr = busStepOf(r.Msg.GetTask(), "invoice").GetLastError()
		return err == nil && lastErr != nil
	})
	// Failed long before its 5 s timeout, as retryable.
	if lastErr.GetCode() != workflow.CodeTimeout || !lastErr.GetRetryable() || !strings.Contains(lastErr.GetMessage(), "request not published on the bus to "+subject) {
		t.Errorf("first failure %v; want a retryable timeout saying the request was not published", lastErr)
	}
	if err := js.DeleteStream(ctx, "OTHER"); err != nil {
		t.Fatal(err)
	}
	svcBus, err := natsbus.New(ctx, natsbus.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcBus.Close() })
	runBusService(t, svcBus, func(busRequest) any { return map[string]any{"result": map[string]any{}} }, subject)
	task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	if n := busStepOf(task, "invoice").GetAttempts(); n < 2 {
		t.Errorf("completed after %d attempts; want a retry", n)
	}
}

// TestBusStepBackends runs a round trip on every backend, each a real
// broker: the agent's -bus URL and the service's own connection to it.
// Brokers the machine lacks are skipped, as in the bus adapter tests
// (failed with TASKER_REQUIRE_BROKERS set).
func TestBusStepBackends(t *testing.T) {
	for _, tt := range otherBackends() {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url(t)
			ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = url })
			svcBus, err := busurl.Open(context.Background(), url, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svcBus.Close() })
			runBusService(t, svcBus, byMode, busSubject, "billing.invoice.mail")
			id := startBusTask(t, ta, "fail-once")
			task := waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
			if inv := busStepOf(task, "invoice"); inv.GetAttempts() != 2 || inv.GetResultJson() != `{"invoice_id":"inv-2"}` {
				t.Errorf("invoice: %d attempts, result %s; want 2, inv-2", inv.GetAttempts(), inv.GetResultJson())
			}
		})
	}
}

// TestBusStepAcrossLeaderChange: the reply to a request the old leader
// published completes the attempt on the new one, which subscribed to the
// same reply group. Three servers share a Redis bus.
func TestBusStepAcrossLeaderChange(t *testing.T) {
	url := fmt.Sprintf("redis://127.0.0.1:%d", brokers.Redis(t).Port)
	f := newFleet(t)
	withBus := func(c *Config) { c.Bus = url }
	s1 := f.start("s1", 3, nil, nil, withBus)
	ss := []*testServer{s1, f.start("s2", 3, s1, nil, withBus), f.start("s3", 3, s1, nil, withBus)}
	old := waitCluster(t, ss, "s1", "s2", "s3")
	svcBus, err := busurl.Open(context.Background(), url, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcBus.Close() })
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	// Runs before the bus's Close (cleanups run last first): a failed wait
	// below must not leave the handler blocking Close until the package
	// times out.
	t.Cleanup(free)
	runBusService(t, svcBus, func(req busRequest) any {
		if req.Step == "invoice" {
			<-release // the reply waits for the new leader
		}
		return byMode(req)
	}, busSubject, "billing.invoice.mail")
	manifest := strings.Replace(busManifest, "timeout: 3s", "timeout: 30s", 1)
	ctx := context.Background()
	if _, err := old.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest})); err != nil {
		t.Fatal(err)
	}
	r, err := old.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "bx", InputJson: `{"order_id":"o-1","mode":"ok"}`}))
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	waitFor(t, 10*time.Second, "the old leader to record the request published", func() bool {
		return slices.Contains(stepEventsOf(t, old.testAgent, id, "invoice"), consensus.EventStepStarted+":1")
	})
	if err := old.node.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	var leader *testServer
	waitFor(t, 10*time.Second, "a new leader subscribed to replies", func() bool {
		leader = leaderOf(ss)
		return leader != nil && leader != old && leader.bsteps.replyTo.Load() != nil
	})
	free()
	task := waitTask(t, leader.testAgent, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	if inv := busStepOf(task, "invoice"); inv.GetAttempts() != 1 || inv.GetResultJson() != `{"invoice_id":"inv-1"}` {
		t.Errorf("invoice: %d attempts, result %s; want the old leader's attempt 1 completed by its reply", inv.GetAttempts(), inv.GetResultJson())
	}
}

// TestBusStepWithoutBus: a server without a bus stores a workflow with bus
// steps with a warning, and the steps wait saying why.
func TestBusStepWithoutBus(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	resp, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: busManifest}))
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(resp.Msg.GetWarnings(), "\n"); !strings.Contains(w, "steps[0] (line 10): transport: bus, but the leader has no service bus (-bus)") ||
		strings.Contains(w, "capability") {
		t.Errorf("warnings %q", w)
	}
	id := startBusTask(t, ta, "ok")
	waitFor(t, 10*time.Second, "the invoice step to say why it waits", func() bool {
		r, err := ta.wf.GetTask(context.Background(), connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		return err == nil && strings.Contains(busStepOf(r.Msg.GetTask(), "invoice").GetWaiting(), "start the servers with -bus")
	})
}

// TestBusSubjectRulesAgree: the manifest's subject rule is bus.ValidSubject
// (kept apart so that workflow has no I/O dependencies) plus the reserved
// tasker. prefix.
func TestBusSubjectRulesAgree(t *testing.T) {
	for _, s := range []string{"a", "a.b", "billing.invoice.create", "A-1.b_2", "tasker", "taskers.x", "tasker.events.x", "tasker.replies.1",
		"", ".", "a.", ".a", "a..b", "*", "a.*", "a.>", ">", "a.#", "a b", "a\tb", "a\nb", "ü.ö"} {
		want := bus.ValidSubject(s) == nil && !strings.HasPrefix(s, "tasker.")
		if got := workflow.CheckBusSubject(s) == nil; got != want {
			t.Errorf("subject %q: manifest accepts %v, bus rules and the tasker. prefix say %v", s, got, want)
		}
	}
}

// TestParseBusReply covers what a reply may look like and why one is
// dropped as malformed.
func TestParseBusReply(t *testing.T) {
	const id = "tsk_01abc/invoice/2"
	tests := []struct {
		name    string
		data    string
		headers map[string]string
		want    leaseKey
		result  string
		code    string
		err     string // "" parses
	}{
		{"result", `{"correlation_id":"` + id + `","result":{"a":1}}`, nil, leaseKey{"tsk_01abc", "invoice", 2}, `{"a":1}`, "", ""},
		{"id in the header", `{"result":{}}`, map[string]string{"Correlation_Id": id}, leaseKey{"tsk_01abc", "invoice", 2}, `{}`, "", ""},
		{"same id in both", `{"correlation_id":"` + id + `","result":{}}`, map[string]string{"correlation_id": id}, leaseKey{"tsk_01abc", "invoice", 2}, `{}`, "", ""},
		{"error", `{"correlation_id":"` + id + `","error":{"code":"busy","retryable":true,"retry_after_ms":5,"details":{"x":1}}}`, nil, leaseKey{"tsk_01abc", "invoice", 2}, "", "busy", ""},
		{"not JSON", `hello`, nil, leaseKey{}, "", "", "not a JSON object"},
		{"no id", `{"result":{}}`, nil, leaseKey{}, "", "", "no correlation_id"},
		{"ids disagree", `{"correlation_id":"` + id + `","result":{}}`, map[string]string{"correlation_id": "tsk_x/a/1"}, leaseKey{}, "", "", "in the header"},
		{"bad id", `{"correlation_id":"tsk_01abc/invoice","result":{}}`, nil, leaseKey{}, "", "", "is not <task id>/<step>/<attempt>"},
		{"bad attempt", `{"correlation_id":"tsk_01abc/invoice/0","result":{}}`, nil, leaseKey{}, "", "", "is not a number from 1"},
		{"bad task id", `{"correlation_id":"order-1/invoice/1","result":{}}`, nil, leaseKey{}, "", "", "is not <task id>"},
		{"both", `{"correlation_id":"` + id + `","result":{},"error":{"code":"x"}}`, nil, leaseKey{}, "", "", "both result and error"},
		{"neither", `{"correlation_id":"` + id + `"}`, nil, leaseKey{}, "", "", "neither result nor error"},
		{"negative retry_after", `{"correlation_id":"` + id + `","error":{"code":"x","retry_after_ms":-1}}`, nil, leaseKey{}, "", "", "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, k, err := parseBusReply(bus.Message{ID: "r1", Subject: "tasker.replies.x", Data: []byte(tt.data), Headers: tt.headers})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v; want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k != tt.want || string(r.Result) != tt.result || (r.Error != nil) != (tt.code != "") || (r.Error != nil && r.Error.Code != tt.code) {
				t.Errorf("parsed %+v result %s error %+v; want %+v %s %q", k, r.Result, r.Error, tt.want, tt.result, tt.code)
			}
		})
	}
}

// TestBusReplyDone: which failed commits of a reply acknowledge it, and
// which have the bus deliver it again.
func TestBusReplyDone(t *testing.T) {
	tests := []struct {
		err  error
		done bool
	}{
		{toConnect(fmt.Errorf("%w: old", consensus.ErrStaleAttempt)), true},
		{toConnect(fmt.Errorf("%w: done", consensus.ErrTaskEnded)), true},
		{toConnect(fmt.Errorf("%w: gone", consensus.ErrNotFound)), true},
		{invalid("result_json", "breaks the contract"), true},
		{toConnect(consensus.ErrNotLeader), false},
		{toConnect(consensus.ErrLeadershipLost), false},
		{toConnect(context.Canceled), false},
		{connect.NewError(connect.CodeDeadlineExceeded, errors.New("slow")), false},
		{errBusReplyNotLeader, false},
	}
	for _, tt := range tests {
		if got := busReplyDone(tt.err); got != tt.done {
			t.Errorf("busReplyDone(%v) = %v; want %v", tt.err, got, tt.done)
		}
	}
}
