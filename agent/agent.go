// Package agent is the Tasker agent: it wires the replicated state
// (consensus), the local Connect API for apps and operators, the
// coordinator (scheduler, leader only), and the delivery of steps to the
// apps attached to it, by stream (pull) or HTTP POST (push).
package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/insight/llm"
	"github.com/tasker-run/tasker/mtls"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/telemetry"
)

// Agent is one running Tasker agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	state   *consensus.State
	fsm     *consensus.FSM
	node    *consensus.Node
	workers *workers
	hub     *hub
	events  *eventRing // recent events for WatchEvents (events.go)
	sched   *scheduler
	push    *http.Client
	gossip  *gossip.Gossip
	fwd     *forwarder
	// keyring holds the gossip encryption keys (keyring.go); nil when
	// gossip is not encrypted.
	keyring *gossip.Keyring
	// tls is agent-to-agent TLS (tls.go); nil when not configured.
	tls *mtls.Config
	// breakers guard dispatches per agent/capability (dispatch.go).
	breakers *breaker.Set
	// llm explains diagnoses; nil when no model is configured.
	llm *llm.Client
	// healQ feeds failed tasks to the healer; nil when no healing policy
	// is configured.
	healQ chan string
	// tel holds the tracer and meter (telemetry.go); metrics the
	// instruments.
	tel *telemetry.Telemetry
	// interceptors trace Connect calls: none when tracing is off.
	interceptors []connect.Interceptor
	metrics      *instruments
	// lim enforces the limits that need runtime state (limits.go).
	lim *limits
	// asgTraces carries the traceparent of attempts given to apps here,
	// from delivery to the app (see telemetry.go).
	asgTraces asgTraces
	// acl resolves the tokens calls carry (acl.go).
	acl *aclResolver

	ln           net.Listener
	srv          *http.Server
	rpcLn        net.Listener
	rpcSrv       *http.Server
	rpcAdvertise string // host:port other agents reach the RPC API on
	gossipAddr   string // host:port other agents -join, read once in startGossip
	tmpDir       string // the -dev data dir, removed on shutdown

	now      func() time.Time
	rngMu    sync.Mutex
	rng      *rand.Rand
	draining atomic.Bool
	// caughtUp is closed once this server, as leader, has applied every
	// committed entry: until then reads could miss acknowledged writes.
	caughtUp     chan struct{}
	caughtUpOnce sync.Once
	starts       chan started    // attempts apps took, committed in batches
	grace        time.Duration   // Config.ReclaimGrace
	streams      context.Context // cancelled to end PollSteps and WatchTask streams
	endAll       context.CancelFunc
	bg           sync.WaitGroup
	stop         context.CancelFunc
	shutOnce     sync.Once
	shutErr      error
	// left is closed when the agent left the cluster on request (tasker
	// leave) and shut down: the process should exit.
	left     chan struct{}
	leftOnce sync.Once
	servers  serversState // bootstrap, autopilot and leave (servers.go)
	bsteps   busSteps     // transport: bus steps, while leading (busstep.go)
	// bus is the service bus of a server (nil when off): events go out
	// through the outbox, transport: bus steps over it (bus.go, busstep.go).
	bus bus.Bus
	pub *publisher // the outbox of a server with a bus (bus.go)
	// replays serializes ReplayDeadLetter on the leader (every replay runs
	// there), so that of two replays of one dead letter the second sees it
	// replayed and is refused with its status. The FSM refuses a second
	// retry of the step anyway; this makes the refusal say why.
	replays sync.Mutex
}

// Left is closed once the agent has left the cluster on an operator's
// request and shut down; the binary exits then.
func (a *Agent) Left() <-chan struct{} { return a.left }

// Leaving reports whether the agent has begun leaving the cluster
// ('tasker leave'); Left is closed when it is done.
func (a *Agent) Leaving() bool { return a.servers.leaving.Load() }

// New prepares an agent from a validated configuration.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	tlsCfg, err := cfg.loadTLS(time.Now())
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:     cfg,
		log:     log.With("node", cfg.NodeName),
		workers: newWorkers(),
		hub:     newHub(),
		events:  newEventRing(eventRingSize),
		push:    &http.Client{},
		tls:     tlsCfg,
		now:     func() time.Time { return time.Now().UTC() },
		rng:     rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))),
	}
	// Before any component takes a logger: with tracing on, their lines
	// about a traced call or attempt carry its trace id.
	if err := a.setupTelemetry(context.Background()); err != nil {
		return nil, err
	}
	if a.tel.Tracing {
		a.log = slog.New(telemetry.LogHandler(a.log.Handler()))
	}
	a.acl = newACLResolver(a)
	lim, err := newLimits(a)
	if err != nil {
		return nil, err
	}
	a.lim = lim
	a.streams, a.endAll = context.WithCancel(context.Background())
	a.caughtUp = make(chan struct{})
	a.left = make(chan struct{})
	a.starts = make(chan started, 4096)
	a.grace = cfg.ReclaimGrace
	a.sched = newScheduler(a)
	breakers, err := a.newBreakers()
	if err != nil {
		return nil, err
	}
	a.breakers = breakers
	if cfg.HealingFile != "" && cfg.Server {
		a.healQ = make(chan string, healQueueSize)
	}
	if cfg.AIEndpoint != "" {
		lc := cfg.llmConfig()
		lc.Logger = a.log
		c, err := llm.New(lc, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("ai-endpoint: %w", err)
		}
		a.llm = c
	}
	a.fwd = newForwarder(a)
	// The FSM's manifest limits are the same on every server (fsmLimits);
	// the leader applies this agent's settings before proposing.
	a.state = consensus.NewState(fsmLimits())
	// Unlike the manifest limits, the history's retention is configured:
	// the same on every server is the operator's part (docs/operations.md).
	a.state.SetHistoryRetention(consensus.HistoryRetention{MaxRecords: cfg.HistoryMaxRecords, MaxAge: cfg.HistoryMaxAge})
	a.fsm = consensus.NewFSM(a.state, a.log.With("component", "fsm"), a.observe)
	return a, nil
}

// observe runs on Raft's apply goroutine for every command: it must not block.
func (a *Agent) observe(fx *consensus.Effects) {
	a.sched.observe(fx)
	if a.pub != nil {
		a.pub.observe(fx)
	}
	a.events.recordTask(fx.Events, a.state.TraceParent)
	a.noteFailures(fx)
	woken := map[string]bool{}
	for _, e := range fx.Events {
		if !woken[e.TaskID] {
			woken[e.TaskID] = true
			a.hub.wake(e.TaskID)
		}
	}
}

// Start opens the data dir, joins (or forms) the Raft group if this is a
// server, joins gossip, and serves the local and agent-to-agent APIs. It
// returns once both listen.
func (a *Agent) Start(ctx context.Context) error {
	if err := a.start(ctx); err != nil {
		a.closeAll()
		return err
	}
	return nil
}

func (a *Agent) start(ctx context.Context) error {
	dataDir := a.cfg.DataDir
	if a.cfg.Dev && dataDir == "" {
		d, err := os.MkdirTemp("", "tasker-dev-")
		if err != nil {
			return fmt.Errorf("dev data dir: %w", err)
		}
		a.tmpDir, dataDir = d, d
	}
	advertise := a.cfg.AdvertiseAddr
	if advertise == "" {
		advertise = a.cfg.BindAddr
	}
	rpcLn, err := net.Listen("tcp", net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.RPCPort)))
	if err != nil {
		return fmt.Errorf("rpc-port: listen on %s:%d: %w", a.cfg.BindAddr, a.cfg.RPCPort, err)
	}
	rpcLn = a.rpcListener(rpcLn)
	a.rpcLn = rpcLn
	a.rpcAdvertise = net.JoinHostPort(advertise, strconv.Itoa(rpcLn.Addr().(*net.TCPAddr).Port))

	if a.cfg.Server {
		if err := a.openBus(ctx, dataDir); err != nil {
			return err
		}
		if err := a.openRaft(dataDir, advertise); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(a.cfg.ClientAddr, strconv.Itoa(a.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("http-port: listen on %s:%d: %w", a.cfg.ClientAddr, a.cfg.HTTPPort, err)
	}
	a.ln = ln
	a.warnExposed()
	if err := a.startGossip(ctx, advertise); err != nil {
		return err
	}
	a.srv = a.server()
	a.rpcSrv = a.rpcServer()
	runCtx, stop := context.WithCancel(context.Background())
	a.stop = stop
	bgs := []func(context.Context){a.recordStarts, a.publishCatalog, a.retryJoin, a.reconnect, a.watchMembers}
	if a.pub != nil {
		bgs = append(bgs, a.pub.run)
	}
	if a.healQ != nil {
		bgs = append(bgs, a.startHealing)
	}
	for _, fn := range bgs {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			fn(runCtx)
		}()
	}
	for _, s := range []struct {
		srv  *http.Server
		ln   net.Listener
		name string
	}{{a.srv, ln, "local API"}, {a.rpcSrv, rpcLn, "agent RPC"}} {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error(s.name+" stopped", "err", err)
			}
		}()
	}
	if a.node != nil {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			a.lead(runCtx)
		}()
		if a.cfg.BootstrapExpect > 1 && !a.node.HadState() {
			a.bg.Add(1)
			go func() {
				defer a.bg.Done()
				a.bootstrapLoop(runCtx)
			}()
		}
	}
	raftAddr := ""
	if a.node != nil {
		raftAddr = a.node.Addr()
	}
	a.log.Info("agent started", "api", a.Addr(), "rpc", a.rpcAdvertise, "gossip", a.gossipAddr, "raft", raftAddr,
		"bus", a.BusAddr(), "data_dir", dataDir, "server", a.cfg.Server)
	return nil
}

// openRaft opens this server's Raft node. A one-server cluster
// (-bootstrap-expect 1) bootstraps at once; larger ones wait for gossip
// to find their peers (bootstrapLoop).
func (a *Agent) openRaft(dataDir, advertise string) error {
	port := a.cfg.RaftPort
	if port == 0 {
		p, err := freePort(a.cfg.BindAddr)
		if err != nil {
			return err
		}
		port = p
	}
	ncfg := consensus.Config{
		NodeID:        a.cfg.NodeName,
		DataDir:       filepath.Join(dataDir, "raft"),
		BindAddr:      net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(port)),
		AdvertiseAddr: net.JoinHostPort(advertise, strconv.Itoa(port)),
		Bootstrap:     a.cfg.BootstrapExpect == 1,
		Logger:        a.log.With("component", "raft"),
		TLS:           a.raftTLS(),

		SnapshotThreshold: uint64(a.cfg.RaftSnapshotThreshold),
		SnapshotInterval:  a.cfg.RaftSnapshotInterval,
		TrailingLogs:      uint64(a.cfg.RaftTrailingLogs),
	}
	if a.cfg.Dev || a.cfg.DevTiming {
		ncfg.HeartbeatTimeout, ncfg.ElectionTimeout, ncfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	}
	node, err := consensus.Open(ncfg, a.fsm)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	a.node = node
	return nil
}

// closeAll releases what a failed start opened.
func (a *Agent) closeAll() {
	if a.gossip != nil {
		_ = a.gossip.Shutdown()
	}
	if a.ln != nil {
		_ = a.ln.Close()
	}
	if a.rpcLn != nil {
		_ = a.rpcLn.Close()
	}
	if a.node != nil {
		_ = a.node.Shutdown()
	}
	a.closeBus(nil)
	if a.tmpDir != "" {
		_ = os.RemoveAll(a.tmpDir)
	}
}

// Addr is the local API's base URL.
func (a *Agent) Addr() string {
	if a.ln == nil {
		return ""
	}
	return "http://" + a.ln.Addr().String()
}

// RPCAddr is the agent-to-agent API's address, host:port.
func (a *Agent) RPCAddr() string { return a.rpcAdvertise }

// GossipAddr is the address other agents -join, host:port.
func (a *Agent) GossipAddr() string {
	return a.gossipAddr
}

// lead runs the scheduler while this server is the leader.
func (a *Agent) lead(ctx context.Context) {
	var (
		cancel context.CancelFunc
		done   chan struct{}
	)
	stopSched := func() {
		if cancel != nil {
			cancel()
			<-done
			cancel = nil
		}
	}
	defer stopSched()
	changes := a.node.LeadershipChanges()
	start := func() {
		a.events.add(ringEvent{typ: eventLeaderElected, at: a.now(), payload: leaderPayload{
			Leader: a.cfg.NodeName, Message: a.cfg.NodeName + " is the leader",
		}})
		var sctx context.Context
		sctx, cancel = context.WithCancel(ctx)
		done = make(chan struct{})
		go func() {
			defer close(done)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); a.autopilot(sctx) }()
			go func() { defer wg.Done(); a.nameCluster(sctx) }()
			if a.bus != nil {
				wg.Add(2)
				go func() { defer wg.Done(); a.runBusSteps(sctx) }()
				go func() { defer wg.Done(); a.pub.lead(sctx) }()
			}
			a.sched.run(sctx)
			wg.Wait()
		}()
	}
	if a.node.IsLeader() {
		start()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case leader, ok := <-changes:
			if !ok {
				return
			}
			stopSched()
			a.metrics.leaderChange.Add(ctx, 1)
			if leader {
				a.log.Info("leadership acquired: scheduling")
				start()
			} else {
				a.log.Info("leadership lost")
			}
		}
	}
}

// propose commits a command through Raft and returns its result; a
// refused command comes back as the error. On any agent but the leader,
// the command is forwarded to the leader, retried across a leader change
// within the hold timeout: commands are idempotent, so a retry after an
// unknown outcome does no harm.
func (a *Agent) propose(ctx context.Context, c *fsmv1.Command) (*consensus.Result, error) {
	if a.isLeader() {
		res, err := a.proposeLocal(ctx, c)
		if !errors.Is(err, consensus.ErrNotLeader) {
			return res, err
		}
	}
	b, err := consensus.Encode(c)
	if err != nil {
		return nil, err
	}
	var res *consensus.Result
	err = a.fwd.do(ctx, func(ctx context.Context, base string) error {
		resp, err := a.fwd.agentClient(base).Apply(ctx, connect.NewRequest(&agentv1.ApplyRequest{Command: b}))
		if err != nil {
			return err
		}
		a.fwd.learn(resp.Header().Get(hdrLeader))
		res = decodeResult(resp.Msg.GetResult())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, res.Err
}

// proposeHere commits a command of an API call that this server answers
// from its own state afterwards, so it must commit it as the leader. If it
// is not the leader, or stops being it before the command is written
// (ErrNotLeader: nothing was written, as when it cannot write its log), the
// call fails with unavailable, and its caller (the agent that forwarded
// it, or the app) sends the whole call to the leader again: forwarding only
// the command, as propose does, would leave this server answering from a
// state that does not hold it yet (a task "not found" that was created).
func (a *Agent) proposeHere(ctx context.Context, c *fsmv1.Command) (*consensus.Result, error) {
	if !a.isLeader() {
		return nil, a.notLeaderError()
	}
	res, err := a.proposeLocal(ctx, c)
	if errors.Is(err, consensus.ErrNotLeader) {
		e := connect.NewError(connect.CodeUnavailable, err)
		e.Meta().Set(hdrNotLeader, a.notLeaderError().Meta().Get(hdrNotLeader))
		return nil, e
	}
	return res, err
}

// proposeLocal commits a command through this server's Raft node, which
// must be the leader. The leader's clock stamps it.
func (a *Agent) proposeLocal(ctx context.Context, c *fsmv1.Command) (*consensus.Result, error) {
	if a.node == nil {
		return nil, consensus.ErrNotLeader
	}
	c.Now = timestamppb.New(a.now())
	a.stampLimits(c)
	b, err := consensus.Encode(c)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	began := time.Now()
	end := a.commitSpan(ctx, c)
	resp, err := a.node.Apply(ctx, b)
	end(err)
	a.metrics.commit.Record(ctx, time.Since(began).Seconds())
	if err != nil {
		return nil, err
	}
	res, ok := resp.(*consensus.Result)
	if !ok {
		return nil, fmt.Errorf("unexpected FSM response %T", resp)
	}
	return res, res.Err
}

// rand draws the jitter for a failure; the draw is recorded in the
// command so every replica computes the same retry time.
func (a *Agent) rand() float64 {
	a.rngMu.Lock()
	defer a.rngMu.Unlock()
	return a.rng.Float64()
}

// background runs fn on a goroutine that Shutdown waits for.
func (a *Agent) background(fn func(ctx context.Context)) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fn(ctx)
	}()
}

func (a *Agent) failAsync(k leaseKey, code, msg string, retryable bool) {
	a.background(func(ctx context.Context) {
		_, err := a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
			TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: code, Message: msg, Retryable: retryable, Rand: a.rand(),
		}}})
		if err != nil && !errors.Is(err, consensus.ErrStaleAttempt) {
			a.log.WarnContext(a.taskLog(ctx, k.task), "failure not committed", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", err)
		}
		a.workers.drop(k)
	})
}

func (a *Agent) releaseAsync(k leaseKey, reason string) {
	a.background(func(ctx context.Context) {
		_, err := a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{
			TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Reason: reason,
		}}})
		if err != nil && !errors.Is(err, consensus.ErrStaleAttempt) {
			a.log.WarnContext(a.taskLog(ctx, k.task), "release not committed", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", err)
		}
		a.workers.drop(k)
	})
}

// Shutdown stops the agent gracefully: no new steps are dispatched, apps
// get until the shutdown timeout (or ctx) to finish the steps they hold,
// the rest are handed back, and Raft closes cleanly.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.shutOnce.Do(func() { a.shutErr = a.shutdown(ctx) })
	return a.shutErr
}

func (a *Agent) shutdown(ctx context.Context) error {
	a.draining.Store(true)
	drainCtx, cancel := context.WithTimeout(ctx, a.cfg.ShutdownTimeout)
	defer cancel()
	// Apps finish (or hand back) the steps they hold; on a client agent
	// their reports are forwarded to the leader as usual.
	a.drainInFlight(drainCtx)
	// Streams end now, so the server has only short calls left to finish.
	a.endAll()
	var errs []error
	// A client leaves gossip, so the leader stops sending it steps at once.
	// A server that is only stopping (a restart, an upgrade) stays a
	// member: leaving would make the autopilot remove it from Raft, and a
	// rolling restart would shrink the cluster. It leaves on 'tasker leave'.
	if a.gossip != nil && (!a.cfg.Server || a.servers.leaving.Load()) {
		if err := a.gossip.Leave(2 * time.Second); err != nil {
			a.log.Warn("gossip leave", "err", err)
		}
	}
	for _, srv := range []*http.Server{a.srv, a.rpcSrv} {
		if srv == nil {
			continue
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		scancel()
	}
	if a.stop != nil {
		a.stop()
	}
	a.bg.Wait()
	a.fwd.close()
	if a.gossip != nil {
		if err := a.gossip.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if a.node != nil {
		if err := a.node.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("raft: %w", err))
		}
	}
	a.closeBus(&errs)
	if a.tmpDir != "" {
		_ = os.RemoveAll(a.tmpDir)
	}
	// Last: the spans of the shutdown itself are exported too.
	tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := a.tel.Shutdown(tctx); err != nil {
		a.log.Warn("telemetry shutdown", "err", err)
	}
	tcancel()
	a.log.Info("agent stopped")
	return errors.Join(errs...)
}

// drainInFlight waits for the attempts apps hold to be reported, then
// hands back the rest so they are dispatched again after a restart.
func (a *Agent) drainInFlight(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		held := a.heldAll()
		if len(held) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			a.log.Warn("shutdown timeout: handing back steps still running", "steps", len(held))
			for _, k := range held {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, _ = a.propose(rctx, &fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{
					TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Reason: "agent shut down",
				}}})
				cancel()
			}
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) heldAll() []leaseKey {
	a.workers.mu.Lock()
	ids := make([]string, 0, len(a.workers.byID))
	for id := range a.workers.byID {
		ids = append(ids, id)
	}
	a.workers.mu.Unlock()
	var out []leaseKey
	for _, id := range ids {
		out = append(out, a.workers.held(id)...)
	}
	return out
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("raft-port: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newTaskID returns a unique, time-ordered task id.
func (a *Agent) newTaskID() string {
	var b [10]byte
	if _, err := crand.Read(b[:]); err != nil {
		a.rngMu.Lock()
		binary.LittleEndian.PutUint64(b[:8], a.rng.Uint64())
		a.rngMu.Unlock()
	}
	ms := uint64(a.now().UnixMilli())
	var raw [16]byte
	for i := 5; i >= 0; i-- {
		raw[i] = byte(ms)
		ms >>= 8
	}
	copy(raw[6:], b[:])
	return "tsk_" + crockford(raw[:])
}

// crockford encodes bytes in Crockford's base32 (lowercase, sortable).
func crockford(b []byte) string {
	const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	var out []byte
	var acc uint32
	bits := 0
	for _, x := range b {
		acc = acc<<8 | uint32(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, alphabet[(acc>>bits)&31])
		}
	}
	if bits > 0 {
		out = append(out, alphabet[(acc<<(5-bits))&31])
	}
	return string(out)
}
