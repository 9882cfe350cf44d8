package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasker-run/tasker/gossip"
)

// startGossip joins memberlist on the gossip port, advertising this
// agent's role and RPC address, and joins the -join addresses.
func (a *Agent) startGossip(ctx context.Context, advertise string) error {
	role := gossip.RoleClient
	if a.cfg.Server {
		role = gossip.RoleServer
	}
	kr, err := a.openKeyring()
	if err != nil {
		return err
	}
	a.keyring = kr
	g, err := gossip.NewWithKeyring(gossip.Config{
		Name:          a.cfg.NodeName,
		BindAddr:      a.cfg.BindAddr,
		BindPort:      a.cfg.GossipPort,
		AdvertiseAddr: a.cfg.AdvertiseAddr,
		Role:          role,
		RPCAddr:       a.rpcAdvertise,
		Version:       version,
		System:        a.cfg.System,
		Logger:        a.log.With("component", "gossip"),
		Fast:          a.cfg.Dev || a.cfg.DevTiming,
	}, kr)
	if err != nil {
		return fmt.Errorf("gossip-port: %w", err)
	}
	// Read the address once, now: memberlist rewrites its local node on
	// every catalog update, which racing readers of LocalAddr would see.
	a.gossip, a.gossipAddr = g, g.LocalAddr()
	if len(a.cfg.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := g.Join(jctx, a.cfg.Join)
		if err != nil {
			return fmt.Errorf("join: none of %v answered: %w (use -retry-join to keep trying)", a.cfg.Join, err)
		}
		a.log.Info("joined the cluster", "reached", n)
	}
	return nil
}

// retryJoin keeps trying the -retry-join addresses until one answers.
func (a *Agent) retryJoin(ctx context.Context) {
	if len(a.cfg.RetryJoin) == 0 {
		return
	}
	for attempt := 1; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := a.gossip.Join(jctx, a.cfg.RetryJoin)
		cancel()
		if err == nil {
			a.log.Info("joined the cluster", "reached", n, "attempts", attempt)
			return
		}
		if attempt == 1 || attempt%30 == 0 {
			a.log.Warn("retry-join: no agent answered yet; still trying", "addrs", a.cfg.RetryJoin, "attempts", attempt, "err", err)
		}
		t := time.NewTimer(a.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// publishCatalog keeps this agent's gossip catalog equal to what its
// apps offer: a capability is advertised while some app offering it is
// connected (an open PollSteps stream, or a push URL), and withdrawn when
// the last one goes away.
func (a *Agent) publishCatalog(ctx context.Context) {
	publish := func() {
		if err := a.gossip.SetCatalog(a.workers.catalog()); err != nil {
			a.log.Warn("catalog not published", "err", err)
		}
	}
	publish()
	probes := make(chan struct{})
	go func() { defer close(probes); a.probeHealth(ctx) }()
	for {
		select {
		case <-ctx.Done():
			<-probes
			return
		case <-a.workers.catalogChanged:
			publish()
		}
	}
}

// catalog is the capabilities connected apps offer, merged by name (the
// concurrency limits of several apps offering one capability add up).
func (ws *workers) catalog() []gossip.Capability {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	byName := map[string]*gossip.Capability{}
	for _, w := range ws.byID {
		if !w.reachable() {
			continue
		}
		for _, c := range w.caps {
			g := byName[c.name]
			if g == nil {
				g = &gossip.Capability{
					Name: c.name, Version: c.version, Description: c.description,
					InputSchema: rawJSON(c.inputSchema), OutputSchema: rawJSON(c.outSchema), Healthy: true,
				}
				byName[c.name] = g
			}
			g.MaxConcurrency += c.max
		}
	}
	out := make([]gossip.Capability, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	return out
}

func rawJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// reconnect re-joins, every interval, the agents gossip declared dead, and
// the -join and -retry-join addresses while no server is alive. memberlist
// never contacts a dead member again by itself, so without this the halves
// of a healed partition, or a client whose servers all restarted, would
// stay apart for good.
func (a *Agent) reconnect(ctx context.Context) {
	interval := 10 * time.Second
	if a.cfg.Dev || a.cfg.DevTiming {
		interval = time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var addrs []string
		noServer := len(a.aliveServers()) == 0 && !a.isLeader()
		for _, m := range a.gossip.Members() {
			if m.Name == a.cfg.NodeName {
				continue
			}
			// A server that left may come back on the same address; an agent
			// that left on purpose is otherwise not chased.
			if m.Status == gossip.StatusDead || (noServer && m.Role == gossip.RoleServer && m.Status == gossip.StatusLeft) {
				addrs = append(addrs, m.Addr)
			}
		}
		if noServer && !a.cfg.Server {
			addrs = append(append(addrs, a.cfg.Join...), a.cfg.RetryJoin...)
		}
		if len(addrs) == 0 {
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, interval)
		if n, err := a.gossip.Join(jctx, addrs); err == nil {
			a.log.Info("reconnected to agents gossip had lost", "reached", n)
		} else {
			a.log.Debug("reconnect: no lost agent answered", "addrs", addrs, "err", err)
		}
		cancel()
	}
}
