package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/insight"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// eventRingSize is how many recent events a server keeps for WatchEvents.
// Older task events stay in their task's history (WatchTask); breaker,
// member and leader events older than the ring are gone.
const eventRingSize = 4096

// Events a server observes itself, outside the replicated log (docs/events.md).
const (
	eventBreakerOpened     = "breaker.opened"
	eventBreakerHalfOpened = "breaker.half_opened"
	eventBreakerClosed     = "breaker.closed"
	eventMemberJoined      = "member.joined"
	eventMemberFailed      = "member.failed"
	eventMemberLeft        = "member.left"
	eventLeaderElected     = "leader.elected"
	// Proposals, as the leader that handled them saw them (docs/proposals.md).
	eventProposalCreated    = "proposal.created"
	eventProposalApplied    = "proposal.applied"
	eventProposalRejected   = "proposal.rejected"
	eventProposalFailed     = "proposal.failed"
	eventProposalRolledBack = "proposal.rolled_back"
)

// eventTypes is every type WatchEvents knows, for validating its filters:
// a typo in a filter would otherwise watch nothing, silently.
var eventTypes = []string{
	consensus.EventTaskCreated, consensus.EventTaskStarted, consensus.EventStepReady, consensus.EventStepDispatched,
	consensus.EventStepStarted, consensus.EventStepCompleted, consensus.EventStepFailed, consensus.EventStepRetryScheduled,
	consensus.EventStepDeadLettered, consensus.EventStepReleased, consensus.EventStepRetryRequested,
	consensus.EventStepResolvedManually, consensus.EventStepLeaseExtended, consensus.EventStepLateReport,
	consensus.EventStepCancelled, consensus.EventTaskCompleted, consensus.EventTaskFailed, consensus.EventTaskResumed,
	consensus.EventTaskCancelled, consensus.EventTaskResolved,
	eventBreakerOpened, eventBreakerHalfOpened, eventBreakerClosed,
	eventMemberJoined, eventMemberFailed, eventMemberLeft, eventLeaderElected,
	eventProposalCreated, eventProposalApplied, eventProposalRejected, eventProposalFailed, eventProposalRolledBack,
}

// ringEvent is one event of the ring. Its payload is kept as a value and
// encoded when sent: recording runs on Raft's apply goroutine.
type ringEvent struct {
	seq     uint64
	id      string // "" for a locally observed event: "<ring>.<seq>"
	typ     string
	at      time.Time
	task    string
	trace   string // the W3C trace id of the task, when known
	payload any
	// index and pos place a task event in the Raft log (consensus.Event);
	// 0 for a locally observed event.
	index uint64
	pos   int
}

// taskPayload is the payload of a task or step event.
type taskPayload struct {
	Step     string `json:"step,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
	Message  string `json:"message,omitempty"`
	Code     string `json:"code,omitempty"`
	Sequence uint64 `json:"sequence"` // in the task's history, for WatchTask -after
}

type breakerPayload struct {
	Target  string `json:"target"`
	From    string `json:"from"`
	To      string `json:"to"`
	Message string `json:"message"`
	Dropped int    `json:"dropped,omitempty"`
}

type memberPayload struct {
	Member  string `json:"member"`
	Address string `json:"address,omitempty"`
	Role    string `json:"role,omitempty"`
	System  string `json:"system,omitempty"`
	Message string `json:"message"`
}

type proposalPayload struct {
	Proposal   string  `json:"proposal"`
	Action     string  `json:"action"`
	Workflow   string  `json:"workflow,omitempty"`
	Version    string  `json:"version,omitempty"`
	Step       string  `json:"step,omitempty"`
	State      string  `json:"state"`
	Auto       bool    `json:"auto"`
	By         string  `json:"by"`
	Reason     string  `json:"reason,omitempty"`
	Undo       string  `json:"undo,omitempty"`
	Confidence float64 `json:"confidence"`
	Message    string  `json:"message"`
}

type leaderPayload struct {
	Leader  string `json:"leader"`
	Message string `json:"message"`
}

// eventRing holds a server's recent events. Every server fills one (task
// events from what it applies, the others from what it observes), so a
// new leader starts serving with the recent task events already in hand;
// its sequence is this process's own, named by id.
type eventRing struct {
	id   string
	size int

	// tap, when set before the ring is used, sees every event added, ids
	// assigned, under the ring's lock: it must not block (the outbox, bus.go).
	tap func([]ringEvent)

	// cluster keeps the breaker and member events apart, for diagnoses.
	cluster clusterLog

	mu      sync.Mutex
	buf     []ringEvent // event seq s is at buf[(s-1)%size]
	next    uint64      // the sequence of the next event, from 1
	changed chan struct{}
}

func newEventRing(size int) *eventRing {
	var b [6]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return &eventRing{id: "r" + hex.EncodeToString(b[:]), size: size, next: 1, changed: make(chan struct{})}
}

// add appends events, overwriting the oldest, and wakes every watcher. It
// never blocks on a watcher: each reads the ring at its own pace.
func (r *eventRing) add(evs ...ringEvent) {
	if len(evs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range evs {
		e := &evs[i]
		e.seq = r.next
		r.next++
		if e.id == "" {
			e.id = fmt.Sprintf("%s.%d", r.id, e.seq)
		}
		if len(r.buf) < r.size {
			r.buf = append(r.buf, *e)
		} else {
			r.buf[(e.seq-1)%uint64(r.size)] = *e
		}
	}
	if r.tap != nil {
		r.tap(evs)
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// first is the oldest sequence held; the caller holds mu.
func (r *eventRing) first() uint64 { return r.next - uint64(len(r.buf)) }

// since returns the events after sequence after, whether some were
// already overwritten (lost), and a channel closed by the next add.
func (r *eventRing) since(after uint64) (evs []ringEvent, lost bool, changed <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := after + 1
	if f := r.first(); from < f {
		lost, from = true, f
	}
	for s := from; s < r.next; s++ {
		evs = append(evs, r.buf[(s-1)%uint64(r.size)])
	}
	return evs, lost, r.changed
}

// last is the sequence of the newest event, 0 if none.
func (r *eventRing) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next - 1
}

// find returns the sequence of the event with id, if the ring holds it.
func (r *eventRing) find(id string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := r.next - 1; s >= r.first() && s > 0; s-- {
		if r.buf[(s-1)%uint64(r.size)].id == id {
			return s, true
		}
	}
	return 0, false
}

// recordTask adds the task events of one applied command. traceOf, when
// not nil, gives a task's W3C traceparent ("" when it has none): the
// trace context of its StartTask call, replicated with the task.
func (r *eventRing) recordTask(evs []consensus.Event, traceOf func(task string) string) {
	out := make([]ringEvent, 0, len(evs))
	traces := map[string]string{} // one look-up per task of the command
	for _, e := range evs {
		tr, ok := traces[e.TaskID]
		if !ok && traceOf != nil {
			tr = traceID(traceOf(e.TaskID))
			traces[e.TaskID] = tr
		}
		out = append(out, ringEvent{
			id: e.ID(), typ: e.Type, at: e.At, task: e.TaskID, trace: tr, index: e.Index, pos: e.Position,
			payload: taskPayload{Step: e.Step, Attempt: e.Attempt, Message: e.Message, Code: e.Code, Sequence: e.Seq},
		})
	}
	r.add(out...)
}

// traceID is the trace id of a W3C traceparent
// (version-traceid-parentid-flags), or "" if tp is none.
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}

// recordBreaker adds a breaker's state change.
func (r *eventRing) recordBreaker(c breaker.StateChange) {
	typ := ""
	switch c.To {
	case breaker.Open:
		typ = eventBreakerOpened
	case breaker.HalfOpen:
		typ = eventBreakerHalfOpened
	case breaker.Closed:
		typ = eventBreakerClosed
	default:
		return
	}
	at := c.At
	if at.IsZero() {
		at = time.Now()
	}
	msg := fmt.Sprintf("%s: %s -> %s", c.Target, c.From, c.To)
	r.add(ringEvent{typ: typ, at: at.UTC(), payload: breakerPayload{
		Target: c.Target, From: c.From.String(), To: c.To.String(), Dropped: c.Dropped, Message: msg,
	}})
	r.cluster.add(insight.ClusterEvent{At: at.UTC(), Kind: clusterKind(typ), Subject: c.Target, Detail: msg})
}

// recordMember adds a membership change; catalog updates are not events
// of the catalogue.
func (r *eventRing) recordMember(e gossip.Event, at time.Time) {
	var what string
	switch e.Type {
	case gossip.EventMemberJoined:
		what = "joined"
	case gossip.EventMemberFailed:
		what = "failed"
	case gossip.EventMemberLeft:
		what = "left"
	default:
		return
	}
	m := e.Member
	msg := fmt.Sprintf("%s %s", m.Name, what)
	r.add(ringEvent{typ: string(e.Type), at: at, payload: memberPayload{
		Member: m.Name, Address: m.Addr, Role: string(m.Role), System: m.System, Message: msg,
	}})
	r.cluster.add(insight.ClusterEvent{At: at, Kind: clusterKind(string(e.Type)), Subject: m.Name, Detail: msg})
}

// watchMembers records membership changes until ctx ends. The registry
// drops events for a subscriber that falls behind; the ring then misses
// them too (gossip.Registry.Dropped counts them).
func (a *Agent) watchMembers(ctx context.Context) {
	ch, cancel := a.gossip.Registry().Subscribe()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			a.events.recordMember(e, a.now())
		}
	}
}

// eventFilter is WatchEvents' filter.
type eventFilter struct {
	exact    map[string]bool
	prefixes []string
	task     string
}

// newEventFilter checks the filter against the known types: a prefix must
// end in a dot and match some type, an exact type must be known.
func newEventFilter(types []string, task string) (*eventFilter, error) {
	f := &eventFilter{exact: map[string]bool{}, task: task}
	for _, t := range types {
		t = strings.TrimSuffix(strings.TrimSpace(t), "*")
		known := false
		for _, k := range eventTypes {
			if k == t || (strings.HasSuffix(t, ".") && strings.HasPrefix(k, t)) {
				known = true
				break
			}
		}
		if !known {
			sorted := append([]string(nil), eventTypes...)
			sort.Strings(sorted)
			return nil, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("types: %q is no event type nor a prefix of one (like step.); the types are %s", t, strings.Join(sorted, ", ")))
		}
		if strings.HasSuffix(t, ".") {
			f.prefixes = append(f.prefixes, t)
		} else {
			f.exact[t] = true
		}
	}
	return f, nil
}

func (f *eventFilter) match(e *ringEvent) bool {
	if f.task != "" && e.task != f.task {
		return false
	}
	if len(f.exact) == 0 && len(f.prefixes) == 0 {
		return true
	}
	if f.exact[e.typ] {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(e.typ, p) {
			return true
		}
	}
	return false
}

func pbClusterEvent(e *ringEvent) (*taskerv1.ClusterEvent, error) {
	payload, err := json.Marshal(e.payload)
	if err != nil {
		return nil, fmt.Errorf("encode the payload of event %s: %w", e.id, err)
	}
	return &taskerv1.ClusterEvent{
		Id: e.id, Sequence: e.seq, Type: e.typ, Time: timestamppb.New(e.at), CorrelationId: e.task, TraceId: e.trace, PayloadJson: string(payload),
	}, nil
}

// WatchEvents streams the ring's events (docs/events.md). Only the leader
// answers it (route forwards it, like every WorkflowService call), so
// watchers see the breaker events only the leader's dispatch produces.
func (w *workflowAPI) WatchEvents(ctx context.Context, req *connect.Request[taskerv1.WatchEventsRequest], stream *connect.ServerStream[taskerv1.WatchEventsResponse]) error {
	m := req.Msg
	f, err := newEventFilter(m.GetTypes(), m.GetTaskId())
	if err != nil {
		return err
	}
	release, err := w.a.lim.watch()
	if err != nil {
		return err
	}
	defer release()
	ring := w.a.events
	// Where to start, and whether the watcher's resume point is gone.
	var after uint64
	gap := false
	switch {
	case m.GetAfterId() != "":
		seq, ok := ring.find(m.GetAfterId())
		after, gap = seq, !ok
	case m.GetAfterSequence() > 0:
		after = m.GetAfterSequence()
		if m.GetRingId() != ring.id || after > ring.last() {
			after, gap = 0, true
		}
	case m.GetIncludeHistory():
	default:
		after = ring.last()
	}
	// Send the headers now: a follower may wait long for the first event.
	if err := stream.Send(nil); err != nil {
		return nil
	}
	for {
		evs, lost, changed := ring.since(after)
		gap = gap || lost
		for i := range evs {
			e := &evs[i]
			after = e.seq
			if !f.match(e) {
				continue
			}
			pe, err := pbClusterEvent(e)
			if err != nil {
				return connect.NewError(connect.CodeInternal, err)
			}
			if err := stream.Send(&taskerv1.WatchEventsResponse{Event: pe, RingId: ring.id, Gap: gap}); err != nil {
				return nil
			}
			gap = false
		}
		if len(evs) > 0 {
			continue // more may have come while sending
		}
		if !m.GetFollow() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.a.streams.Done():
			return connect.NewError(connect.CodeUnavailable, errShuttingDown)
		case <-changed:
		}
	}
}

// recordProposal adds a proposal's transition, as this agent (the leader)
// made it. A proposal acting on a task carries the task's id, so
// 'tasker events -task' shows what was done to it.
func (r *eventRing) recordProposal(p *consensus.Proposal, typ, by, reason string, at time.Time) {
	wf, ver := "", p.NewVersion
	if p.Workflow != "" {
		wf = p.Namespace + "/" + p.Workflow
	}
	msg := fmt.Sprintf("proposal %s (%s) %s by %s", p.ID, p.Action, strings.TrimPrefix(typ, "proposal."), by)
	if p.Auto {
		msg += " under the self-healing policy"
	}
	r.add(ringEvent{typ: typ, at: at, task: p.TaskID, payload: proposalPayload{
		Proposal: p.ID, Action: p.Action, Workflow: wf, Version: ver, Step: p.Step, State: p.State, Auto: p.Auto,
		By: by, Reason: reason, Undo: p.Undo, Confidence: p.Confidence, Message: msg,
	}})
}
