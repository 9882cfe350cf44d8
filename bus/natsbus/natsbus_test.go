package natsbus_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/bus/natsbus"
)

// TestNATS runs the suite against an embedded server that the test owns, so
// it can shut it down and start it again on the same port and store.
func TestNATS(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	srv, err := natsbus.RunServer(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	url := srv.ClientURL()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		srv.Shutdown()
	})
	bustest.Run(t, bustest.Backend{
		New: func(t testing.TB) bus.Bus {
			b, err := natsbus.New(context.Background(), natsbus.Config{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		Stop: func(t testing.TB) {
			mu.Lock()
			defer mu.Unlock()
			srv.Shutdown()
			srv.WaitForShutdown()
		},
		Start: func(t testing.TB) {
			s, err := natsbus.RunServer(dir, addr)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			srv = s
			mu.Unlock()
		},
	})
}

// TestEmbeddedDefault checks that a bus with no URL runs its own server.
func TestEmbeddedDefault(t *testing.T) {
	ctx := context.Background()
	b, err := natsbus.New(ctx, natsbus.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	col := bustest.NewCollector()
	if err := b.Subscribe(ctx, bus.DLQSubject, "dlq", col.Handle); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, bus.Message{ID: "1", Subject: bus.DLQSubject}); err != nil {
		t.Fatal(err)
	}
	col.WaitFor(t, []string{"1"}, bustest.DefaultWait)
}

func BenchmarkPublish(b *testing.B) {
	dir := b.TempDir()
	bustest.BenchmarkPublish(b, func(t testing.TB) bus.Bus {
		bb, err := natsbus.New(context.Background(), natsbus.Config{StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bb.Close() })
		return bb
	})
}
