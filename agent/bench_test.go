package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// noopWorker registers bench.noop and completes every step at once.
func noopWorker(ctx context.Context, tb testing.TB, ta *testAgent, concurrency int32) {
	if _, err := ta.wk.RegisterCapabilities(ctx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId: "noop", Capabilities: []*taskerv1.Capability{{Name: "bench.noop", MaxConcurrency: concurrency}},
	})); err != nil {
		tb.Fatal(err)
	}
	stream, err := ta.wk.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: "noop"}))
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for stream.Receive() {
			a := stream.Msg().GetAssignment()
			go func() {
				_, _ = ta.wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), ResultJson: "{}"}))
			}()
		}
	}()
}

// runTask starts a task and waits for it to complete by watching it.
func runTask(ctx context.Context, ta *testAgent, workflow string) error {
	res, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: workflow}))
	if err != nil {
		return err
	}
	stream, err := ta.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: res.Msg.GetTask().GetId()}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		if stream.Msg().GetTask().GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE {
			return nil
		}
	}
	return fmt.Errorf("watch ended before the task completed: %v", stream.Err())
}

// BenchmarkEndToEnd measures a whole task on one agent with no-op
// handlers: start → every step dispatched, executed by a pull worker and
// committed → complete, as seen by a watching client. Reports p50 and p99.
// Target: 4-step linear p50 < 10 ms.
func BenchmarkEndToEnd(b *testing.B) {
	for _, wf := range []string{"linear", "diamond"} {
		b.Run(wf, func(b *testing.B) {
			ta := benchAgent(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			noopWorker(ctx, b, ta, 64)
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				if err := runTask(ctx, ta, wf); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkEventPublishing is the cost of lifecycle events on the bus for
// the 4-step linear workflow: the same agent with the bus off and with the
// embedded NATS (every event appended to the outbox, published with a
// JetStream ack, and the cursor committed every second). serial is one
// task at a time (latency), parallel 32 starters (throughput).
func BenchmarkEventPublishing(b *testing.B) {
	for _, bus := range []string{"off", "embedded"} {
		for _, par := range []int{1, 32} {
			name := fmt.Sprintf("bus=%s/serial", bus)
			if par > 1 {
				name = fmt.Sprintf("bus=%s/parallel", bus)
			}
			b.Run(name, func(b *testing.B) {
				ta := benchAgent(b, func(c *Config) { c.Bus = bus })
				runLinear(b, ta, par)
				if ta.pub != nil {
					b.ReportMetric(float64(ta.pub.ob.Backlog()), "backlog-at-end")
				}
			})
		}
	}
}

// BenchmarkThroughput runs 4-step linear tasks from 32 concurrent starters
// and reports tasks per second at saturation.
func BenchmarkThroughput(b *testing.B) {
	runLinear(b, benchAgent(b), 32)
}

// runLinear runs b.N 4-step linear tasks on ta from par concurrent
// starters with a no-op worker, and reports tasks/s, p50 and p99.
func runLinear(b *testing.B, ta *testAgent, par int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	noopWorker(ctx, b, ta, 512)
	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := runTask(ctx, ta, "linear"); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
	reportPercentiles(b, lat)
}

func benchAgent(b *testing.B, mutate ...func(*Config)) *testAgent {
	b.Helper()
	// Production Raft timings and fsync: what a user gets.
	ta := startAgent(b, b.TempDir(), append([]func(*Config){func(c *Config) { c.Dev = false }}, mutate...)...)
	for _, f := range []string{"testdata/linear.yaml", "testdata/diamond.yaml"} {
		m, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(m)})); err != nil {
			b.Fatal(err)
		}
	}
	return ta
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
