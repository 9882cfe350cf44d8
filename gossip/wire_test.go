package gossip

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMetaSizeLimit(t *testing.T) {
	if maxMetaSize > memberlist.MetaMaxSize {
		t.Fatalf("maxMetaSize = %d, over memberlist's %d", maxMetaSize, memberlist.MetaMaxSize)
	}
	m := nodeMeta{
		role:       RoleServer,
		rpcAddr:    strings.Repeat("h", MaxRPCAddrLen-6) + ":65535",
		version:    strings.Repeat("v", MaxVersionLen),
		catVersion: ^uint64(0),
		catHash:    ^uint64(0),
		capCount:   1 << 40,
	}
	cfg := testConfig(0)
	cfg.Name, cfg.RPCAddr, cfg.Version = strings.Repeat("n", MaxNameLen), m.rpcAddr, m.version
	if err := cfg.validate(); err != nil {
		t.Fatalf("longest valid config rejected: %v", err)
	}
	b := encodeMeta(m)
	if len(b) > maxMetaSize || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("encoded metadata is %d bytes, limits %d and %d", len(b), maxMetaSize, memberlist.MetaMaxSize)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("decodeMeta = %+v, %v; want %+v", got, err, m)
	}
	// A real node with the longest fields and a catalog starts and advertises.
	g := startNode(t, cfg)
	if err := g.SetCatalog(bigCatalog("x", 3, 10)); err != nil {
		t.Fatal(err)
	}
	if n := len((*delegate)(g).NodeMeta(memberlist.MetaMaxSize)); n == 0 || n > memberlist.MetaMaxSize {
		t.Fatalf("NodeMeta is %d bytes", n)
	}
	for i := range b {
		if _, err := decodeMeta(b[:i]); err == nil {
			t.Fatalf("decodeMeta accepted a %d-byte prefix", i)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		edit  func(*Config)
		field string
	}{
		{func(c *Config) { c.Name = "" }, "Name"},
		{func(c *Config) { c.Name = strings.Repeat("n", MaxNameLen+1) }, "Name"},
		{func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{func(c *Config) { c.AdvertiseAddr = "x" }, "AdvertiseAddr"},
		{func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort"},
		{func(c *Config) { c.Role = "leader" }, "Role"},
		{func(c *Config) { c.RPCAddr = "" }, "RPCAddr"},
		{func(c *Config) { c.RPCAddr = "nohost" }, "RPCAddr"},
		{func(c *Config) { c.RPCAddr = "h:0" }, "RPCAddr"},
		{func(c *Config) { c.RPCAddr = strings.Repeat("h", MaxRPCAddrLen) + ":1" }, "RPCAddr"},
		{func(c *Config) { c.Version = strings.Repeat("v", MaxVersionLen+1) }, "Version"},
		{func(c *Config) { c.EncryptKey = make([]byte, 20) }, "EncryptKey"},
		{func(c *Config) { c.System = "Payments" }, "System"},
		{func(c *Config) { c.System = "1payments" }, "System"},
		{func(c *Config) { c.System = "pay ments" }, "System"},
		{func(c *Config) { c.System = "p" + strings.Repeat("a", MaxSystemLen) }, "System"},
	}
	for _, tt := range tests {
		cfg := testConfig(0)
		tt.edit(&cfg)
		err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), "config "+tt.field+":") {
			t.Errorf("%s: validate() = %v", tt.field, err)
		}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted an invalid config", tt.field)
		}
	}
	for _, good := range []string{"", "p", "payments", "order-svc_2", "p" + strings.Repeat("a", MaxSystemLen-1)} {
		cfg := testConfig(0)
		cfg.System = good
		if err := cfg.validate(); err != nil {
			t.Errorf("System %q rejected: %v", good, err)
		}
	}
	cfg := testConfig(0)
	cfg.Name, cfg.Role = "", ""
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "Name") || !strings.Contains(err.Error(), "Role") {
		t.Errorf("validate() should report every problem, got %v", err)
	}
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateKey()
	if a == b {
		t.Fatal("two keys are equal")
	}
	key, err := DecodeKey(a)
	if err != nil || len(key) != 32 {
		t.Fatalf("DecodeKey = %d bytes, %v", len(key), err)
	}
	for _, bad := range []string{"not base64!", "AAAA"} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) succeeded", bad)
		}
	}
}

func TestNormalizeCatalog(t *testing.T) {
	a := []Capability{{Name: "b", InputSchema: []byte(`{ "type" : "object" }`)}, {Name: "a"}}
	b := []Capability{{Name: "a"}, {Name: "b", InputSchema: []byte(`{"type":"object"}`)}}
	na, err := normalizeCatalog(a)
	if err != nil {
		t.Fatal(err)
	}
	nb, _ := normalizeCatalog(b)
	if catalogHash(na) != catalogHash(nb) || na[0].Name != "a" {
		t.Fatal("equal catalogs in different order or spacing hash differently")
	}
	for _, bad := range [][]Capability{
		{{Name: ""}},
		{{Name: "x"}, {Name: "x"}},
		{{Name: "x", OutputSchema: []byte("{")}},
		{{Name: "x", MaxConcurrency: -1}},
	} {
		if _, err := normalizeCatalog(bad); !errors.Is(err, ErrInvalidCatalog) {
			t.Errorf("normalizeCatalog(%+v) = %v", bad, err)
		}
	}
}

func TestNoticeRoundTrip(t *testing.T) {
	n := notice{node: "agent-7", version: 1 << 50, hash: 42}
	got, err := decodeNotice(encodeNotice(n))
	if err != nil || got != n {
		t.Fatalf("decodeNotice = %+v, %v", got, err)
	}
	if _, err := decodeNotice([]byte{msgNotice, 1}); err == nil {
		t.Fatal("short notice accepted")
	}
	if _, err := decodeCatalog([]byte{msgCatalog, '{', '}'}); err == nil {
		t.Fatal("catalog without node accepted")
	}
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		in    string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection\n", slog.LevelDebug, "Stream connection"},
		{"[WARN] memberlist: Refuting", slog.LevelWarn, "Refuting"},
		{"[ERR] memberlist: Failed", slog.LevelError, "Failed"},
		{"[INFO] memberlist: Marking", slog.LevelInfo, "Marking"},
		{"plain line", slog.LevelInfo, "plain line"},
	}
	for _, tt := range tests {
		if level, msg := parseLogLine(tt.in); level != tt.level || msg != tt.msg {
			t.Errorf("parseLogLine(%q) = %v %q", tt.in, level, msg)
		}
	}
}

func TestRegistryEvents(t *testing.T) {
	r := newRegistry()
	events, cancel := r.Subscribe()
	now := time.Unix(0, 0)
	meta := encodeMeta(nodeMeta{role: RoleClient, rpcAddr: "h:1", catVersion: 5})
	if !r.nodeUp("b", net.IPv4(127, 0, 0, 1), 1, meta, now) {
		t.Fatal("a member with an announced catalog needs a pull")
	}
	if got := r.duePulls("a", "", now, time.Second); len(got) != 1 || got[0].name != "b" {
		t.Fatalf("duePulls = %+v", got)
	}
	if got := r.duePulls("a", "", now.Add(time.Millisecond), time.Second); len(got) != 0 {
		t.Fatalf("pull repeated before the retry time: %+v", got)
	}
	r.applyCatalog("b", 5, "", []Capability{{Name: "c", Healthy: true}})
	if r.applyCatalog("b", 4, "", nil) {
		t.Fatal("an older catalog replaced a newer one")
	}
	if got := r.Providers("c"); len(got) != 1 || got[0].RPCAddr != "h:1" {
		t.Fatalf("Providers = %+v", got)
	}
	r.nodeDown("b", now)
	if got := r.Providers("c"); len(got) != 0 {
		t.Fatalf("Providers after failure = %+v", got)
	}
	for _, want := range []EventType{EventMemberJoined, EventCatalogUpdated, EventMemberFailed} {
		if ev := <-events; ev.Type != want || ev.Member.Name != "b" {
			t.Fatalf("event = %+v, want %s", ev, want)
		}
	}
	// A full subscriber does not block the registry.
	for i := 0; i < subscriberBuffer+10; i++ {
		r.nodeUp("b", net.IPv4(127, 0, 0, 1), 1, meta, now)
		r.nodeDown("b", now)
	}
	if r.Dropped() == 0 {
		t.Fatal("no events dropped")
	}
	r.reap(now.Add(time.Second))
	if len(r.Members()) != 0 {
		t.Fatal("dead member not reaped")
	}
	cancel()
	cancel()
}

// TestCatalogSystemWire: the system label travels in the catalog message
// as "system", left out when empty, so that an unlabeled agent's catalog
// is byte for byte what agents before labels sent, and their catalogs
// (without it) decode as unlabeled.
func TestCatalogSystemWire(t *testing.T) {
	caps := []Capability{{Name: "payments.charge", Healthy: true}}
	b, err := encodeCatalog(catalogMsg{Node: "a", Version: 3, Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"node":"a","version":3,"caps":[{"name":"payments.charge","healthy":true}]}`; string(b[1:]) != want {
		t.Errorf("unlabeled catalog = %s, want %s", b[1:], want)
	}
	b, _ = encodeCatalog(catalogMsg{Node: "a", Version: 3, System: "payments", Caps: caps})
	if !strings.Contains(string(b), `"system":"payments"`) {
		t.Errorf("labeled catalog = %s, want a system field", b[1:])
	}
	if m, err := decodeCatalog(b); err != nil || m.System != "payments" || m.Version != 3 || len(m.Caps) != 1 {
		t.Errorf("decodeCatalog(labeled) = %+v, %v", m, err)
	}
	old := append([]byte{msgCatalog}, `{"node":"a","version":3,"caps":[{"name":"payments.charge","healthy":true}]}`...)
	if m, err := decodeCatalog(old); err != nil || m.System != "" || len(m.Caps) != 1 {
		t.Errorf("decodeCatalog(catalog of an agent before labels) = %+v, %v", m, err)
	}
}

// TestRegistrySystem: providers and members carry the label of the
// catalog that listed them; a catalog with a malformed label is refused
// whole (not taken as unlabeled, which would let the agent run any
// system's steps); a member that failed keeps its last label.
func TestRegistrySystem(t *testing.T) {
	g := &Gossip{cfg: Config{Name: "a"}, log: slog.New(slog.DiscardHandler), reg: newRegistry()}
	r := g.reg
	now := time.Unix(0, 0)
	r.nodeUp("b", net.IPv4(127, 0, 0, 1), 1, encodeMeta(nodeMeta{role: RoleClient, rpcAddr: "h:1", catVersion: 5}), now)
	bad, _ := encodeCatalog(catalogMsg{Node: "b", Version: 5, System: "Pay Ments", Caps: []Capability{{Name: "p.c", Healthy: true}}})
	g.receiveCatalog(bad)
	if got := r.Providers("p.c"); len(got) != 0 {
		t.Fatalf("a catalog with a malformed label was applied: %+v", got)
	}
	good, _ := encodeCatalog(catalogMsg{Node: "b", Version: 5, System: "payments", Caps: []Capability{{Name: "p.c", Healthy: true}}})
	g.receiveCatalog(good)
	if got := r.Providers("p.c"); len(got) != 1 || got[0].System != "payments" {
		t.Fatalf("Providers = %+v, want b of system payments", got)
	}
	if m := r.Members(); len(m) != 1 || m[0].System != "payments" {
		t.Fatalf("Members = %+v", m)
	}
	r.nodeDown("b", now)
	if m := r.Members(); len(m) != 1 || m[0].Status != StatusDead || m[0].System != "payments" {
		t.Fatalf("Members after failure = %+v, want b dead, still of system payments", m)
	}
}

// TestRegistryMember looks one member up by name, as forwarding does on
// every call.
func TestRegistryMember(t *testing.T) {
	g := startNode(t, testConfig(1))
	m, ok := g.Registry().Member(g.cfg.Name)
	if !ok || m.Name != g.cfg.Name || m.RPCAddr != g.cfg.RPCAddr || m.Status != StatusAlive {
		t.Fatalf("Member(self) = %+v, %v", m, ok)
	}
	if _, ok := g.Registry().Member("nobody"); ok {
		t.Fatal("Member(nobody) found someone")
	}
}
