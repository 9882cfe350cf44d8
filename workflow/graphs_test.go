package workflow

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Workflow shapes for property tests and benchmarks, built as manifests and
// compiled like any user's, so the benchmarks measure real plans.

// chainManifest: s0 → s1 → ... → s(n-1).
func chainManifest(n int) *Manifest {
	m := &Manifest{Name: "chain", Version: "1.0.0"}
	for i := range n {
		st := Step{Name: fmt.Sprintf("s%d", i), Capability: "bench.work"}
		if i > 0 {
			st.DependsOn = []string{fmt.Sprintf("s%d", i-1)}
		}
		m.Steps = append(m.Steps, st)
	}
	return m
}

// fanManifest: one split step, n-2 parallel steps, one merge step.
func fanManifest(n int) *Manifest {
	m := &Manifest{Name: "fan", Version: "1.0.0"}
	m.Steps = append(m.Steps, Step{Name: "split", Capability: "bench.work"})
	var shards []string
	for i := range n - 2 {
		name := fmt.Sprintf("shard%d", i)
		shards = append(shards, name)
		m.Steps = append(m.Steps, Step{Name: name, Capability: "bench.work", DependsOn: []string{"split"}})
	}
	m.Steps = append(m.Steps, Step{Name: "merge", Capability: "bench.work", DependsOn: shards})
	return m
}

// latticeManifest: layers of width w; each step depends on up to three
// steps of the layer above (left, same, right), like a build graph.
func latticeManifest(n, w int) *Manifest {
	m := &Manifest{Name: "lattice", Version: "1.0.0"}
	name := func(i int) string { return fmt.Sprintf("l%d_%d", i/w, i%w) }
	for i := range n {
		st := Step{Name: name(i), Capability: "bench.work"}
		if i >= w {
			col := i % w
			for d := -1; d <= 1; d++ {
				c := col + d
				if c >= 0 && c < w {
					st.DependsOn = append(st.DependsOn, name(i-w+d))
				}
			}
		}
		m.Steps = append(m.Steps, st)
	}
	return m
}

// randomManifest: n steps, each depending on earlier ones with probability
// p, with random retry policies.
func randomManifest(rng *rand.Rand, n int, p float64) *Manifest {
	m := &Manifest{Name: "random", Version: "1.0.0"}
	for i := range n {
		attempts := 1 + rng.IntN(4)
		mult := 1 + rng.Float64()*2
		jitter := rng.Float64() * 0.5
		st := Step{
			Name:       fmt.Sprintf("s%d", i),
			Capability: "prop.work",
			Retry: &RetrySpec{
				MaxAttempts: &attempts,
				Backoff:     &BackoffSpec{Initial: fmt.Sprintf("%dms", 1+rng.IntN(2000)), Max: "10s", Multiplier: &mult, Jitter: &jitter},
			},
		}
		for j := range i {
			if rng.Float64() < p {
				st.DependsOn = append(st.DependsOn, fmt.Sprintf("s%d", j))
			}
		}
		m.Steps = append(m.Steps, st)
	}
	return m
}

func mustCompile(tb testing.TB, m *Manifest) *Plan {
	tb.Helper()
	p, err := Compile(m, Limits{MaxSteps: 20000, MaxDepth: 20000})
	if err != nil {
		tb.Fatalf("compile %s: %v", m.Name, err)
	}
	return p
}
