package gossip

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrShutdown is returned by methods called after Shutdown.
var ErrShutdown = errors.New("gossip: shut down")

// maxConcurrentSends bounds the TCP catalog transfers (pull requests and
// replies) in flight, so a burst of joins cannot open unbounded connections.
const maxConcurrentSends = 8

// Gossip is one agent's membership in the cluster: it advertises this
// agent's role, RPC address and capability catalog, learns everyone
// else's, and keeps a Registry of them.
type Gossip struct {
	localAddr string // host:port, fixed at New
	cfg       Config
	log       *slog.Logger
	ml        atomic.Pointer[memberlist.Memberlist]
	reg       *Registry
	queue     *memberlist.TransmitLimitedQueue
	retry     time.Duration
	interval  time.Duration

	mu      sync.Mutex // guards the local catalog below
	meta    []byte     // encoded node metadata
	catMsg  []byte     // encoded msgCatalog of the local catalog
	catVer  uint64
	catHash uint64

	wake     chan string   // member names to check for a due pull
	updMu    sync.Mutex    // serializes UpdateNode calls
	sends    chan struct{} // semaphore of maxConcurrentSends
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New validates cfg, starts listening and returns the agent's gossip
// membership, alone in its cluster until Join. The catalog is empty until
// SetCatalog.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gossip{
		cfg:      cfg,
		log:      logger.With("logger", "gossip"),
		reg:      newRegistry(),
		interval: cfg.syncInterval,
		wake:     make(chan string, 1024),
		sends:    make(chan struct{}, maxConcurrentSends),
		stop:     make(chan struct{}),
	}
	if g.interval <= 0 {
		g.interval = defaultSyncInterval
	}
	g.retry = 2 * g.interval
	g.meta = encodeMeta(nodeMeta{role: cfg.Role, rpcAddr: cfg.RPCAddr, version: cfg.Version})
	g.catMsg, _ = encodeCatalog(catalogMsg{Node: cfg.Name, System: cfg.System})

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	mc.Logger = log.New(&logWriter{l: logger.With("logger", "memberlist")}, "", 0)
	if len(cfg.EncryptKey) > 0 {
		kr, err := memberlist.NewKeyring(nil, cfg.EncryptKey)
		if err != nil {
			return nil, fmt.Errorf("gossip: config EncryptKey: %w", err)
		}
		mc.Keyring = kr
	}
	if cfg.Fast {
		FastTimings(mc)
	}
	if cfg.tune != nil {
		cfg.tune(mc)
	}
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       g.numNodes,
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s:%d: %w", mc.BindAddr, cfg.BindPort, err)
	}
	g.ml.Store(ml)
	// Our own member record (memberlist reported it during Create) shows
	// the label at once, as the empty catalog above does to others.
	g.reg.applyCatalog(cfg.Name, 0, cfg.System, nil)
	// Read once: memberlist rewrites the local node in place (without a
	// lock readers can take) whenever the metadata changes.
	n := ml.LocalNode()
	g.localAddr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g.wg.Add(1)
	go g.syncLoop()
	return g, nil
}

func (g *Gossip) numNodes() int {
	if ml := g.ml.Load(); ml != nil {
		return ml.NumMembers()
	}
	return 1
}

// Registry is the cluster's capability directory as this agent sees it.
func (g *Gossip) Registry() *Registry { return g.reg }

// Members lists every member this agent knows (see Registry.Members).
func (g *Gossip) Members() []Member { return g.reg.Members() }

// LocalAddr is the gossip address other agents join this one at, host:port.
func (g *Gossip) LocalAddr() string { return g.localAddr }

// Join contacts the agents at addrs (host or host:port; the port defaults
// to the local bind port) and merges their view of the cluster. It returns
// how many agents it reached; an error only when it reached none. A
// cancelled ctx returns at once; memberlist then finishes the attempt on
// its own, bounded by its TCP timeout.
func (g *Gossip) Join(ctx context.Context, addrs []string) (int, error) {
	if g.closed() {
		return 0, ErrShutdown
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	ml := g.ml.Load()
	go func() {
		n, err := ml.Join(addrs)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && r.n == 0 {
			return 0, fmt.Errorf("gossip: join %v: %w", addrs, r.err)
		}
		return r.n, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("gossip: join %v: %w", addrs, ctx.Err())
	}
}

// Leave announces that this agent leaves the cluster and waits up to
// timeout for the announcement to spread; other agents withdraw its
// capabilities at once and then report it as left, not failed. Call
// Shutdown afterwards.
//
// memberlist's own leave message looks like a failure to its event
// delegate (v0.5.4 does not expose the node state), so Leave first
// broadcasts a leave intent of ours, then leaves memberlist.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.closed() {
		return ErrShutdown
	}
	deadline := time.Now().Add(timeout)
	if g.numNodes() > 1 {
		b := &leaveBroadcast{msg: append([]byte{msgLeave}, g.cfg.Name...), done: make(chan struct{})}
		g.queue.QueueBroadcast(b)
		select {
		case <-b.done:
		case <-time.After(timeout / 2):
		}
	}
	if err := g.ml.Load().Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping at once, without telling anyone: other agents
// declare this one failed after their probes time out. It closes every
// Subscribe channel. Calling it again does nothing.
func (g *Gossip) Shutdown() error {
	var err error
	g.stopOnce.Do(func() {
		close(g.stop)
		err = g.ml.Load().Shutdown()
		g.wg.Wait()
		g.reg.close()
	})
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

func (g *Gossip) closed() bool {
	select {
	case <-g.stop:
		return true
	default:
		return false
	}
}

// SetCatalog publishes caps as this agent's catalog, replacing the previous
// one: the node metadata's digest changes at once, a notice is broadcast,
// and every agent pulls the body. Publishing the same catalog again does
// nothing. The slice is copied.
func (g *Gossip) SetCatalog(caps []Capability) error {
	if g.closed() {
		return ErrShutdown
	}
	norm, err := normalizeCatalog(caps)
	if err != nil {
		return err
	}
	hash := catalogHash(norm)

	g.mu.Lock()
	if g.catVer != 0 && hash == g.catHash {
		g.mu.Unlock()
		return nil
	}
	// The version orders this agent's catalogs, also across restarts under
	// the same name: the wall clock in microseconds, or one more than the
	// last version if the clock has not moved on.
	ver := max(g.catVer+1, uint64(time.Now().UnixMicro()))
	msg, err := encodeCatalog(catalogMsg{Node: g.cfg.Name, Version: ver, System: g.cfg.System, Caps: norm})
	if err != nil {
		g.mu.Unlock()
		return fmt.Errorf("gossip: encode catalog: %w", err)
	}
	g.catVer, g.catHash, g.catMsg = ver, hash, msg
	g.meta = encodeMeta(nodeMeta{
		role: g.cfg.Role, rpcAddr: g.cfg.RPCAddr, version: g.cfg.Version,
		catVersion: ver, catHash: hash, capCount: len(norm),
	})
	g.mu.Unlock()

	g.reg.applyCatalog(g.cfg.Name, ver, g.cfg.System, norm)
	g.queue.QueueBroadcast(&noticeBroadcast{node: g.cfg.Name, msg: encodeNotice(notice{node: g.cfg.Name, version: ver, hash: hash})})
	// UpdateNode queues the new metadata for gossip at once, then waits for
	// the broadcast to go out; we do not wait (the error is that timeout).
	// Updates are serialized so that the last one carries the newest metadata.
	g.updMu.Lock()
	_ = g.ml.Load().UpdateNode(time.Millisecond)
	g.updMu.Unlock()
	return nil
}

// syncLoop sends catalog pulls: for a member named on g.wake at once, and
// for every member each interval (anti-entropy, and the retry of pulls
// that got no answer).
func (g *Gossip) syncLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case name := <-g.wake:
			g.pull(g.reg.duePulls(g.cfg.Name, name, time.Now(), g.retry))
		case now := <-t.C:
			g.pull(g.reg.duePulls(g.cfg.Name, "", now, g.retry))
			g.reg.reap(now.Add(-reapAfter))
		}
	}
}

// check asks the sync loop to look at member name, without blocking.
func (g *Gossip) check(name string) {
	select {
	case g.wake <- name:
	default: // the periodic check will get there
	}
}

func (g *Gossip) pull(targets []pullTarget) {
	req := append([]byte{msgPull}, g.cfg.Name...)
	for _, t := range targets {
		g.send(t, req)
	}
}

// send delivers msg to t over TCP in the background, at most
// maxConcurrentSends at a time; when all are busy the message is dropped
// and the periodic check retries.
func (g *Gossip) send(t pullTarget, msg []byte) {
	select {
	case g.sends <- struct{}{}:
	default:
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer func() { <-g.sends }()
		node := &memberlist.Node{Name: t.name, Addr: t.ip, Port: t.port}
		if err := g.ml.Load().SendReliable(node, msg); err != nil && !g.closed() {
			g.log.Debug("catalog message not sent", "to", t.name, "type", msg[0], "err", err)
		}
	}()
}

// receiveCatalog applies a catalog message from its owner.
func (g *Gossip) receiveCatalog(b []byte) {
	m, err := decodeCatalog(b)
	if err != nil {
		g.log.Warn("ignoring catalog", "err", err)
		return
	}
	if m.Node == g.cfg.Name {
		return
	}
	norm, err := normalizeCatalog(m.Caps)
	if err != nil {
		g.log.Warn("ignoring catalog", "from", m.Node, "err", err)
		return
	}
	// A bad label is not dropped to "" (no label): an unlabeled agent may
	// run any system's steps, so the whole catalog is refused instead.
	if err := checkSystem(m.System); err != nil {
		g.log.Warn("ignoring catalog", "from", m.Node, "err", fmt.Errorf("%w: system label %w", ErrInvalidCatalog, err))
		return
	}
	if g.reg.applyCatalog(m.Node, m.Version, m.System, norm) {
		g.log.Debug("catalog received", "from", m.Node, "version", m.Version, "system", m.System, "capabilities", len(norm))
	}
}

// delegate is Gossip seen as a memberlist.Delegate.
type delegate Gossip

// NodeMeta returns the encoded metadata (at most maxMetaSize bytes).
func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit { // impossible for a validated Config
		d.log.Error("node metadata over the limit", "size", len(d.meta), "limit", limit)
		return nil
	}
	return d.meta
}

// NotifyMsg handles a user message. It does not block: catalog pulls and
// replies are sent in the background.
func (d *delegate) NotifyMsg(b []byte) {
	g := (*Gossip)(d)
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case msgNotice:
		n, err := decodeNotice(b)
		if err != nil || n.node == g.cfg.Name {
			return
		}
		if g.reg.announce(n.node, n.version) {
			// News: pass it on (epidemic spread) and pull the body.
			g.queue.QueueBroadcast(&noticeBroadcast{node: n.node, msg: append([]byte(nil), b...)})
			g.check(n.node)
		}
	case msgPull:
		from := string(b[1:])
		t, ok := g.reg.address(from)
		if !ok {
			return
		}
		g.mu.Lock()
		msg := g.catMsg
		g.mu.Unlock()
		g.send(t, msg)
	case msgCatalog:
		g.receiveCatalog(b)
	case msgLeave:
		if name := string(b[1:]); name != g.cfg.Name && g.reg.leaving(name) {
			g.queue.QueueBroadcast(&leaveBroadcast{msg: append([]byte(nil), b...)})
		}
	}
}

// GetBroadcasts hands memberlist the queued catalog notices.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState sends this agent's whole catalog in every push/pull exchange,
// so a joining agent and its seed swap catalogs at once, and any catalog
// missed otherwise arrives within one push/pull interval.
func (d *delegate) LocalState(bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.catMsg
}

// MergeRemoteState applies the catalog of the agent at the other end of a
// push/pull exchange.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	if len(b) > 0 {
		(*Gossip)(d).receiveCatalog(b)
	}
}

// events is Gossip seen as a memberlist.EventDelegate. memberlist calls it
// with its node lock held, so it copies what it needs and never blocks.
type events Gossip

// NotifyJoin records a member that joined (or came back).
func (e *events) NotifyJoin(n *memberlist.Node) { e.up(n) }

// NotifyUpdate records a member whose metadata or address changed.
func (e *events) NotifyUpdate(n *memberlist.Node) { e.up(n) }

func (e *events) up(n *memberlist.Node) {
	g := (*Gossip)(e)
	if g.reg.nodeUp(n.Name, n.Addr, n.Port, n.Meta, time.Now()) && n.Name != g.cfg.Name {
		g.check(n.Name)
	}
}

// NotifyLeave records a member that failed or left and withdraws its capabilities.
func (e *events) NotifyLeave(n *memberlist.Node) {
	(*Gossip)(e).reg.nodeDown(n.Name, time.Now())
}

// noticeBroadcast is a catalog notice in the transmit queue. A newer notice
// about the same agent replaces an older one still queued.
type noticeBroadcast struct {
	node string
	msg  []byte
}

func (b *noticeBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*noticeBroadcast)
	return ok && o.node == b.node
}
func (b *noticeBroadcast) Message() []byte { return b.msg }
func (b *noticeBroadcast) Finished()       {}

// leaveBroadcast is a leave intent in the transmit queue; done, if not
// nil, is closed when memberlist has sent it as often as it will.
type leaveBroadcast struct {
	msg  []byte
	done chan struct{}
}

func (b *leaveBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *leaveBroadcast) Message() []byte                       { return b.msg }
func (b *leaveBroadcast) Finished() {
	if b.done != nil {
		close(b.done)
	}
}

// FastTimings is what Config.Fast applies: gossip every 20 ms, probe every
// 100 ms, declare a silent member dead after a few missed probes.
func FastTimings(c *memberlist.Config) {
	c.GossipInterval = 20 * time.Millisecond
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 80 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.PushPullInterval = 500 * time.Millisecond
	c.TCPTimeout = 500 * time.Millisecond
	c.GossipToTheDeadTime = 2 * time.Second
	c.DeadNodeReclaimTime = time.Second
}
