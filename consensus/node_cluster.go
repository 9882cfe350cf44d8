package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
)

// ErrAlreadyBootstrapped: BootstrapCluster refused because this server
// already has Raft state, either from an earlier run (see
// [Node.HadState]) or because another server of the same bootstrap group
// got there first and has already contacted this one (a vote request or
// log entries give it a term). Nothing was written. In a
// -bootstrap-expect group where every server bootstraps with the same
// list, this is the expected outcome for all but the first and is safe to
// ignore.
var ErrAlreadyBootstrapped = errors.New("raft state exists; this server is or was part of a cluster and must not bootstrap")

// Server is one voter of a cluster being bootstrapped.
type Server struct {
	ID   string // the server's Config.NodeID
	Addr string // its Raft address, as its Node.Addr reports it
}

// HadState reports whether DataDir already held Raft state (a term, log
// entries or a snapshot) when Open ran. Such a server is, or was, a member
// of a cluster: it rejoins that cluster on its own and must never
// bootstrap a new one, so an agent checks this before waiting for
// -bootstrap-expect peers. It does not change after Open, not even when
// this node bootstraps or joins a cluster later.
func (n *Node) HadState() bool { return n.hadState }

// LoggedClusterID is the cluster id of the InitCluster entry in the Raft
// log DataDir held when Open ran, applied or not; "" when its first
// entries hold none (a log compacted into a snapshot, whose restore gives
// the state its id, or a cluster never named). A restarted server applies
// its log only once a leader tells it what is committed, and a leader that
// removed it while it was down never will: until it is added back, only
// its log says which cluster it belongs to.
func (n *Node) LoggedClusterID() string { return n.loggedCluster }

// loggedClusterScan bounds the entries loggedClusterID reads: a cluster's
// first leader names it at once, so an uncompacted log holds the entry
// among its first few.
const loggedClusterScan = 1024

// loggedClusterID finds the InitCluster entry among the first entries of
// logs; "" if there is none or the log cannot be read.
func loggedClusterID(logs raft.LogStore) string {
	first, err := logs.FirstIndex()
	if err != nil || first == 0 {
		return ""
	}
	last, err := logs.LastIndex()
	if err != nil {
		return ""
	}
	for i := first; i <= last && i < first+loggedClusterScan; i++ {
		var l raft.Log
		if logs.GetLog(i, &l) != nil || l.Type != raft.LogCommand {
			continue
		}
		var c fsmv1.Command
		if proto.Unmarshal(l.Data, &c) != nil {
			continue
		}
		if ic := c.GetInitCluster(); ic != nil {
			return ic.GetClusterId()
		}
	}
	return ""
}

// BootstrapCluster forms a new cluster whose voters are exactly servers.
// Every server of a -bootstrap-expect group calls it with the identical
// list, as Consul's servers do: raft writes the same first configuration
// entry on each, so whichever starts the first election wins it and the
// others follow. A server whose list differs would form a different
// cluster, so every caller must build the list the same way.
//
// servers must be non-empty, free of duplicate IDs and addresses, and
// include this node under its NodeID and [Node.Addr].
//
// It returns ErrAlreadyBootstrapped, having changed nothing, when this
// node has Raft state: see ErrAlreadyBootstrapped for when that happens
// and why it is harmless in a bootstrap group. On success this node is a
// follower of the new cluster, which elects a leader once a quorum of
// servers has bootstrapped (or, for the servers that lost the race, once
// the winner contacts them).
func (n *Node) BootstrapCluster(ctx context.Context, servers []Server) error {
	conf, err := n.bootstrapConfiguration(servers)
	if err != nil {
		return fmt.Errorf("consensus: bootstrap cluster: %w", err)
	}
	if n.hadState {
		return fmt.Errorf("consensus: bootstrap cluster: %w", ErrAlreadyBootstrapped)
	}
	err = n.submit(ctx, func() raft.Future { return n.raft.BootstrapCluster(conf) })
	if errors.Is(err, raft.ErrCantBootstrap) {
		err = ErrAlreadyBootstrapped
	}
	if err != nil {
		return fmt.Errorf("consensus: bootstrap cluster of %d servers: %w", len(servers), err)
	}
	n.log.Info("bootstrapped a new raft cluster", "node_id", n.id, "servers", len(servers))
	return nil
}

// bootstrapConfiguration checks servers and turns it into raft's form, all
// voters.
func (n *Node) bootstrapConfiguration(servers []Server) (raft.Configuration, error) {
	if len(servers) == 0 {
		return raft.Configuration{}, errors.New("the server list is empty")
	}
	ids := make(map[string]bool, len(servers))
	addrs := make(map[string]bool, len(servers))
	self := false
	conf := raft.Configuration{Servers: make([]raft.Server, 0, len(servers))}
	for i, s := range servers {
		if s.ID == "" {
			return raft.Configuration{}, fmt.Errorf("server %d has no ID (address %q): list every server under the NodeID it runs with", i, s.Addr)
		}
		if _, _, err := splitHostPort("address of server "+s.ID, s.Addr, false); err != nil {
			return raft.Configuration{}, err
		}
		if ids[s.ID] {
			return raft.Configuration{}, fmt.Errorf("server ID %s is listed twice", s.ID)
		}
		if addrs[s.Addr] {
			return raft.Configuration{}, fmt.Errorf("address %s is listed twice", s.Addr)
		}
		ids[s.ID], addrs[s.Addr] = true, true
		if s.ID == n.id {
			// The others would dial this address to reach us.
			if s.Addr != n.Addr() {
				return raft.Configuration{}, fmt.Errorf("this server (%s) is listed at %s but its Raft address is %s", n.id, s.Addr, n.Addr())
			}
			self = true
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr),
		})
	}
	if !self {
		return raft.Configuration{}, fmt.Errorf("this server (%s) is not in the list; only listed servers may bootstrap", n.id)
	}
	return conf, nil
}

// AddNonvoter adds the server id at addr to the cluster without a vote, or
// updates its address if it is already a member (a voter keeps its vote).
// A new server is staged this way so that it catches up on the log
// without counting towards quorum; [Node.AddVoter] on the same id later
// promotes it. It runs on the leader and returns once the new
// configuration is committed.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("consensus: add nonvoter: id and address are required (got %q, %q)", id, addr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: add nonvoter %s: %w", id, err)
	}
	f := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("consensus: add nonvoter %s at %s: %w", id, addr, err)
	}
	return nil
}

// TransferLeadership hands leadership to the most up-to-date voting
// follower, so that a leader about to stop or leave does not leave the
// cluster without one for an election timeout. It returns once this node
// has stepped down (nil), or with ErrNotLeader on a follower (or while a
// transfer is already under way), or with an error if there is no other
// voter or the chosen follower did not take over within the election
// timeout; in that case this node stays leader.
//
// During the transfer Apply on this node returns ErrNotLeader.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: transfer leadership: %w", err)
	}
	if !n.IsLeader() {
		return fmt.Errorf("consensus: transfer leadership: %w", n.notLeader(""))
	}
	if peers, err := n.Peers(); err == nil && !hasOtherVoter(peers, n.id) {
		return errors.New("consensus: transfer leadership: there is no other voter to hand leadership to")
	}
	err := n.wait(ctx, n.raft.LeadershipTransfer())
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// Not ctx's deadline: raft's ErrEnqueueTimeout, which
		// LeadershipTransfer returns at once when its one-request queue
		// is full, i.e. another transfer is about to start.
		err = n.notLeader("leadership transfer in progress")
	}
	if err != nil {
		return fmt.Errorf("consensus: transfer leadership: %w", err)
	}
	return nil
}

func hasOtherVoter(peers []Peer, self string) bool {
	for _, p := range peers {
		if p.Voter && p.ID != self {
			return true
		}
	}
	return false
}

// VerifyLeader confirms, by a round of heartbeats to a quorum, that this
// node is still the leader. Call it before answering a read from the FSM
// that must not be stale: a leader cut off from the others may not know
// yet that it has been replaced. Returns ErrNotLeader on a follower or a
// deposed leader, ErrShutdown, or ctx's error.
//
// It does not wait for the FSM to catch up; a new leader calls Barrier
// once for that.
func (n *Node) VerifyLeader(ctx context.Context) error {
	err := n.submit(ctx, n.raft.VerifyLeader)
	if errors.Is(err, ErrLeadershipLost) {
		// Nothing was in flight: losing leadership mid-check just means
		// this node is not the leader.
		err = n.notLeader("")
	}
	if err != nil {
		return fmt.Errorf("consensus: verify leader: %w", err)
	}
	return nil
}

// LastIndex is the index of the last entry in this node's log (or
// snapshot), committed or not.
func (n *Node) LastIndex() uint64 { return n.raft.LastIndex() }

// AppliedIndex is the index of the last entry handed to this node's FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Term is this node's current Raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// LastContact is when this node last heard from a leader: the measure of a
// follower's health (autopilot-style checks compare time.Since of it with
// a threshold). It is the zero time if this node has never heard from a
// leader. On the leader itself it means nothing (it is left over from
// before this node was elected), so check IsLeader first.
func (n *Node) LastContact() time.Time { return n.raft.LastContact() }

// submit starts a raft operation whose start may block (raft hands some
// operations to its main loop on an unbuffered channel) and waits for it,
// both bounded by ctx. An abandoned start finishes on its own goroutine,
// so raft may still carry out the operation.
func (n *Node) submit(ctx context.Context, start func() raft.Future) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	started := make(chan raft.Future, 1)
	go func() { started <- start() }()
	select {
	case f := <-started:
		return n.wait(ctx, f)
	case <-ctx.Done():
		return fmt.Errorf("%w (raft may still complete the operation)", ctx.Err())
	case <-n.closed:
		return ErrShutdown
	}
}
