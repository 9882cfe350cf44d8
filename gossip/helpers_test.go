package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fastTimings shortens memberlist's LAN timings so that failure detection
// and gossip take a fraction of a second on 127.0.0.1.
func fastTimings(c *memberlist.Config) { FastTimings(c) }

// testConfig is a valid Config for node i on 127.0.0.1 with a free port.
func testConfig(i int) Config {
	return Config{
		Name:         fmt.Sprintf("agent-%02d", i),
		BindAddr:     "127.0.0.1",
		Role:         RoleClient,
		RPCAddr:      fmt.Sprintf("127.0.0.1:%d", 17000+i),
		Version:      "test",
		tune:         fastTimings,
		syncInterval: 100 * time.Millisecond,
	}
}

// startNode starts a node and shuts it down at the end of the test.
func startNode(tb testing.TB, cfg Config) *Gossip {
	tb.Helper()
	g, err := New(cfg)
	if err != nil {
		tb.Fatalf("New(%s): %v", cfg.Name, err)
	}
	tb.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// startCluster starts n nodes, joins them all to the first and waits until
// every node sees n alive members.
func startCluster(tb testing.TB, n int, edit func(i int, c *Config)) []*Gossip {
	tb.Helper()
	nodes := make([]*Gossip, n)
	for i := range nodes {
		cfg := testConfig(i)
		if edit != nil {
			edit(i, &cfg)
		}
		nodes[i] = startNode(tb, cfg)
		if i > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := nodes[i].Join(ctx, []string{nodes[0].LocalAddr()})
			cancel()
			if err != nil {
				tb.Fatalf("join %s: %v", cfg.Name, err)
			}
		}
	}
	eventually(tb, 10*time.Second, "members converge", func() string {
		for _, g := range nodes {
			if got := aliveNames(g); len(got) != n {
				return fmt.Sprintf("%s sees %v", g.cfg.Name, got)
			}
		}
		return ""
	})
	return nodes
}

func aliveNames(g *Gossip) []string {
	var out []string
	for _, m := range g.Members() {
		if m.Status == StatusAlive {
			out = append(out, m.Name)
		}
	}
	return out
}

// eventually polls cond (which returns "" when satisfied, else what is
// still wrong) until it holds or the deadline passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %s", what, timeout, msg)
		}
		<-tick.C
	}
}

// bigCatalog makes n capabilities with schemas of about size bytes each.
func bigCatalog(prefix string, n, size int) []Capability {
	caps := make([]Capability, n)
	for i := range caps {
		props := map[string]any{}
		for j := 0; len(mustJSON(props)) < size; j++ {
			props[fmt.Sprintf("field_%03d", j)] = map[string]any{
				"type": "string", "description": strings.Repeat("x", 40), "maxLength": 64,
			}
		}
		schema := mustJSON(map[string]any{"type": "object", "properties": props})
		caps[i] = Capability{
			Name:           fmt.Sprintf("%s.cap%03d", prefix, i),
			Version:        "1.0.0",
			Description:    "capability " + fmt.Sprint(i),
			InputSchema:    schema,
			OutputSchema:   schema,
			MaxConcurrency: i%4 + 1,
			Healthy:        true,
		}
	}
	return caps
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// providerNames lists the agents g's registry offers for capability.
func providerNames(g *Gossip, capability string) []string {
	var out []string
	for _, p := range g.Registry().Providers(capability) {
		out = append(out, p.Agent)
	}
	return out
}

// sameEverywhere reports "" when every node answers want for capability.
func sameEverywhere(nodes []*Gossip, capability string, want []string) string {
	for _, g := range nodes {
		if got := providerNames(g, capability); !slices.Equal(got, want) {
			return fmt.Sprintf("%s: Providers(%q) = %v, want %v", g.cfg.Name, capability, got, want)
		}
	}
	return ""
}
