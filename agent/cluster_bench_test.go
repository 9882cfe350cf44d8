package agent

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// benchCluster is three servers (Raft with fsync on every commit) and one
// client agent whose app offers bench.noop: every step crosses agents —
// the leader dispatches it to the client agent, whose app completes it at
// once, and the report is forwarded back to the leader.
func benchCluster(b *testing.B, concurrency int32) (client *testAgent, leader *testServer, cancel context.CancelFunc) {
	b.Helper()
	f := newFleet(b)
	ss := f.startServers(3, 3, nil)
	waitFor(b, 20*time.Second, "a leader of three voters", func() bool {
		l := leaderOf(ss)
		if l == nil {
			return false
		}
		peers, err := l.node.Peers()
		return err == nil && len(peers) == 3
	})
	leader = leaderOf(ss)
	var follower *testServer
	for _, s := range ss {
		if s != leader {
			follower = s
			break
		}
	}
	// The client joins a follower: nothing about the path is local to the leader.
	client = startClientAgent(b, "c1", follower.testAgent)
	ctx, cancel := context.WithCancel(context.Background())
	noopWorker(ctx, b, client, concurrency)
	waitFor(b, 20*time.Second, "the leader to see bench.noop on c1", func() bool {
		return len(leader.gossip.Registry().Providers("bench.noop")) > 0
	})
	m, err := os.ReadFile("testdata/linear.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := client.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(m)})); err != nil {
		b.Fatal(err)
	}
	return client, leader, cancel
}

// BenchmarkClusterStep measures the coordination overhead of one
// distributed step on a 3-server cluster on loopback with a no-op app:
// from the moment the step became ready (its parent's result committed)
// to the moment its own result is committed, on the leader's clock. It
// covers the dispatch commit, delivery to the client agent, the app's
// round trip, the forwarded report and its commit. Target: p50 < 10 ms.
// It also reports the whole 4-step task as a watching client sees it.
func BenchmarkClusterStep(b *testing.B) {
	client, _, cancel := benchCluster(b, 64)
	defer cancel()
	ctx := context.Background()
	var steps, tasks []time.Duration
	for b.Loop() {
		t0 := time.Now()
		id, err := runTaskID(ctx, client, "linear")
		if err != nil {
			b.Fatal(err)
		}
		tasks = append(tasks, time.Since(t0))
		got, err := client.wf.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range got.Msg.GetTask().GetSteps() {
			steps = append(steps, s.GetEndedAt().AsTime().Sub(s.GetReadyAt().AsTime()))
		}
	}
	reportPercentiles(b, steps)
	reportPercentilesAs(b, tasks, "task-")
}

// BenchmarkClusterThroughput runs 4-step linear tasks from 32 concurrent
// starters through the client agent and reports tasks per second.
func BenchmarkClusterThroughput(b *testing.B) {
	client, _, cancel := benchCluster(b, 512)
	defer cancel()
	ctx := context.Background()
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := runTaskID(ctx, client, "linear"); err != nil {
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
	reportPercentilesAs(b, lat, "task-")
}

// runTaskID is runTask that also returns the task's id.
func runTaskID(ctx context.Context, ta *testAgent, workflow string) (string, error) {
	res, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: workflow}))
	if err != nil {
		return "", err
	}
	id := res.Msg.GetTask().GetId()
	stream, err := ta.wf.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		return "", err
	}
	defer stream.Close()
	for stream.Receive() {
		if stream.Msg().GetTask().GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE {
			return id, nil
		}
	}
	return "", stream.Err()
}

// reportPercentilesAs reports p50 and p99 of lat under names starting with prefix.
func reportPercentilesAs(b *testing.B, lat []time.Duration, prefix string) {
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	pct := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), prefix+"p50-ms")
	b.ReportMetric(pct(0.99), prefix+"p99-ms")
}
