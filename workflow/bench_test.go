package workflow

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

var shapes = []struct {
	name  string
	build func(n int) *Manifest
}{
	{"chain", chainManifest},
	{"fanout", fanManifest},
	{"lattice", func(n int) *Manifest { return latticeManifest(n, 32) }},
}

// halfDone starts a task and completes steps in topological order until
// half are complete, so readiness has real work on both sides.
func halfDone(tb testing.TB, p *Plan) (*Runs, TaskRef, time.Time) {
	r := NewRuns()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	task, _ := r.Add(r.AddPlan(p), now, nil)
	for _, s := range p.Order()[:p.Len()/2] {
		if _, err := r.Dispatch(task, int(s), now); err != nil {
			tb.Fatal(err)
		}
		if _, err := r.Succeed(task, int(s), nil); err != nil {
			tb.Fatal(err)
		}
	}
	return r, task, now
}

// BenchmarkReadinessFull is the full recompute of one task's readiness
// (the recovery path). Target: < 100 µs at 1000 steps.
func BenchmarkReadinessFull(b *testing.B) {
	for _, sh := range shapes {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", sh.name, n), func(b *testing.B) {
				p := mustCompile(b, sh.build(n))
				r, task, now := halfDone(b, p)
				buf := make([]int32, 0, n)
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if buf, err = r.Recompute(task, now, buf[:0]); err != nil {
						b.Fatal(err)
					}
				}
				if len(buf) == 0 {
					b.Fatal("nothing ready half way through")
				}
			})
		}
	}
}

// BenchmarkIncremental is one step completion with the incremental update
// of its children's readiness (Dispatch + Succeed). Target: < 1 µs.
func BenchmarkIncremental(b *testing.B) {
	for _, sh := range shapes {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", sh.name, n), func(b *testing.B) {
				p := mustCompile(b, sh.build(n))
				r := NewRuns()
				ref := r.AddPlan(p)
				now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				queue := make([]int32, 0, n)
				task, queue := r.Add(ref, now, queue)
				b.ReportAllocs()
				for b.Loop() {
					if len(queue) == 0 {
						b.StopTimer()
						if err := r.Remove(task); err != nil {
							b.Fatal(err)
						}
						task, queue = r.Add(ref, now, queue[:0])
						b.StartTimer()
					}
					s := queue[len(queue)-1]
					queue = queue[:len(queue)-1]
					if _, err := r.Dispatch(task, int(s), now); err != nil {
						b.Fatal(err)
					}
					var err error
					if queue, err = r.Succeed(task, int(s), queue); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSchedulingStateMemory measures the heap held by the scheduling
// state of 10,000 active 5-step tasks, per task. Target: ≤ 100 B/task
// (< 1 MB per 10,000). Payloads (input, results) are not in Runs: they live
// in the replicated store. Plans are per workflow version, shared by tasks.
func BenchmarkSchedulingStateMemory(b *testing.B) {
	const tasks = 10000
	p := mustCompile(b, &Manifest{Name: "five", Version: "1.0.0", Steps: []Step{
		{Name: "validate", Capability: "orders.validate"},
		{Name: "reserve", Capability: "inventory.reserve", DependsOn: []string{"validate"}},
		{Name: "charge", Capability: "payments.charge", DependsOn: []string{"validate"}},
		{Name: "ship", Capability: "shipping.book", DependsOn: []string{"reserve", "charge"}},
		{Name: "notify", Capability: "notifications.email", DependsOn: []string{"ship"}},
	}})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var perTask float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := NewRuns()
		ref := r.AddPlan(p)
		buf := make([]int32, 0, 8)
		for range tasks {
			task, _ := r.Add(ref, now, buf[:0])
			// Some progress, so the state is that of active tasks.
			if _, err := r.Dispatch(task, 0, now); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if r.Len() != tasks {
			b.Fatalf("%d tasks, want %d", r.Len(), tasks)
		}
		perTask = float64(after.HeapAlloc-before.HeapAlloc) / tasks
		runtime.KeepAlive(r)
	}
	b.ReportMetric(perTask, "B/task")
	b.ReportMetric(perTask*tasks/1e6, "MB/10k-tasks")
}

// BenchmarkLoadExamples is parsing, validation and schema compilation of
// each example manifest: the cost of ApplyWorkflow before Raft.
func BenchmarkLoadExamples(b *testing.B) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) == 0 {
		b.Skip("no examples")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(f), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if _, err := Load(src, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
