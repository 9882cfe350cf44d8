package breaker

import (
	"context"
	"testing"
)

// BenchmarkDo measures Do's overhead on the success path of a closed
// breaker: lookup, breaker bookkeeping and the per-attempt timeout.
func BenchmarkDo(b *testing.B) {
	s, err := NewSet(Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Do(ctx, s, "agent-b/payments.charge", succeed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoNoTimeout is BenchmarkDo for a policy without a timeout.
func BenchmarkDoNoTimeout(b *testing.B) {
	p := DefaultPolicy()
	p.Timeout = 0
	s, err := NewSet(configFor(p))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Do(ctx, s, "agent-b", succeed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoParallel is BenchmarkDo from every core on one target, where
// the breaker's lock is shared.
func BenchmarkDoParallel(b *testing.B) {
	s, err := NewSet(Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := Do(ctx, s, "agent-b", succeed); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
