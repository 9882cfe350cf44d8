package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkworker "github.com/tasker-run/tasker/sdk/go/worker"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes every
// ExportTraceServiceRequest it is sent and keeps the spans, with the
// service.instance.id of the agent that sent them.
type otlpReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests int
	spans    []recvSpan
}

type recvSpan struct {
	*tracepb.Span
	instance string
}

func newOTLPReceiver(t testing.TB) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil || req.URL.Path != "/v1/traces" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.requests++
		for _, rs := range msg.GetResourceSpans() {
			inst := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.instance.id" {
					inst = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					r.spans = append(r.spans, recvSpan{s, inst})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) snapshot() (int, []recvSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, append([]recvSpan(nil), r.spans...)
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// appTraceID is the trace of the app that starts the task in
// runTraceCluster.
const appTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

const traceManifest = `name: tr
version: 1.0.0
steps:
  - name: first
    capability: tr.a
    timeout: 10s
  - name: second
    capability: tr.b
    depends_on: [first]
    timeout: 10s
`

// startTraceServer starts s1, a one-server cluster, with mutate applied.
func startTraceServer(t *testing.T, mutate func(*Config)) *testAgent {
	t.Helper()
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect, cfg.DevTiming = "s1", t.TempDir(), true, 1, true
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort = 0, 0, 0, 0
	cfg.ShutdownTimeout = 5 * time.Second
	mutate(&cfg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	c := h2c()
	ta := &testAgent{Agent: a, dir: cfg.DataDir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, a.Addr()),
		wk: taskerv1connect.NewWorkerServiceClient(c, a.Addr()),
		cl: taskerv1connect.NewClusterServiceClient(c, a.Addr()),
	}
	waitFor(t, 10*time.Second, "a leader", func() bool { return a.node.IsLeader() })
	if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: traceManifest})); err != nil {
		t.Fatal(err)
	}
	return ta
}

// runTraceCluster runs one tr task on s1 with client agents c1 (tr.a) and
// c2 (tr.b), started through c1, and returns its id after shutting every
// agent down (which flushes their spans).
// The handlers record, by step, the trace id of their context (the Go SDK
// continues the attempt's trace) in handlerTraces when it is not nil.
func runTraceCluster(t *testing.T, mutate func(*Config), handlerTraces *sync.Map) (string, []*testAgent) {
	srv := startTraceServer(t, mutate)
	c1 := startClientAgent(t, "c1", srv, mutate)
	c2 := startClientAgent(t, "c2", srv, mutate)
	done := func(ctx context.Context, s *sdkworker.Step) (any, error) {
		if handlerTraces != nil {
			handlerTraces.Store(s.Name, trace.SpanContextFromContext(ctx).TraceID().String())
		}
		return map[string]any{}, nil
	}
	runApp(t, c1, "app-a", "tr.a", 1, done)
	runApp(t, c2, "app-b", "tr.b", 1, done)
	waitProviders(t, srv, "tr.a", 1)
	waitProviders(t, srv, "tr.b", 1)
	// The app that starts the task traces: c1 proxies StartTask to the
	// leader, passing its traceparent through.
	req := connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "tr"})
	req.Header().Set("traceparent", "00-"+appTraceID+"-00f067aa0ba902b7-01")
	r, err := c1.wf.StartTask(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	waitTask(t, srv, id, taskerv1.TaskState_TASK_STATE_COMPLETE)
	return id, []*testAgent{srv, c1, c2}
}

func shutdownAll(ts ...*testAgent) {
	for _, ta := range ts {
		_ = ta.Shutdown(context.Background())
	}
}

// TestTracingOneConnectedTrace: a task whose steps run on two client
// agents exports one trace, to a real OTLP/HTTP receiver: every step
// attempt's span shares the trace id, spans come from several agents, and
// they are linked as parent and child.
func TestTracingOneConnectedTrace(t *testing.T) {
	recv := newOTLPReceiver(t)
	var handlerTraces sync.Map
	id, agents := runTraceCluster(t, func(c *Config) { c.OTLPEndpoint = recv.srv.URL }, &handlerTraces)
	// Step spans end when the leader lands the attempt, after the outcome
	// is committed: the last one may end just after the task is seen
	// complete. land ends the span before it frees the in-flight slot.
	srv := agents[0]
	waitFor(t, 10*time.Second, "the leader to land every attempt", func() bool { return len(srv.sched.inFlight()) == 0 })
	// Every agent flushes its spans on shutdown.
	shutdownAll(agents...)
	n, spans := recv.snapshot()
	if n == 0 {
		t.Fatal("the receiver got no export")
	}
	var steps []recvSpan
	traceID := ""
	for _, s := range spans {
		if spanAttr(s.Span, "tasker.task.id") == id && spanAttr(s.Span, "tasker.step") != "" {
			steps = append(steps, s)
		}
	}
	if len(steps) != 2 {
		t.Fatalf("want 2 step attempt spans for %s, got %d (of %d spans)", id, len(steps), len(spans))
	}
	for _, s := range steps {
		tid := hex.EncodeToString(s.GetTraceId())
		if traceID == "" {
			traceID = tid
		}
		if tid != traceID {
			t.Fatalf("step spans in different traces: %s and %s", traceID, tid)
		}
		if len(s.GetParentSpanId()) == 0 {
			t.Errorf("step span %s has no parent: it should be a child of StartTask", s.GetName())
		}
		if spanAttr(s.Span, "tasker.outcome") != "completed" || spanAttr(s.Span, "tasker.capability") == "" || spanAttr(s.Span, "tasker.agent") == "" ||
			spanAttr(s.Span, "tasker.workflow") != "tr" || spanAttr(s.Span, "tasker.workflow.version") != "1.0.0" {
			t.Errorf("step span %s lacks attributes: %v", s.GetName(), s.GetAttributes())
		}
	}
	for _, step := range []string{"first", "second"} {
		if got, _ := handlerTraces.Load(step); got != traceID {
			t.Errorf("handler of %s ran in trace %v, want the task's %s", step, got, traceID)
		}
	}
	if traceID != appTraceID {
		t.Errorf("the task's trace is %s, not the starting app's %s: the proxy lost traceparent", traceID, appTraceID)
	}
	byID := map[string]recvSpan{}
	instances := map[string]bool{}
	var inTrace []recvSpan
	for _, s := range spans {
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			inTrace = append(inTrace, s)
			byID[hex.EncodeToString(s.GetSpanId())] = s
			instances[s.instance] = true
		}
	}
	links := 0
	for _, s := range inTrace {
		if p, ok := byID[hex.EncodeToString(s.GetParentSpanId())]; ok {
			links++
			if p.instance != s.instance {
				t.Logf("cross-agent link: %s (%s) → %s (%s)", p.GetName(), p.instance, s.GetName(), s.instance)
			}
		}
	}
	// The apps' reports (CompleteStep, traceparent from the SDK) are
	// handled in the trace, on the agents the apps are attached to.
	reports := 0
	for _, s := range inTrace {
		if s.GetName() == "tasker.v1.WorkerService/CompleteStep" && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && (s.instance == "c1" || s.instance == "c2") {
			reports++
		}
	}
	if reports != 2 {
		t.Errorf("want the 2 CompleteStep calls of the apps in the trace, got %d", reports)
	}
	if len(instances) < 2 {
		t.Errorf("want spans from at least 2 agents in the trace, got %v", instances)
	}
	checkForwardAndDispatch(t, spans, inTrace, steps)
	if links < len(inTrace)/2 {
		t.Errorf("only %d of %d spans have their parent in the trace", links, len(inTrace))
	}
	t.Logf("trace %s: %d spans from %v, %d parent links", traceID, len(inTrace), instances, links)
}

// checkForwardAndDispatch checks the spans of the forwarding hop and of
// the dispatch batches: the client agent's proxy of StartTask has a
// "forward to leader" span in the task's trace, the leader's StartTask
// span its child; each step attempt's span links to the "dispatch" span of
// the batch that dispatched it (a trace of its own, with the batch size),
// and that span's Raft commit is its child.
func checkForwardAndDispatch(t *testing.T, all, inTrace, steps []recvSpan) {
	t.Helper()
	byID := map[string]recvSpan{}
	for _, s := range all {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	forwards := 0
	for _, s := range inTrace {
		if s.GetName() != "tasker.v1.WorkflowService/StartTask" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER || s.instance != "s1" {
			continue
		}
		p, ok := byID[hex.EncodeToString(s.GetParentSpanId())]
		if !ok || p.GetName() != "forward to leader" || p.instance != "c1" {
			t.Errorf("the leader's StartTask span's parent is %q on %q, want c1's forward to leader", p.GetName(), p.instance)
			continue
		}
		forwards++
		if spanAttr(p.Span, "rpc.method") != "tasker.v1.WorkflowService/StartTask" || spanAttr(p.Span, "tasker.leader") != "s1" {
			t.Errorf("forward span attributes: %v", p.GetAttributes())
		}
	}
	if forwards != 1 {
		t.Errorf("want 1 forwarded StartTask, got %d", forwards)
	}
	for _, st := range steps {
		var batch *recvSpan
		for _, l := range st.GetLinks() {
			if d, ok := byID[hex.EncodeToString(l.GetSpanId())]; ok && d.GetName() == "dispatch" {
				batch = &d
			}
		}
		if batch == nil {
			t.Errorf("step span %s links to no dispatch span: %v", st.GetName(), st.GetLinks())
			continue
		}
		size := int64(0)
		for _, kv := range batch.GetAttributes() {
			if kv.GetKey() == "tasker.dispatch.batch_size" {
				size = kv.GetValue().GetIntValue()
			}
		}
		if size < 1 {
			t.Errorf("dispatch span without a batch size: %v", batch.GetAttributes())
		}
		back := false
		for _, l := range batch.GetLinks() {
			back = back || bytes.Equal(l.GetSpanId(), st.GetSpanId())
		}
		if !back {
			t.Errorf("dispatch span does not link back to step span %s", st.GetName())
		}
		commit := false
		for _, s := range all {
			commit = commit || (s.GetName() == "raft commit" && bytes.Equal(s.GetParentSpanId(), batch.GetSpanId()))
		}
		if !commit {
			t.Errorf("no raft commit span under the dispatch span of %s", st.GetName())
		}
	}
}

// TestTracingOffExportsNothing: tracing is off by default, even with the
// standard variables set: no exporter runs.
func TestTracingOffExportsNothing(t *testing.T) {
	recv := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.srv.URL)
	_, agents := runTraceCluster(t, func(*Config) {}, nil)
	srv := agents[0]
	if srv.tel.Tracing || len(srv.interceptors) != 0 {
		t.Fatal("tracing is on without -tracing or -otlp-endpoint")
	}
	shutdownAll(agents...)
	if n, _ := recv.snapshot(); n != 0 {
		t.Fatalf("tracing off, yet the receiver got %d exports", n)
	}
}

// TestMetricsEndpoint: /metrics on the local API port is valid Prometheus
// text with the step duration histogram and the breaker gauge.
func TestMetricsEndpoint(t *testing.T) {
	_, agents := runTraceCluster(t, func(*Config) {}, nil)
	srv := agents[0]
	resp, err := h2c().Get(srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("not valid Prometheus text: %v\n%s", err, body)
	}
	// Every family the docs list (docs/operations.md, Metrics), with its
	// type: OpenTelemetry names with the Prometheus unit and _total
	// suffixes.
	want := map[string]dto.MetricType{
		"tasker_step_duration_seconds":        dto.MetricType_HISTOGRAM,
		"tasker_task_outcomes_total":          dto.MetricType_COUNTER,
		"tasker_step_retries_total":           dto.MetricType_COUNTER,
		"tasker_step_dead_letters_total":      dto.MetricType_COUNTER,
		"tasker_breaker_state":                dto.MetricType_GAUGE,
		"tasker_dispatch_queue_depth":         dto.MetricType_GAUGE,
		"tasker_dispatch_batch_size":          dto.MetricType_HISTOGRAM,
		"tasker_raft_commit_duration_seconds": dto.MetricType_HISTOGRAM,
		"tasker_raft_leader_changes_total":    dto.MetricType_COUNTER,
		"tasker_raft_applied_index":           dto.MetricType_GAUGE,
		"tasker_gossip_members":               dto.MetricType_GAUGE,
		"tasker_limit_rejections_total":       dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		f, ok := fams[name]
		if !ok {
			var names []string
			for n := range fams {
				names = append(names, n)
			}
			t.Errorf("no %s in /metrics; have %v", name, names)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
	labels := func(name, label string) map[string]float64 {
		out := map[string]float64{}
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
	if got := labels("tasker_task_outcomes_total", "tasker_outcome"); got["completed"] != 1 || len(got) != 3 {
		t.Errorf("task outcomes: %v, want completed 1 and failed, cancelled at 0", got)
	}
	if got := labels("tasker_gossip_members", "tasker_member_status"); got["alive"] != 3 {
		t.Errorf("gossip members by status: %v, want 3 alive", got)
	}
	if got := labels("tasker_breaker_state", "tasker_target"); len(got) == 0 {
		t.Errorf("no breaker state per target: %v", got)
	}
	if g := fams["tasker_raft_applied_index"]; g != nil && len(g.GetMetric()) == 1 && g.GetMetric()[0].GetGauge().GetValue() < 3 {
		t.Errorf("applied index %v: the task's commits were applied", g.GetMetric()[0].GetGauge().GetValue())
	}
	if c := fams["tasker_raft_leader_changes_total"]; c != nil && len(c.GetMetric()) == 1 && c.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Errorf("leader changes %v: s1 became leader once", c.GetMetric()[0].GetCounter().GetValue())
	}
	if h := fams["tasker_step_duration_seconds"]; h != nil {
		var count uint64
		for _, m := range h.GetMetric() {
			count += m.GetHistogram().GetSampleCount()
		}
		if count != 2 {
			t.Errorf("step histogram counted %d attempts, want 2", count)
		}
	}
}

// BenchmarkTracingOverhead is BenchmarkEndToEnd's 4-step linear workflow
// on one agent with tracing off and on (exporting to an OTLP/HTTP receiver
// in the test): the cost of tracing per task.
func BenchmarkTracingOverhead(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			endpoint := ""
			if on {
				endpoint = newOTLPReceiver(b).srv.URL
			}
			// Production Raft timings and fsync, as benchAgent.
			ta := startAgent(b, b.TempDir(), func(c *Config) { c.Dev, c.OTLPEndpoint = false, endpoint })
			m, err := os.ReadFile("testdata/linear.yaml")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(m)})); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			noopWorker(ctx, b, ta, 64)
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				if err := runTask(ctx, ta, "linear"); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportPercentiles(b, lat)
		})
	}
}

// Distinctive values a log line must never show: a step input from the
// task's input, a step result, and a result that breaks its contract
// (whose violation message quotes it).
const (
	secretInput    = "sk_live_INPUT_7f3a9c1e"
	secretResult   = "sk_live_RESULT_b81d2e44"
	secretBreaking = "sk_live_BREAKS_c0ffee99"
)

const secretManifest = `name: lg
version: 1.0.0
input_schema:
  type: object
  properties:
    card: {type: string}
steps:
  - name: charge
    capability: lg.a
    timeout: 10s
    input:
      card: $.input.card
  - name: confirm
    capability: lg.b
    depends_on: [charge]
    timeout: 10s
    input:
      token: $.steps.charge.result.token
    result_schema:
      type: object
      properties:
        token: {type: string, pattern: "^tok_"}
`

// startLogged starts an agent whose log (JSON, debug level) goes to logs.
func startLogged(t *testing.T, cfg Config, logs io.Writer) *testAgent {
	t.Helper()
	if testing.Verbose() {
		logs = io.MultiWriter(logs, os.Stderr)
	}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	c := h2c()
	return &testAgent{Agent: a, dir: cfg.DataDir,
		wf: taskerv1connect.NewWorkflowServiceClient(c, a.Addr()),
		wk: taskerv1connect.NewWorkerServiceClient(c, a.Addr()),
		cl: taskerv1connect.NewClusterServiceClient(c, a.Addr()),
	}
}

// TestLogsNameTaskNotPayloads: at debug level with tracing on, a task
// whose input and results carry secrets, and whose last result breaks its
// contract, leaves no secret in any agent's log; every line that mentions
// the task names it as task_id and carries the task's trace_id, and every
// line with a step names the step.
func TestLogsNameTaskNotPayloads(t *testing.T) {
	recv := newOTLPReceiver(t)
	logs := &logBuf{}
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect, cfg.DevTiming = "s1", t.TempDir(), true, 1, true
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort = 0, 0, 0, 0
	cfg.ShutdownTimeout, cfg.OTLPEndpoint = 5*time.Second, recv.srv.URL
	srv := startLogged(t, cfg, logs)
	waitFor(t, 10*time.Second, "a leader", func() bool { return srv.node.IsLeader() })
	if _, err := srv.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: secretManifest})); err != nil {
		t.Fatal(err)
	}
	ccfg := cfg
	ccfg.NodeName, ccfg.DataDir, ccfg.Server, ccfg.BootstrapExpect = "c1", t.TempDir(), false, 0
	ccfg.Join = []string{srv.GossipAddr()}
	c1 := startLogged(t, ccfg, logs)
	waitFor(t, 10*time.Second, "c1 to see a server", func() bool { return len(c1.aliveServers()) > 0 })

	// charge runs behind the client agent (delivery, forwarded report),
	// confirm on the server itself.
	runApp(t, c1, "app-a", "lg.a", 1, func(_ context.Context, s *sdkworker.Step) (any, error) {
		if !bytes.Contains(s.Input, []byte(secretInput)) {
			return nil, fmt.Errorf("charge input %s lacks the card", s.Input)
		}
		return map[string]any{"token": secretResult}, nil
	})
	runApp(t, srv, "app-b", "lg.b", 1, func(context.Context, *sdkworker.Step) (any, error) {
		return map[string]any{"token": secretBreaking}, nil
	})
	waitProviders(t, srv, "lg.a", 1)
	waitProviders(t, srv, "lg.b", 1)
	req := connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "lg", InputJson: `{"card":"` + secretInput + `"}`})
	req.Header().Set("traceparent", "00-"+appTraceID+"-00f067aa0ba902b7-01")
	r, err := c1.wf.StartTask(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	// confirm's result breaks the contract: it fails for good, and the
	// leader logs the violation.
	waitFor(t, 15*time.Second, "the contract violation to be logged", func() bool { return logs.has("result breaks its contract", id) })
	task := waitTask(t, srv, id, taskerv1.TaskState_TASK_STATE_ERROR)
	if e := stepOf(task, "confirm").GetLastError(); !strings.Contains(e.GetMessage(), secretBreaking) {
		// The step's error, readable through the API, keeps the details.
		t.Logf("confirm's error: %v", e)
	}

	logs.mu.Lock()
	all := logs.b.String()
	logs.mu.Unlock()
	for _, s := range []string{secretInput, secretResult, secretBreaking} {
		if strings.Contains(all, s) {
			for line := range strings.Lines(all) {
				if strings.Contains(line, s) {
					t.Errorf("a log line shows %s: %s", s, line)
				}
			}
		}
	}
	about, traced := 0, 0
	for line := range strings.Lines(all) {
		if !strings.Contains(line, id) {
			continue
		}
		about++
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if m["task_id"] != id {
			t.Errorf("line about %s without task_id: %s", id, line)
		}
		if m["trace_id"] == appTraceID {
			traced++
		} else {
			t.Errorf("line about %s without the task's trace_id %s: %s", id, appTraceID, line)
		}
		if msg, _ := m["msg"].(string); msg != "task started" && m["step"] == nil {
			t.Errorf("line about a step of %s without step: %s", id, line)
		}
	}
	if about < 3 {
		t.Errorf("want at least 3 log lines about %s (task started, step delivered, contract), got %d:\n%s", id, about, all)
	}
	t.Logf("%d log lines about %s, %d with its trace id", about, id, traced)
}

// stepOf is the step of task named name.
func stepOf(task *taskerv1.Task, name string) *taskerv1.Step {
	for _, s := range task.GetSteps() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// TestTracingOffCostsNothing: with tracing off, the span and trace-context
// helpers on the hot path (an attempt's span, a commit's span, a dispatch
// batch's span, a forward's span, a log line's task context) allocate
// nothing and record nothing.
func TestTracingOffCostsNothing(t *testing.T) {
	a := &Agent{} // a zero config: tracing off, as by default
	if err := a.setupTelemetry(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.tel.Tracing || len(a.interceptors) != 0 {
		t.Fatal("tracing on by default")
	}
	s := &scheduler{a: a, flights: map[leaseKey]flight{}}
	k := leaseKey{"tsk_1", "charge", 1}
	ctx := context.Background()
	cmd := &fsmv1.Command{}
	tp := "00-" + appTraceID + "-00f067aa0ba902b7-01"
	cmds := []*fsmv1.Command{{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{TaskId: k.task, Step: k.step, Attempt: 1}}}}
	allocs := testing.AllocsPerRun(100, func() {
		if sp := a.attemptSpan(tp, k, "payments.charge", "c1"); sp != nil {
			t.Fatal("an attempt span with tracing off")
		}
		a.commitSpan(ctx, cmd)(nil)
		fctx, note, end := a.forwardSpan(ctx, "p", true)
		note("s1")
		end(1, nil)
		if fctx != ctx || a.taskLog(ctx, k.task) != ctx {
			t.Fatal("a traced context with tracing off")
		}
		bctx, endBatch := s.dispatchSpan(ctx, time.Now(), cmds)
		endBatch(nil)
		if bctx != ctx {
			t.Fatal("a traced dispatch context with tracing off")
		}
	})
	if allocs != 0 {
		t.Errorf("tracing off: %v allocations per step's worth of tracing calls, want 0", allocs)
	}
}
