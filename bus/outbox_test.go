package bus_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bus"
)

// flakyPublisher fails while down is set and records what it confirmed.
type flakyPublisher struct {
	down atomic.Bool
	mu   sync.Mutex
	got  []string
}

func (p *flakyPublisher) Publish(_ context.Context, m bus.Message) error {
	if p.down.Load() {
		return errors.New("bus down")
	}
	p.mu.Lock()
	p.got = append(p.got, m.ID)
	p.mu.Unlock()
	return nil
}

func (p *flakyPublisher) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

func msg(i int) bus.Message {
	return bus.Message{ID: fmt.Sprint(i), Subject: bus.EventSubject("step.completed"), Data: []byte{byte(i)}}
}

func TestOutboxBoundAndRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outbox.db")
	pub := &flakyPublisher{}
	pub.down.Store(true)
	var drops atomic.Int64
	ob, err := bus.OpenOutbox(path, pub, bus.OutboxOptions{MaxEvents: 5, OnDrop: func(bus.Message) { drops.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := ob.Append(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ob.Append(ctx, msg(5)); !errors.Is(err, bus.ErrOutboxFull) {
		t.Fatalf("append past the bound: %v, want ErrOutboxFull", err)
	}
	if ob.Backlog() != 5 || ob.Dropped() != 1 || drops.Load() != 1 {
		t.Fatalf("backlog %d dropped %d hook %d", ob.Backlog(), ob.Dropped(), drops.Load())
	}
	if err := ob.Append(ctx, bus.Message{Subject: "tasker.dlq"}); err == nil {
		t.Fatal("append without an ID accepted")
	}
	// The events survive a restart of the process.
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
	ob, err = bus.OpenOutbox(path, pub, bus.OutboxOptions{MaxEvents: 5, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if ob.Backlog() != 5 {
		t.Fatalf("backlog after reopen %d, want 5", ob.Backlog())
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ob.Run(runCtx) }()
	time.Sleep(50 * time.Millisecond) // a few failed attempts
	pub.down.Store(false)
	waitBacklog(t, ob, 0)
	if err := ob.Append(ctx, msg(6)); err != nil {
		t.Fatal(err)
	}
	waitBacklog(t, ob, 0)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	want := []string{"0", "1", "2", "3", "4", "6"}
	if got := pub.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v in order", got, want)
	}
}

func TestOutboxConcurrentAppendsRespectBound(t *testing.T) {
	ob, err := bus.OpenOutbox(filepath.Join(t.TempDir(), "outbox.db"), &flakyPublisher{}, bus.OutboxOptions{MaxEvents: 50, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := range 200 {
		wg.Go(func() {
			if ob.Append(context.Background(), msg(i)) == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 50 || ob.Backlog() != 50 || ob.Dropped() != 150 {
		t.Fatalf("accepted %d backlog %d dropped %d, want 50/50/150", ok.Load(), ob.Backlog(), ob.Dropped())
	}
}

func waitBacklog(t *testing.T, ob *bus.Outbox, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ob.Backlog() != n {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d, want %d", ob.Backlog(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func BenchmarkOutboxAppend(b *testing.B) {
	pub := &flakyPublisher{}
	pub.down.Store(true)
	ob, err := bus.OpenOutbox(filepath.Join(b.TempDir(), "outbox.db"), pub, bus.OutboxOptions{MaxEvents: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close()
	ctx := context.Background()
	var n atomic.Int64
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := ob.Append(ctx, msg(int(n.Add(1)))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := ob.Append(ctx, msg(int(n.Add(1)))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func keyed(index, pos uint64) bus.KeyedMessage {
	return bus.KeyedMessage{Key: bus.MakeKey(index, pos), Message: bus.Message{
		ID: fmt.Sprintf("%d-%d", index, pos), Subject: bus.EventSubject("step.completed"),
	}}
}

// Keyed appends are what the agent uses: replaying the log appends the same
// keys again and must not duplicate them, publishing follows key order, and
// another server's cursor trims what it confirmed.
func TestOutboxKeyed(t *testing.T) {
	ctx := context.Background()
	pub := &flakyPublisher{}
	pub.down.Store(true)
	var published [][]byte
	var mu sync.Mutex
	var drops atomic.Int64
	ob, err := bus.OpenOutbox(filepath.Join(t.TempDir(), "outbox.db"), pub, bus.OutboxOptions{
		MaxEvents: 6, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnDrop: func(bus.Message) { drops.Add(1) },
		OnPublished: func(keys [][]byte) {
			mu.Lock()
			published = append(published, keys...)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	// Out of order, then a replay of the same entries.
	for _, batch := range [][]bus.KeyedMessage{
		{keyed(3, 1), keyed(3, 2)},
		{keyed(1, 1), keyed(2, 1)},
		{keyed(1, 1), keyed(2, 1), keyed(3, 1)},
	} {
		if err := ob.AppendKeyed(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if ob.Backlog() != 4 {
		t.Fatalf("backlog %d after a replay, want 4", ob.Backlog())
	}
	// Trim what another leader confirmed: index ≤ 2 below position 100.
	if err := ob.AppendKeyed(ctx, []bus.KeyedMessage{keyed(2, 1<<62)}); err != nil {
		t.Fatal(err)
	}
	n, err := ob.TrimThrough(2, 100)
	if err != nil || n != 2 {
		t.Fatalf("TrimThrough(2) = %d, %v; want 2 trimmed", n, err)
	}
	// The bound: 3 held, 3 more fit, the 4th is refused and counted.
	err = ob.AppendKeyed(ctx, []bus.KeyedMessage{keyed(4, 1), keyed(4, 2), keyed(4, 3), keyed(4, 4)})
	if !errors.Is(err, bus.ErrOutboxFull) || drops.Load() != 1 || ob.Dropped() != 1 {
		t.Fatalf("append past the bound: err %v, drops %d/%d; want ErrOutboxFull and 1", err, drops.Load(), ob.Dropped())
	}
	pub.down.Store(false)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ob.Run(rctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for ob.Backlog() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	want := []string{"2-4611686018427387904", "3-1", "3-2", "4-1", "4-2", "4-3"}
	if got := pub.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v (key order, trimmed ones gone)", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(published) != len(want) {
		t.Fatalf("OnPublished saw %d keys, want %d", len(published), len(want))
	}
	if k, ok := bus.KeyOf(published[1]); !ok || k.Index() != 3 || k.Pos() != 1 {
		t.Fatalf("OnPublished key %x = (%d,%d), want (3,1)", published[1], k.Index(), k.Pos())
	}
}
