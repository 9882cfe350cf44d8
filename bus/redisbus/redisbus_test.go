package redisbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/bus/redisbus"
	"github.com/tasker-run/tasker/internal/brokers"
)

func newBus(srv *brokers.Server) func(testing.TB) bus.Bus {
	return func(t testing.TB) bus.Bus {
		b, err := redisbus.New(context.Background(), redisbus.Config{
			Addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), RetryDelay: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// TestRedis runs the suite against a redis-server started for the test.
func TestRedis(t *testing.T) {
	srv := brokers.Redis(t)
	bustest.Run(t, bustest.Backend{New: newBus(srv), Stop: srv.Stop, Start: srv.Start})
}

func BenchmarkPublish(b *testing.B) {
	srv := brokers.Redis(b)
	bustest.BenchmarkPublish(b, newBus(srv))
}
