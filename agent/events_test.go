package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	sdkworker "github.com/tasker-run/tasker/sdk/go/worker"
)

// watched is what a WatchEvents stream sent.
type watched struct {
	events []*taskerv1.ClusterEvent
	ring   string
	gaps   []bool
}

func (w *watched) types() []string {
	var out []string
	for _, e := range w.events {
		out = append(out, e.GetType())
	}
	return out
}

// watchEvents reads a WatchEvents stream until it ends, n events came
// (n > 0), or the time is up.
func watchEvents(t *testing.T, ta *testAgent, req *taskerv1.WatchEventsRequest, n int) *watched {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := ta.wf.WatchEvents(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	defer stream.Close()
	w := &watched{}
	for (n == 0 || len(w.events) < n) && stream.Receive() {
		m := stream.Msg()
		w.events = append(w.events, m.GetEvent())
		w.gaps = append(w.gaps, m.GetGap())
		w.ring = m.GetRingId()
	}
	if err := stream.Err(); err != nil && (n == 0 || len(w.events) < n) {
		t.Fatalf("WatchEvents after %d events %v: %v", len(w.events), w.types(), err)
	}
	return w
}

func payload(t *testing.T, e *taskerv1.ClusterEvent) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.GetPayloadJson()), &m); err != nil {
		t.Fatalf("payload of %s: %v", e.GetId(), err)
	}
	return m
}

var raftID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// TestWatchEvents runs a task and watches the cluster's events: history,
// filters by type and task, resuming by id and by sequence, following,
// member and leader events, and a watch through a client agent.
func TestWatchEvents(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)})); err != nil {
		t.Fatal(err)
	}
	// A follower that asks for task ends only, from before the task on.
	ends := make(chan *watched, 1)
	from := &taskerv1.WatchEventsRequest{Types: []string{"task.completed"}, Follow: true, AfterSequence: ta.events.last(), RingId: ta.events.id}
	if from.AfterSequence == 0 {
		from.IncludeHistory = true
	}
	go func() { ends <- watchEvents(t, ta, from, 1) }()

	go (&pullWorker{}).run(ctx, t, ta, "w1", ok)
	start, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput}))
	if err != nil {
		t.Fatal(err)
	}
	id := start.Msg.GetTask().GetId()
	waitTask(t, ta, id, taskerv1.TaskState_TASK_STATE_COMPLETE)

	// The task's whole story, with the ids and payloads its history has.
	all := watchEvents(t, ta, &taskerv1.WatchEventsRequest{TaskId: id, IncludeHistory: true}, 0)
	hist, err := ta.state.Events(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.events) != len(hist) {
		t.Fatalf("watched %d events of the task, its history has %d: %v", len(all.events), len(hist), all.types())
	}
	for i, e := range all.events {
		h := hist[i]
		if e.GetId() != h.ID() || !raftID.MatchString(e.GetId()) || e.GetType() != h.Type || e.GetCorrelationId() != id || e.GetTraceId() != "" {
			t.Errorf("event %d: %s %s %s, want %s %s %s", i, e.GetId(), e.GetType(), e.GetCorrelationId(), h.ID(), h.Type, id)
		}
		if p := payload(t, e); fmt.Sprint(p["step"]) != fmt.Sprint(orEmpty(h.Step)) || p["sequence"] != float64(h.Seq) {
			t.Errorf("event %d payload %v, want step %q sequence %d", i, p, h.Step, h.Seq)
		}
		if !e.GetTime().AsTime().Equal(h.At) {
			t.Errorf("event %d at %v, want %v", i, e.GetTime().AsTime(), h.At)
		}
	}
	if got := all.types(); got[0] != "task.created" || got[len(got)-1] != "task.completed" {
		t.Errorf("task events %v: want task.created first and task.completed last", got)
	}

	// Filters: an exact type, and a prefix.
	done := watchEvents(t, ta, &taskerv1.WatchEventsRequest{Types: []string{"step.completed"}, TaskId: id, IncludeHistory: true}, 0)
	if len(done.events) != 5 {
		t.Errorf("step.completed events %v, want 5", done.types())
	}
	steps := watchEvents(t, ta, &taskerv1.WatchEventsRequest{Types: []string{"step.", "task.completed"}, TaskId: id, IncludeHistory: true}, 0)
	for _, typ := range steps.types() {
		if typ != "task.completed" && typ[:5] != "step." {
			t.Errorf("filter step. and task.completed let %s through", typ)
		}
	}
	if n := len(steps.events); n != len(all.events)-2 { // all but task.created and task.started
		t.Errorf("step. and task.completed: %d events of %d: %v", n, len(all.events), steps.types())
	}

	// Resume after the third event, by id and by sequence: the rest follows, no gap.
	byID := watchEvents(t, ta, &taskerv1.WatchEventsRequest{TaskId: id, AfterId: all.events[2].GetId()}, 0)
	bySeq := watchEvents(t, ta, &taskerv1.WatchEventsRequest{TaskId: id, AfterSequence: all.events[2].GetSequence(), RingId: all.ring}, 0)
	for name, w := range map[string]*watched{"id": byID, "sequence": bySeq} {
		if len(w.events) != len(all.events)-3 || w.events[0].GetId() != all.events[3].GetId() || w.gaps[0] {
			t.Errorf("resume by %s: %d events from %v (gap %v), want %d from %s", name, len(w.events), w.events[0].GetId(), w.gaps[0], len(all.events)-3, all.events[3].GetId())
		}
	}
	// A resume point the ring does not know (another leader's ring): a
	// gap, then everything the ring holds.
	other := watchEvents(t, ta, &taskerv1.WatchEventsRequest{TaskId: id, AfterSequence: 3, RingId: "rother"}, 0)
	if len(other.events) != len(all.events) || !other.gaps[0] || other.gaps[1] {
		t.Errorf("resume in another ring: %d events, gaps %v; want %d and a gap on the first", len(other.events), other.gaps, len(all.events))
	}

	// The follower saw the end of the task.
	select {
	case w := <-ends:
		if len(w.events) != 1 || w.events[0].GetCorrelationId() != id {
			t.Errorf("follower got %v", w.types())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower saw no task.completed")
	}

	// This server's election, and a client agent joining, are events too;
	// watched through the client agent, which forwards to the leader.
	c := startClientAgent(t, "c1", ta)
	var members *watched
	waitFor(t, 10*time.Second, "member.joined c1", func() bool {
		members = watchEvents(t, c, &taskerv1.WatchEventsRequest{Types: []string{"member.", "leader."}, IncludeHistory: true}, 0)
		for _, e := range members.events {
			if e.GetType() == "member.joined" && payload(t, e)["member"] == "c1" {
				return true
			}
		}
		return false
	})
	elected := false
	for _, e := range members.events {
		elected = elected || (e.GetType() == "leader.elected" && payload(t, e)["leader"] == "test")
		if e.GetCorrelationId() != "" || raftID.MatchString(e.GetId()) {
			t.Errorf("%s has correlation id %q and id %s: want none and a ring id", e.GetType(), e.GetCorrelationId(), e.GetId())
		}
	}
	if !elected {
		t.Errorf("no leader.elected of test in %v", members.types())
	}

	// A misspelt filter is refused, not silently matched against nothing.
	stream, err := ta.wf.WatchEvents(ctx, connect.NewRequest(&taskerv1.WatchEventsRequest{Types: []string{"step.complete"}}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("unknown type: %v, want invalid_argument", err)
	}
}

func orEmpty(s string) any {
	if s == "" {
		return "<nil>" // fmt of a missing key
	}
	return s
}

// TestWatchEventsBreakers: a breaker opening, half-opening and closing on
// the leader are events.
func TestWatchEventsBreakers(t *testing.T) {
	srv, _ := startDxServer(t)
	var failing atomic.Bool
	failing.Store(true)
	bad := startClientAgent(t, "bad", srv)
	runApp(t, bad, "bad-app", "dx.work", 4, func(ctx context.Context, s *sdkworker.Step) (any, error) {
		if failing.Load() {
			return nil, sdkworker.Retryable("unavailable", "the database is down", 0)
		}
		return map[string]string{"by": "bad"}, nil
	})
	waitProviders(t, srv, "dx.work", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := srv.wf.WatchEvents(ctx, connect.NewRequest(&taskerv1.WatchEventsRequest{Types: []string{"breaker."}, Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	ids := startDxTasks(t, srv, 3)
	var seen []string
	for stream.Receive() {
		e := stream.Msg().GetEvent()
		p := payload(t, e)
		if p["target"] != "bad/dx.work" {
			t.Errorf("%s for target %v", e.GetType(), p["target"])
		}
		seen = append(seen, e.GetType())
		if e.GetType() == "breaker.opened" {
			failing.Store(false)
		}
		if e.GetType() == "breaker.closed" {
			break
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("after %v: %v", seen, err)
	}
	if len(seen) < 3 || seen[0] != "breaker.opened" || seen[len(seen)-2] != "breaker.half_opened" {
		t.Errorf("breaker events %v, want opened, then half_opened and closed", seen)
	}
	waitComplete(t, srv, ids, 20*time.Second)
}

// TestEventRing: the ring keeps the newest events, tells a watcher that
// fell behind, and finds ids it holds.
func TestEventRing(t *testing.T) {
	r := newEventRing(4)
	for i := range 6 {
		r.add(ringEvent{typ: eventLeaderElected, id: fmt.Sprint("e", i+1)})
	}
	evs, lost, _ := r.since(0)
	if !lost || len(evs) != 4 || evs[0].seq != 3 || evs[3].seq != 6 || evs[0].id != "e3" {
		t.Fatalf("since 0: lost %v, %+v", lost, evs)
	}
	evs, lost, changed := r.since(4)
	if lost || len(evs) != 2 || evs[0].id != "e5" {
		t.Fatalf("since 4: lost %v, %+v", lost, evs)
	}
	if _, ok := r.find("e2"); ok {
		t.Error("found an overwritten event")
	}
	if s, ok := r.find("e4"); !ok || s != 4 {
		t.Errorf("find e4: %d %v", s, ok)
	}
	r.recordBreaker(breaker.StateChange{Target: "a/x", From: breaker.Closed, To: breaker.Open})
	select {
	case <-changed:
	default:
		t.Fatal("add woke no watcher")
	}
	evs, _, _ = r.since(6)
	if len(evs) != 1 || evs[0].typ != eventBreakerOpened || evs[0].id != r.id+".7" {
		t.Fatalf("breaker event %+v", evs)
	}
}

// TestEventFilter: exact types and prefixes, and unknown ones refused.
func TestEventFilter(t *testing.T) {
	f, err := newEventFilter([]string{"step.", "task.failed", "breaker.*"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]bool{"step.failed": true, "task.failed": true, "task.completed": false, "breaker.closed": true, "member.left": false} {
		if got := f.match(&ringEvent{typ: typ}); got != want {
			t.Errorf("%s: %v, want %v", typ, got, want)
		}
	}
	for _, bad := range []string{"", "step", "steps.", "task.complete"} {
		_, err := newEventFilter([]string{bad}, "")
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
			t.Errorf("%q: %v, want invalid_argument", bad, err)
		}
	}
}

// TestWatchEventsAcrossLeaderChange: every server gives a task event the
// same id, so a watcher of a crashed leader resumes on the new one after
// the last id it saw, without a gap; the new leader's election is an event.
func TestWatchEventsAcrossLeaderChange(t *testing.T) {
	f := newFleet(t)
	ss := f.startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	ctx := context.Background()
	// Just after bootstrap an election can still move leadership: a write
	// that reports it lost is retried, as a client would (the start with an
	// idempotency key, so a retry cannot start a second task).
	var err error
	waitFor(t, 10*time.Second, "the workflow applied", func() bool {
		_, err = leader.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: readExample(t)}))
		return err == nil
	})
	var start *connect.Response[taskerv1.StartTaskResponse]
	waitFor(t, 10*time.Second, "the task started", func() bool {
		start, err = leader.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{
			Namespace: "shop", Workflow: "order-fulfilment", InputJson: orderInput, IdempotencyKey: "leader-change",
		}))
		return err == nil
	})
	id := start.Msg.GetTask().GetId()
	before := watchEvents(t, leader.testAgent, &taskerv1.WatchEventsRequest{TaskId: id, IncludeHistory: true}, 0)
	if len(before.events) < 2 || before.events[0].GetType() != "task.created" {
		t.Fatalf("events of the task on the leader: %v", before.types())
	}
	created := before.events[0].GetId()
	rest := others(ss, leader)
	// Every server holds the event under the same id.
	waitFor(t, 10*time.Second, "every server to hold "+created, func() bool {
		for _, s := range rest {
			if _, ok := s.events.find(created); !ok {
				return false
			}
		}
		return true
	})

	crash(leader)
	var next *testServer
	waitFor(t, 15*time.Second, "a new leader", func() bool { next = leaderOf(rest); return next != nil })
	var after *watched
	waitFor(t, 10*time.Second, "the new leader to answer", func() bool {
		stream, err := next.wf.WatchEvents(ctx, connect.NewRequest(&taskerv1.WatchEventsRequest{TaskId: id, AfterId: created}))
		if err != nil {
			return false
		}
		defer stream.Close()
		after = &watched{}
		for stream.Receive() {
			after.events = append(after.events, stream.Msg().GetEvent())
			after.gaps = append(after.gaps, stream.Msg().GetGap())
		}
		return stream.Err() == nil
	})
	// The new leader may add events of its own (none are expected here):
	// the ones the old leader sent must come first, with the same ids.
	if len(after.events) < len(before.events)-1 || after.gaps[0] {
		t.Fatalf("resumed on %s after %s: %v (gaps %v), want the rest of %v without a gap", next.cfg.NodeName, created, after.types(), after.gaps, before.types())
	}
	for i, e := range after.events[:len(before.events)-1] {
		if e.GetId() != before.events[i+1].GetId() {
			t.Errorf("event %d: %s on the new leader, %s on the old", i+1, e.GetId(), before.events[i+1].GetId())
		}
	}
	elected := watchEvents(t, next.testAgent, &taskerv1.WatchEventsRequest{Types: []string{"leader.elected"}, IncludeHistory: true}, 0)
	if n := len(elected.events); n == 0 || payload(t, elected.events[n-1])["leader"] != next.cfg.NodeName {
		t.Errorf("leader.elected events on %s: %v", next.cfg.NodeName, elected.types())
	}
}

// TestEventTraceIDs: task events carry the trace id of the task's
// traceparent, when the leader knows it.
func TestEventTraceIDs(t *testing.T) {
	r := newEventRing(8)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r.recordTask([]consensus.Event{
		{TaskID: "t1", Type: consensus.EventTaskCreated, Index: 3, Position: 1},
		{TaskID: "t2", Type: consensus.EventTaskCreated, Index: 3, Position: 2},
	}, func(task string) string {
		if task == "t1" {
			return tp
		}
		return ""
	})
	r.recordTask([]consensus.Event{{TaskID: "t1", Type: consensus.EventStepReady, Index: 4, Position: 1}}, nil)
	evs, _, _ := r.since(0)
	var got []string
	for i := range evs {
		pe, err := pbClusterEvent(&evs[i])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pe.GetTraceId())
	}
	if want := []string{"4bf92f3577b34da6a3ce929d0e0e4736", "", ""}; !reflect.DeepEqual(got, want) {
		t.Errorf("trace ids %q, want %q", got, want)
	}
	for _, bad := range []string{"", "00-short-00f067aa0ba902b7-01", "nonsense"} {
		if id := traceID(bad); id != "" {
			t.Errorf("traceID(%q) = %q", bad, id)
		}
	}
}
