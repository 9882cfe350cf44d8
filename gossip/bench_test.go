package gossip

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkCatalogConvergence measures the time from SetCatalog on one
// node to every node holding that catalog (about 50 KB), in clusters of 3
// and 10 nodes with the test timings (gossip every 20 ms).
func BenchmarkCatalogConvergence(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := startCluster(b, n, nil)
			caps := bigCatalog("bench", 25, 1000)
			owner := nodes[0]
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				caps[0].Description = fmt.Sprint("change ", i)
				if err := owner.SetCatalog(caps); err != nil {
					b.Fatal(err)
				}
				want := owner.reg.heldVersion(owner.cfg.Name)
				waitAll(b, nodes[1:], owner.cfg.Name, want)
			}
		})
	}
}

// waitAll polls every millisecond until every node holds version want of
// owner's catalog.
func waitAll(b *testing.B, nodes []*Gossip, owner string, want uint64) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		behind := 0
		for _, g := range nodes {
			if g.reg.heldVersion(owner) != want {
				behind++
			}
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d nodes behind after 10s", behind)
		}
		time.Sleep(time.Millisecond)
	}
}
