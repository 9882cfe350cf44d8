package agent

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

// Cross-agent dispatch. The leader sends each ready step to one agent whose
// apps offer its capability, and whose system label does not name another
// system than the step's owner (servesOwner): itself (its attached
// workers, no RPC) or another agent from the gossip registry
// (AgentService.Deliver). Every
// attempt goes through the target's circuit breaker (agent/capability),
// composed as retry(breaker(timeout(attempt))):
//
//   - timeout: the attempt's lease, the step's timeout; a lapse fails it
//     with code timeout;
//   - breaker: a slot is taken (Breaker.Allow) when the attempt is
//     dispatched, and its outcome reports into it when the attempt ends:
//     completed is a success; failed retryably or timed out is a failure;
//     failed for good (an app's permanent error, a contract violation), handed
//     back or cancelled is not counted;
//   - retry: the workflow's retry policy, in the replicated state.
//
// An open breaker never costs an attempt: the step goes to another agent
// offering the capability, or waits (Step.waiting says why) until the
// breaker lets a trial through, an agent joins or its catalog changes, or
// a slot frees up.
//
// An agent gossip declares failed has its attempts end at once, as timed
// out (abandon says why not handed back); one that left gracefully has
// them handed back. A delivery the agent refused is handed back and tried
// elsewhere.

const (
	// deliverTimeout bounds the Deliver call (not the step): the other
	// agent only hands the attempt to one of its apps' open streams.
	deliverTimeout = 5 * time.Second
	// deliverCooldown is how long an agent that did not take a delivery
	// (no app there had room, or it was unreachable) is passed over, so
	// that a handed-back step does not bounce straight back to it.
	deliverCooldown = 500 * time.Millisecond
	// halfOpenRecheck is when steps waiting for a half-open breaker whose
	// trial is in flight are looked at again at the latest; normally the
	// trial's end wakes them first.
	halfOpenRecheck = time.Second
)

// errAttemptFailed is what a failed or timed-out attempt reports to its
// target's breaker.
var errAttemptFailed = errors.New("attempt failed")

// newBreakers builds the agent's circuit breakers from the policy file
// (-breakers), or the default policy.
func (a *Agent) newBreakers() (*breaker.Set, error) {
	var cfg breaker.Config
	if a.cfg.BreakersFile != "" {
		c, err := loadBreakers(a.cfg.BreakersFile)
		if err != nil {
			return nil, fmt.Errorf("breakers: %w", err)
		}
		cfg = c
	}
	log := a.log.With("component", "breaker")
	return breaker.NewSet(cfg, breaker.WithStateChange(func(c breaker.StateChange) {
		level := slog.LevelInfo
		if c.To == breaker.Open {
			level = slog.LevelWarn
		}
		log.Log(context.Background(), level, "circuit breaker "+c.To.String(), "target", c.Target, "from", c.From.String(), "dropped", c.Dropped)
		a.events.recordBreaker(c)
		if c.To != breaker.Open {
			// Steps waiting for this target may go now.
			a.sched.kick()
		}
	}))
}

// flight is an attempt in flight, as the leader tracks it.
type flight struct {
	target     string      // breaker.Target(agent, capability)
	agent      string      // the agent it was dispatched to
	capability string      //
	done       func(error) // reports the outcome to the target's breaker; nil if rebuilt from the state
	seq        uint64      // the dispatch, to tell it from a later one of the same attempt
	start      time.Time   // dispatched, for the step duration metric
	span       trace.Span  // the attempt's span; nil when tracing is off
}

// stepKey names a step of a task, for the waiting reasons the API shows.
type stepKey struct{ task, step string }

// undelivered is a committed attempt its agent (or app) did not take.
type undelivered struct {
	key    leaseKey
	seq    uint64
	reason string
	lost   bool // it may have reached an app: fail it as timed out, not hand it back
}

// candidate is an agent that may take steps of a capability.
type candidate struct {
	agent     string
	target    string
	base      string // the agent's RPC base URL; "" for this agent
	max       int    // the provider's concurrency limit; 0 if it declares none
	local     bool   // this agent: delivered to its own apps
	subject   string // a bus step's subject: published there (busstep.go)
	coolUntil time.Time
	// worker and push name the app here that has room (set by hasRoom).
	worker, push string
}

// choice is where a step goes.
type choice struct {
	candidate
	done func(error) // the breaker slot taken for the attempt
}

// want is what a step asks of the agent that runs it: its capability, and
// its owner system ("" for a step with no owner).
type want struct{ capability, owner string }

// dispatchBatch caches, for one batch of dispatches, the candidates of
// each capability and owner, and those nothing can take: capacity only
// shrinks within a batch, so a capability blocked once stays blocked until
// the next batch. The owner is part of the key because it narrows the
// candidates: the same capability may be blocked for one owner's steps and
// not for another's.
type dispatchBatch struct {
	s       *scheduler
	now     time.Time
	cands   map[want][]candidate
	blocked map[want]string
	tried   []bool
	notes   []string
	seen    map[consensus.StepRef]bool // the ready steps looked at in this batch
}

func (b *dispatchBatch) reset(s *scheduler, now time.Time) {
	b.s, b.now = s, now
	if b.cands == nil {
		b.cands, b.blocked, b.seen = map[want][]candidate{}, map[want]string{}, map[consensus.StepRef]bool{}
	}
	clear(b.cands)
	clear(b.blocked)
	clear(b.seen)
}

// dispatch commits one batch of dispatches (one Raft entry) for every
// ready step some agent can take, then delivers them.
func (s *scheduler) dispatch(ctx context.Context) {
	if len(s.ready) == 0 || s.a.draining.Load() {
		return
	}
	now, began := s.a.now(), time.Now()
	b := &s.batch
	b.reset(s, now)
	type pick struct {
		ref consensus.StepRef
		choice
		key leaseKey
		seq uint64
	}
	var (
		picks []pick
		cmds  []*fsmv1.Command
		seen  = b.seen
	)
	for _, ref := range s.ready {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		info, err := s.a.state.StepInfo(ref, now)
		if err != nil || !info.Ready {
			s.clearReason(stepKey{ref.TaskID, ref.Name})
			continue // finished, cancelled, or already dispatched since
		}
		var (
			c       choice
			why     string
			capName = info.Capability
		)
		if capName == "" {
			// Only transport: bus steps have no capability (busstep.go).
			c, capName, why = s.chooseBus(ref, now)
		} else {
			c, why = b.choose(want{info.Capability, info.Owner})
		}
		if why != "" {
			s.waitFor(ref, capName, why)
			continue
		}
		s.clearReason(stepKey{ref.TaskID, ref.Name})
		k := leaseKey{ref.TaskID, ref.Name, info.NextAttempt}
		if c.local {
			s.a.workers.hold(c.worker, k, info.Capability)
		}
		s.seq++
		s.addFlight(k, flight{target: c.target, agent: c.agent, capability: capName, done: c.done, seq: s.seq,
			start: time.Now(), span: s.a.attemptSpan(info.TraceParent, k, capName, c.agent)})
		picks = append(picks, pick{ref, c, k, s.seq})
		cmds = append(cmds, &fsmv1.Command{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{
			TaskId: ref.TaskID, Step: ref.Name, Attempt: int32(info.NextAttempt),
			Agent: c.agent, Worker: c.worker, Deadline: timestamppb.New(now.Add(info.Timeout)),
		}}})
	}
	s.ready = s.ready[:0]
	s.a.metrics.queueDepth.Store(0)
	if len(cmds) == 0 {
		return
	}
	bctx, endBatch := s.dispatchSpan(ctx, began, cmds)
	res, err := s.a.propose(bctx, batch(cmds))
	endBatch(err)
	if err != nil {
		s.log.Warn("dispatch not committed; will retry", "steps", len(cmds), "err", err)
		for _, p := range picks {
			s.a.workers.drop(p.key)
			s.land(p.key, breaker.ErrNotCounted, "")
			s.ready = append(s.ready, p.ref)
		}
		return
	}
	for i, p := range picks {
		if r := res.Batch[i]; r.Err != nil {
			s.a.workers.drop(p.key)
			s.land(p.key, breaker.ErrNotCounted, "")
			s.log.DebugContext(s.a.taskLog(ctx, p.ref.TaskID), "dispatch refused", "task_id", p.ref.TaskID, "step", p.ref.Name, "attempt", p.key.attempt, "err", r.Err)
			continue
		}
		s.deliver(p.ref, p.choice, p.key, p.seq)
	}
}

// choose picks the agent for a step that wants w: among this agent (if an
// app here offers the capability) and the other agents gossip lists as
// healthy providers, those that serve the step's owner (servesOwner), then
// one not cooling down after a failed delivery, with room (under its
// declared concurrency; here, an app with room), least in flight (ties to
// the first by name), whose breaker lets the attempt through. It returns
// why the step must wait when none does.
//
// A step's owner pins it to its system: it names a system of the manifest,
// and agents carry the system they serve as a label (-system), so an agent
// labeled with another system never gets the step, even though its apps
// offer the capability (a name clash across teams, or an app deployed
// beside the wrong service).
func (b *dispatchBatch) choose(w want) (choice, string) {
	if why, ok := b.blocked[w]; ok {
		return choice{}, why
	}
	capName := w.capability
	s := b.s
	cs := b.candidates(w)
	if cap(b.tried) < len(cs) {
		b.tried = make([]bool, len(cs))
	}
	b.tried = b.tried[:len(cs)]
	clear(b.tried)
	b.notes = b.notes[:0]
	full := 0
	for {
		best := -1
		for i := range cs {
			if b.tried[i] {
				continue
			}
			c := &cs[i]
			if c.coolUntil.After(b.now) {
				b.tried[i] = true
				b.notes = append(b.notes, c.agent+" did not take the last step sent to it; trying it again after "+clock(c.coolUntil))
				s.wakeWaitingAt(c.coolUntil)
				continue
			}
			if !b.hasRoom(c, capName) {
				b.tried[i] = true
				full++
				continue
			}
			if best < 0 || s.inflight[c.target] < s.inflight[cs[best].target] {
				best = i
			}
		}
		if best < 0 {
			break
		}
		b.tried[best] = true
		c := cs[best]
		done, err := s.a.breakers.Get(c.target).Allow()
		if err != nil {
			// Open until a time to come; or half-open with its trial calls
			// in flight, when Until is the moment of refusal.
			var oe *breaker.OpenError
			if errors.As(err, &oe) && oe.Until.After(time.Now()) {
				b.notes = append(b.notes, "circuit breaker open for "+c.target+" until "+clock(oe.Until))
				s.wakeWaitingAt(oe.Until)
			} else {
				// The trial's end wakes the waiting steps; this is a backstop.
				b.notes = append(b.notes, "circuit breaker half-open for "+c.target+", waiting for its trial step")
				s.wakeWaitingAt(b.now.Add(halfOpenRecheck))
			}
			continue
		}
		return choice{candidate: c, done: done}, ""
	}
	var why string
	if len(cs) == 0 && w.owner != "" {
		why = b.noAgentOfSystem(w)
	} else {
		why = waitReason(w, len(cs), b.notes, full)
	}
	b.blocked[w] = why
	return choice{}, why
}

// hasRoom reports whether c can take one more step of capName; for this
// agent, it picks the app that will.
func (b *dispatchBatch) hasRoom(c *candidate, capName string) bool {
	if c.local {
		var ok bool
		c.worker, c.push, ok = b.s.a.workers.pick(capName)
		return ok
	}
	return c.max <= 0 || b.s.inflight[c.target] < c.max
}

// servesOwner reports whether an agent labeled system may run a step
// owned by owner. A step without an owner runs anywhere its capability is
// offered, whatever the agent's label. An agent without a label serves
// every system, as every agent did before labels: a cluster (or a single
// -dev agent hosting several systems' apps) that labels nothing keeps
// running owned steps, and labeling is adopted one sidecar at a time.
func servesOwner(system, owner string) bool {
	return owner == "" || system == "" || system == owner
}

// candidates lists the agents offering w's capability that serve its
// owner, sorted by name: this one if an app attached here offers it (no
// gossip delay for our own) and its label serves the owner, and every
// other healthy provider the registry knows whose label does.
func (b *dispatchBatch) candidates(w want) []candidate {
	if cs, ok := b.cands[w]; ok {
		return cs
	}
	capName := w.capability
	s := b.s
	self := s.a.cfg.NodeName
	local := servesOwner(s.a.cfg.System, w.owner) && s.a.workers.offers(capName)
	var provs []gossip.Provider
	if s.a.gossip != nil {
		provs = s.a.gossip.Registry().Providers(capName)
	}
	cs := make([]candidate, 0, len(provs)+1)
	s.dmu.Lock()
	addLocal := func() {
		t := breaker.Target(self, capName)
		cs = append(cs, candidate{agent: self, target: t, local: true, coolUntil: s.cool[t]})
		local = false
	}
	for _, p := range provs {
		if p.Agent == self || p.RPCAddr == "" || !servesOwner(p.System, w.owner) {
			continue
		}
		if local && self < p.Agent {
			addLocal()
		}
		t := breaker.Target(p.Agent, capName)
		cs = append(cs, candidate{agent: p.Agent, target: t, base: s.a.rpcURL(p.RPCAddr), max: p.MaxConcurrency, coolUntil: s.cool[t]})
	}
	if local {
		addLocal()
	}
	s.dmu.Unlock()
	b.cands[w] = cs
	return cs
}

// noAgentOfSystem says why a step owned by a system waits when no agent
// serving that system offers its capability: none offers it at all, or
// only agents of other systems do, which it names, since that is most
// likely a sidecar missing its -system label or given the wrong one.
func (b *dispatchBatch) noAgentOfSystem(w want) string {
	s := b.s
	var others []string
	if s.a.workers.offers(w.capability) {
		others = append(others, agentOfSystem(s.a.cfg.NodeName, s.a.cfg.System))
	}
	if s.a.gossip != nil {
		for _, p := range s.a.gossip.Registry().Providers(w.capability) {
			if p.Agent != s.a.cfg.NodeName && p.RPCAddr != "" {
				others = append(others, agentOfSystem(p.Agent, p.System))
			}
		}
	}
	if len(others) == 0 {
		return waitReason(w, 0, nil, 0)
	}
	slices.Sort(others)
	return fmt.Sprintf("no agent of system %q offers %s (agents offering it: %s)", w.owner, w.capability, strings.Join(others, ", "))
}

func agentOfSystem(agent, system string) string {
	return fmt.Sprintf("%s of system %q", agent, system)
}

// waitReason says why no agent took a step that wants w: n candidates,
// the notes about those refused (breaker, cool-down), full of them at
// their limit. For an owned step, the agents are those serving its owner.
func waitReason(w want, n int, notes []string, full int) string {
	capName := w.capability
	agents := "agent"
	if w.owner != "" {
		agents = fmt.Sprintf("agent of system %q", w.owner)
	}
	switch {
	case n == 0:
		return "no agent offers capability " + capName + " yet"
	case len(notes) == 0:
		return "every " + agents + " offering " + capName + " is at its concurrency limit"
	}
	tail := "no other " + agents + " offers " + capName
	if full > 0 {
		tail = "every other " + agents + " offering " + capName + " is at its concurrency limit"
	}
	return strings.Join(notes, "; ") + "; " + tail
}

func clock(t time.Time) string { return t.UTC().Format(time.TimeOnly) }

// deliver sends a committed attempt to its agent: to an app here directly,
// to another agent over AgentService.Deliver.
func (s *scheduler) deliver(ref consensus.StepRef, c choice, k leaseKey, seq uint64) {
	tctx, tp := s.attemptTrace(k)
	asg, err := s.a.state.Assignment(ref)
	if err != nil {
		// The input mapping failed on real data (say, a field of the wrong
		// type): no attempt can succeed, so the step fails for good.
		s.log.WarnContext(s.a.taskLog(tctx, ref.TaskID), "cannot build step input", "task_id", ref.TaskID, "step", ref.Name, "attempt", k.attempt, "err", err)
		s.a.failAsync(k, workflow.CodeInputMapping, err.Error(), false)
		return
	}
	if f, ok := s.flights[k]; ok && f.span != nil {
		// Known only now: the assignment is read from the state here.
		f.span.SetAttributes(attrWorkflow.String(asg.Workflow), attrVersion.String(asg.WorkflowVersion))
	}
	if tp != "" && c.local {
		s.a.asgTraces.put(asg, tp)
	}
	switch {
	case c.subject != "":
		s.deliverBus(tctx, tp, asg, c, k, seq)
	case !c.local:
		s.deliverRemote(tctx, tp, asg, c, k, seq)
	case c.push != "":
		s.a.pushAsync(asg, c.push, c.worker)
	case !s.a.workers.deliver(c.worker, asg):
		s.undeliver(undelivered{k, seq, "worker " + c.worker + " is not polling", false})
	}
}

// attemptTrace is the traceparent of an attempt's span, "" untraced.
func (s *scheduler) attemptTrace(k leaseKey) (context.Context, string) {
	f, ok := s.flights[k]
	if !ok || f.span == nil {
		return context.Background(), ""
	}
	ctx := trace.ContextWithSpan(context.Background(), f.span)
	return ctx, s.a.tel.TraceParent(ctx)
}

// deliverRemote hands an attempt to another agent, which gives it to one
// of its apps, off the scheduler's goroutine. An agent that does not take
// it is passed over for a moment, and the attempt ends (handBack) to go
// elsewhere: unreachable, or no answer in time, is a breaker failure; no
// app there with room is not counted (it answered: full, not sick).
func (s *scheduler) deliverRemote(tctx context.Context, traceParent string, asg *consensus.Assignment, c choice, k leaseKey, seq uint64) {
	client := s.a.fwd.peerClient(c.base)
	req := &agentv1.DeliverRequest{Assignment: pbAssignment(asg), Leader: s.a.cfg.NodeName}
	req.Assignment.TraceParent = traceParent
	timeout := deliverTimeout
	if d := s.a.breakers.Get(c.target).Policy().Timeout; d > 0 {
		timeout = min(timeout, d)
	}
	s.a.background(func(ctx context.Context) {
		// The call joins the attempt's trace: the executing agent's spans
		// are its children.
		if traceParent != "" {
			ctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(tctx))
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		resp, err := client.Deliver(dctx, connect.NewRequest(req))
		if err == nil {
			s.log.DebugContext(ctx, "step delivered", "task_id", k.task, "step", k.step, "attempt", k.attempt, "agent", c.agent, "worker", resp.Msg.GetWorkerId())
			return
		}
		code := connect.CodeOf(err)
		outcome := error(err)
		if code == connect.CodeResourceExhausted {
			outcome = breaker.ErrNotCounted
		}
		c.done(outcome)
		s.dmu.Lock()
		s.cool[c.target] = time.Now().Add(deliverCooldown)
		s.dmu.Unlock()
		s.log.InfoContext(ctx, "agent did not take a step", "task_id", k.task, "step", k.step, "attempt", k.attempt, "agent", c.agent, "err", err)
		// Refused (no room, shutting down) or never sent (connection
		// refused): nobody runs the attempt, so it is handed back under
		// its number. Any other failure (no answer in time) may have
		// reached an app: that attempt is abandoned as timed out, so that
		// the step's next run has a new number and no attempt runs twice.
		refused := code == connect.CodeResourceExhausted || code == connect.CodeUnavailable
		s.undeliver(undelivered{k, seq, c.agent + " did not take it (" + code.String() + ")", !refused})
	})
}

// undeliver queues an attempt nobody took, for the run goroutine to end
// (handBack): only it knows whether the attempt was dispatched again
// meanwhile, and the commands that end one go by attempt number, so a late
// one would end the new dispatch.
func (s *scheduler) undeliver(u undelivered) {
	s.mu.Lock()
	if s.active {
		s.undelivered = append(s.undelivered, u)
	}
	s.mu.Unlock()
	s.signal()
}

// handBack ends the attempts nobody took, still as dispatched, in one
// entry: handed back, the step is ready again under the same attempt
// number; abandoned, it fails as timed out and retries as the workflow says.
func (s *scheduler) handBack(ctx context.Context) {
	s.mu.Lock()
	list := s.undelivered
	s.undelivered = nil
	s.mu.Unlock()
	var cmds []*fsmv1.Command
	for _, u := range list {
		if f, ok := s.flights[u.key]; !ok || f.seq != u.seq {
			continue // ended meanwhile, or already ended and sent elsewhere
		}
		cmds = append(cmds, s.endCmd(u.key, u.reason, u.lost))
	}
	s.proposeEnds(ctx, cmds)
}

// endCmd ends an attempt in flight: a hand-back (ReleaseStep, the attempt
// is not spent) or, when it may still run somewhere (lost), a timeout
// (FailStep, retryable, code timeout, as if its lease had lapsed).
func (s *scheduler) endCmd(k leaseKey, reason string, lost bool) *fsmv1.Command {
	if lost {
		return &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
			TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: workflow.CodeTimeout,
			Message: reason, Retryable: true, Rand: s.a.rand(),
		}}}
	}
	return &fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{
		TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Reason: reason,
	}}}
}

// proposeEnds commits the end of attempts synchronously, on the run
// goroutine, so that none can land after the step was dispatched again.
func (s *scheduler) proposeEnds(ctx context.Context, cmds []*fsmv1.Command) {
	if len(cmds) == 0 {
		return
	}
	res, err := s.a.propose(ctx, batch(cmds))
	if err != nil {
		// The leases still run out: the attempts time out then.
		s.log.Warn("attempts not ended", "steps", len(cmds), "err", err)
		return
	}
	for i, r := range res.Batch {
		if err := r.Err; err != nil && !errors.Is(err, consensus.ErrStaleAttempt) && !errors.Is(err, consensus.ErrTaskEnded) {
			s.log.WarnContext(s.a.taskLog(ctx, endTask(cmds[i])), "attempt not ended", "task_id", endTask(cmds[i]), "step", endStep(cmds[i]), "err", err)
		}
	}
}

// memberEvent reacts to the registry: the attempts in flight on an agent
// that failed or left end at once, and any change may let waiting steps
// go.
func (s *scheduler) memberEvent(ctx context.Context, ev gossip.Event) {
	name := ev.Member.Name
	switch ev.Type {
	case gossip.EventMemberFailed:
		s.abandon(ctx, func(agent string) bool { return agent == name }, "agent "+name+" failed while running the attempt", true)
	case gossip.EventMemberLeft:
		s.abandon(ctx, func(agent string) bool { return agent == name }, "agent "+name+" left", false)
	}
	s.requeueAll()
}

// abandonGone ends the attempts in flight on agents gossip knows to have
// failed or left: a new leader's view of agents that went away during the
// election. An agent gossip does not know (yet) keeps its attempts: their
// leases cover them.
func (s *scheduler) abandonGone(ctx context.Context) {
	if s.a.gossip == nil || len(s.flights) == 0 {
		return
	}
	status := map[string]gossip.Status{}
	for _, m := range s.a.gossip.Members() {
		status[m.Name] = m.Status
	}
	s.abandon(ctx, func(agent string) bool { return status[agent] == gossip.StatusDead }, "its agent failed while running the attempt", true)
	s.abandon(ctx, func(agent string) bool { return status[agent] == gossip.StatusLeft }, "its agent left", false)
}

// abandon ends every attempt in flight on the agents match selects.
//
// An agent that failed (declared dead by gossip) may only be cut off, its
// app still running the attempt and able to report once the partition
// heals: its attempts fail as timed out (lost), exactly as a lapsed lease
// would, only sooner. The step runs again as a new attempt, after the
// workflow's backoff, and a late report for the old one is refused as
// stale: no attempt number ever runs twice, and each report is for the
// run that made it. That spends an attempt (a step on its last one fails
// for good), and the failure counts against the agent's breaker, as an
// unreachable agent's does.
//
// An agent that left gracefully first let its apps finish or hand back
// what they held; anything still recorded on it is handed back without
// spending the attempt.
func (s *scheduler) abandon(ctx context.Context, match func(agent string) bool, reason string, lost bool) {
	var cmds []*fsmv1.Command
	agents := map[string]int{}
	for k, f := range s.flights {
		if f.agent != s.a.cfg.NodeName && match(f.agent) {
			cmds = append(cmds, s.endCmd(k, reason, lost))
			agents[f.agent]++
		}
	}
	if len(cmds) == 0 {
		return
	}
	s.log.Info("ending the attempts of agents that are gone", "reason", reason, "steps", len(cmds), "agents", agents, "spent", lost)
	s.proposeEnds(ctx, cmds)
}

// addFlight records an attempt in flight on its target.
func (s *scheduler) addFlight(k leaseKey, f flight) {
	if _, ok := s.flights[k]; ok {
		s.land(k, breaker.ErrNotCounted, "") // cannot happen: it ended before it was dispatched again
	}
	s.flights[k] = f
	s.dmu.Lock()
	s.inflight[f.target]++
	s.dmu.Unlock()
}

// land ends an attempt in flight: its outcome reaches the target's
// breaker, its slot frees, and steps waiting for the capability may go.
// label names the outcome in metrics and the attempt's span; "" for a
// dispatch that was never committed, which no metric counts.
func (s *scheduler) land(k leaseKey, outcome error, label string) {
	f, ok := s.flights[k]
	if !ok {
		return
	}
	delete(s.flights, k)
	s.a.landed(f, label)
	s.dmu.Lock()
	if n := s.inflight[f.target] - 1; n > 0 {
		s.inflight[f.target] = n
	} else {
		delete(s.inflight, f.target)
	}
	s.dmu.Unlock()
	if f.done != nil {
		f.done(outcome)
	}
	s.requeue(f.capability)
}

// outcome is what the end of an attempt (evs[i]) means for its target's
// breaker: nil for a success, errAttemptFailed for a failure, and a
// not-counted error for a permanent failure, a hand-back or a cancel.
func (s *scheduler) outcome(evs []consensus.Event, i int) error {
	e := evs[i]
	switch e.Type {
	case consensus.EventStepCompleted:
		return nil
	case consensus.EventStepFailed:
		if code, _, _ := strings.Cut(e.Message, ": "); code == workflow.CodeTimeout {
			return errAttemptFailed
		}
		// The state decided what the failure leads to in the events that
		// follow in the same command.
		for _, n := range evs[i+1:] {
			if n.TaskID != e.TaskID || n.Step != e.Step {
				continue
			}
			switch n.Type {
			case consensus.EventStepRetryScheduled:
				return errAttemptFailed
			case consensus.EventStepDeadLettered:
				if s.failedRetryably(e) {
					return errAttemptFailed // out of attempts, but the app said it was transient
				}
				return breaker.MarkPermanent(errAttemptFailed)
			}
		}
		return errAttemptFailed
	}
	return breaker.ErrNotCounted
}

// failedRetryably reports whether the failure e recorded was retryable by
// the app's account. Only read for a step that failed for good: rare.
func (s *scheduler) failedRetryably(e consensus.Event) bool {
	v, err := s.a.state.Task(e.TaskID)
	if err != nil {
		return false
	}
	for _, st := range v.Steps {
		if st.Name == e.Step {
			return st.LastError != nil && st.LastError.Attempt == e.Attempt && st.LastError.Retryable
		}
	}
	return false
}

// adoptFlights counts the attempts in flight a new leader finds in the
// state against their agents, so that least-in-flight and the limits hold
// across a leader change. Their outcomes are not reported to breakers:
// this leader did not take their slots.
func (s *scheduler) adoptFlights(leases []consensus.Lease) {
	views := map[string]*consensus.TaskView{}
	for _, l := range leases {
		v, ok := views[l.TaskID]
		if !ok {
			v, _ = s.a.state.Task(l.TaskID)
			views[l.TaskID] = v
		}
		if v == nil || l.Step < 0 || l.Step >= len(v.Steps) || v.Steps[l.Step].Agent == "" {
			continue
		}
		st := &v.Steps[l.Step]
		t := breaker.Target(st.Agent, st.Capability)
		s.a.breakers.Get(t) // listed by Breakers from now on
		s.seq++
		s.addFlight(leaseKey{l.TaskID, l.Name, l.Attempt}, flight{target: t, agent: st.Agent, capability: st.Capability, seq: s.seq})
	}
}

// forgetFlights drops every attempt in flight, reporting none: leadership
// ended, or the state was replaced.
func (s *scheduler) forgetFlights() {
	for _, f := range s.flights {
		if f.done != nil {
			f.done(breaker.ErrNotCounted)
		}
	}
	clear(s.flights)
	s.dmu.Lock()
	clear(s.inflight)
	s.dmu.Unlock()
}

// inFlight returns the attempts in flight by breaker target.
func (s *scheduler) inFlight() map[string]int {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return maps.Clone(s.inflight)
}

// waitFor parks a ready step no agent can take, with the reason the API
// shows, until something changes: a worker or catalog change, a member
// joining, a breaker half-opening, a slot freeing.
func (s *scheduler) waitFor(ref consensus.StepRef, capName, why string) {
	s.waiting[capName] = append(s.waiting[capName], ref)
	k := stepKey{ref.TaskID, ref.Name}
	s.dmu.Lock()
	if _, had := s.reasons[k]; !had {
		s.nreasons.Add(1)
	}
	s.reasons[k] = why
	s.dmu.Unlock()
}

func (s *scheduler) clearReason(k stepKey) {
	if s.nreasons.Load() == 0 {
		return
	}
	s.dmu.Lock()
	if _, ok := s.reasons[k]; ok {
		delete(s.reasons, k)
		s.nreasons.Add(-1)
	}
	s.dmu.Unlock()
}

func (s *scheduler) clearReasons() {
	s.dmu.Lock()
	clear(s.reasons)
	s.nreasons.Store(0)
	s.dmu.Unlock()
}

// requeue makes the steps waiting for capName ready to be tried again.
func (s *scheduler) requeue(capName string) {
	if refs := s.waiting[capName]; len(refs) > 0 {
		s.ready = append(s.ready, refs...)
		delete(s.waiting, capName)
	}
}

// requeueAll makes every waiting step ready to be tried again.
func (s *scheduler) requeueAll() {
	for capName, refs := range s.waiting {
		s.ready = append(s.ready, refs...)
		delete(s.waiting, capName)
	}
}

// wakeWaitingAt makes sure the waiting steps are tried again at t (or
// before: every wake retries them all, and they set the next one).
func (s *scheduler) wakeWaitingAt(t time.Time) {
	if !s.wakeAt.IsZero() && !t.Before(s.wakeAt) {
		return
	}
	s.wakeAt = t
	heap.Push(&s.timers, timer{at: t, wake: true})
}

// kick makes the run goroutine try every waiting step again (a breaker
// closed or half-opened), from any goroutine.
func (s *scheduler) kick() {
	s.mu.Lock()
	s.kicked = true
	s.mu.Unlock()
	s.signal()
}

// taskOut is a task as the API returns it: on the leader, with why each
// ready step that waits is not running yet.
func (a *Agent) taskOut(v *consensus.TaskView) *taskerv1.Task {
	t := pbTask(v)
	s := a.sched
	if s.nreasons.Load() == 0 || !a.isLeader() {
		return t
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for _, st := range t.Steps {
		if why, ok := s.reasons[stepKey{t.Id, st.Name}]; ok {
			st.Waiting = why
		}
	}
	return t
}

// Breakers lists the leader's circuit breakers, one per agent/capability
// it has dispatched to, with the attempts it has in flight there.
func (c *clusterAPI) Breakers(context.Context, *connect.Request[taskerv1.BreakersRequest]) (*connect.Response[taskerv1.BreakersResponse], error) {
	a := c.a
	if !a.isLeader() {
		return nil, a.notLeaderError()
	}
	inflight := a.sched.inFlight()
	out := &taskerv1.BreakersResponse{Leader: a.cfg.NodeName}
	for _, st := range a.breakers.Snapshot() {
		out.Breakers = append(out.Breakers, &taskerv1.Breaker{
			Target: st.Target, State: st.State.String(),
			Requests: st.Counts.Requests, Successes: st.Counts.Successes, Failures: st.Counts.Failures,
			ConsecutiveFailures: st.Counts.ConsecutiveFailures,
			Since:               pbTime(st.Since), OpenUntil: pbTime(st.OpenUntil),
			InFlight: int32(inflight[st.Target]),
		})
	}
	return connect.NewResponse(out), nil
}

// offers reports whether a connected app here offers capName.
func (ws *workers) offers(capName string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byID {
		if w.caps[capName] != nil && w.reachable() {
			return true
		}
	}
	return false
}
