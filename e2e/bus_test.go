package e2e

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/natsbus"
)

// TestBusEventsSurviveKill: with the bus down, a batch of orders completes
// (an outage never blocks workflows); the agent is then killed with
// SIGKILL, its outbox holding every event. The bus comes back, the agent
// restarts, and every task's task.completed reaches a consumer.
func TestBusEventsSurviveKill(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	natsDir := filepath.Join(t.TempDir(), "nats")
	var srv *server.Server
	startNATS := func() {
		s, err := natsbus.RunServer(natsDir, addr)
		if err != nil {
			t.Fatal(err)
		}
		srv = s
	}
	stopNATS := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	startNATS()
	url := "nats://" + addr
	t.Cleanup(func() { srv.Shutdown() })

	a := startAgent(t, agentConfig{dataDir: filepath.Join(t.TempDir(), "data"), configFile: "bus: " + url + "\n"})
	// A consumer group that exists before the outage, as a real one would.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumer, err := natsbus.New(ctx, natsbus.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var mu sync.Mutex
	completed := map[string]int{}
	if err := consumer.Subscribe(ctx, bus.EventSubject("task.completed"), "e2e", func(_ context.Context, m bus.Message) error {
		mu.Lock()
		completed[m.Headers["correlation_id"]]++
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	stopNATS()
	startServices(t, a.addr, []string{"-delay", "5ms-20ms"})
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), fastWorkflow(t, "2s")); err != nil {
		t.Fatal(err)
	}
	const n = 10
	b := startBatch(t, c, "bus", n)
	b.waitAllComplete(t, 60*time.Second)
	a.kill()

	startNATS()
	a.start()
	eventually(t, 30*time.Second, "task.completed of every task on the bus", func(context.Context) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range b.ids {
			if completed[id] == 0 {
				return false, nil
			}
		}
		return true, nil
	})
}
