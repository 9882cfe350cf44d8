package busurl_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/internal/brokers"
)

// roundTrip publishes one dead letter and reads it back.
func roundTrip(t *testing.T, b bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	col := bustest.NewCollector()
	if err := b.Subscribe(ctx, bus.DLQSubject, "busurl", col.Handle); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, bus.Message{ID: "dl-1", Subject: bus.DLQSubject, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	col.WaitFor(t, []string{"dl-1"}, bustest.DefaultWait)
}

func open(t *testing.T, u string) bus.Bus {
	t.Helper()
	b, err := busurl.Open(context.Background(), u, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestOpenEmbedded(t *testing.T) { roundTrip(t, open(t, "")) }

func TestOpenKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, open(t, "kafka://"+c.ListenAddrs()[0]+"?topic=events&partitions=2"))
}

func TestOpenRedis(t *testing.T) {
	srv := brokers.Redis(t)
	roundTrip(t, open(t, fmt.Sprintf("redis://127.0.0.1:%d/2?stream=ev", srv.Port)))
}

func TestOpenRejects(t *testing.T) {
	for _, u := range []string{"mqtt://x", "redis://127.0.0.1:1/notanumber", "kafka://h:1?partitions=x"} {
		if b, err := busurl.Open(context.Background(), u, t.TempDir(), nil); err == nil {
			b.Close()
			t.Errorf("Open(%q) accepted", u)
		}
	}
	if _, err := busurl.Open(context.Background(), "embedded", "", nil); err == nil {
		t.Error("embedded without a data directory accepted")
	}
}
