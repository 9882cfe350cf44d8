package agent

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// scheduler is the coordinator: on the leader only, it turns ready steps
// into dispatches, to this agent's apps or to another agent offering the
// capability (dispatch.go), wakes failed steps when their backoff ends,
// and times out attempts whose lease lapses. It owns no workflow state:
// every decision is re-checked against the replicated state and committed
// through Raft before anything is sent.
type scheduler struct {
	a   *Agent
	log *slog.Logger

	mu      sync.Mutex
	active  bool
	stale   bool // the state was replaced (snapshot restore): rebuild
	kicked  bool // retry every waiting step (a breaker closed or half-opened)
	pending []*consensus.Effects
	// undelivered are attempts committed to an agent that did not take
	// them; the run goroutine hands them back (see handBack).
	undelivered []undelivered
	wake        chan struct{}

	// Owned by the run goroutine.
	ready   []consensus.StepRef
	waiting map[string][]consensus.StepRef // by capability: no agent could take them
	timers  timerHeap
	leases  map[leaseKey]time.Time
	flights map[leaseKey]flight // attempts in flight, by where they run
	seq     uint64              // numbers dispatches, to tell a re-dispatch from the one before
	wakeAt  time.Time           // when the earliest wake timer for waiting steps is due
	members <-chan gossip.Event
	batch   dispatchBatch

	// Shared with the API handlers; written by the run goroutine (and cool
	// by delivery goroutines) under dmu.
	dmu      sync.Mutex
	inflight map[string]int       // by breaker target: what Breakers shows
	reasons  map[stepKey]string   // why a ready step is not running yet
	cool     map[string]time.Time // targets that just failed to take a delivery, until when
	nreasons atomic.Int64         // len(reasons), read without the lock
}

func newScheduler(a *Agent) *scheduler {
	return &scheduler{
		a: a, log: a.log.With("component", "scheduler"), wake: make(chan struct{}, 1),
		flights: map[leaseKey]flight{}, inflight: map[string]int{}, reasons: map[stepKey]string{}, cool: map[string]time.Time{},
	}
}

func (s *scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// observe receives the effects of every applied command (from the FSM, on
// Raft's goroutine): it queues them without blocking.
func (s *scheduler) observe(fx *consensus.Effects) {
	s.mu.Lock()
	if s.active {
		s.pending = append(s.pending, fx)
	}
	s.mu.Unlock()
	s.signal()
}

// reset makes the scheduler rebuild its queue and timers from the state.
func (s *scheduler) reset() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
	s.signal()
}

// run schedules until ctx ends (leadership lost or shutdown).
func (s *scheduler) run(ctx context.Context) {
	s.mu.Lock()
	s.active, s.pending, s.undelivered = true, nil, nil
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active, s.pending, s.undelivered = false, nil, nil
		s.mu.Unlock()
		// A new leader rebuilds what is in flight from the state; the
		// outcomes this one will not see must not hold half-open slots.
		s.forgetFlights()
		s.clearReasons()
	}()
	if s.a.gossip != nil {
		// Subscribed before the barrier, so no membership change between
		// the rebuild and the first wait goes unseen.
		ch, cancel := s.a.gossip.Registry().Subscribe()
		defer cancel()
		s.members = ch
	}
	// The barrier can fail while this server still leads (a snapshot
	// restore or a busy disk can outlast it): try again rather than lead
	// without scheduling, and without the API ever serving, until the next
	// election.
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := s.a.node.Barrier(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !s.a.node.IsLeader() {
			s.log.Warn("barrier before scheduling failed; leadership ended", "err", err)
			return
		}
		s.log.Warn("barrier before scheduling failed; trying again", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	s.a.caughtUpOnce.Do(func() { close(s.a.caughtUp) })
	s.rebuild(false)
	s.abandonGone(ctx)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		stale, kicked := s.stale, s.kicked
		s.stale, s.kicked = false, false
		s.mu.Unlock()
		if kicked {
			s.requeueAll()
		}
		if stale {
			s.drain()
			s.rebuild(true)
			s.abandonGone(ctx)
		}
		s.drain()
		s.handBack(ctx)
		s.fire(ctx)
		s.dispatch(ctx)
		next := time.Hour
		if len(s.timers) > 0 {
			next = max(time.Until(s.timers[0].at), 0)
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-s.a.workers.changed:
			s.requeueAll()
		case ev, ok := <-s.members:
			if !ok {
				s.members = nil // gossip shut down
				break
			}
			s.memberEvent(ctx, ev)
		case <-timer.C:
		}
	}
}

// rebuild loads the work of every active task, as a new leader must.
// restored says the state was just replaced by a snapshot: attempts it
// records in flight that no worker here holds belong to no one.
func (s *scheduler) rebuild(restored bool) {
	p := s.a.state.ScanActive(s.a.now())
	s.ready = append(s.ready[:0], p.Ready...)
	s.waiting = map[string][]consensus.StepRef{}
	s.timers = s.timers[:0]
	s.wakeAt = time.Time{}
	s.leases = map[leaseKey]time.Time{}
	s.forgetFlights()
	s.clearReasons()
	// Attempts in flight keep running while a leader is elected; their apps
	// need a moment to reconnect and re-send results they finished in time,
	// so a lease that lapsed meanwhile gets a short grace before timing out.
	grace := s.a.now().Add(s.a.grace)
	for _, l := range p.Leases {
		orphan := restored && !s.a.workers.holds(leaseKey{l.TaskID, l.Name, l.Attempt})
		if l.Deadline.Before(grace) || orphan {
			l.Deadline = grace
		}
		s.watchLease(l)
	}
	s.adoptFlights(p.Leases)
	for _, r := range p.Retries {
		heap.Push(&s.timers, timer{at: r.Deadline, ref: r.StepRef})
	}
	s.log.Info("scheduler ready", "ready", len(p.Ready), "in_flight", len(p.Leases), "retrying", len(p.Retries))
}

func (s *scheduler) watchLease(l consensus.Lease) {
	k := leaseKey{l.TaskID, l.Name, l.Attempt}
	s.leases[k] = l.Deadline
	heap.Push(&s.timers, timer{at: l.Deadline, ref: l.StepRef, lease: true, attempt: l.Attempt})
}

// drain folds queued effects into the queue, the timers, the leases and
// the attempts in flight, whose outcomes reach their targets' breakers.
func (s *scheduler) drain() {
	s.mu.Lock()
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, fx := range batch {
		s.ready = append(s.ready, fx.Ready...)
		for _, r := range fx.Retries {
			heap.Push(&s.timers, timer{at: r.Deadline, ref: r.StepRef})
		}
		for _, l := range fx.Leases {
			s.watchLease(l)
		}
		for _, l := range fx.Released {
			k := leaseKey{l.TaskID, l.Name, l.Attempt}
			delete(s.leases, k)
			s.a.workers.drop(k)
			s.land(k, breaker.ErrNotCounted, "released")
		}
		for i, e := range fx.Events {
			switch e.Type {
			case consensus.EventStepCompleted, consensus.EventStepFailed, consensus.EventStepReleased, consensus.EventStepCancelled:
				k := leaseKey{e.TaskID, e.Step, e.Attempt}
				delete(s.leases, k)
				s.a.workers.drop(k)
				if _, ok := s.flights[k]; ok {
					s.land(k, s.outcome(fx.Events, i), stepOutcome(fx.Events, i))
				}
				if e.Type == consensus.EventStepCancelled {
					s.clearReason(stepKey{e.TaskID, e.Step})
				}
			case consensus.EventStepResolvedManually:
				s.clearReason(stepKey{e.TaskID, e.Step})
			}
		}
		s.a.countEvents(context.Background(), fx.Events)
	}
	s.a.metrics.queueDepth.Store(int64(len(s.ready)))
}

// fire handles due timers: retries become ready; lapsed leases fail with
// a timeout; wake timers retry the steps waiting for an agent.
func (s *scheduler) fire(ctx context.Context) {
	now := s.a.now()
	for len(s.timers) > 0 && !s.timers[0].at.After(now) {
		t := heap.Pop(&s.timers).(timer)
		if t.wake {
			if !s.wakeAt.After(t.at) {
				s.wakeAt = time.Time{}
			}
			s.requeueAll()
			continue
		}
		if !t.lease {
			s.ready = append(s.ready, t.ref)
			continue
		}
		k := leaseKey{t.ref.TaskID, t.ref.Name, t.attempt}
		if d, ok := s.leases[k]; !ok || !d.Equal(t.at) {
			continue // completed, or extended: a later timer covers it
		}
		delete(s.leases, k)
		tctx, _ := s.attemptTrace(k)
		tctx = s.a.taskLog(tctx, k.task)
		s.log.InfoContext(tctx, "attempt timed out", "task_id", k.task, "step", k.step, "attempt", k.attempt)
		_, err := s.a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
			TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: workflow.CodeTimeout,
			Message: "no result before the deadline", Retryable: true, Rand: s.a.rand(),
		}}})
		if err != nil && !errors.Is(err, consensus.ErrStaleAttempt) && !errors.Is(err, consensus.ErrTaskEnded) {
			s.log.WarnContext(tctx, "timeout not committed", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", err)
		}
		s.a.workers.drop(k)
	}
}

func batch(cmds []*fsmv1.Command) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: cmds}}}
}

type timer struct {
	at      time.Time
	ref     consensus.StepRef
	lease   bool
	wake    bool // retry the waiting steps (a breaker half-opens, a target cooled down)
	attempt int
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
