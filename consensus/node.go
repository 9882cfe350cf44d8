// Package consensus holds Tasker's workflow state in a Raft group.
//
// A [Node] is one server of the group: a small wrapper over hashicorp/raft
// with a BoltDB log and stable store (DataDir/raft.db), file snapshots
// (DataDir/snapshots) and a TCP transport. The caller supplies the raft.FSM
// (commands → workflow state) and drives the node:
//
//	n, err := consensus.Open(consensus.Config{
//		NodeID: "s1", DataDir: dir, BindAddr: "10.0.0.1:7423", Bootstrap: true,
//	}, fsm)
//	...
//	defer n.Shutdown()
//	resp, err := n.Apply(ctx, cmd) // on the leader; ErrNotLeader elsewhere
//
// Every write goes through Apply on the leader. A follower answers
// ErrNotLeader and [Node.Leader] says where to forward the write.
package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Production defaults for the zero values of Config. The timing ones are
// hashicorp/raft's (tuned for a LAN); the snapshot ones are Consul's,
// which checks more often than raft's two minutes so that a restart
// replays fewer entries.
const (
	defaultHeartbeatTimeout  = time.Second
	defaultCommitTimeout     = 50 * time.Millisecond
	defaultSnapshotInterval  = 30 * time.Second
	defaultSnapshotThreshold = 16384
	defaultTrailingLogs      = 10240
)

// Storage and transport settings. They are not configurable because the
// values Consul and Nomad run in production suit us too.
const (
	raftDBName         = "raft.db"
	logCacheSize       = 512 // recent entries kept in memory, so replication rarely reads BoltDB
	snapshotsRetained  = 2   // the newest plus one to fall back to if it is damaged
	transportMaxPool   = 3   // pooled connections per peer
	transportTimeout   = 10 * time.Second
	boltOpenTimeout    = time.Second // waiting for BoltDB's file lock; another process holds it
	restoreTempPattern = "restore-*.tmp"
)

// Errors a caller tests with errors.Is.
var (
	// ErrNotLeader: the operation must run on the leader and this node is
	// not it. Forward to the server [Node.Leader] names; when it names no
	// one, or this node itself (a leadership hand-over in progress), wait
	// briefly and retry. Nothing was written.
	ErrNotLeader = errors.New("not the leader")

	// ErrLeadershipLost: this node lost leadership while the command was in
	// flight. Its fate is unknown: it may still be committed by the next
	// leader. Retry only commands that are safe to apply twice (Tasker's
	// carry idempotency keys for that reason).
	ErrLeadershipLost = errors.New("leadership lost while committing; the command may or may not have been applied")

	// ErrShutdown: the node has been shut down.
	ErrShutdown = errors.New("node is shut down")
)

// Config configures a Node. Zero values of the tuning fields mean the
// production defaults; tests set short timeouts.
type Config struct {
	// NodeID uniquely identifies this server in the Raft group. It must
	// never change for a given DataDir.
	NodeID string

	// DataDir holds raft.db (BoltDB: the Raft log and its stable store) and
	// snapshots/. It is created with mode 0700 if missing.
	DataDir string

	// BindAddr is the host:port the Raft TCP transport listens on. Port 0
	// picks a free port (see [Node.Addr]); servers should use a fixed one,
	// because the cluster configuration records the address.
	BindAddr string

	// AdvertiseAddr is the host:port other servers reach this one at. It
	// defaults to BindAddr and is required when BindAddr listens on all
	// interfaces (0.0.0.0 or [::]).
	AdvertiseAddr string

	// Bootstrap forms a new one-server cluster, with this node as its only
	// voter, if DataDir holds no Raft state yet. With state present it does
	// nothing, so it is safe to leave on across restarts. Exactly one server
	// of a new cluster bootstraps; the others are added with AddVoter.
	Bootstrap bool

	// Logger receives raft's log, mapped to slog levels (trace is
	// slog.LevelDebug-4). Nil means slog.Default().
	Logger *slog.Logger

	// HeartbeatTimeout is how long a follower waits without hearing from the
	// leader before it starts an election. Default 1s.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes before trying
	// again. Default: HeartbeatTimeout.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum. Default: HeartbeatTimeout/2. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long an idle leader waits before sending a
	// heartbeat, which is also how late followers may learn of a commit.
	// Default 50ms.
	CommitTimeout time.Duration

	// SnapshotInterval is how often raft checks whether to snapshot (it
	// adds up to as much again of jitter). Default 30s.
	SnapshotInterval time.Duration
	// SnapshotThreshold is how many new log entries make a snapshot worth
	// taking at the next check. Default 16384.
	SnapshotThreshold uint64
	// TrailingLogs is how many log entries a snapshot leaves behind, so a
	// follower slightly behind can catch up from the log rather than a full
	// snapshot. Default 10240.
	TrailingLogs uint64
	// TLS, when set, makes the transport speak mutual TLS (tls.go); nil is
	// plaintext TCP.
	TLS *TLS
}

// Node is one server of Tasker's Raft group. Its methods are safe for
// concurrent use.
type Node struct {
	id      string
	dataDir string
	log     *slog.Logger
	raft    *raft.Raft
	store   *raftboltdb.BoltStore
	trans   *raft.NetworkTransport

	hadState bool // DataDir held Raft state when Open ran; see HadState
	// loggedCluster is the cluster id in the log DataDir held when Open
	// ran; see LoggedClusterID.
	loggedCluster string

	leaderCh      chan bool     // returned by LeadershipChanges; closed after shutdown
	closed        chan struct{} // closed once raft has stopped
	forwarderDone chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error
}

// Peer is one server in the cluster configuration.
type Peer struct {
	ID      string
	Address string
	Voter   bool // counts towards quorum; false for a non-voter
	Leader  bool // the leader, as far as this node knows
}

// Stats is a point-in-time view of this node's Raft state, for operators.
type Stats struct {
	State             string // "Leader", "Follower", "Candidate" or "Shutdown"
	Term              uint64
	LastIndex         uint64 // last entry in the log (or snapshot)
	CommitIndex       uint64 // last entry known to be committed
	AppliedIndex      uint64 // last entry handed to the FSM
	LastSnapshotIndex uint64
	// LastContact is the time since this node last heard from a leader:
	// zero on the leader, negative if it has never heard from one.
	LastContact time.Duration
}

// Open starts a Raft server over fsm with the state in cfg.DataDir,
// bootstrapping a one-server cluster if cfg.Bootstrap is set and there is
// no state yet. It validates cfg first and names the offending field.
//
// The FSM gets the latest snapshot at once; log entries after it are
// applied once this node learns the commit index, i.e. after a leader is
// elected. Call Shutdown when done.
func Open(cfg Config, fsm raft.FSM) (*Node, error) {
	if fsm == nil {
		return nil, errors.New("consensus: open: fsm is nil")
	}
	cfg, advertise, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("consensus: invalid config: %w", err)
	}
	logger := cfg.Logger
	hcl := newHCLogger(logger, "raft")

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: open: create DataDir: %w", err)
	}
	if fi, err := os.Stat(cfg.DataDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// An existing directory keeps its mode: the operator chose it. But
		// the log holds every workflow's inputs and results, so say so.
		logger.Warn("raft DataDir is readable by other users; 0700 is recommended", "data_dir", cfg.DataDir, "mode", fi.Mode().Perm().String())
	}
	removeStaleRestoreFiles(cfg.DataDir, logger)

	var undo []func() // cleanup on failure, most recent last
	fail := func(err error) (*Node, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, fmt.Errorf("consensus: open: %w", err)
	}

	// One BoltDB file serves as both log and stable store, as in Consul.
	// NoSync stays false: an entry is fsynced before raft counts it, so
	// nothing acknowledged is lost on kill -9 or power loss.
	dbPath := filepath.Join(cfg.DataDir, raftDBName)
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fail(fmt.Errorf("%s is locked: is another process using DataDir %s? %w", raftDBName, cfg.DataDir, err))
		}
		return fail(fmt.Errorf("open %s: %w", dbPath, err))
	}
	undo = append(undo, func() { _ = store.Close() })

	logs, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		return fail(fmt.Errorf("log cache: %w", err))
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, hcl.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("snapshot store: %w", err))
	}
	var adv net.Addr // stays a nil interface without AdvertiseAddr, so raft uses the bound address
	if advertise != nil {
		adv = advertise
	}
	var trans *raft.NetworkTransport
	if cfg.TLS != nil {
		var stream *tlsStream
		stream, err = newTLSStream(cfg.BindAddr, adv, cfg.TLS, logger.With("component", "raft-tls"))
		if err == nil {
			trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
				Stream: stream, MaxPool: transportMaxPool, Timeout: transportTimeout, Logger: hcl.Named("net"),
			})
		}
	} else {
		trans, err = raft.NewTCPTransportWithLogger(cfg.BindAddr, adv, transportMaxPool, transportTimeout, hcl.Named("net"))
	}
	if err != nil {
		return fail(fmt.Errorf("raft transport on BindAddr %s: %w", cfg.BindAddr, err))
	}
	undo = append(undo, func() { _ = trans.Close() })

	// raft blocks on NotifyCh until it is read, so a forwarder drains it
	// promptly and keeps only the latest value for the caller.
	notifyCh := make(chan bool, 1)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hcl
	rc.NotifyCh = notifyCh
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	// A removed server keeps running as a non-member instead of stopping
	// itself, so it can be added back without a restart (Consul and Nomad
	// do the same).
	rc.ShutdownOnRemove = false
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("raft config: %w", err)) // resolve checks the same rules; this is a backstop
	}

	// HasExistingState looks at the term, the log and the snapshots, so a
	// server that has ever been part of a cluster never bootstraps a
	// second, divergent one. The answer is kept for HadState.
	has, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fail(fmt.Errorf("check for existing state: %w", err))
	}
	if err := recoverFromPeersFile(cfg.DataDir, rc, fsm, logs, store, snaps, trans, has, logger); err != nil {
		return fail(err)
	}
	if cfg.Bootstrap {
		if has {
			logger.Info("raft state found; not bootstrapping", "node_id", cfg.NodeID, "data_dir", cfg.DataDir)
		} else {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logs, store, snaps, trans, conf); err != nil {
				return fail(fmt.Errorf("bootstrap: %w", err))
			}
			logger.Info("bootstrapped a new one-server raft cluster", "node_id", cfg.NodeID, "addr", trans.LocalAddr())
		}
	}

	logged := ""
	if has {
		logged = loggedClusterID(store)
	}

	r, err := raft.NewRaft(rc, fsm, logWrites{logs}, store, snaps, trans)
	if err != nil {
		return fail(fmt.Errorf("start raft: %w", err))
	}
	n := &Node{
		id:            cfg.NodeID,
		dataDir:       cfg.DataDir,
		log:           logger,
		raft:          r,
		store:         store,
		trans:         trans,
		hadState:      has,
		loggedCluster: logged,
		leaderCh:      make(chan bool, 1),
		closed:        make(chan struct{}),
		forwarderDone: make(chan struct{}),
	}
	go n.forwardLeadership(notifyCh)
	return n, nil
}

// resolve fills in defaults and validates, naming every offending field.
func (c Config) resolve() (Config, *net.TCPAddr, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.NodeID == "":
		bad("NodeID is required")
	case strings.TrimSpace(c.NodeID) != c.NodeID:
		bad("NodeID %q has leading or trailing space", c.NodeID)
	}
	if c.DataDir == "" {
		bad("DataDir is required")
	}

	var advertise *net.TCPAddr
	bindHost, _, bindErr := splitHostPort("BindAddr", c.BindAddr, true)
	if bindErr != nil {
		errs = append(errs, bindErr)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitHostPort("AdvertiseAddr", c.AdvertiseAddr, false); err != nil {
			errs = append(errs, err)
		} else if a, err := net.ResolveTCPAddr("tcp", c.AdvertiseAddr); err != nil {
			bad("AdvertiseAddr %q: %w", c.AdvertiseAddr, err)
		} else if a.IP == nil || a.IP.IsUnspecified() {
			bad("AdvertiseAddr %q must be an address other servers can reach, not a wildcard", c.AdvertiseAddr)
		} else {
			advertise = a
		}
	} else if bindErr == nil {
		if ip := net.ParseIP(bindHost); bindHost == "" || (ip != nil && ip.IsUnspecified()) {
			bad("AdvertiseAddr is required when BindAddr %q listens on all interfaces", c.BindAddr)
		}
	}

	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"HeartbeatTimeout", &c.HeartbeatTimeout, defaultHeartbeatTimeout},
		{"ElectionTimeout", &c.ElectionTimeout, 0},       // default derived below
		{"LeaderLeaseTimeout", &c.LeaderLeaseTimeout, 0}, // default derived below
		{"CommitTimeout", &c.CommitTimeout, defaultCommitTimeout},
		{"SnapshotInterval", &c.SnapshotInterval, defaultSnapshotInterval},
	}
	for _, d := range durations {
		if *d.v < 0 {
			bad("%s must not be negative (got %s)", d.name, *d.v)
			*d.v = 0
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	// Deriving these from HeartbeatTimeout keeps raft's own ratios, so
	// setting HeartbeatTimeout alone gives a valid configuration.
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = c.HeartbeatTimeout
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout / 2
	}
	// The same rules as raft.ValidateConfig, said with our field names.
	const floor = 5 * time.Millisecond
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"HeartbeatTimeout", c.HeartbeatTimeout, floor},
		{"ElectionTimeout", c.ElectionTimeout, floor},
		{"LeaderLeaseTimeout", c.LeaderLeaseTimeout, floor},
		{"CommitTimeout", c.CommitTimeout, time.Millisecond},
		{"SnapshotInterval", c.SnapshotInterval, floor},
	} {
		if d.v < d.min {
			bad("%s must be at least %s (got %s)", d.name, d.min, d.v)
		}
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout (%s) must be at least HeartbeatTimeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout (%s) must not exceed HeartbeatTimeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = defaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = defaultTrailingLogs
	}

	if len(errs) > 0 {
		return c, nil, joinConfigErrors(errs)
	}
	return c, advertise, nil
}

// splitHostPort checks a host:port setting. Port 0 is accepted only where
// the operating system may choose the port (a bind address).
func splitHostPort(field, addr string, allowZeroPort bool) (host string, port int, err error) {
	if addr == "" {
		return "", 0, fmt.Errorf("%s is required (host:port)", field)
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q is not host:port: %w", field, addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q has an invalid port", field, addr)
	}
	if port == 0 && !allowZeroPort {
		return "", 0, fmt.Errorf("%s %q needs a port other than 0", field, addr)
	}
	return host, port, nil
}

// joinConfigErrors makes one error that reads as one line and still matches
// every part with errors.Is.
func joinConfigErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &configErrors{msg: strings.Join(msgs, "; "), errs: errs}
}

type configErrors struct {
	msg  string
	errs []error
}

func (m *configErrors) Error() string   { return m.msg }
func (m *configErrors) Unwrap() []error { return m.errs }

// removeStaleRestoreFiles deletes spooled archives left by a RestoreSnapshot
// that was interrupted by a crash.
func removeStaleRestoreFiles(dir string, logger *slog.Logger) {
	stale, _ := filepath.Glob(filepath.Join(dir, restoreTempPattern))
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			logger.Warn("cannot remove stale snapshot restore file", "file", f, "err", err)
		}
	}
}

// forwardLeadership copies raft's leadership notifications to leaderCh,
// replacing an unread value, so raft never waits on a slow reader and the
// reader always sees the current state. It closes leaderCh once raft has
// stopped (raft sends nothing after that).
func (n *Node) forwardLeadership(from <-chan bool) {
	defer close(n.forwarderDone)
	defer close(n.leaderCh)
	for {
		select {
		case v := <-from:
			n.publishLeadership(v)
		case <-n.closed:
			select {
			case v := <-from:
				n.publishLeadership(v)
			default:
			}
			return
		}
	}
}

func (n *Node) publishLeadership(v bool) {
	if v {
		n.log.Info("raft: this node is now the leader", "node_id", n.id)
	} else {
		n.log.Info("raft: this node is no longer the leader", "node_id", n.id)
	}
	select {
	case n.leaderCh <- v:
	default:
		select { // the reader is behind: drop the stale value
		case <-n.leaderCh:
		default:
		}
		n.leaderCh <- v // the forwarder is the only sender, so there is room now
	}
}

// LeadershipChanges delivers true when this node becomes the leader and
// false when it stops being it. The channel holds only the latest value: a
// reader that falls behind sees the current state, not every transition.
// It is closed after Shutdown. Raft is never blocked by a slow reader.
func (n *Node) LeadershipChanges() <-chan bool { return n.leaderCh }

// Apply commits cmd through Raft and returns the FSM's response to it.
// A nil error means the command was committed and applied; an FSM that
// rejects a command reports that in its response, not here.
//
// Errors: ErrNotLeader (nothing written; forward to [Node.Leader]);
// ErrLeadershipLost (fate unknown); ErrShutdown; and ctx's error when ctx
// is done first: if raft had already accepted the command it may still be
// committed, so treat a timeout as "fate unknown" too.
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("consensus: apply: %w", err)
	}
	f := n.raft.Apply(cmd, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return nil, fmt.Errorf("consensus: apply: %w", err)
	}
	return f.Response(), nil
}

// Barrier returns once every command committed before it has been applied
// to this node's FSM. Use it on a new leader before reading the FSM for
// decisions. It runs on the leader only (ErrNotLeader elsewhere).
func (n *Node) Barrier(ctx context.Context) error {
	if err := n.barrier(ctx); err != nil {
		return fmt.Errorf("consensus: barrier: %w", err)
	}
	return nil
}

func (n *Node) barrier(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.wait(ctx, n.raft.Barrier(enqueueTimeout(ctx)))
}

// IsLeader reports whether this node currently believes it is the leader.
// Another node may already have replaced it; Apply is the authority.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the ID and address of the leader as this node knows it,
// or empty strings if it knows none.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Addr returns the address other servers reach this node at: AdvertiseAddr,
// or the address the transport is bound to (with the port chosen by the
// system when BindAddr's port was 0).
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// Peers returns the servers in the latest cluster configuration (which may
// not be committed yet).
func (n *Node) Peers() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("consensus: peers: %w", n.translate(err))
	}
	_, leaderID := n.raft.LeaderWithID()
	servers := f.Configuration().Servers
	peers := make([]Peer, len(servers))
	for i, s := range servers {
		peers[i] = Peer{
			ID:      string(s.ID),
			Address: string(s.Address),
			Voter:   s.Suffrage == raft.Voter,
			Leader:  s.ID == leaderID,
		}
	}
	return peers, nil
}

// Stats returns this node's Raft indexes and state.
func (n *Node) Stats() Stats {
	state := n.raft.State()
	s := Stats{
		State:        state.String(),
		Term:         n.raft.CurrentTerm(),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
	}
	// raft exposes the last snapshot only through its string map.
	s.LastSnapshotIndex, _ = strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	switch last := n.raft.LastContact(); {
	case state == raft.Leader:
	case last.IsZero():
		s.LastContact = -1
	default:
		s.LastContact = time.Since(last)
	}
	return s
}

// AddVoter adds the server id at addr to the cluster as a voter, or updates
// its address if it is already a member. It runs on the leader and returns
// once the new configuration is committed.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("consensus: add voter: id and address are required (got %q, %q)", id, addr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: add voter %s: %w", id, err)
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("consensus: add voter %s at %s: %w", id, addr, err)
	}
	return nil
}

// RemoveServer removes the server id from the cluster. It runs on the
// leader and returns once the new configuration is committed. Removing the
// leader itself makes it step down once the change is committed.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("consensus: remove server: id is required")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: remove server %s: %w", id, err)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("consensus: remove server %s: %w", id, err)
	}
	return nil
}

// Shutdown stops raft, waits for its goroutines, closes the transport and
// raft.db. It is idempotent; every call returns the first call's result.
// It does not hand leadership over: the others elect a new leader after
// HeartbeatTimeout.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("stop raft: %w", err))
		}
		// raft closes the listener; also drop pooled and inbound connections
		// so peers see us go at once.
		_ = n.trans.Close()
		n.trans.CloseStreams()
		close(n.closed)
		<-n.forwarderDone
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", raftDBName, err))
		}
		if len(errs) > 0 {
			n.shutdownErr = fmt.Errorf("consensus: shutdown: %w", errors.Join(errs...))
		}
	})
	return n.shutdownErr
}

// enqueueTimeout turns ctx's deadline into raft's timeout for handing an
// operation to its main loop (zero: wait as long as it takes).
func enqueueTimeout(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	if t := time.Until(d); t > 0 {
		return t
	}
	return time.Nanosecond // already past: fail at once rather than wait forever
}

// wait waits for f, for ctx, or for the node to stop, whichever is first.
// raft futures cannot be cancelled, so an abandoned one is left to finish
// on its own goroutine (the channel is buffered so that goroutine ends).
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.translate(err)
	case <-ctx.Done():
		return fmt.Errorf("%w (raft may still complete the operation)", ctx.Err())
	case <-n.closed:
		return ErrShutdown
	}
}

// translate maps raft's errors to this package's sentinels.
func (n *Node) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader("")
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader("leadership transfer in progress")
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	case errors.As(err, new(*logWriteError)):
		// Only a leader's own write of new entries fails a future this
		// way: raft steps down at once, before anything was sent to the
		// followers, so the command was not written anywhere and the
		// caller can send it to the next leader.
		return fmt.Errorf("%w (this server could not write to its Raft log and stepped down; the command was not written: %v)", ErrNotLeader, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// raft gave up handing the operation to its main loop at ctx's
		// deadline: nothing was written.
		return fmt.Errorf("not started before the deadline: %w", context.DeadlineExceeded)
	default:
		return err
	}
}

// notLeader says where the leader is, for logs; callers use Leader().
func (n *Node) notLeader(why string) error {
	id, addr := n.Leader()
	switch {
	case why != "":
		return fmt.Errorf("%w (%s)", ErrNotLeader, why)
	case id == "":
		return fmt.Errorf("%w (no leader known)", ErrNotLeader)
	default:
		return fmt.Errorf("%w (leader is %s at %s)", ErrNotLeader, id, addr)
	}
}

// logWrites marks every failure to write the Raft log (a full disk, an I/O
// error) as a *logWriteError. raft hands a leader's failed write of new
// entries to their futures as it is, and the log cache below turns the
// store's error into text, so the mark is how translate tells it apart.
type logWrites struct{ raft.LogStore }

func (l logWrites) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l logWrites) StoreLogs(logs []*raft.Log) error {
	if err := l.LogStore.StoreLogs(logs); err != nil {
		return &logWriteError{err: err}
	}
	return nil
}

// logWriteError is a failed write of the Raft log.
type logWriteError struct{ err error }

func (e *logWriteError) Error() string { return e.err.Error() }
func (e *logWriteError) Unwrap() error { return e.err }
