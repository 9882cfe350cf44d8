package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/telemetry"
)

// Span and metric attribute keys: tasker.* for Tasker's own concepts.
const (
	attrTask       = attribute.Key("tasker.task.id")
	attrWorkflow   = attribute.Key("tasker.workflow")
	attrVersion    = attribute.Key("tasker.workflow.version")
	attrStep       = attribute.Key("tasker.step")
	attrAttempt    = attribute.Key("tasker.attempt")
	attrCapability = attribute.Key("tasker.capability")
	attrAgent      = attribute.Key("tasker.agent")
	attrOutcome    = attribute.Key("tasker.outcome")
)

// instruments are the agent's metrics (served on /metrics). Counters of
// step and task outcomes are counted by the leader, which sees every
// commit's effects once; the gauges read the agent's own state when
// scraped, so they cost nothing between scrapes.
type instruments struct {
	stepDuration metric.Float64Histogram
	taskOutcomes metric.Int64Counter
	retries      metric.Int64Counter
	deadLetters  metric.Int64Counter
	commit       metric.Float64Histogram
	leaderChange metric.Int64Counter
	queueDepth   atomic.Int64 // ready steps the scheduler holds, set by its goroutine
}

// setupTelemetry builds the agent's tracer and metrics from its config.
func (a *Agent) setupTelemetry(ctx context.Context) error {
	tel, err := telemetry.Setup(ctx, telemetry.Config{
		Tracing:     a.cfg.Tracing || a.cfg.OTLPEndpoint != "",
		Endpoint:    a.cfg.OTLPEndpoint,
		ServiceName: "tasker-agent",
		Instance:    a.cfg.NodeName,
		Getenv:      os.Getenv,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	a.tel = tel
	m := tel.Meter
	in := &instruments{}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	// Buckets from 5ms to 5 minutes: steps are remote calls, some slow.
	in.stepDuration, err = m.Float64Histogram("tasker.step.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of step attempts, from dispatch to their outcome, by capability and outcome."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
	add(err)
	in.taskOutcomes, err = m.Int64Counter("tasker.task.outcomes", metric.WithDescription("Tasks that ended, by outcome (completed, failed, cancelled)."))
	add(err)
	in.retries, err = m.Int64Counter("tasker.step.retries", metric.WithDescription("Step attempts that failed and were scheduled to retry, by capability."))
	add(err)
	in.deadLetters, err = m.Int64Counter("tasker.step.dead_letters", metric.WithDescription("Steps that failed for good (out of attempts or not retryable)."))
	add(err)
	in.commit, err = m.Float64Histogram("tasker.raft.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to commit and apply a command through Raft on the leader."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
	add(err)
	in.leaderChange, err = m.Int64Counter("tasker.raft.leader_changes", metric.WithDescription("Times this server gained or lost Raft leadership."))
	add(err)
	breakers, err := m.Int64ObservableGauge("tasker.breaker.state",
		metric.WithDescription("Circuit breaker state per target (agent/capability): 0 closed, 1 half-open, 2 open."))
	add(err)
	queue, err := m.Int64ObservableGauge("tasker.dispatch.queue_depth", metric.WithDescription("Ready steps waiting for the leader's scheduler to dispatch them."))
	add(err)
	applied, err := m.Int64ObservableGauge("tasker.raft.applied_index", metric.WithDescription("The last Raft log index applied to this server's state."))
	add(err)
	members, err := m.Int64ObservableGauge("tasker.gossip.members", metric.WithDescription("Gossip members by status (alive, dead, left), as this agent sees them."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, st := range a.breakers.Snapshot() {
			o.ObserveInt64(breakers, breakerValue(st.State), metric.WithAttributes(attribute.String("tasker.target", st.Target)))
		}
		o.ObserveInt64(queue, in.queueDepth.Load())
		if a.node != nil {
			o.ObserveInt64(applied, int64(a.node.AppliedIndex()))
		}
		if a.gossip != nil {
			counts := map[string]int64{}
			for _, mb := range a.gossip.Members() {
				counts[string(mb.Status)]++
			}
			for status, n := range counts {
				o.ObserveInt64(members, n, metric.WithAttributes(attribute.String("tasker.member.status", status)))
			}
		}
		return nil
	}, breakers, queue, applied, members)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	a.metrics = in
	a.interceptors, err = tel.Interceptors()
	return err
}

func breakerValue(s breaker.State) int64 {
	switch s {
	case breaker.HalfOpen:
		return 1
	case breaker.Open:
		return 2
	}
	return 0
}

// stepOutcome names how an attempt ended (evs[i]) in spans and metrics.
func stepOutcome(evs []consensus.Event, i int) string {
	e := evs[i]
	switch e.Type {
	case consensus.EventStepCompleted:
		return "completed"
	case consensus.EventStepFailed:
		for _, n := range evs[i+1:] {
			if n.TaskID == e.TaskID && n.Step == e.Step && n.Type == consensus.EventStepDeadLettered {
				return "dead_lettered"
			}
		}
		return "failed"
	case consensus.EventStepReleased:
		return "released"
	case consensus.EventStepCancelled:
		return "cancelled"
	}
	return "ended"
}

// countEvents counts the outcomes a commit recorded (leader only).
func (a *Agent) countEvents(ctx context.Context, evs []consensus.Event) {
	m := a.metrics
	for _, e := range evs {
		switch e.Type {
		case consensus.EventTaskCompleted:
			m.taskOutcomes.Add(ctx, 1, metric.WithAttributes(attrOutcome.String("completed")))
		case consensus.EventTaskFailed:
			m.taskOutcomes.Add(ctx, 1, metric.WithAttributes(attrOutcome.String("failed")))
		case consensus.EventTaskCancelled:
			m.taskOutcomes.Add(ctx, 1, metric.WithAttributes(attrOutcome.String("cancelled")))
		case consensus.EventStepRetryScheduled:
			m.retries.Add(ctx, 1)
		case consensus.EventStepDeadLettered:
			m.deadLetters.Add(ctx, 1)
		}
	}
}

// landed records an attempt's end: its duration in the step histogram,
// and its span's outcome.
func (a *Agent) landed(f flight, outcome string) {
	ctx := context.Background()
	a.metrics.stepDuration.Record(ctx, time.Since(f.start).Seconds(),
		metric.WithAttributes(attrCapability.String(f.capability), attrOutcome.String(outcome)))
	if f.span != nil {
		f.span.SetAttributes(attrOutcome.String(outcome))
		if outcome != "completed" {
			f.span.SetStatus(codes.Error, outcome)
		}
		f.span.End()
	}
}

// attemptSpan starts the span of a step attempt on the leader, in the
// task's trace: it lasts from dispatch to the attempt's outcome, and the
// delivery and the app's work are its children. nil when tracing is off.
func (a *Agent) attemptSpan(traceParent string, k leaseKey, capability, agent string) trace.Span {
	if !a.tel.Tracing {
		return nil
	}
	ctx := a.tel.WithTraceParent(context.Background(), traceParent)
	_, span := a.tel.Tracer.Start(ctx, "step "+k.step, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
		attrTask.String(k.task), attrStep.String(k.step), attrAttempt.Int(k.attempt),
		attrCapability.String(capability), attrAgent.String(agent),
	))
	return span
}

// commitSpan traces a Raft commit on the leader as a child of the span in
// ctx (the API call or the scheduler's dispatch); end takes its error.
func (a *Agent) commitSpan(ctx context.Context, c *fsmv1.Command) func(error) {
	if !a.tel.Tracing || !trace.SpanContextFromContext(ctx).IsValid() {
		return func(error) {}
	}
	_, span := a.tel.Tracer.Start(ctx, "raft commit", trace.WithAttributes(attribute.String("tasker.command", commandName(c))))
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// commandName is a command's kind, for span attributes.
func commandName(c *fsmv1.Command) string {
	if c.Kind == nil {
		return "none"
	}
	return string(c.ProtoReflect().WhichOneof(c.ProtoReflect().Descriptor().Oneofs().ByName("kind")).Name())
}

// asgTraces maps an attempt handed to an app here to its traceparent,
// from delivery (by the leader's scheduler, or AgentService.Deliver) to
// the moment it is sent to the app (PollSteps, push). Entries exist only
// while tracing.
type asgTraces struct {
	mu sync.Mutex
	m  map[*consensus.Assignment]string
}

func (t *asgTraces) put(asg *consensus.Assignment, traceParent string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[*consensus.Assignment]string{}
	}
	t.m[asg] = traceParent
}

// take returns and forgets asg's traceparent; "" if it has none.
func (t *asgTraces) take(asg *consensus.Assignment) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		return ""
	}
	tp, ok := t.m[asg]
	if ok {
		delete(t.m, asg)
	}
	return tp
}
