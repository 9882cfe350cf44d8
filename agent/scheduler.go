package agent

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// scheduler is the coordinator: on the leader only, it turns ready steps
// into dispatches, wakes failed steps when their backoff ends, and times
// out attempts whose lease lapses. It owns no workflow state: every
// decision is re-checked against the replicated state and committed
// through Raft before anything is sent.
type scheduler struct {
	a   *Agent
	log *slog.Logger

	mu      sync.Mutex
	active  bool
	stale   bool // the state was replaced (snapshot restore): rebuild
	pending []*consensus.Effects
	wake    chan struct{}

	// Owned by the run goroutine.
	ready   []consensus.StepRef
	waiting map[string][]consensus.StepRef // by capability: no worker had room
	timers  timerHeap
	leases  map[leaseKey]time.Time
}

func newScheduler(a *Agent) *scheduler {
	return &scheduler{a: a, log: a.log.With("component", "scheduler"), wake: make(chan struct{}, 1)}
}

// observe receives the effects of every applied command (from the FSM, on
// Raft's goroutine): it queues them without blocking.
func (s *scheduler) observe(fx *consensus.Effects) {
	s.mu.Lock()
	if s.active {
		s.pending = append(s.pending, fx)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// reset makes the scheduler rebuild its queue and timers from the state.
func (s *scheduler) reset() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run schedules until ctx ends (leadership lost or shutdown).
func (s *scheduler) run(ctx context.Context) {
	s.mu.Lock()
	s.active, s.pending = true, nil
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active, s.pending = false, nil
		s.mu.Unlock()
	}()
	if err := s.a.node.Barrier(ctx); err != nil {
		s.log.Warn("barrier before scheduling failed; giving up leadership work", "err", err)
		return
	}
	s.a.caughtUpOnce.Do(func() { close(s.a.caughtUp) })
	s.rebuild(false)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		stale := s.stale
		s.stale = false
		s.mu.Unlock()
		if stale {
			s.drain()
			s.rebuild(true)
		}
		s.drain()
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
			for capName, refs := range s.waiting {
				s.ready = append(s.ready, refs...)
				delete(s.waiting, capName)
			}
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
	s.leases = map[leaseKey]time.Time{}
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

// drain folds queued effects into the queue, the timers and the leases.
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
		}
		for _, e := range fx.Events {
			switch e.Type {
			case consensus.EventStepCompleted, consensus.EventStepFailed, consensus.EventStepReleased, consensus.EventStepCancelled:
				k := leaseKey{e.TaskID, e.Step, e.Attempt}
				delete(s.leases, k)
				s.a.workers.drop(k)
			}
		}
	}
}

// dispatch commits one batch of dispatches for every ready step that a
// worker has room for, then delivers them.
func (s *scheduler) dispatch(ctx context.Context) {
	if len(s.ready) == 0 || s.a.draining.Load() {
		return
	}
	now := s.a.now()
	type pick struct {
		ref    consensus.StepRef
		worker string
		push   string
		key    leaseKey
	}
	var (
		picks []pick
		cmds  []*fsmv1.Command
		seen  = map[consensus.StepRef]bool{}
	)
	for _, ref := range s.ready {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		info, err := s.a.state.StepInfo(ref, now)
		if err != nil || !info.Ready {
			continue // finished, cancelled, or already dispatched since
		}
		id, push, ok := s.a.workers.pick(info.Capability)
		if !ok {
			s.waiting[info.Capability] = append(s.waiting[info.Capability], ref)
			continue
		}
		k := leaseKey{ref.TaskID, ref.Name, info.NextAttempt}
		s.a.workers.hold(id, k, info.Capability)
		picks = append(picks, pick{ref, id, push, k})
		cmds = append(cmds, &fsmv1.Command{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{
			TaskId: ref.TaskID, Step: ref.Name, Attempt: int32(info.NextAttempt),
			Agent: s.a.cfg.NodeName, Worker: id, Deadline: timestamppb.New(now.Add(info.Timeout)),
		}}})
	}
	s.ready = s.ready[:0]
	if len(cmds) == 0 {
		return
	}
	res, err := s.a.propose(ctx, batch(cmds))
	if err != nil {
		s.log.Warn("dispatch not committed; will retry", "steps", len(cmds), "err", err)
		for _, p := range picks {
			s.a.workers.drop(p.key)
			s.ready = append(s.ready, p.ref)
		}
		return
	}
	for i, p := range picks {
		if r := res.Batch[i]; r.Err != nil {
			s.a.workers.drop(p.key)
			s.log.Debug("dispatch refused", "task", p.ref.TaskID, "step", p.ref.Name, "err", r.Err)
			continue
		}
		s.deliver(ctx, p.ref, p.worker, p.push, p.key)
	}
}

// deliver sends a committed attempt to its worker.
func (s *scheduler) deliver(ctx context.Context, ref consensus.StepRef, worker, push string, k leaseKey) {
	asg, err := s.a.state.Assignment(ref)
	if err != nil {
		// The input mapping failed on real data (say, a field of the wrong
		// type): no attempt can succeed, so the step fails for good.
		s.log.Warn("cannot build step input", "task", ref.TaskID, "step", ref.Name, "err", err)
		s.a.failAsync(k, workflow.CodeInputMapping, err.Error(), false)
		return
	}
	if push != "" {
		s.a.pushAsync(asg, push, worker)
		return
	}
	if !s.a.workers.deliver(worker, asg) {
		s.a.releaseAsync(k, "worker "+worker+" is not polling")
	}
}

// fire handles due timers: retries become ready; lapsed leases fail with
// a timeout.
func (s *scheduler) fire(ctx context.Context) {
	now := s.a.now()
	for len(s.timers) > 0 && !s.timers[0].at.After(now) {
		t := heap.Pop(&s.timers).(timer)
		if !t.lease {
			s.ready = append(s.ready, t.ref)
			continue
		}
		k := leaseKey{t.ref.TaskID, t.ref.Name, t.attempt}
		if d, ok := s.leases[k]; !ok || !d.Equal(t.at) {
			continue // completed, or extended: a later timer covers it
		}
		delete(s.leases, k)
		s.log.Info("attempt timed out", "task", k.task, "step", k.step, "attempt", k.attempt)
		_, err := s.a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
			TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: workflow.CodeTimeout,
			Message: "no result before the deadline", Retryable: true, Rand: s.a.rand(),
		}}})
		if err != nil && !errors.Is(err, consensus.ErrStaleAttempt) && !errors.Is(err, consensus.ErrTaskEnded) {
			s.log.Warn("timeout not committed", "task", k.task, "step", k.step, "err", err)
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
