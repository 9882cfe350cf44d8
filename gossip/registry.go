package gossip

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Status is a member's state as this agent sees it.
type Status string

const (
	// StatusAlive is a member that answers probes (or is suspected but not
	// yet confirmed dead: memberlist v0.5.4 does not report suspicion).
	StatusAlive Status = "alive"
	// StatusDead is a member that stopped answering and was declared dead.
	StatusDead Status = "dead"
	// StatusLeft is a member that left the cluster gracefully.
	StatusLeft Status = "left"
)

// Member is one agent of the cluster as this agent sees it.
type Member struct {
	// Name is the agent's name.
	Name string
	// Addr is the agent's gossip address, host:port.
	Addr string
	// Status is alive, dead or left.
	Status Status
	// Role is the agent's role; empty if its metadata could not be read.
	Role Role
	// RPCAddr is the agent's agent-to-agent RPC address.
	RPCAddr string
	// Version is the agent's software version.
	Version string
	// System is the agent's system label (Config.System), as its latest
	// catalog carried it; empty for an agent without one, or whose
	// catalog has not arrived yet. A member that failed or left keeps the
	// last label known.
	System string
	// Capabilities is the number of capabilities in the agent's catalog, as
	// its metadata announces it.
	Capabilities int
	// CatalogVersion is the version of the agent's catalog this agent holds;
	// 0 if none has arrived yet.
	CatalogVersion uint64
}

// Provider is an agent that offers a capability.
type Provider struct {
	// Agent is the agent's name.
	Agent string
	// RPCAddr is where to dispatch steps to it.
	RPCAddr string
	// Version is the capability's version on that agent.
	Version string
	// Description says what the capability does, as the agent's app put it.
	Description string
	// MaxConcurrency is the capability's declared concurrency limit on that
	// agent; 0 means none declared.
	MaxConcurrency int
	// System is the agent's system label, from the same catalog as the
	// capability; empty for an agent without one.
	System string
	// InputSchema and OutputSchema are the JSON Schemas the agent's app
	// advertises for the capability; nil when it advertises none. Shared:
	// do not modify.
	InputSchema, OutputSchema json.RawMessage
}

// EventType says what happened to a member.
type EventType string

const (
	// EventMemberJoined is a member that joined, or came back after failing or leaving.
	EventMemberJoined EventType = "member.joined"
	// EventMemberFailed is a member declared dead; its capabilities are withdrawn.
	EventMemberFailed EventType = "member.failed"
	// EventMemberLeft is a member that left gracefully; its capabilities are withdrawn.
	EventMemberLeft EventType = "member.left"
	// EventCatalogUpdated is a member whose catalog this agent received or
	// replaced: Providers may answer differently now.
	EventCatalogUpdated EventType = "catalog.updated"
)

// Event is one membership or catalog change.
type Event struct {
	// Type says what happened.
	Type EventType
	// Member is the member as it was just after the change.
	Member Member
}

// subscriberBuffer is the capacity of a Subscribe channel. Events that do
// not fit are dropped (counted by Registry.Dropped): the registry never
// waits for a subscriber.
const subscriberBuffer = 256

// reapAfter is how long a dead or left member stays listed by Members.
const reapAfter = time.Hour

// heldCatalog is a member's catalog as received.
type heldCatalog struct {
	version uint64
	system  string
	caps    []Capability
}

// memberRec is what the registry knows of one member.
type memberRec struct {
	name    string
	ip      net.IP
	port    uint16
	status  Status
	since   time.Time
	meta    nodeMeta
	metaOK  bool
	catalog *heldCatalog // nil until received; dropped when the member fails or leaves
	system  string       // the system label of the latest catalog; kept when the catalog is dropped
	// wanted is the highest catalog version announced (by metadata or a
	// notice) for this member; above catalog.version, a pull is due.
	wanted   uint64
	pulledAt time.Time // last pull request sent, zero if none pending
	// isLeaving is set by the member's leave intent: its capabilities are
	// withdrawn, and its departure is reported as left rather than failed.
	isLeaving bool
}

func (r *memberRec) member() Member {
	m := Member{
		Name:         r.name,
		Addr:         net.JoinHostPort(r.ip.String(), strconv.Itoa(int(r.port))),
		Status:       r.status,
		Role:         r.meta.role,
		RPCAddr:      r.meta.rpcAddr,
		Version:      r.meta.version,
		System:       r.system,
		Capabilities: r.meta.capCount,
	}
	if r.catalog != nil {
		m.CatalogVersion = r.catalog.version
	}
	return m
}

// Registry is the cluster's capability directory as this agent sees it:
// who is alive and which capabilities each alive agent offers. It is
// updated by membership events and catalog messages, and is safe for
// concurrent use. Providers is lock-free.
type Registry struct {
	mu      sync.Mutex
	members map[string]*memberRec
	subs    map[int]chan Event
	nextSub int
	closed  bool
	dropped atomic.Uint64

	// index maps a capability to its providers, sorted by agent name. It
	// is rebuilt on every change and read without locking.
	index atomic.Pointer[map[string][]Provider]
}

func newRegistry() *Registry {
	r := &Registry{members: map[string]*memberRec{}, subs: map[int]chan Event{}}
	r.index.Store(&map[string][]Provider{})
	return r
}

// Providers lists the alive agents whose catalog offers capability with
// Healthy set, sorted by agent name. The slice is the caller's.
func (r *Registry) Providers(capability string) []Provider {
	return slices.Clone((*r.index.Load())[capability])
}

// Catalog returns every offered capability with its providers, as
// Providers would list them. The map and slices are the caller's.
func (r *Registry) Catalog() map[string][]Provider {
	idx := *r.index.Load()
	out := make(map[string][]Provider, len(idx))
	for name, ps := range idx {
		out[name] = slices.Clone(ps)
	}
	return out
}

// Member returns the member called name, if this agent knows it.
func (r *Registry) Member(name string) (Member, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok {
		return Member{}, false
	}
	return rec.member(), true
}

// Members lists every member this agent knows, including dead and left
// ones for an hour, sorted by name.
func (r *Registry) Members() []Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Member, 0, len(r.members))
	for _, rec := range r.members {
		out = append(out, rec.member())
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Subscribe returns a channel of membership and catalog events and a
// function that ends the subscription. Delivery never blocks the registry:
// when the channel's buffer is full the event is dropped (see Dropped), so
// a subscriber that must not miss a change re-reads Members or Providers
// after it catches up. The channel is closed by cancel or by Shutdown.
func (r *Registry) Subscribe() (<-chan Event, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan Event, subscriberBuffer)
	if r.closed {
		close(ch)
		return ch, func() {}
	}
	id := r.nextSub
	r.nextSub++
	r.subs[id] = ch
	return ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if c, ok := r.subs[id]; ok {
			delete(r.subs, id)
			close(c)
		}
	}
}

// Dropped is the number of events dropped because a subscriber's buffer was full.
func (r *Registry) Dropped() uint64 { return r.dropped.Load() }

// emitLocked delivers ev to every subscriber without blocking. r.mu is held.
func (r *Registry) emitLocked(t EventType, rec *memberRec) {
	ev := Event{Type: t, Member: rec.member()}
	for _, ch := range r.subs {
		select {
		case ch <- ev:
		default:
			r.dropped.Add(1)
		}
	}
}

// close ends every subscription.
func (r *Registry) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, ch := range r.subs {
		delete(r.subs, id)
		close(ch)
	}
}

// rebuildLocked recomputes the provider index. r.mu is held.
func (r *Registry) rebuildLocked() {
	idx := map[string][]Provider{}
	for _, rec := range r.members {
		if rec.status != StatusAlive || rec.isLeaving || rec.catalog == nil {
			continue
		}
		for _, c := range rec.catalog.caps {
			if !c.Healthy {
				continue
			}
			idx[c.Name] = append(idx[c.Name], Provider{
				Agent: rec.name, RPCAddr: rec.meta.rpcAddr,
				Version: c.Version, Description: c.Description, MaxConcurrency: c.MaxConcurrency, System: rec.catalog.system,
				InputSchema: c.InputSchema, OutputSchema: c.OutputSchema,
			})
		}
	}
	for _, ps := range idx {
		slices.SortFunc(ps, func(a, b Provider) int { return strings.Compare(a.Agent, b.Agent) })
	}
	r.index.Store(&idx)
}

// nodeUp records a member that joined or whose address or metadata
// changed. It reports whether a catalog pull may be due.
func (r *Registry) nodeUp(name string, ip net.IP, port uint16, meta []byte, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok {
		rec = &memberRec{name: name}
		r.members[name] = rec
	}
	joined := rec.status != StatusAlive
	rec.ip, rec.port = slices.Clone(ip), port
	m, err := decodeMeta(meta)
	rec.meta, rec.metaOK = m, err == nil
	if joined {
		rec.status, rec.since, rec.pulledAt, rec.isLeaving = StatusAlive, now, time.Time{}, false
	}
	if rec.metaOK && m.catVersion > rec.wanted {
		rec.wanted = m.catVersion
	}
	if joined {
		r.emitLocked(EventMemberJoined, rec)
	}
	r.rebuildLocked() // RPC address may have changed
	return rec.catalog == nil || rec.wanted > rec.catalog.version
}

// nodeDown records a member that failed (dead) or, after its leave
// intent, left, and withdraws its catalog.
func (r *Registry) nodeDown(name string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok || rec.status != StatusAlive {
		return
	}
	status, t := StatusDead, EventMemberFailed
	if rec.isLeaving {
		status, t = StatusLeft, EventMemberLeft
	}
	rec.status, rec.since, rec.isLeaving = status, now, false
	rec.catalog, rec.wanted, rec.pulledAt = nil, 0, time.Time{}
	r.rebuildLocked()
	r.emitLocked(t, rec)
}

// leaving records a member's leave intent and withdraws its capabilities.
// It reports whether that is news, so the intent is worth passing on.
func (r *Registry) leaving(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok || rec.status != StatusAlive || rec.isLeaving {
		return false
	}
	rec.isLeaving = true
	r.rebuildLocked()
	return true
}

// announce records that name has catalog version v (from a notice). It
// reports whether that is news, so the notice is worth passing on.
func (r *Registry) announce(name string, v uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok || rec.status != StatusAlive || v <= rec.wanted {
		return false
	}
	rec.wanted = v
	return true
}

// applyCatalog stores a catalog received from its owner, with the owner's
// system label, if it is newer than the one held. Catalogs of unknown,
// dead or left members are ignored: the owner will be pulled again when
// it (re)joins.
func (r *Registry) applyCatalog(name string, version uint64, system string, caps []Capability) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok || rec.status != StatusAlive {
		return false
	}
	if rec.catalog != nil && version <= rec.catalog.version {
		return false
	}
	rec.catalog = &heldCatalog{version: version, system: system, caps: caps}
	rec.system = system
	if version > rec.wanted {
		rec.wanted = version
	}
	rec.pulledAt = time.Time{}
	r.rebuildLocked()
	r.emitLocked(EventCatalogUpdated, rec)
	return true
}

// pullTarget is a member whose catalog should be pulled.
type pullTarget struct {
	name string
	ip   net.IP
	port uint16
}

// duePulls lists the alive members (other than self) whose announced
// catalog is newer than the one held and that have no pull pending since
// less than retry ago, and marks them pending. only, when not empty,
// restricts the check to that member.
func (r *Registry) duePulls(self, only string, now time.Time, retry time.Duration) []pullTarget {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pullTarget
	check := func(rec *memberRec) {
		if rec.name == self || rec.status != StatusAlive || rec.wanted == 0 {
			return
		}
		if rec.catalog != nil && rec.catalog.version >= rec.wanted {
			return
		}
		if !rec.pulledAt.IsZero() && now.Sub(rec.pulledAt) < retry {
			return
		}
		rec.pulledAt = now
		out = append(out, pullTarget{name: rec.name, ip: rec.ip, port: rec.port})
	}
	if only != "" {
		if rec, ok := r.members[only]; ok {
			check(rec)
		}
		return out
	}
	for _, rec := range r.members {
		check(rec)
	}
	return out
}

// address returns where to reach an alive member.
func (r *Registry) address(name string) (pullTarget, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.members[name]
	if !ok || rec.status != StatusAlive {
		return pullTarget{}, false
	}
	return pullTarget{name: name, ip: rec.ip, port: rec.port}, true
}

// heldVersion is the version of name's catalog held, 0 if none.
func (r *Registry) heldVersion(name string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.members[name]; ok && rec.catalog != nil {
		return rec.catalog.version
	}
	return 0
}

// reap forgets members dead or left since before cutoff.
func (r *Registry) reap(cutoff time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, rec := range r.members {
		if rec.status != StatusAlive && rec.since.Before(cutoff) {
			delete(r.members, name)
		}
	}
}
