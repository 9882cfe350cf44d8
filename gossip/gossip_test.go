package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestMembersConverge(t *testing.T) {
	nodes := startCluster(t, 4, func(i int, c *Config) {
		if i == 0 {
			c.Role = RoleServer
		}
	})
	if err := nodes[2].SetCatalog(bigCatalog("svc", 3, 100)); err != nil {
		t.Fatal(err)
	}
	want := nodes[0].Members()
	eventually(t, 5*time.Second, "same member list everywhere", func() string {
		want = nodes[0].Members()
		for _, g := range nodes[1:] {
			if got := g.Members(); !reflect.DeepEqual(got, want) {
				return g.cfg.Name + " disagrees with agent-00"
			}
		}
		if want[2].Capabilities != 3 || want[2].CatalogVersion == 0 {
			return "agent-02's catalog not seen yet"
		}
		return ""
	})
	for i, m := range want {
		cfg := testConfig(i)
		wantRole := RoleClient
		if i == 0 {
			wantRole = RoleServer
		}
		if m.Name != cfg.Name || m.Status != StatusAlive || m.Role != wantRole ||
			m.RPCAddr != cfg.RPCAddr || m.Version != "test" || m.Addr != nodes[i].LocalAddr() {
			t.Errorf("member %d = %+v", i, m)
		}
	}
}

// TestSystemLabel: an agent's system label reaches every other agent with
// its catalog: its providers and its member record show it everywhere,
// an unlabeled agent's show none, and the label is there on the agent's
// own registry before it publishes a catalog.
func TestSystemLabel(t *testing.T) {
	nodes := startCluster(t, 3, func(i int, c *Config) {
		if i == 1 {
			c.System = "payments"
		}
	})
	for _, m := range nodes[1].Members() {
		if m.Name == "agent-01" && m.System != "payments" {
			t.Errorf("agent-01's own member record has system %q before any catalog, want payments", m.System)
		}
	}
	for _, i := range []int{1, 2} {
		if err := nodes[i].SetCatalog([]Capability{{Name: "payments.charge", Healthy: true}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "labels everywhere", func() string {
		for _, g := range nodes {
			ps := g.Registry().Providers("payments.charge")
			if len(ps) != 2 || ps[0].Agent != "agent-01" || ps[0].System != "payments" || ps[1].Agent != "agent-02" || ps[1].System != "" {
				return fmt.Sprintf("%s: Providers = %+v", g.cfg.Name, ps)
			}
			for _, m := range g.Members() {
				want := ""
				if m.Name == "agent-01" {
					want = "payments"
				}
				if m.System != want {
					return fmt.Sprintf("%s: member %s has system %q, want %q", g.cfg.Name, m.Name, m.System, want)
				}
			}
		}
		return ""
	})
}

func TestLargeCatalogReachesEveryNode(t *testing.T) {
	nodes := startCluster(t, 4, nil)
	caps := bigCatalog("orders", 25, 1000)
	if size := len(mustJSON(caps)); size < 50_000 {
		t.Fatalf("catalog is %d bytes, want a catalog of at least 50 KB", size)
	}
	shared := Capability{Name: "shared.echo", Version: "2", MaxConcurrency: 7, Healthy: true}
	if err := nodes[1].SetCatalog(append(caps, shared)); err != nil {
		t.Fatal(err)
	}
	if err := nodes[3].SetCatalog([]Capability{shared}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "catalogs everywhere", func() string {
		for _, c := range caps {
			if msg := sameEverywhere(nodes, c.Name, []string{"agent-01"}); msg != "" {
				return msg
			}
		}
		return sameEverywhere(nodes, "shared.echo", []string{"agent-01", "agent-03"})
	})
	want := nodes[0].Registry().Providers("orders.cap007")
	if len(want) != 1 || !reflect.DeepEqual(want[0], Provider{Agent: "agent-01", RPCAddr: "127.0.0.1:17001", Version: "1.0.0", Description: "capability 7", MaxConcurrency: 4,
		InputSchema: want[0].InputSchema, OutputSchema: want[0].OutputSchema}) || len(want[0].InputSchema) == 0 {
		t.Fatalf("Providers(orders.cap007) = %+v", want)
	}
	for _, g := range nodes {
		for _, c := range append(caps, shared) {
			if got, want := g.Registry().Providers(c.Name), nodes[0].Registry().Providers(c.Name); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: Providers(%s) = %+v, agent-00 says %+v", g.cfg.Name, c.Name, got, want)
			}
		}
	}
	// The schema bodies arrived intact.
	held := nodes[2].reg.members["agent-01"].catalog
	if held == nil || !json.Valid(held.caps[0].InputSchema) || len(held.caps[0].InputSchema) < 1000 {
		t.Fatal("agent-02 does not hold agent-01's schemas")
	}
}

func TestCatalogChangePropagates(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	v1 := []Capability{{Name: "a", Version: "1", Healthy: true}, {Name: "b", Version: "1", Healthy: true}}
	if err := nodes[0].SetCatalog(v1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "v1 everywhere", func() string { return sameEverywhere(nodes, "b", []string{"agent-00"}) })

	v2 := []Capability{{Name: "a", Version: "2", Healthy: true}, {Name: "c", Version: "1", Healthy: true}}
	if err := nodes[0].SetCatalog(v2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "v2 everywhere", func() string {
		if msg := sameEverywhere(nodes, "b", nil); msg != "" {
			return msg
		}
		if msg := sameEverywhere(nodes, "c", []string{"agent-00"}); msg != "" {
			return msg
		}
		for _, g := range nodes {
			if ps := g.Registry().Providers("a"); len(ps) != 1 || ps[0].Version != "2" {
				return g.cfg.Name + " still has a@1"
			}
		}
		return ""
	})
	// Publishing the same catalog again changes nothing.
	before := nodes[0].reg.heldVersion("agent-00")
	if err := nodes[0].SetCatalog(slices.Clone(v2)); err != nil {
		t.Fatal(err)
	}
	if after := nodes[0].reg.heldVersion("agent-00"); after != before {
		t.Fatalf("same catalog made a new version: %d -> %d", before, after)
	}
}

func TestLateJoinerGetsCatalogs(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	if err := nodes[1].SetCatalog([]Capability{{Name: "late", Healthy: true}}); err != nil {
		t.Fatal(err)
	}
	late := startNode(t, testConfig(2))
	if err := late.SetCatalog([]Capability{{Name: "late", Healthy: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Join(context.Background(), []string{nodes[0].LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	all := append(nodes, late)
	eventually(t, 5*time.Second, "late joiner converges", func() string {
		return sameEverywhere(all, "late", []string{"agent-01", "agent-02"})
	})
}

// waitEvent reads events until one of type typ about member arrives.
func waitEvent(t *testing.T, ch <-chan Event, typ EventType, member string) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed")
			}
			if ev.Type == typ && ev.Member.Name == member {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", typ, member)
		}
	}
}

func TestShutdownWithoutLeaveMarksDead(t *testing.T) {
	nodes := startCluster(t, 4, nil)
	for _, i := range []int{1, 3} {
		if err := nodes[i].SetCatalog([]Capability{{Name: "pay", Healthy: true}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "providers", func() string { return sameEverywhere(nodes, "pay", []string{"agent-01", "agent-03"}) })
	events, cancel := nodes[0].Registry().Subscribe()
	defer cancel()

	if err := nodes[3].Shutdown(); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, events, EventMemberFailed, "agent-03")
	if ev.Member.Status != StatusDead {
		t.Fatalf("event member = %+v", ev.Member)
	}
	live := nodes[:3]
	eventually(t, 10*time.Second, "agent-03 dead and withdrawn everywhere", func() string {
		for _, g := range live {
			for _, m := range g.Members() {
				if m.Name == "agent-03" && m.Status != StatusDead {
					return g.cfg.Name + " sees agent-03 " + string(m.Status)
				}
			}
		}
		return sameEverywhere(live, "pay", []string{"agent-01"})
	})
}

func TestLeaveMarksLeft(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	if err := nodes[2].SetCatalog([]Capability{{Name: "ship", Healthy: true}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "provider", func() string { return sameEverywhere(nodes, "ship", []string{"agent-02"}) })
	events, cancel := nodes[1].Registry().Subscribe()
	defer cancel()

	if err := nodes[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, EventMemberLeft, "agent-02")
	live := nodes[:2]
	eventually(t, 5*time.Second, "agent-02 left everywhere", func() string {
		for _, g := range live {
			for _, m := range g.Members() {
				if m.Name == "agent-02" && m.Status != StatusLeft {
					return g.cfg.Name + " sees agent-02 " + string(m.Status)
				}
			}
		}
		return sameEverywhere(live, "ship", nil)
	})
	if err := nodes[2].SetCatalog(nil); err != ErrShutdown {
		t.Fatalf("SetCatalog after Shutdown = %v, want ErrShutdown", err)
	}
}

func TestUnhealthyCapabilityWithdrawn(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	catalog := func(healthy bool) []Capability {
		return []Capability{{Name: "stock.reserve", Healthy: healthy}, {Name: "stock.release", Healthy: true}}
	}
	for _, i := range []int{0, 1} {
		if err := nodes[i].SetCatalog(catalog(true)); err != nil {
			t.Fatal(err)
		}
	}
	both := []string{"agent-00", "agent-01"}
	eventually(t, 5*time.Second, "both provide", func() string { return sameEverywhere(nodes, "stock.reserve", both) })

	if err := nodes[1].SetCatalog(catalog(false)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "unhealthy withdrawn", func() string {
		if msg := sameEverywhere(nodes, "stock.reserve", []string{"agent-00"}); msg != "" {
			return msg
		}
		return sameEverywhere(nodes, "stock.release", both)
	})
	if err := nodes[1].SetCatalog(catalog(true)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "healthy again", func() string { return sameEverywhere(nodes, "stock.reserve", both) })
}

func TestEncryptedCluster(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	nodes := startCluster(t, 3, func(_ int, c *Config) { c.EncryptKey = raw })
	if err := nodes[2].SetCatalog(bigCatalog("secret", 5, 2000)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "catalog over encrypted gossip", func() string {
		return sameEverywhere(nodes, "secret.cap004", []string{"agent-02"})
	})

	other, _ := GenerateKey()
	otherRaw, _ := DecodeKey(other)
	for i, k := range [][]byte{otherRaw, nil} {
		cfg := testConfig(10 + i)
		cfg.EncryptKey = k
		intruder := startNode(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := intruder.Join(ctx, []string{nodes[0].LocalAddr()})
		cancel()
		if err == nil || n != 0 {
			t.Fatalf("join with key %d: n=%d err=%v, want a failure", i, n, err)
		}
		for _, g := range nodes {
			if got := aliveNames(g); len(got) != 3 {
				t.Fatalf("%s sees %v after a join with the wrong key", g.cfg.Name, got)
			}
		}
		if err := intruder.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJoinCancelled(t *testing.T) {
	g := startNode(t, testConfig(0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Join(ctx, []string{"127.0.0.1:1"}); err == nil {
		t.Fatal("Join with a cancelled context succeeded")
	}
}
