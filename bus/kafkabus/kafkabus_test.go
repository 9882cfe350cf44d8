package kafkabus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/bus/kafkabus"
	"github.com/tasker-run/tasker/internal/brokers"
)

// fakeKafka is a kfake cluster on a fixed port that persists to a directory,
// so that it can be closed and started again with its topics, records and
// committed offsets: the outage of the suite.
type fakeKafka struct {
	mu   sync.Mutex
	c    *kfake.Cluster
	dir  string
	port int
}

func (f *fakeKafka) Start(t testing.TB) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(f.port), kfake.DataDir(f.dir),
		kfake.SeedTopics(1, "tasker"), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.c = c
	f.mu.Unlock()
}

func (f *fakeKafka) Stop(testing.TB) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c != nil {
		f.c.Close()
		f.c = nil
	}
}

func (f *fakeKafka) newBus(t testing.TB) bus.Bus {
	f.mu.Lock()
	addrs := f.c.ListenAddrs()
	f.mu.Unlock()
	b, err := kafkabus.New(context.Background(), kafkabus.Config{Brokers: addrs, RetryDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func start(t testing.TB) *fakeKafka {
	f := &fakeKafka{dir: t.TempDir(), port: brokers.FreePort(t)}
	f.Start(t)
	t.Cleanup(func() { f.Stop(t) })
	return f
}

// TestKafka runs the suite against franz-go's kfake cluster.
func TestKafka(t *testing.T) {
	f := start(t)
	bustest.Run(t, bustest.Backend{New: f.newBus, Stop: f.Stop, Start: f.Start})
}

func BenchmarkPublish(b *testing.B) {
	f := start(b)
	bustest.BenchmarkPublish(b, f.newBus)
}
