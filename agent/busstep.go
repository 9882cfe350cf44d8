package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/internal/sleep"
	"github.com/tasker-run/tasker/workflow"
)

// Event-driven steps (transport: bus), for systems that run no sidecar.
//
// Such a step goes through the scheduler like any other: the leader
// commits DispatchStep (agent "bus:<subject>", the lease deadline the
// step's timeout), then publishes a request to the step's subject with a
// reply_to subject and a correlation id, and commits StartStep once the
// bus confirmed it. Whatever consumes the subject replies to
// tasker.replies.<cluster id>; the leader's subscription there
// (runBusSteps, group tasker-replies-<cluster id>) completes or fails the
// attempt through the very paths an app's CompleteStep and FailStep take
// (complete, fail): result contract, stale and late reports, retries with
// backoff. The lease timer
// times the attempt out when no reply comes. So there is no second state
// machine: the bus is only another way to reach what executes the step.
//
// The breaker "bus:<subject>" guards the subject as the agent/capability
// breakers guard apps: a failed publish or a timed-out attempt counts as
// a failure, and while it is open the steps wait instead of spending
// attempts.

const (
	// busReplyPrefix + the cluster id is the subject replies come back on:
	// per cluster, so that clusters sharing a broker do not take each
	// other's replies.
	busReplyPrefix = "tasker.replies."
	// busReplyGroup + the cluster id is the durable group of the leader's
	// reply subscription: a new leader resumes where the last one stopped.
	// Per cluster too: on NATS a group is one consumer with one filter, on
	// RabbitMQ one queue, so clusters sharing a broker and a group would
	// take (and drop) each other's replies.
	busReplyGroup = "tasker-replies-"
	// busAgentPrefix + the subject is the agent a bus attempt is recorded
	// as dispatched to, and its breaker target.
	busAgentPrefix = "bus:"
	// busPublishTimeout bounds one publish (the breaker policy's timeout
	// may shorten it), so that a bus that does not confirm fails the
	// attempt quickly rather than at the end of its lease.
	busPublishTimeout = 5 * time.Second
	// maxBusErrorMessage caps an error reply's message, as FailStep does.
	maxBusErrorMessage = 64 << 10
)

// Reply and request headers.
const (
	hdrReplyTo       = "reply_to"
	hdrCorrelationID = "correlation_id"
	hdrTraceParent   = "traceparent"
)

// errBusReplyNotLeader leaves a reply unacknowledged on a server that
// stopped leading and cannot judge it, so the bus delivers it again.
var errBusReplyNotLeader = errors.New("not the leader: reply left for the next one")

// busSteps is the leader's state for bus steps.
type busSteps struct {
	// replyTo is the reply subject while the leader's subscription to it is
	// in place; nil otherwise, and bus steps wait.
	replyTo atomic.Pointer[string]
	mu      sync.Mutex
	why     string // why the subscription is not in place, for waiting steps
	// subjects are those added to the bus's stream (NATS), by subject.
	subjects sync.Map
}

func (b *busSteps) setWhy(why string) {
	b.mu.Lock()
	b.why = why
	b.mu.Unlock()
}

func (b *busSteps) whyNot() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.why
}

// runBusSteps runs, while this server leads and a bus is configured, the
// reply side of transport: bus steps: it subscribes to the cluster's reply
// subject and, once subscribed, lets the scheduler dispatch bus steps.
func (a *Agent) runBusSteps(ctx context.Context) {
	log := a.log.With("component", "bus-steps")
	bs := &a.bsteps
	bs.setWhy("") // not the last term's reason
	defer bs.replyTo.Store(nil)
	// The first leader names the cluster at the same time (nameCluster).
	var cid string
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		if cid = a.state.ClusterID(); cid != "" {
			break
		}
		bs.setWhy("the cluster has no id yet")
		if !sleep.For(ctx, wait) {
			return
		}
	}
	subject := busReplyPrefix + cid
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := a.bus.Subscribe(ctx, subject, busReplyGroup+cid, a.handleBusReply)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		bs.setWhy("not subscribed to " + subject + ": " + err.Error())
		log.Warn("bus steps wait: cannot subscribe to replies; trying again", "subject", subject, "err", err, "retry_in", wait)
		if !sleep.For(ctx, wait) {
			return
		}
	}
	bs.replyTo.Store(&subject)
	log.Info("subscribed to bus step replies", "subject", subject)
	// Bus steps that waited for the subscription may go now.
	a.sched.kick()
	<-ctx.Done()
}

// chooseBus is choose for a bus step: its one target is its subject,
// through the breaker bus:<subject>. It returns the key the step waits
// under (and its flight's capability) and, when it must wait, why.
func (s *scheduler) chooseBus(ref consensus.StepRef, now time.Time) (c choice, key, why string) {
	plan, err := s.a.state.PlanOf(ref.TaskID)
	if err != nil {
		return choice{}, busAgentPrefix, err.Error()
	}
	subject := plan.Steps[ref.Step].Subject
	target := busAgentPrefix + subject
	switch {
	case s.a.bus == nil:
		return choice{}, target, "transport: bus, but the leader has no service bus; start the servers with -bus (see docs/bus.md)"
	case s.a.bsteps.replyTo.Load() == nil:
		why := "waiting for the leader to subscribe to bus replies"
		if w := s.a.bsteps.whyNot(); w != "" {
			why += " (" + w + ")"
		}
		return choice{}, target, why
	}
	done, err := s.a.breakers.Get(target).Allow()
	if err != nil {
		var oe *breaker.OpenError
		if errors.As(err, &oe) && oe.Until.After(time.Now()) {
			s.wakeWaitingAt(oe.Until)
			return choice{}, target, "circuit breaker open for " + target + " until " + clock(oe.Until)
		}
		// Half-open with its trial in flight: the trial's end wakes the step.
		s.wakeWaitingAt(now.Add(halfOpenRecheck))
		return choice{}, target, "circuit breaker half-open for " + target + ", waiting for its trial step"
	}
	return choice{candidate: candidate{agent: target, target: target, subject: subject}, done: done}, target, ""
}

// busRequest is the body of a bus step's request.
type busRequest struct {
	TaskID         string          `json:"task_id"`
	Step           string          `json:"step"`
	Attempt        int             `json:"attempt"`
	Input          json.RawMessage `json:"input"`
	Deadline       time.Time       `json:"deadline"`
	IdempotencyKey string          `json:"idempotency_key"`
	Namespace      string          `json:"namespace"`
	Workflow       string          `json:"workflow"`
	Version        string          `json:"workflow_version"`
}

// busCorrelationID names an attempt in a request and its reply; it is also
// the request's message ID, stable per attempt, so a republished request
// is recognised as the same one.
func busCorrelationID(k leaseKey) string {
	return k.task + "/" + k.step + "/" + strconv.Itoa(k.attempt)
}

// parseCorrelationID undoes busCorrelationID. Task ids and step names
// contain no "/".
func parseCorrelationID(id string) (leaseKey, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || !validTaskID(parts[0]) || parts[1] == "" {
		return leaseKey{}, fmt.Errorf("correlation_id %q is not <task id>/<step>/<attempt>", id)
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 {
		return leaseKey{}, fmt.Errorf("correlation_id %q: attempt %q is not a number from 1", id, parts[2])
	}
	return leaseKey{parts[0], parts[1], n}, nil
}

// deliverBus publishes a committed bus attempt's request, off the
// scheduler's goroutine, and records the attempt started once the bus
// confirmed it. A publish that fails or is not confirmed in time fails the
// attempt as timed out (retryable; it may have reached the bus), through
// handBack like an agent that did not take a delivery, so the workflow's
// retries and backoff apply at once instead of at the end of the lease.
func (s *scheduler) deliverBus(tctx context.Context, traceParent string, asg *consensus.Assignment, c choice, k leaseKey, seq uint64) {
	a := s.a
	replyTo := a.bsteps.replyTo.Load()
	if replyTo == nil {
		// Leadership is ending; the next leader's lease timer ends the attempt.
		return
	}
	id := busCorrelationID(k)
	body, err := json.Marshal(busRequest{
		TaskID: asg.TaskID, Step: asg.Step, Attempt: asg.Attempt, Input: json.RawMessage(asg.InputJSON),
		Deadline: asg.Deadline.UTC(), IdempotencyKey: asg.IdempotencyKey,
		Namespace: asg.Namespace, Workflow: asg.Workflow, Version: asg.WorkflowVersion,
	})
	if err != nil {
		s.undeliver(undelivered{k, seq, "bus request not built: " + err.Error(), true})
		return
	}
	m := bus.Message{ID: id, Subject: c.subject, Data: body, Headers: map[string]string{hdrReplyTo: *replyTo, hdrCorrelationID: id}}
	if traceParent != "" {
		m.Headers[hdrTraceParent] = traceParent
	}
	timeout := busPublishTimeout
	if d := a.breakers.Get(c.target).Policy().Timeout; d > 0 {
		timeout = min(timeout, d)
	}
	a.background(func(ctx context.Context) {
		if traceParent != "" {
			ctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(tctx))
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := a.publishBusRequest(pctx, m)
		if err == nil {
			s.log.DebugContext(ctx, "bus step request published", "task_id", k.task, "step", k.step, "attempt", k.attempt, "subject", c.subject)
			a.startAsync(k, "")
			return
		}
		s.log.WarnContext(ctx, "bus step request not published", "task_id", k.task, "step", k.step, "attempt", k.attempt, "subject", c.subject, "err", err)
		s.undeliver(undelivered{k, seq, "request not published on the bus to " + c.subject + ": " + err.Error(), true})
	})
}

// subjectAdder is a bus that must be told of subjects outside tasker.>
// before it carries them (NATS JetStream: natsbus.Bus.AddSubjects).
type subjectAdder interface {
	AddSubjects(ctx context.Context, subjects ...string) error
}

// publishBusRequest publishes a request, first adding its subject to the
// bus's stream where the backend needs it (once per subject; again after
// a failed publish, in case another client reset the stream).
func (a *Agent) publishBusRequest(ctx context.Context, m bus.Message) error {
	if sa, ok := a.bus.(subjectAdder); ok {
		if _, added := a.bsteps.subjects.Load(m.Subject); !added {
			if err := sa.AddSubjects(ctx, m.Subject); err != nil {
				return fmt.Errorf("add subject to the bus: %w", err)
			}
			a.bsteps.subjects.Store(m.Subject, true)
		}
	}
	if err := a.bus.Publish(ctx, m); err != nil {
		a.bsteps.subjects.Delete(m.Subject)
		return err
	}
	return nil
}

// busReply is a reply to a bus step's request: a result, or an error.
type busReply struct {
	CorrelationID string          `json:"correlation_id"`
	Result        json.RawMessage `json:"result"`
	Error         *busReplyError  `json:"error"`
}

type busReplyError struct {
	Code         string          `json:"code"`
	Message      string          `json:"message"`
	Retryable    bool            `json:"retryable"`
	RetryAfterMs int64           `json:"retry_after_ms"`
	Details      json.RawMessage `json:"details"`
}

// parseBusReply decodes a reply and the attempt it answers. The
// correlation id is in the body or in the correlation_id header.
func parseBusReply(m bus.Message) (busReply, leaseKey, error) {
	var r busReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return r, leaseKey{}, fmt.Errorf("not a JSON object with correlation_id and result or error: %w", err)
	}
	var hdr string
	for k, v := range m.Headers {
		if strings.EqualFold(k, hdrCorrelationID) {
			hdr = v
		}
	}
	switch {
	case r.CorrelationID == "":
		r.CorrelationID = hdr
	case hdr != "" && hdr != r.CorrelationID:
		return r, leaseKey{}, fmt.Errorf("correlation_id %q in the body but %q in the header", r.CorrelationID, hdr)
	}
	if r.CorrelationID == "" {
		return r, leaseKey{}, errors.New("no correlation_id, in the body or the header")
	}
	k, err := parseCorrelationID(r.CorrelationID)
	if err != nil {
		return r, k, err
	}
	switch {
	case r.Error != nil && r.Result != nil:
		return r, k, errors.New("both result and error: send one")
	case r.Error == nil && r.Result == nil:
		return r, k, errors.New("neither result nor error")
	case r.Error != nil && r.Error.RetryAfterMs < 0:
		return r, k, fmt.Errorf("error.retry_after_ms is %d: must not be negative", r.Error.RetryAfterMs)
	}
	return r, k, nil
}

// handleBusReply completes or fails the attempt a reply answers, through
// the same paths as an app's report. Returning nil acknowledges the reply:
// once it is committed, or when it can never be (malformed, stale, for a
// task that is gone). Returning an error has the bus deliver it again:
// when the commit failed and could succeed later, as when leadership is
// changing, so a reply is never lost.
func (a *Agent) handleBusReply(ctx context.Context, m bus.Message) error {
	r, k, err := parseBusReply(m)
	if err != nil {
		a.log.Warn("malformed bus step reply dropped", "message_id", m.ID, "subject", m.Subject, "reason", err)
		return nil
	}
	// A server that just stopped leading may still be handed replies (its
	// subscription ends a moment after its term). It forwards them to the
	// leader, as it forwards app reports (complete and fail do), rather
	// than leave them pending on its consumer, where another could claim
	// them only after the bus's claim timeout (30 s on Redis). What only
	// the leader can judge, it leaves for the leader: a follower's state
	// may lag, so it drops nothing.
	leader := a.isLeader()
	lctx := a.taskLog(ctx, k.task)
	plan, err := a.state.PlanOf(k.task)
	if err != nil {
		if !leader {
			return errBusReplyNotLeader
		}
		a.log.InfoContext(lctx, "bus step reply dropped", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", err)
		return nil
	}
	if i, ok := plan.StepIndex(k.step); !ok || !plan.Steps[i].IsBus() {
		if !leader {
			return errBusReplyNotLeader
		}
		a.log.WarnContext(lctx, "bus step reply dropped: not a transport: bus step", "task_id", k.task, "step", k.step, "attempt", k.attempt)
		return nil
	}
	limit := a.cfg.MaxPayloadBytes
	switch e := r.Error; {
	case e != nil:
		f := failReport{code: e.Code, message: e.Message, retryable: e.Retryable, retryAfter: time.Duration(e.RetryAfterMs) * time.Millisecond, fromApp: true}
		if len(f.message) > maxBusErrorMessage {
			f.message = strings.ToValidUTF8(f.message[:maxBusErrorMessage], "") + "… (cut)"
		}
		if len(e.Details) > 0 && string(e.Details) != "null" {
			if len(e.Details) > limit {
				f.message += fmt.Sprintf(" (details of %d bytes dropped: over the limit of %d)", len(e.Details), limit)
			} else {
				f.details = string(e.Details)
			}
		}
		_, err = a.fail(ctx, k, f)
	case len(r.Result) > limit:
		// The same result would be too large again: like a broken
		// contract, this is not worth another attempt.
		_, err = a.fail(ctx, k, failReport{code: workflow.CodeContractViolation,
			message: fmt.Sprintf("result is %d bytes, over the limit of %d; keep large data elsewhere and pass a reference", len(r.Result), limit)})
	default:
		err = a.complete(ctx, k, string(r.Result), "")
	}
	switch {
	case err == nil:
		return nil
	case busReplyDone(err):
		a.log.InfoContext(lctx, "bus step reply not applied", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", logSafe(err))
		return nil
	}
	return fmt.Errorf("reply for %s not committed: %w", busCorrelationID(k), err)
}

// busReplyDone reports whether a reply whose commit returned err (not
// nil) is done with, or must come again: it is done when the commit can
// never succeed.
func busReplyDone(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeNotFound, connect.CodeResourceExhausted:
		// A broken contract (committed as contract_violation by complete),
		// a stale or late reply (the state recorded it), a task that ended
		// or is gone.
		return true
	}
	return false
}
