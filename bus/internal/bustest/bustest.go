// Package bustest is the conformance suite every bus adapter runs against a
// real server: publish/consume, redelivery and the dead-letter subject, and
// an outage during which events go through the outbox and none is lost.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bus"
)

// DefaultWait bounds how long the suite waits for a delivery.
const DefaultWait = 30 * time.Second

// Backend describes the server under test.
type Backend struct {
	// New connects a bus to the server.
	New func(t testing.TB) bus.Bus
	// Stop and Start take the server down and bring it back with its data.
	// Without them the outage test is skipped.
	Stop, Start func(t testing.TB)
	// Wait bounds how long the suite waits for deliveries.
	Wait time.Duration
}

// Run runs the suite.
func Run(t *testing.T, be Backend) {
	if be.Wait == 0 {
		be.Wait = DefaultWait
	}
	t.Run("PublishSubscribe", func(t *testing.T) { testPublishSubscribe(t, be) })
	t.Run("DeadLetter", func(t *testing.T) { testDeadLetter(t, be) })
	t.Run("OutageThroughOutbox", func(t *testing.T) {
		if be.Stop == nil {
			t.Skip("backend cannot be stopped and restarted")
		}
		testOutage(t, be)
	})
}

// Collector records deliveries by ID.
type Collector struct {
	mu   sync.Mutex
	seen map[string]bus.Message
	n    map[string]int
	ch   chan struct{}
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{seen: map[string]bus.Message{}, n: map[string]int{}, ch: make(chan struct{}, 1)}
}

// Handle is a bus.Handler that records m and acknowledges it.
func (c *Collector) Handle(_ context.Context, m bus.Message) error {
	c.mu.Lock()
	c.seen[m.ID] = m
	c.n[m.ID]++
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

// WaitFor waits until every id has been delivered at least once.
func (c *Collector) WaitFor(t testing.TB, ids []string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		c.mu.Lock()
		var missing []string
		for _, id := range ids {
			if _, ok := c.seen[id]; !ok {
				missing = append(missing, id)
			}
		}
		c.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-c.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("after %v, %d of %d messages not delivered: %v", d, len(missing), len(ids), head(missing))
		}
	}
}

// Get returns the delivered message with id.
func (c *Collector) Get(id string) (bus.Message, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id], c.n[id]
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

func uniq() string { return fmt.Sprintf("t%d", time.Now().UnixNano()) }

func testPublishSubscribe(t *testing.T, be Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := be.New(t)
	u := uniq()
	col := NewCollector()
	if err := b.Subscribe(ctx, "tasker.events."+u+".>", "ps-"+u, col.Handle); err != nil {
		t.Fatal(err)
	}
	other := NewCollector()
	if err := b.Subscribe(ctx, "tasker.events."+u+".task.*", "ps-task-"+u, other.Handle); err != nil {
		t.Fatal(err)
	}
	var ids, taskIDs []string
	for i := range 20 {
		typ := "step.completed"
		if i%2 == 0 {
			typ = "task.created"
		}
		m := bus.Message{
			ID:      fmt.Sprintf("%s-%d", u, i),
			Subject: bus.EventSubject(u + "." + typ),
			Data:    []byte(fmt.Sprintf(`{"n":%d}`, i)),
			Headers: map[string]string{"trace-id": "abc", "type": typ},
		}
		if err := b.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
		if i%2 == 0 {
			taskIDs = append(taskIDs, m.ID)
		}
	}
	col.WaitFor(t, ids, be.Wait)
	other.WaitFor(t, taskIDs, be.Wait)
	got, _ := col.Get(u + "-3")
	if got.Subject != bus.EventSubject(u+".step.completed") || string(got.Data) != `{"n":3}` ||
		got.Headers["trace-id"] != "abc" || got.Headers["type"] != "step.completed" {
		t.Fatalf("message changed in transit: %+v", got)
	}
	for i := 1; i < 20; i += 2 {
		if _, n := other.Get(fmt.Sprintf("%s-%d", u, i)); n != 0 {
			t.Fatalf("pattern task.* received step event %s-%d", u, i)
		}
	}
}

// testDeadLetter: a consumer that cannot process a message sees it again
// (no ack means redelivery), gives up after three tries and publishes it to
// tasker.dlq, where a DLQ consumer receives it with the same ID.
func testDeadLetter(t *testing.T, be Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := be.New(t)
	u := uniq()
	var mu sync.Mutex
	tries := map[string]int{}
	handler := func(ctx context.Context, m bus.Message) error {
		mu.Lock()
		tries[m.ID]++
		n := tries[m.ID]
		mu.Unlock()
		if n < 3 {
			return errors.New("cannot process")
		}
		dl := bus.Message{ID: m.ID, Subject: bus.DLQSubject, Data: m.Data,
			Headers: map[string]string{"original-subject": m.Subject, "attempts": fmt.Sprint(n)}}
		return b.Publish(ctx, dl)
	}
	if err := b.Subscribe(ctx, "tasker.events."+u+".>", "dl-"+u, handler); err != nil {
		t.Fatal(err)
	}
	dlq := NewCollector()
	if err := b.Subscribe(ctx, bus.DLQSubject, "dlq-"+u, dlq.Handle); err != nil {
		t.Fatal(err)
	}
	id := u + "-poison"
	if err := b.Publish(ctx, bus.Message{ID: id, Subject: bus.EventSubject(u + ".step.failed"), Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	dlq.WaitFor(t, []string{id}, be.Wait)
	got, _ := dlq.Get(id)
	if got.Subject != bus.DLQSubject || got.Headers["original-subject"] != bus.EventSubject(u+".step.failed") ||
		got.Headers["attempts"] != "3" || string(got.Data) != "x" {
		t.Fatalf("dead letter: %+v", got)
	}
}

// testOutage publishes through the outbox while the server is down; every
// event must arrive after it comes back, and Append must never block.
func testOutage(t *testing.T, be Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := be.New(t)
	u := uniq()
	col := NewCollector()
	if err := b.Subscribe(ctx, "tasker.events."+u+".>", "out-"+u, col.Handle); err != nil {
		t.Fatal(err)
	}
	ob, err := bus.OpenOutbox(filepath.Join(t.TempDir(), "outbox.db"), b, bus.OutboxOptions{
		MaxBackoff: time.Second, PublishTimeout: 2 * time.Second, NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	runDone := make(chan struct{})
	rctx, stopRun := context.WithCancel(ctx)
	go func() { defer close(runDone); _ = ob.Run(rctx) }()
	defer func() { stopRun(); <-runDone }()

	var ids []string
	appendN := func(from, n int) {
		for i := from; i < from+n; i++ {
			m := bus.Message{ID: fmt.Sprintf("%s-%d", u, i), Subject: bus.EventSubject(u + ".step.completed"), Data: []byte{byte(i)}}
			start := time.Now()
			if err := ob.Append(ctx, m); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("Append took %v during an outage", d)
			}
			ids = append(ids, m.ID)
		}
	}
	appendN(0, 10)
	col.WaitFor(t, ids, be.Wait)

	be.Stop(t)
	appendN(10, 30)
	// Give the publisher loop time to fail against the dead server.
	time.Sleep(500 * time.Millisecond)
	if ob.Backlog() == 0 {
		t.Fatal("backlog drained while the server was down")
	}
	be.Start(t)
	col.WaitFor(t, ids, be.Wait)
	deadline := time.Now().Add(be.Wait)
	for ob.Backlog() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d after recovery", ob.Backlog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkPublish measures confirmed publishes, one at a time and from
// parallel goroutines.
func BenchmarkPublish(b *testing.B, newBus func(testing.TB) bus.Bus) {
	bb := newBus(b)
	payload := make([]byte, 256)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		u := uniq()
		b.SetBytes(int64(len(payload)))
		for i := 0; b.Loop(); i++ {
			if err := bb.Publish(ctx, bus.Message{ID: fmt.Sprintf("%s-%d", u, i), Subject: bus.EventSubject("bench.serial"), Data: payload}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("parallel", func(b *testing.B) {
		u := uniq()
		b.SetBytes(int64(len(payload)))
		var mu sync.Mutex
		n := 0
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				n++
				id := fmt.Sprintf("%s-%d", u, n)
				mu.Unlock()
				if err := bb.Publish(ctx, bus.Message{ID: id, Subject: bus.EventSubject("bench.parallel"), Data: payload}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
