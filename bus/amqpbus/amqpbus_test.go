package amqpbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/amqpbus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/internal/brokers"
)

func newBus(srv *brokers.Server) func(testing.TB) bus.Bus {
	return func(t testing.TB) bus.Bus {
		b, err := amqpbus.New(context.Background(), amqpbus.Config{
			URL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", srv.Port), RetryDelay: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// TestRabbitMQ runs the suite against a rabbitmq-server node started for the
// test (about 5 s to boot, twice).
func TestRabbitMQ(t *testing.T) {
	srv := brokers.RabbitMQ(t)
	bustest.Run(t, bustest.Backend{New: newBus(srv), Stop: srv.Stop, Start: srv.Start, Wait: 60 * time.Second})
}

func BenchmarkPublish(b *testing.B) {
	srv := brokers.RabbitMQ(b)
	bustest.BenchmarkPublish(b, newBus(srv))
}
