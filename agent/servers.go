package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// This file runs the Raft membership of servers, the way Consul does:
//
//   - bootstrapLoop forms a new cluster once -bootstrap-expect servers
//     without Raft state have found each other through gossip, and never
//     when any server already belongs to a cluster or disagrees on the
//     expected count;
//   - autopilot, on the leader, stages servers that join later as
//     non-voters, promotes them once they have caught up, and removes
//     failed servers while quorum stays safe;
//   - removePeer, Leave and ForceLeave are the operator's hand on the
//     same configuration.

// serverTimings are the clocks of bootstrap and autopilot.
type serverTimings struct {
	// bootstrapPoll is how often bootstrapLoop looks for its peers.
	bootstrapPoll time.Duration
	// status bounds one AgentService.Status call.
	status time.Duration
	// autopilotEvery is how often the leader reconciles the configuration
	// when gossip has nothing new to say.
	autopilotEvery time.Duration
	// stabilization is how long a non-voter must stay caught up before it
	// is promoted (Consul's ServerStabilizationTime, shorter): a server that
	// flaps, or is still installing a snapshot, must not count towards
	// quorum yet.
	stabilization time.Duration
	// maxTrailing is how many entries a non-voter may trail the leader's
	// last index by and still count as caught up (Consul's
	// MaxTrailingLogs): under load the newest entries are always in flight.
	maxTrailing uint64
	// deadGrace is how long a server must stay dead in gossip before it is
	// removed: one that crashed and restarts at once keeps its vote.
	deadGrace time.Duration
	// unknownGrace is how long a server in the configuration may be
	// unknown to gossip before it is removed: a new leader's gossip may not
	// have heard of every member yet.
	unknownGrace time.Duration
	// removedHold is how long a server removed on request (remove-peer,
	// leave) is not added back while it stays alive: a leaving server is
	// still in gossip until it shuts down.
	removedHold time.Duration
	// leaveWait bounds how long a leaving server waits to be out of the
	// leader's configuration before it shuts down anyway.
	leaveWait time.Duration
}

func (a *Agent) timings() serverTimings {
	if t := a.servers.tune; t != nil {
		return *t
	}
	t := serverTimings{
		bootstrapPoll:  200 * time.Millisecond,
		status:         time.Second,
		autopilotEvery: 250 * time.Millisecond,
		stabilization:  time.Second,
		maxTrailing:    250,
		deadGrace:      10 * time.Second,
		unknownGrace:   30 * time.Second,
		removedHold:    30 * time.Second,
		leaveWait:      10 * time.Second,
	}
	if a.cfg.Dev || a.cfg.DevTiming {
		// Gossip declares a silent member dead within a second with these
		// timings, so a short grace is enough to ride out a blip.
		t.deadGrace, t.unknownGrace = time.Second, 3*time.Second
	}
	return t
}

// serversState is what the agent keeps about server membership between
// calls.
type serversState struct {
	tune    *serverTimings // tests shorten or lengthen the clocks; nil: timings' defaults
	leaving atomic.Bool    // a Leave is under way

	mu      sync.Mutex
	removed map[string]time.Time // servers this leader removed on request, and when
}

// noteRemoved records that id was removed on request, so autopilot does
// not add it straight back while it is still alive (a leaving server).
func (s *serversState) noteRemoved(id string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed == nil {
		s.removed = map[string]time.Time{}
	}
	s.removed[id] = now
}

// held reports whether autopilot must leave the live server id out of
// the configuration, for hold after its removal.
func (s *serversState) held(id string, now time.Time, hold time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.removed[id]
	if ok && now.Sub(at) >= hold {
		delete(s.removed, id)
		ok = false
	}
	return ok
}

// release ends the holds of servers no longer alive: when one comes back,
// it is a server rejoining, which is added as usual.
func (s *serversState) release(alive map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.removed {
		if !alive[id] {
			delete(s.removed, id)
		}
	}
}

// liveServers lists the servers gossip says are alive, this one
// included, sorted by name.
func (a *Agent) liveServers() []gossip.Member {
	out := a.aliveServers()
	out = append(out, gossip.Member{Name: a.cfg.NodeName, Status: gossip.StatusAlive, Role: gossip.RoleServer, RPCAddr: a.rpcAdvertise})
	slices.SortFunc(out, func(x, y gossip.Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// statusOf asks m for its Raft state; this agent answers from memory.
func (a *Agent) statusOf(ctx context.Context, m gossip.Member) (*agentv1.StatusResponse, error) {
	if m.Name == a.cfg.NodeName {
		resp, err := (&agentRPC{a}).Status(ctx, connect.NewRequest(&agentv1.StatusRequest{}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	if m.RPCAddr == "" {
		return nil, fmt.Errorf("%s advertises no RPC address", m.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timings().status)
	defer cancel()
	resp, err := a.fwd.agentClient(a.rpcURL(m.RPCAddr)).Status(ctx, connect.NewRequest(&agentv1.StatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("status of %s at %s: %w", m.Name, m.RPCAddr, err)
	}
	if got := resp.Msg.GetNode(); got != m.Name {
		// Another agent took over the address: its state says nothing
		// about m.
		return nil, fmt.Errorf("%s at %s answered as %q", m.Name, m.RPCAddr, got)
	}
	return resp.Msg, nil
}

type statusResult struct {
	st  *agentv1.StatusResponse
	err error
}

// statuses asks every member in ms at once; the results are in ms's order.
func (a *Agent) statuses(ctx context.Context, ms []gossip.Member) []statusResult {
	out := make([]statusResult, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			st, err := a.statusOf(ctx, m)
			out[i] = statusResult{st, err}
		})
	}
	wg.Wait()
	return out
}

// bootstrapLoop forms the Raft cluster once -bootstrap-expect servers
// have found each other through gossip. It stops once this server
// bootstrapped, or learned of a cluster that it will be added to.
func (a *Agent) bootstrapLoop(ctx context.Context) {
	b := &bootstrapper{a: a, expect: a.cfg.BootstrapExpect, logged: map[string]bool{}}
	a.log.Info("bootstrap: waiting for servers to form the cluster", "bootstrap_expect", b.expect)
	tick := time.NewTicker(a.timings().bootstrapPoll)
	defer tick.Stop()
	for !b.step(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type bootstrapper struct {
	a      *Agent
	expect int
	// logged holds the problems already logged: a wait can last, and one
	// line per problem is enough.
	logged map[string]bool
	seen   int // fresh servers counted last round, to log progress
	// last is the server list that the previous round would have
	// bootstrapped with: a list is used only once two rounds in a row
	// agree, so a server whose gossip arrives a moment late is not left
	// out by some servers and counted by others.
	last string
}

func (b *bootstrapper) once(key string, log func()) {
	if !b.logged[key] {
		b.logged[key] = true
		log()
	}
}

// step runs one round and reports whether bootstrapping is over.
func (b *bootstrapper) step(ctx context.Context) bool {
	a := b.a
	if id, _ := a.node.Leader(); id != "" {
		a.log.Info("bootstrap: a leader is known; not bootstrapping", "leader", id)
		return true
	}
	ms := a.liveServers()
	res := a.statuses(ctx, ms)
	if ctx.Err() != nil {
		return true
	}
	// A server that belongs to a cluster wins over every other rule: this
	// server must join that cluster, never form another.
	for i, r := range res {
		if r.err != nil {
			continue
		}
		if st := r.st; st.GetHasState() || st.GetLeader() != "" || st.GetPeers() > 0 {
			a.log.Info("bootstrap: a cluster exists; not bootstrapping (its leader adds this server)",
				"server", ms[i].Name, "has_state", st.GetHasState(), "leader", st.GetLeader(), "peers", st.GetPeers())
			return true
		}
	}
	var (
		fresh    []consensus.Server
		waiting  bool
		conflict bool
	)
	for i, r := range res {
		m := ms[i]
		switch {
		case r.err != nil:
			// Its state is unknown, and it may be the one server that has
			// some: wait rather than count without it.
			waiting = true
			b.once("unreachable/"+m.Name, func() {
				a.log.Warn("bootstrap: cannot ask a server for its state; waiting for it", "server", m.Name, "err", r.err)
			})
		case r.st.GetBootstrapExpect() == 0:
			// Started without -bootstrap-expect: it waits to be added to a
			// cluster and takes no part in forming one.
		case int(r.st.GetBootstrapExpect()) != b.expect:
			conflict = true
			got := r.st.GetBootstrapExpect()
			b.once(fmt.Sprintf("conflict/%s/%d", m.Name, got), func() {
				a.log.Error("bootstrap: a server has a conflicting bootstrap_expect; not bootstrapping: every server of a new cluster must be started with the same -bootstrap-expect",
					"server", m.Name, "its_bootstrap_expect", got, "bootstrap_expect", b.expect)
			})
		case r.st.GetRaftAddress() == "":
			waiting = true
		default:
			fresh = append(fresh, consensus.Server{ID: m.Name, Addr: r.st.GetRaftAddress()})
		}
	}
	if waiting || conflict {
		b.last = ""
		return false
	}
	if len(fresh) != b.seen {
		b.seen = len(fresh)
		if len(fresh) < b.expect {
			a.log.Info("bootstrap: waiting for more servers", "found", len(fresh), "bootstrap_expect", b.expect)
		}
	}
	if len(fresh) < b.expect {
		b.last = ""
		return false
	}
	names := make([]string, len(fresh))
	for i, s := range fresh {
		names[i] = s.ID
	}
	if len(fresh) > b.expect {
		// Each server would pick a different N of them and form a
		// different cluster.
		b.last = ""
		b.once(fmt.Sprintf("toomany/%d", len(fresh)), func() {
			a.log.Error("bootstrap: more servers without Raft state than -bootstrap-expect; not bootstrapping: start exactly that many, and add the rest once the cluster has a leader",
				"found", len(fresh), "bootstrap_expect", b.expect, "servers", names)
		})
		return false
	}
	key := fmt.Sprint(fresh) // fresh is in name order, as ms is
	if key != b.last {
		b.last = key
		return false
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := a.node.BootstrapCluster(bctx, fresh)
	switch {
	case err == nil:
		a.log.Info("bootstrap: formed a new cluster", "servers", names)
		return true
	case errors.Is(err, consensus.ErrAlreadyBootstrapped):
		// A server of the same group was first and has contacted this one.
		a.log.Info("bootstrap: another server of the group bootstrapped first; following it", "servers", names)
		return true
	default:
		a.log.Warn("bootstrap: forming the cluster failed; retrying", "servers", names, "err", err)
		b.last = ""
		return false
	}
}

// autopilot runs on the leader until ctx ends: it stages servers that join
// later as non-voters and promotes them once caught up, and removes failed
// servers while quorum stays safe. It reconciles on every gossip
// membership event, and every autopilotEvery in between.
func (a *Agent) autopilot(ctx context.Context) {
	events, unsubscribe := a.gossip.Registry().Subscribe()
	defer unsubscribe()
	p := &pilot{
		a: a, t: a.timings(), events: events,
		caughtUpSince: map[string]time.Time{}, downSince: map[string]time.Time{}, warned: map[string]bool{},
	}
	tick := time.NewTicker(p.t.autopilotEvery)
	defer tick.Stop()
	for {
		p.round(ctx)
		if !p.wait(ctx, tick.C) {
			return
		}
	}
}

// pilot is autopilot's memory for one term of leadership.
type pilot struct {
	a      *Agent
	t      serverTimings
	events <-chan gossip.Event // nil once gossip has shut down
	// caughtUpSince is when each non-voter was first seen caught up, in
	// the current unbroken run of rounds where it was.
	caughtUpSince map[string]time.Time
	// downSince is when each server in the configuration was first seen
	// dead in, or absent from, gossip.
	downSince map[string]time.Time
	// warned holds the failures already logged: rounds repeat every
	// autopilotEvery, and one line per lasting problem is enough.
	warned map[string]bool
}

// wait returns true when a round is due, false once ctx ended.
func (p *pilot) wait(ctx context.Context, tick <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case ev, ok := <-p.events:
			if !ok {
				p.events = nil
				continue
			}
			// Only servers come and go from the configuration; clients
			// and catalogs change far more often.
			if ev.Type != gossip.EventCatalogUpdated && ev.Member.Role == gossip.RoleServer {
				return true
			}
		}
	}
}

func (p *pilot) warnOnce(key, msg string, args ...any) {
	if !p.warned[key] {
		p.warned[key] = true
		p.a.log.Warn(msg, args...)
	}
}

// round makes at most one change to the configuration, in order of
// urgency: removing a failed server, adding a new one, promoting one.
// Every change is a Raft commit; the next round starts from the
// configuration it produced.
func (p *pilot) round(ctx context.Context) {
	a := p.a
	// A leader shutting down or leaving has left gossip first: its view of
	// the others is no longer worth acting on.
	if !a.isLeader() || ctx.Err() != nil || a.draining.Load() || a.servers.leaving.Load() {
		return
	}
	peers, err := a.node.Peers()
	if err != nil {
		p.warnOnce("peers", "autopilot: cannot read the Raft configuration", "err", err)
		return
	}
	delete(p.warned, "peers")
	byName := map[string]gossip.Member{}
	for _, m := range a.gossip.Members() {
		byName[m.Name] = m
	}
	live := a.aliveServers()
	res := a.statuses(ctx, live)
	status := map[string]*agentv1.StatusResponse{}
	for i, r := range res {
		if r.err == nil {
			status[live[i].Name] = r.st
		}
	}
	alive := map[string]bool{}
	for _, m := range live {
		alive[m.Name] = true
	}
	a.servers.release(alive)
	now := time.Now()
	_ = p.prune(ctx, peers, byName, now) || p.stage(ctx, peers, live, status, now) || p.promote(ctx, peers, status, now)
}

// prune removes servers that left, or stayed dead (or unknown to gossip)
// past their grace. A non-voter needs no more (it holds no vote). Voters
// are removed only while that is safe, by
// autopilot's rule: the failed voters are at most (voters-1)/2, fewer than
// half, so that a gossip view wrongly reporting many servers dead cannot
// empty the configuration; and after each removal the healthy voters are
// still a majority of the smaller configuration.
func (p *pilot) prune(ctx context.Context, peers []consensus.Peer, byName map[string]gossip.Member, now time.Time) bool {
	a := p.a
	type failed struct {
		id, why string
		voter   bool
	}
	var gone []failed
	voters, healthy := 0, 0
	inConf := map[string]bool{}
	for _, pr := range peers {
		inConf[pr.ID] = true
		if pr.Voter {
			voters++
		}
		m, known := byName[pr.ID]
		switch {
		case pr.ID == a.cfg.NodeName || (known && m.Status == gossip.StatusAlive):
			delete(p.downSince, pr.ID)
			if pr.Voter {
				healthy++
			}
		case known && m.Status == gossip.StatusLeft:
			// It said goodbye: no reason to wait.
			gone = append(gone, failed{pr.ID, "it left the cluster", pr.Voter})
		default:
			since, ok := p.downSince[pr.ID]
			if !ok {
				since = now
				p.downSince[pr.ID] = now
			}
			grace, state := p.t.deadGrace, "dead in gossip"
			if !known {
				grace, state = p.t.unknownGrace, "unknown to gossip"
			}
			if d := now.Sub(since); d >= grace {
				gone = append(gone, failed{pr.ID, fmt.Sprintf("%s for %v", state, d.Round(time.Millisecond)), pr.Voter})
			}
		}
	}
	for id := range p.downSince {
		if !inConf[id] {
			delete(p.downSince, id)
		}
	}
	var failedVoters []string
	for _, f := range gone {
		if f.voter {
			failedVoters = append(failedVoters, f.id)
		}
	}
	tooMany := len(failedVoters) > (voters-1)/2
	if tooMany {
		p.warnOnce("toomany/"+strings.Join(failedVoters, ","), "autopilot: too many failed voters to remove safely; keeping them until some come back or an operator removes them",
			"failed", failedVoters, "voters", voters)
	}
	for _, f := range gone {
		if f.voter && (tooMany || 2*healthy <= voters-1) {
			continue
		}
		if err := p.change(ctx, "remove/"+f.id, func(ctx context.Context) error { return a.node.RemoveServer(ctx, f.id) }); err != nil {
			p.warnOnce("remove/"+f.id, "autopilot: removing a failed server failed", "server", f.id, "why", f.why, "err", err)
			return false
		}
		a.log.Info("autopilot: removed a server from the Raft configuration", "server", f.id, "voter", f.voter, "why", f.why)
		delete(p.downSince, f.id)
		return true
	}
	return false
}

// stage adds live servers that are not in the configuration as
// non-voters, and updates the Raft address of a member that came back on
// another one (a voter keeps its vote).
func (p *pilot) stage(ctx context.Context, peers []consensus.Peer, live []gossip.Member, status map[string]*agentv1.StatusResponse, now time.Time) bool {
	a := p.a
	conf := map[string]consensus.Peer{}
	for _, pr := range peers {
		conf[pr.ID] = pr
	}
	ours := a.state.ClusterID()
	for _, m := range live {
		st := status[m.Name]
		if a.servers.held(m.Name, now, p.t.removedHold) || st == nil || !st.GetServer() || st.GetRaftAddress() == "" {
			continue
		}
		addr := st.GetRaftAddress()
		pr, in := conf[m.Name]
		if in && pr.Address == addr {
			continue
		}
		if !in && !p.sameHistory(m.Name, ours, st) {
			continue
		}
		why := "it joined and is not in the configuration"
		if in {
			why = "its Raft address changed from " + pr.Address
		}
		if err := p.change(ctx, "add/"+m.Name, func(ctx context.Context) error { return a.node.AddNonvoter(ctx, m.Name, addr) }); err != nil {
			p.warnOnce("add/"+m.Name, "autopilot: adding a server failed", "server", m.Name, "raft", addr, "err", err)
			continue
		}
		if in {
			a.log.Info("autopilot: updated a server's Raft address", "server", m.Name, "raft", addr, "why", why)
		} else {
			a.log.Info("autopilot: added a server as a non-voter; it becomes a voter once caught up", "server", m.Name, "raft", addr, "why", why)
		}
		return true
	}
	return false
}

// sameHistory reports whether a server outside the configuration may be
// added: it has no Raft state, or state of this very cluster (a member
// that was removed and came back). Raft would append this cluster's log
// to another cluster's history and the server's state would mix both, so
// a server holding other state is refused until its data dir is wiped.
// Until this cluster is named (its first leader does so at once) no
// server with state can be told apart, so none is added.
func (p *pilot) sameHistory(name, ours string, st *agentv1.StatusResponse) bool {
	theirs := st.GetClusterId()
	switch {
	case theirs == "" && !st.GetHasState():
		return true
	case theirs != "" && theirs == ours:
		return true
	case ours == "":
		return false // asked again next round, once named
	}
	p.warnOnce("foreign/"+name+"/"+theirs, "autopilot: not adding a server whose Raft state is not this cluster's; wipe its data dir to add it",
		"server", name, "its_cluster_id", orDash(theirs), "cluster_id", ours, "has_state", st.GetHasState())
	return false
}

// promote makes a non-voter a voter once it has trailed the leader's log
// by at most maxTrailing entries, in the leader's term, for stabilization.
func (p *pilot) promote(ctx context.Context, peers []consensus.Peer, status map[string]*agentv1.StatusResponse, now time.Time) bool {
	a := p.a
	last, term := a.node.LastIndex(), a.node.Term()
	nonvoters := map[string]bool{}
	for _, pr := range peers {
		if pr.Voter {
			continue
		}
		nonvoters[pr.ID] = true
		st := status[pr.ID]
		if st == nil || st.GetTerm() != term || st.GetLastIndex() == 0 || st.GetLastIndex()+p.t.maxTrailing < last {
			delete(p.caughtUpSince, pr.ID)
			continue
		}
		since, ok := p.caughtUpSince[pr.ID]
		if !ok {
			p.caughtUpSince[pr.ID] = now
			continue
		}
		if now.Sub(since) < p.t.stabilization {
			continue
		}
		if err := p.change(ctx, "promote/"+pr.ID, func(ctx context.Context) error { return a.node.AddVoter(ctx, pr.ID, pr.Address) }); err != nil {
			p.warnOnce("promote/"+pr.ID, "autopilot: promoting a server failed", "server", pr.ID, "err", err)
			continue
		}
		delete(p.caughtUpSince, pr.ID)
		a.log.Info("autopilot: promoted a server to voter", "server", pr.ID,
			"why", fmt.Sprintf("caught up for %v: last index %d, the leader's %d", now.Sub(since).Round(time.Millisecond), st.GetLastIndex(), last))
		return true
	}
	for id := range p.caughtUpSince {
		if !nonvoters[id] {
			delete(p.caughtUpSince, id)
		}
	}
	return false
}

// change runs one configuration change, bounded so that a cluster without
// quorum does not hold autopilot forever. A success clears the warning
// logged for key, so the next failure is logged again.
func (p *pilot) change(ctx context.Context, key string, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := fn(cctx); err != nil {
		return err
	}
	delete(p.warned, key)
	return nil
}

// peerList names the servers in peers, for error messages.
func peerList(peers []consensus.Peer) string {
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.ID
		if !p.Voter {
			names[i] += " (non-voter)"
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// removePeer removes a server from the Raft configuration (leader only).
// A removed server that is still alive is not added back by autopilot for
// a while (see serverTimings.removedHold).
func (a *Agent) removePeer(ctx context.Context, id string) error {
	if !a.isLeader() {
		return a.notLeaderError()
	}
	peers, err := a.node.Peers()
	if err != nil {
		return toConnect(err)
	}
	id = strings.TrimSpace(id)
	if id == "" {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: required: name the server to remove, as 'tasker raft peers' lists it (peers: %s)", peerList(peers)))
	}
	i := slices.IndexFunc(peers, func(p consensus.Peer) bool { return p.ID == id })
	if i < 0 {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("no server %q in the Raft configuration (peers: %s)", id, peerList(peers)))
	}
	if peers[i].Voter && !slices.ContainsFunc(peers, func(p consensus.Peer) bool { return p.Voter && p.ID != id }) {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s is the last voter: removing it would leave the cluster without servers (peers: %s)", id, peerList(peers)))
	}
	// Hold first: autopilot must not add it back between the commit and
	// the hold.
	a.servers.noteRemoved(id, time.Now())
	if err := a.node.RemoveServer(ctx, id); err != nil {
		return raftError(err)
	}
	a.log.Info("removed a server from the Raft configuration", "server", id, "voter", peers[i].Voter, "why", "requested")
	return nil
}

// raftError maps a failed Raft operation to a Connect error: a caller's
// deadline stays a deadline, not an internal error.
func raftError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, consensus.ErrShutdown):
		return connect.NewError(connect.CodeUnavailable, err)
	}
	return toConnect(err)
}

// removeViaLeader removes server id from the Raft configuration through
// the leader, wherever it is.
func (a *Agent) removeViaLeader(ctx context.Context, id string) error {
	// unknown is set once an attempt ended without a clear answer (a
	// broken connection, leadership lost mid-commit): the removal may have
	// been committed, so a retry that finds id gone is a success.
	unknown := false
	if a.isLeader() {
		err := a.removePeer(ctx, id)
		if connect.CodeOf(err) != connect.CodeUnavailable {
			return err
		}
		unknown = errors.Is(err, consensus.ErrLeadershipLost)
	}
	return a.fwd.do(ctx, func(ctx context.Context, base string) error {
		_, err := a.fwd.agentClient(base).RemovePeer(ctx, connect.NewRequest(&agentv1.RemovePeerRequest{Id: id}))
		var ce *connect.Error
		switch {
		case err == nil:
			return nil
		case unknown && connect.CodeOf(err) == connect.CodeNotFound:
			return nil
		case connect.CodeOf(err) == connect.CodeUnavailable && !(errors.As(err, &ce) && ce.Meta().Get(hdrNotLeader) != ""):
			unknown = true
		}
		return err
	})
}

// RemovePeer removes a server from the Raft configuration. Non-leaders'
// local APIs proxy it to the leader already (route); a call that reaches
// a non-leader anyway is forwarded.
func (c *clusterAPI) RemovePeer(ctx context.Context, req *connect.Request[taskerv1.RemovePeerRequest]) (*connect.Response[taskerv1.RemovePeerResponse], error) {
	if err := c.a.removeViaLeader(ctx, req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.RemovePeerResponse{}), nil
}

// Leave answers at once, then leaves in the background: a leader hands
// leadership over, a server has itself removed from Raft (so the others'
// quorum shrinks with it rather than counting a missing vote), and the
// agent shuts down, which leaves gossip; then Left is closed and the
// binary exits.
func (c *clusterAPI) Leave(context.Context, *connect.Request[taskerv1.LeaveRequest]) (*connect.Response[taskerv1.LeaveResponse], error) {
	a := c.a
	if a.servers.leaving.CompareAndSwap(false, true) {
		a.log.Info("leaving the cluster on request")
		// Not a.background: Shutdown waits for those, and this goroutine
		// calls Shutdown.
		go a.leave()
	}
	return connect.NewResponse(&taskerv1.LeaveResponse{}), nil
}

func (a *Agent) leave() {
	if a.node != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.timings().leaveWait+a.cfg.RPCHoldTimeout)
		a.leaveRaft(ctx)
		cancel()
	}
	if err := a.Shutdown(context.Background()); err != nil {
		a.log.Warn("leave: shutdown", "err", err)
	}
	a.log.Info("left the cluster")
	a.leftOnce.Do(func() { close(a.left) })
}

// leaveRaft takes this server out of the Raft configuration.
func (a *Agent) leaveRaft(ctx context.Context) {
	self := a.cfg.NodeName
	peers, err := a.node.Peers()
	if err != nil {
		a.log.Warn("leave: cannot read the Raft configuration; leaving gossip only", "err", err)
		return
	}
	if !slices.ContainsFunc(peers, func(p consensus.Peer) bool { return p.ID == self }) {
		return
	}
	if !slices.ContainsFunc(peers, func(p consensus.Peer) bool { return p.Voter && p.ID != self }) {
		// The cluster is this server: removing it would destroy the
		// state; it stays in the configuration it will start with again.
		a.log.Warn("leave: this is the only voter; keeping it in the Raft configuration")
		return
	}
	if a.isLeader() {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.node.TransferLeadership(tctx)
		cancel()
		if err != nil {
			// Removing itself as leader still works: it steps down once
			// the change commits.
			a.log.Warn("leave: leadership transfer failed; removing this server as leader", "err", err)
		} else {
			a.log.Info("leave: handed leadership over")
		}
	}
	if err := a.removeViaLeader(ctx, self); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		a.log.Warn("leave: the leader did not remove this server from Raft; shutting down anyway", "err", err)
		return
	}
	// The removal is committed on the leader; confirm that the leader's
	// configuration says so before taking the vote away for good.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	wctx, cancel := context.WithTimeout(ctx, a.timings().leaveWait)
	defer cancel()
	for {
		listed, err := a.leaderLists(wctx, self)
		if err == nil && !listed {
			a.log.Info("leave: removed from the Raft configuration")
			return
		}
		select {
		case <-wctx.Done():
			a.log.Warn("leave: the leader's configuration still lists this server; shutting down anyway", "err", err)
			return
		case <-tick.C:
		}
	}
}

// leaderLists reports whether the leader's Raft configuration lists id.
func (a *Agent) leaderLists(ctx context.Context, id string) (bool, error) {
	var listed bool
	err := a.fwd.do(ctx, func(ctx context.Context, base string) error {
		cl := taskerv1connect.NewClusterServiceClient(a.fwd.client, base, connect.WithGRPC(), connect.WithInterceptors(a.chain()...))
		resp, err := cl.RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil {
			return err
		}
		if resp.Msg.GetLeader() == "" || resp.Msg.GetLeader() == id {
			// Not the leader's word, or the leader is the server leaving.
			return connect.NewError(connect.CodeUnavailable, errors.New("no leader known yet"))
		}
		listed = slices.ContainsFunc(resp.Msg.GetPeers(), func(p *taskerv1.RaftPeer) bool { return p.GetId() == id })
		return nil
	})
	return listed, err
}

// ForceLeave removes a failed agent without its help: from the Raft
// configuration if it is a server there. Dispatch has already stopped
// sending it steps: gossip withdrew its capabilities when it failed.
func (c *clusterAPI) ForceLeave(ctx context.Context, req *connect.Request[taskerv1.ForceLeaveRequest]) (*connect.Response[taskerv1.ForceLeaveResponse], error) {
	a := c.a
	node := strings.TrimSpace(req.Msg.GetNode())
	if node == "" {
		return nil, invalid("node", "required: name the failed agent, as 'tasker members' lists it")
	}
	if node == a.cfg.NodeName {
		return nil, invalid("node", "%s is the agent answering this call; run 'tasker leave' against it instead", node)
	}
	var (
		m     gossip.Member
		known bool
		names []string
	)
	for _, x := range a.gossip.Members() {
		names = append(names, x.Name)
		if x.Name == node {
			m, known = x, true
		}
	}
	if known && m.Status == gossip.StatusAlive {
		// Autopilot would add a live server straight back, and a live
		// client keeps announcing itself.
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s is alive: force-leave is for failed agents; run 'tasker leave' against it, or stop it first", node))
	}
	removed := true
	if err := a.removeViaLeader(ctx, node); err != nil {
		if connect.CodeOf(err) != connect.CodeNotFound {
			return nil, err
		}
		if !known {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no agent %q is known to gossip or Raft (members: %s)", node, strings.Join(names, ", ")))
		}
		removed = false
	}
	a.log.Info("force-leave", "node", node, "status", m.Status, "removed_from_raft", removed)
	return connect.NewResponse(&taskerv1.ForceLeaveResponse{RemovedFromRaft: removed}), nil
}

// peerLastIndexes asks every peer for its last log index, at once and
// briefly: 0 for a peer that does not answer.
func (a *Agent) peerLastIndexes(ctx context.Context, peers []consensus.Peer) map[string]uint64 {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	out := make(map[string]uint64, len(peers))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	out[a.cfg.NodeName] = a.node.LastIndex()
	for _, p := range peers {
		if p.ID == a.cfg.NodeName {
			continue
		}
		addr := a.rpcAddrOf(p.ID)
		if addr == "" {
			continue
		}
		wg.Go(func() {
			st, err := a.statusOf(ctx, gossip.Member{Name: p.ID, RPCAddr: addr})
			if err != nil {
				return
			}
			mu.Lock()
			out[p.ID] = st.GetLastIndex()
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
