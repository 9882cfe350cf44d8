package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/bus/natsbus"
	"github.com/tasker-run/tasker/internal/brokers"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// busInbox is a consumer of the events on a bus, as another system would
// run one.
type busInbox struct {
	mu   sync.Mutex
	msgs []bus.Message
}

func consume(t *testing.T, url, pattern string) *busInbox {
	t.Helper()
	b, err := natsbus.New(context.Background(), natsbus.Config{URL: url, NakDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return consumeOn(t, b, pattern)
}

// consumeOn subscribes to pattern on b, and closes b when the test ends.
func consumeOn(t *testing.T, b bus.Bus, pattern string) *busInbox {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = b.Close() })
	in := &busInbox{}
	err := b.Subscribe(ctx, pattern, "test-consumer", func(_ context.Context, m bus.Message) error {
		in.mu.Lock()
		in.msgs = append(in.msgs, m)
		in.mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// find returns the messages delivered whose subject is subj and whose
// correlation id is task ("" for any).
func (in *busInbox) find(subj, task string) []bus.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []bus.Message
	for _, m := range in.msgs {
		if m.Subject == subj && (task == "" || m.Headers["correlation_id"] == task) {
			out = append(out, m)
		}
	}
	return out
}

// ping is a one-step workflow; the step fails for good on its first error.
const ping = `name: ping
version: 1.0.0
steps:
  - name: ping
    capability: test.ping
    retry: {max_attempts: 1}
`

func natsURL(t *testing.T, ta *testAgent) string {
	t.Helper()
	nb, ok := ta.bus.(*natsbus.Bus)
	if !ok {
		t.Fatalf("bus is %T, want the embedded NATS", ta.bus)
	}
	return nb.ClientURL()
}

// A -dev agent publishes every lifecycle event of a task on its embedded
// NATS, with the event's stable id, and a step that fails for good on
// tasker.dlq too.
func TestEventsReachTheBus(t *testing.T) {
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = "" }) // -dev: embedded
	in := consume(t, natsURL(t, ta), "tasker.>")
	checkEventsAndDeadLetter(t, ta, in)
}

// otherBackends are the buses besides NATS, each a real broker started for
// the test that asks for its URL: missing brokers skip the test, or fail it
// with TASKER_REQUIRE_BROKERS set (internal/brokers).
func otherBackends() []struct {
	name string
	url  func(t *testing.T) string
} {
	return []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"redis", func(t *testing.T) string { return fmt.Sprintf("redis://127.0.0.1:%d", brokers.Redis(t).Port) }},
		{"rabbitmq", func(t *testing.T) string {
			return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", brokers.RabbitMQ(t).Port)
		}},
		{"kafka", func(t *testing.T) string {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			return "kafka://" + c.ListenAddrs()[0]
		}},
	}
}

// The same on every other backend, with a consumer on its own connection.
func TestEventsOnEveryBackend(t *testing.T) {
	for _, tt := range otherBackends() {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url(t)
			cb, err := busurl.Open(context.Background(), url, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			// Subscribed first: RabbitMQ drops what no queue is bound for.
			in := consumeOn(t, cb, "tasker.>")
			ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = url })
			checkEventsAndDeadLetter(t, ta, in)
		})
	}
}

// checkEventsAndDeadLetter runs a task whose second step fails for good
// and checks what in received: every lifecycle event, with its stable id
// and envelope, and the dead letter on tasker.dlq.
func checkEventsAndDeadLetter(t *testing.T, ta *testAgent, in *busInbox) {
	t.Helper()
	applyQuick(t, ta)
	p := newPoller(t, ta, "w1", "test.first", "test.second")
	id := startQuick(t, ta, "k1")
	if err := p.complete(p.next(), `{"id":"x"}`); err != nil {
		t.Fatal(err)
	}
	a := p.next()
	if _, err := ta.wk.FailStep(context.Background(), connect.NewRequest(&taskerv1.FailStepRequest{
		TaskId: id, Step: a.GetStep(), Attempt: a.GetAttempt(), Code: "declined", Message: "card declined",
	})); err != nil {
		t.Fatal(err)
	}
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_ERROR)

	var dead []bus.Message
	waitFor(t, 10*time.Second, "task.failed and the dead letter on the bus", func() bool {
		dead = in.find(bus.DLQSubject, id)
		return len(in.find("tasker.events.task.failed", id)) > 0 && len(dead) > 0
	})
	for _, typ := range []string{"task.created", "step.dispatched", "step.completed", "step.dead_lettered", "task.failed"} {
		ms := in.find(bus.EventSubject(typ), id)
		if len(ms) == 0 {
			t.Fatalf("no %s event for %s on the bus", typ, id)
		}
		var env envelope
		if err := json.Unmarshal(ms[0].Data, &env); err != nil {
			t.Fatalf("%s body: %v", typ, err)
		}
		if env.ID != ms[0].ID || env.Type != typ || env.CorrelationID != id || env.Time.IsZero() || env.Payload == nil {
			t.Fatalf("%s envelope %+v (message id %s)", typ, env, ms[0].ID)
		}
	}
	// The dead letter names the event it copies: tasker dlq show takes it.
	dl := in.find(bus.EventSubject("step.dead_lettered"), id)[0]
	if dead[0].Headers["dead_letter_id"] != dl.ID || dead[0].ID == dl.ID {
		t.Fatalf("dead letter %s headers %v; want dead_letter_id %s and an id of its own", dead[0].ID, dead[0].Headers, dl.ID)
	}
	// The ids are the ones WatchEvents gives: consumers de-duplicate on them.
	ws, err := ta.wf.WatchEvents(context.Background(), connect.NewRequest(&taskerv1.WatchEventsRequest{TaskId: id, IncludeHistory: true}))
	if err != nil {
		t.Fatal(err)
	}
	watched := map[string]bool{}
	for ws.Receive() {
		if e := ws.Msg().GetEvent(); e != nil {
			watched[e.GetId()] = true
		}
	}
	for _, m := range in.find(bus.EventSubject("step.completed"), id) {
		if !watched[m.ID] {
			t.Fatalf("bus id %s is not an id WatchEvents gave (%v)", m.ID, watched)
		}
	}
	waitFor(t, 5*time.Second, "the outbox to drain", func() bool { return ta.pub.ob.Backlog() == 0 })
}

// natsServer is a NATS server the test can stop and start again on the
// same port and store, as an operator's bus would go down and come back.
type natsServer struct {
	dir, addr string
	srv       *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	n := &natsServer{dir: filepath.Join(t.TempDir(), "nats"), addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	n.start(t)
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) url() string { return "nats://" + n.addr }

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	s, err := natsbus.RunServer(n.dir, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	n.srv = s
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func applyPing(t *testing.T, ta *testAgent) {
	t.Helper()
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: ping})); err != nil {
		t.Fatal(err)
	}
}

// pingWorker completes every test.ping step given to it through ta.
func pingWorker(t *testing.T, ta *testAgent) {
	p := newPoller(t, ta, "pinger", "test.ping")
	go func() {
		for {
			if !p.stream.Receive() {
				return
			}
			a := p.stream.Msg().GetAssignment()
			_, _ = ta.wk.CompleteStep(context.Background(), connect.NewRequest(&taskerv1.CompleteStepRequest{
				TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), ResultJson: `{}`,
			}))
		}
	}()
}

func startPings(t *testing.T, ta *testAgent, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		r, err := ta.wf.StartTask(context.Background(), connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "ping"}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Msg.GetTask().GetId())
	}
	return ids
}

func waitOnBus(t *testing.T, in *busInbox, typ string, ids []string, within time.Duration) {
	t.Helper()
	var missing []string
	waitFor(t, within, typ+" of every task on the bus", func() bool {
		missing = missing[:0]
		for _, id := range ids {
			if len(in.find(bus.EventSubject(typ), id)) == 0 {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	})
}

// A bus outage never blocks workflows: tasks finish while it is down, the
// outbox holds their events, on disk across a restart of the agent, and
// the bus gets every one of them once it is back.
func TestBusOutageLosesNothing(t *testing.T) {
	nats := startNATS(t)
	dir := t.TempDir()
	useNATS := func(c *Config) { c.Bus = nats.url() }
	ta := startAgent(t, dir, useNATS)
	in := consume(t, nats.url(), "tasker.events.>")
	applyPing(t, ta)
	pingWorker(t, ta)

	nats.stop()
	ids := startPings(t, ta, 5)
	for _, id := range ids {
		waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	}
	waitFor(t, 5*time.Second, "the events to wait in the outbox", func() bool { return ta.pub.ob.Backlog() > 0 })
	if err := ta.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	nats.start(t)
	tb := startAgent(t, dir, useNATS)
	waitOnBus(t, in, "task.completed", ids, 20*time.Second)
	waitFor(t, 5*time.Second, "the outbox to drain", func() bool { return tb.pub.ob.Backlog() == 0 })
}

// A leader that could not publish dies: the new leader publishes what the
// old one committed, from its own outbox.
func TestBusLeaderChangeLosesNothing(t *testing.T) {
	nats := startNATS(t)
	f := newFleet(t)
	useNATS := func(c *Config) { c.Bus = nats.url() }
	s1 := f.start("s1", 3, nil, nil, useNATS)
	s2 := f.start("s2", 3, s1, nil, useNATS)
	s3 := f.start("s3", 3, s1, nil, useNATS)
	ss := []*testServer{s1, s2, s3}
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	in := consume(t, nats.url(), "tasker.events.>")
	applyPing(t, leader.testAgent)
	worker := others(ss, leader)[0]
	pingWorker(t, worker.testAgent)

	nats.stop()
	ids := startPings(t, worker.testAgent, 5)
	for _, id := range ids {
		waitTask(t, worker.testAgent, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	}
	crash(leader)
	rest := others(ss, leader)
	waitFor(t, 10*time.Second, "a new leader", func() bool { return leaderOf(rest) != nil })
	nats.start(t)
	waitOnBus(t, in, "task.completed", ids, 20*time.Second)
	// Every server drops what the new leader's cursor covers.
	waitFor(t, 10*time.Second, "the outboxes to drain", func() bool {
		for _, s := range rest {
			if s.pub.ob.Backlog() != 0 {
				return false
			}
		}
		return true
	})
}

// The outbox is visible to operators: its backlog while the bus is down.
func TestOutboxMetrics(t *testing.T) {
	nats := startNATS(t)
	ta := startAgent(t, t.TempDir(), func(c *Config) { c.Bus = nats.url() })
	applyPing(t, ta)
	pingWorker(t, ta)
	nats.stop()
	id := startPings(t, ta, 1)[0]
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	scrape := func() string {
		resp, err := http.Get(ta.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	backlog := regexp.MustCompile(`(?m)^tasker_bus_outbox_backlog(_events)?(\{[^}]*\})? ([0-9.e+]+)$`)
	waitFor(t, 5*time.Second, "a backlog on /metrics", func() bool {
		m := backlog.FindStringSubmatch(scrape())
		return m != nil && m[3] != "0"
	})
	for _, name := range []string{"tasker_bus_outbox_dropped", "tasker_bus_published"} {
		if !strings.Contains(scrape(), name) {
			t.Fatalf("/metrics has no %s", name)
		}
	}
	nats.start(t)
	waitFor(t, 15*time.Second, "the backlog to drain on /metrics", func() bool {
		m := backlog.FindStringSubmatch(scrape())
		return m != nil && m[3] == "0"
	})
}
