package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/telemetry"
	"github.com/tasker-run/tasker/workflow"
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
	attrBatchSize  = attribute.Key("tasker.dispatch.batch_size")
	attrCall       = attribute.Key("rpc.method")
	attrLeader     = attribute.Key("tasker.leader")
	attrForwards   = attribute.Key("tasker.forward.attempts")
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
	batchSize    metric.Int64Histogram
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
	in.taskOutcomes, err = m.Int64Counter("tasker.task.outcomes", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks that ended, by outcome (completed, failed, cancelled)."))
	add(err)
	in.retries, err = m.Int64Counter("tasker.step.retries", metric.WithUnit("{attempt}"),
		metric.WithDescription("Step attempts that failed and were scheduled to retry."))
	add(err)
	in.deadLetters, err = m.Int64Counter("tasker.step.dead_letters", metric.WithUnit("{step}"),
		metric.WithDescription("Steps that failed for good (out of attempts or not retryable)."))
	add(err)
	in.batchSize, err = m.Int64Histogram("tasker.dispatch.batch.size", metric.WithUnit("{step}"),
		metric.WithDescription("Steps dispatched by one scheduler batch (one Raft entry)."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
	add(err)
	in.commit, err = m.Float64Histogram("tasker.raft.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to commit and apply a command through Raft on the leader."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
	add(err)
	in.leaderChange, err = m.Int64Counter("tasker.raft.leader_changes", metric.WithUnit("{change}"),
		metric.WithDescription("Times this server gained or lost Raft leadership."))
	add(err)
	breakers, err := m.Int64ObservableGauge("tasker.breaker.state",
		metric.WithDescription("Circuit breaker state per target (agent/capability): 0 closed, 1 half-open, 2 open."))
	add(err)
	queue, err := m.Int64ObservableGauge("tasker.dispatch.queue_depth", metric.WithUnit("{step}"),
		metric.WithDescription("Ready steps waiting for the leader's scheduler to dispatch them."))
	add(err)
	applied, err := m.Int64ObservableGauge("tasker.raft.applied_index", metric.WithDescription("The last Raft log index applied to this server's state."))
	add(err)
	members, err := m.Int64ObservableGauge("tasker.gossip.members", metric.WithUnit("{member}"),
		metric.WithDescription("Gossip members by status (alive, dead, left), as this agent sees them."))
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
			// Every status, 0 included: a series that vanishes when the
			// last dead member is reaped reads as "no data", not 0.
			counts := map[string]int64{string(gossip.StatusAlive): 0, string(gossip.StatusDead): 0, string(gossip.StatusLeft): 0}
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
	// Counters a scrape should show from the start, at 0, so that rate()
	// and alerts work before the first event.
	ctx0 := context.Background()
	for _, o := range []string{"completed", "failed", "cancelled"} {
		in.taskOutcomes.Add(ctx0, 0, metric.WithAttributes(attrOutcome.String(o)))
	}
	in.retries.Add(ctx0, 0)
	in.deadLetters.Add(ctx0, 0)
	in.leaderChange.Add(ctx0, 0)
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
// maxAsgTraces bounds asgTraces.
const maxAsgTraces = 10000

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
	if len(t.m) >= maxAsgTraces {
		// Assignments whose app never took them leave entries behind;
		// forgetting them all costs only the trace links of a few steps.
		clear(t.m)
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

// dispatchSpan traces one scheduler dispatch batch, from began (the
// scheduler choosing agents for the ready steps) to its commit: a span
// "dispatch" of its own (the batch serves many tasks, so it belongs to no
// task's trace), with the batch size, linked both ways with the attempt
// spans it dispatches; the batch's "raft commit" span is its child, so the
// time before it is the scheduling. It records the batch size in the
// metrics whether tracing is on or not. end takes the commit's error.
func (s *scheduler) dispatchSpan(ctx context.Context, began time.Time, cmds []*fsmv1.Command) (context.Context, func(error)) {
	s.a.metrics.batchSize.Record(ctx, int64(len(cmds)))
	if !s.a.tel.Tracing {
		return ctx, func(error) {}
	}
	var spans []trace.Span
	links := make([]trace.Link, 0, len(cmds))
	for _, c := range cmds {
		d := c.GetDispatchStep()
		if f, ok := s.flights[leaseKey{d.GetTaskId(), d.GetStep(), int(d.GetAttempt())}]; ok && f.span != nil {
			spans = append(spans, f.span)
			links = append(links, trace.Link{SpanContext: f.span.SpanContext()})
		}
	}
	ctx, span := s.a.tel.Tracer.Start(ctx, "dispatch", trace.WithNewRoot(), trace.WithTimestamp(began), trace.WithLinks(links...),
		trace.WithAttributes(attrBatchSize.Int(len(cmds))))
	for _, sp := range spans {
		sp.AddLink(trace.Link{SpanContext: span.SpanContext()})
	}
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// forwardSpan traces a call this agent sends on to the leader (a proxied
// API call, or a report, command or request forwarded by the agent) across
// its retries, as a child of the span in ctx: an API call's own span, or
// the caller's traceparent for a proxied call. Without one, a proxied call
// (root) starts a trace and any other forward is not traced: background
// forwards (starts recorded, failures) would each start a trace of their
// own. call names the procedure ("" when the caller does not say); the
// returned note records which agent answered, end takes the outcome.
func (a *Agent) forwardSpan(ctx context.Context, call string, root bool) (context.Context, func(leader string), func(attempts int, err error)) {
	if !a.tel.Tracing || (!root && !trace.SpanContextFromContext(ctx).IsValid()) {
		return ctx, func(string) {}, func(int, error) {}
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	if call != "" {
		opts = append(opts, trace.WithAttributes(attrCall.String(call)))
	}
	ctx, span := a.tel.Tracer.Start(ctx, "forward to leader", opts...)
	note := func(leader string) { span.SetAttributes(attrLeader.String(leader)) }
	return ctx, note, func(attempts int, err error) {
		span.SetAttributes(attrForwards.Int(attempts))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// taskLog is ctx for a log line about a task: with tracing on and no span
// in ctx, it carries the task's replicated trace context (servers hold
// it), so the line gets the task's trace_id. ctx unchanged otherwise.
func (a *Agent) taskLog(ctx context.Context, task string) context.Context {
	if !a.tel.Tracing || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return a.tel.WithTraceParent(ctx, a.state.TraceParent(task))
}

// logSafe is err as a log line may show it: a contract violation's message
// can quote the offending value (a pattern's mismatch quotes the string),
// and step results are never logged, so it is reduced to the contract and
// the pointers of the offending fields; the whole message is in the step's
// error, for those allowed to read the task. Other errors are unchanged.
func logSafe(err error) any {
	if err == nil {
		return nil
	}
	var (
		contract string
		pointers []string
	)
	var ct *workflow.ContractError
	var ce *connect.Error
	switch {
	case errors.As(err, &ct):
		contract = ct.Contract
		for _, v := range ct.Violations {
			pointers = append(pointers, orRoot(v.Pointer))
		}
	case errors.As(err, &ce):
		for _, d := range ce.Details() {
			v, derr := d.Value()
			cf, ok := v.(*taskerv1.ContractFailure)
			if derr != nil || !ok {
				continue
			}
			contract = cf.GetContract()
			for _, x := range cf.GetViolations() {
				pointers = append(pointers, orRoot(x.GetPointer()))
			}
		}
		if contract == "" {
			return err
		}
	default:
		return err
	}
	return fmt.Sprintf("%s violates its contract at %s (values not logged)", contract, strings.Join(pointers, ", "))
}

func orRoot(pointer string) string {
	if pointer == "" {
		return "/"
	}
	return pointer
}

// endTask and endStep name the step a FailStep or ReleaseStep command
// ends, for log lines.
func endTask(c *fsmv1.Command) string {
	if f := c.GetFailStep(); f != nil {
		return f.GetTaskId()
	}
	return c.GetReleaseStep().GetTaskId()
}

func endStep(c *fsmv1.Command) string {
	if f := c.GetFailStep(); f != nil {
		return f.GetStep()
	}
	return c.GetReleaseStep().GetStep()
}
