package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// agentProc is one `tasker agent` process: a server, or a client agent
// that is the sidecar of one service.
type agentProc struct {
	*proc
	server bool
	// The addresses from its "agent started" log line: the local API's
	// URL, and the agent-to-agent RPC, gossip and Raft host:port.
	api, rpc, gossip, raft string
	cluster                taskerv1connect.ClusterServiceClient
}

// startedLine is the agent's JSON log line that names its addresses.
type startedLine struct {
	Msg    string `json:"msg"`
	API    string `json:"api"`
	RPC    string `json:"rpc"`
	Gossip string `json:"gossip"`
	Raft   string `json:"raft"`
}

// serversExpected is the size of the demo's Raft group.
const serversExpected = 3

// startAgent starts `tasker agent` as node name on free ports (port 0),
// a server if server is set, joining the gossip addresses join, and waits
// for the log line with its real addresses. Its data dir and log are in
// the demo's temporary dir.
func (d *demo) startAgent(ctx context.Context, name string, server bool, join []string) (*agentProc, error) {
	args := []string{"agent", "-node", name, "-data-dir", filepath.Join(d.dir, "data", name),
		"-dev-timing", "-log-format", "json", "-http-port", "0", "-rpc-port", "0", "-gossip-port", "0"}
	if server {
		args = append(args, "-server", "-bootstrap-expect", fmt.Sprint(serversExpected), "-raft-port", "0", "-breakers", d.breakers)
	}
	for _, j := range join {
		args = append(args, "-join", j)
	}
	found := make(chan startedLine, 1)
	watch := newLineWatcher(func(line string) bool {
		var s startedLine
		if json.Unmarshal([]byte(line), &s) != nil || s.Msg != "agent started" {
			return false
		}
		found <- s
		return true
	})
	p, err := startProc(name, d.opts.tasker, args, filepath.Join(d.dir, name+".log"), watch)
	if err != nil {
		return nil, err
	}
	a := &agentProc{proc: p, server: server}
	d.mu.Lock()
	d.agents = append(d.agents, a)
	d.mu.Unlock()
	select {
	case s := <-found:
		a.api, a.rpc, a.gossip, a.raft = s.API, s.RPC, s.Gossip, s.Raft
	case <-p.done:
		return nil, fmt.Errorf("agent %s exited before it started (%v):\n%s", name, p.err, p.tail(10))
	case <-ctx.Done():
		return nil, fmt.Errorf("agent %s: no \"agent started\" line in time: %w\n%s", name, ctx.Err(), p.tail(10))
	}
	if a.api == "" || a.gossip == "" || (server && a.raft == "") {
		return nil, fmt.Errorf("agent %s: its \"agent started\" line lacks an address: api=%q gossip=%q raft=%q", name, a.api, a.gossip, a.raft)
	}
	a.cluster = taskerv1connect.NewClusterServiceClient(d.hc, a.api)
	return a, nil
}

// startServers starts s1, then s2 and s3 joining s1's gossip address, all
// with -bootstrap-expect 3, and waits until the three agree on a leader.
func (d *demo) startServers(ctx context.Context) error {
	first, err := d.startAgent(ctx, "s1", true, nil)
	if err != nil {
		return err
	}
	d.servers = []*agentProc{first}
	rest, err := startEach(ctx, []string{"s2", "s3"}, func(ctx context.Context, name string) (*agentProc, error) {
		return d.startAgent(ctx, name, true, []string{first.gossip})
	})
	if err != nil {
		return err
	}
	d.servers = append(d.servers, rest...)
	var last string
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		leaders := map[string]bool{}
		var states []string
		for _, s := range d.servers {
			if s.exited() {
				return false, fmt.Errorf("server %s exited (%v):\n%s", s.name, s.err, s.tail(10))
			}
			res, err := s.cluster.RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
			if err != nil {
				states = append(states, fmt.Sprintf("%s: %v", s.name, err))
				leaders[""] = true
				continue
			}
			voters := 0
			for _, p := range res.Msg.GetPeers() {
				if p.GetVoter() {
					voters++
				}
			}
			states = append(states, fmt.Sprintf("%s: leader %q, %d voters, term %d", s.name, res.Msg.GetLeader(), voters, res.Msg.GetTerm()))
			if voters != serversExpected {
				leaders[""] = true
			}
			leaders[res.Msg.GetLeader()] = true
		}
		last = strings.Join(states, "; ")
		return len(leaders) == 1 && !leaders[""], nil
	})
	if err != nil {
		return fmt.Errorf("the %d servers did not form one Raft group with a leader (%v); RaftPeers said: %s\n  s1's log ends:\n%s",
			serversExpected, err, last, first.tail(8))
	}
	return nil
}

// startSidecars starts one client agent per service group, joining the
// servers' gossip, and waits until each reports SERVING (it knows a
// server to write through).
func (d *demo) startSidecars(ctx context.Context) error {
	var join []string
	for _, s := range d.servers {
		join = append(join, s.gossip)
	}
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.name
	}
	agents, err := startEach(ctx, names, func(ctx context.Context, name string) (*agentProc, error) {
		a, err := d.startAgent(ctx, name, false, join)
		if err != nil {
			return nil, err
		}
		health := grpchealth.NewClient(d.hc, a.api)
		err = poll(ctx, func(ctx context.Context) (bool, error) {
			if a.exited() {
				return false, fmt.Errorf("agent %s exited (%v):\n%s", name, a.err, a.tail(10))
			}
			res, err := health.Check(ctx, &grpchealth.CheckRequest{})
			return err == nil && res.Status == grpchealth.StatusServing, nil
		})
		if err != nil {
			return nil, fmt.Errorf("agent %s at %s did not report SERVING: %w", name, a.api, err)
		}
		return a, nil
	})
	d.sidecars = agents
	return err
}

// startEach runs start for every name at once and returns the agents in
// the order of names.
func startEach(ctx context.Context, names []string, start func(context.Context, string) (*agentProc, error)) ([]*agentProc, error) {
	out := make([]*agentProc, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = start(ctx, name)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// sidecar returns the client agent of a service group.
func (d *demo) sidecar(name string) *agentProc {
	for _, a := range d.sidecars {
		if a.name == name {
			return a
		}
	}
	panic("no sidecar " + name)
}

// leaderWatch asks every live server who leads, every pollPeriod, for the
// progress line and to time a failover: from the moment the leader was
// killed until a surviving server names a new one.
type leaderWatch struct {
	servers []*agentProc

	mu       sync.Mutex
	leader   string // "" while none is known
	term     uint64
	answers  map[string]string // each server's last answer, for errors
	failover *failover
}

// failover is one kill of the leader and what followed.
type failover struct {
	killed      string // the server killed
	pid         int
	term        uint64 // its term
	at          time.Time
	atComplete  int      // orders complete when it was killed
	inflight    []string // the tasks started and not ended then
	leader      string
	newTerm     uint64
	elected     time.Time // when a survivor first named the new leader
	electedChan chan struct{}
}

// took is the failover time: from the kill until a survivor named a new
// leader (to within pollPeriod).
func (f *failover) took() time.Duration { return f.elected.Sub(f.at) }

func newLeaderWatch(servers []*agentProc) *leaderWatch {
	return &leaderWatch{servers: servers, answers: map[string]string{}}
}

// run polls until ctx ends.
func (w *leaderWatch) run(ctx context.Context) {
	t := time.NewTicker(pollPeriod)
	defer t.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll asks the live servers at once and updates what is known.
func (w *leaderWatch) poll(ctx context.Context) {
	type answer struct {
		server, leader string
		term           uint64
		at             time.Time
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	for _, s := range w.servers {
		if s.killed.Load() || s.exited() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			res, err := s.cluster.RaftPeers(cctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				w.mu.Lock()
				w.answers[s.name] = err.Error()
				w.mu.Unlock()
				return
			}
			w.mu.Lock()
			w.answers[s.name] = fmt.Sprintf("leader %q, term %d", res.Msg.GetLeader(), res.Msg.GetTerm())
			w.mu.Unlock()
			answers = append(answers, answer{s.name, res.Msg.GetLeader(), res.Msg.GetTerm(), at})
		}()
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	// The leader is the one named in the highest term. After the kill, a
	// survivor that still names the killed leader has not noticed yet,
	// and answers sent before the kill do not count.
	f := w.failover
	var best answer
	for _, a := range answers {
		if a.leader == "" || (f != nil && (a.leader == f.killed || a.at.Before(f.at))) {
			continue
		}
		if best.leader == "" || a.term > best.term || (a.term == best.term && a.at.Before(best.at)) {
			best = a
		}
	}
	w.leader, w.term = best.leader, best.term
	if f != nil && best.leader != "" && f.elected.IsZero() {
		f.leader, f.newTerm, f.elected = best.leader, best.term, best.at
		close(f.electedChan)
	}
}

// current returns the leader, "" while none is known.
func (w *leaderWatch) current() (string, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader, w.term
}

// state is what the servers last said, for error messages.
func (w *leaderWatch) state() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.servers {
		if a, ok := w.answers[s.name]; ok {
			out = append(out, s.name+": "+a)
		}
	}
	return strings.Join(out, "; ")
}

// killLeader kills the current leader with SIGKILL and records the kill;
// the watch then times the election of the next one.
func (w *leaderWatch) killLeader(ctx context.Context, complete int) (*failover, error) {
	var name string
	var term uint64
	err := poll(ctx, func(context.Context) (bool, error) {
		name, term = w.current()
		return name != "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("no leader to kill: %w (%s)", err, w.state())
	}
	var victim *agentProc
	for _, s := range w.servers {
		if s.name == name {
			victim = s
		}
	}
	if victim == nil {
		return nil, fmt.Errorf("the leader %q is none of the demo's servers", name)
	}
	f := &failover{killed: name, pid: victim.pid(), term: term, atComplete: complete, electedChan: make(chan struct{}), at: time.Now()}
	w.mu.Lock()
	w.failover = f
	w.leader = ""
	w.mu.Unlock()
	victim.kill()
	return f, nil
}

// waitCatalog waits until every server's gossip lists each capability of
// want offered by the agent want names.
func (d *demo) waitCatalog(ctx context.Context, want map[string]string) error {
	var missing []string
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		missing = missing[:0]
		for _, p := range d.services {
			if p.exited() {
				return false, fmt.Errorf("service %s exited (%v):\n%s", p.name, p.err, p.tail(10))
			}
		}
		for _, s := range d.servers {
			res, err := s.cluster.Capabilities(ctx, connect.NewRequest(&taskerv1.CapabilitiesRequest{}))
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", s.name, err))
				continue
			}
			have := map[string][]string{}
			for _, c := range res.Msg.GetCapabilities() {
				for _, p := range c.GetProviders() {
					have[c.GetName()] = append(have[c.GetName()], p.GetAgent())
				}
			}
			for c, agent := range want {
				if !slices.Contains(have[c], agent) {
					missing = append(missing, fmt.Sprintf("%s does not see %s on %s", s.name, c, agent))
				}
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		slices.Sort(missing)
		return fmt.Errorf("capabilities did not reach every server (%w): %s", err, strings.Join(missing, "; "))
	}
	return nil
}

// h2cClient speaks HTTP/2 without TLS, as the agent's API does.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// removeAll removes the demo's dir (logs and data dirs).
func removeAll(dir string) { _ = os.RemoveAll(dir) }

// demoBreakers is the servers' circuit-breaker policy (-breakers) unless
// -breakers names another. The default policy opens a breaker after 6
// consecutive failures, for 30s: a gateway that fails 30% of charges, as
// the demo's does, trips that now and then and holds every charge for
// half a minute. This one still opens for an outage (10 failures in a
// row), for 5s.
const demoBreakers = `policies:
  circuitBreakers:
    flaky-gateway:
      maxRequests: 1
      interval: 0s
      timeout: 5s
      trip: consecutiveFailures > 9
targets:
  capabilities:
    payments.charge:
      circuitBreaker: flaky-gateway
`

// breakerOpenings counts, by target, the times a server's circuit
// breaker opened, from the servers' logs.
func (d *demo) breakerOpenings() map[string]int {
	out := map[string]int{}
	for _, s := range d.servers {
		b, err := os.ReadFile(s.log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var l struct {
				Msg    string `json:"msg"`
				Target string `json:"target"`
			}
			if strings.Contains(line, "circuit breaker open") && json.Unmarshal([]byte(line), &l) == nil && l.Msg == "circuit breaker open" {
				out[s.name+": "+l.Target]++
			}
		}
	}
	return out
}
