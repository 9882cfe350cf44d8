package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// grpcReceiver is an OTLP trace receiver over gRPC on loopback: the
// collector's TraceService, keeping every span with the
// service.instance.id (the agent) that exported it.
type grpcReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu      sync.Mutex
	exports int
	spans   []otlpSpan
}

type otlpSpan struct {
	*tracepb.Span
	instance string
}

func startGRPCReceiver(t *testing.T) *grpcReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &grpcReceiver{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return r
}

func (r *grpcReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports++
	for _, rs := range req.GetResourceSpans() {
		inst := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.instance.id" {
				inst = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, otlpSpan{s, inst})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *grpcReceiver) snapshot() (int, []otlpSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exports, slices.Clone(r.spans)
}

func attrOf(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			if v := kv.GetValue().GetStringValue(); v != "" {
				return v
			}
			return fmt.Sprint(kv.GetValue().GetIntValue())
		}
	}
	return ""
}

// traceView is one trace as the receiver holds it.
type traceView struct {
	spans    []otlpSpan
	byID     map[string]otlpSpan
	agents   map[string]bool
	orphans  []string // spans whose parent is neither in the trace nor the app's span
	stepDone map[string]string
}

func viewTrace(all []otlpSpan, traceID, appSpan string) traceView {
	v := traceView{byID: map[string]otlpSpan{}, agents: map[string]bool{}, stepDone: map[string]string{}}
	for _, s := range all {
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			v.spans = append(v.spans, s)
			v.byID[hex.EncodeToString(s.GetSpanId())] = s
			v.agents[s.instance] = true
		}
	}
	for _, s := range v.spans {
		p := hex.EncodeToString(s.GetParentSpanId())
		if _, ok := v.byID[p]; !ok && p != appSpan {
			v.orphans = append(v.orphans, fmt.Sprintf("%s@%s (parent %s)", s.GetName(), s.instance, p))
		}
		if step := attrOf(s.Span, "tasker.step"); step != "" && strings.HasPrefix(s.GetName(), "step ") {
			v.stepDone[step] = attrOf(s.Span, "tasker.outcome")
		}
	}
	return v
}

// TestClusterTraceOverOTLPGRPC: a real cluster (one server, two client
// agents, each with its services) configured only by the standard
// variables (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, OTEL_EXPORTER_OTLP_ENDPOINT)
// exports, over gRPC to a receiver in the test, one connected trace for an
// order whose steps ran on both client agents: every span of the task
// shares the trace the starting app began, every parent resolves inside
// the trace, and the spans of each hop are there (the client agent's
// forward of StartTask, the leader's step attempts, the deliveries on the
// agents that ran them, the dispatch batches linked to the attempts).
func TestClusterTraceOverOTLPGRPC(t *testing.T) {
	recv := startGRPCReceiver(t)
	t.Setenv("TASKER_TRACING", "true")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.addr)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export every 100ms, not 5s
	c := startCluster(t, 1, []clientSpec{
		{name: "client-orders", only: "orders,shipping,notifications"},
		{name: "client-stock", only: "inventory,payments"},
	})
	orders := c.client("client-orders")
	if _, err := newClient(orders.api).ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}

	// The app that starts the order traces: its span is the trace's root.
	const traceID, appSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	in, err := json.Marshal(orderInput("ord_trace1", "tok_visa", "TEE-M"))
	if err != nil {
		t.Fatal(err)
	}
	req := connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "shop", Workflow: "order-fulfilment", InputJson: string(in)})
	req.Header().Set("traceparent", "00-"+traceID+"-"+appSpan+"-01")
	res, err := taskerv1connect.NewWorkflowServiceClient(h2cClient(), orders.api).StartTask(callCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetTask().GetId()
	b := &batch{c: newClient(orders.api), ids: map[string]string{"ord_trace1": id}}
	task := b.waitComplete(t, 20*time.Second)[0]

	ranOn := map[string]bool{}
	var steps []string
	for _, st := range task.GetSteps() {
		ranOn[st.GetAgent()] = true
		steps = append(steps, st.GetName())
	}
	sort.Strings(steps)
	if !ranOn["client-orders"] || !ranOn["client-stock"] {
		t.Fatalf("the order's steps ran on %v, want both client agents", ranOn)
	}

	// Spans are exported in batches, the last step's span once the leader
	// lands its outcome: wait for the whole trace.
	var v traceView
	waitFor(t, 15*time.Second, "one connected trace with every step's span", func(context.Context) (bool, string, error) {
		n, all := recv.snapshot()
		v = viewTrace(all, traceID, appSpan)
		done := 0
		for _, s := range steps {
			if v.stepDone[s] == "completed" {
				done++
			}
		}
		ok := done == len(steps) && len(v.orphans) == 0 && len(v.agents) == 3
		return ok, fmt.Sprintf("%d exports, %d spans in the trace from %v, %d of %d steps' spans completed, orphans %v",
			n, len(v.spans), v.agents, done, len(steps), v.orphans), nil
	})

	_, all := recv.snapshot()
	// Every span about the task is in the app's trace: none started a
	// trace of its own.
	for _, s := range all {
		if attrOf(s.Span, "tasker.task.id") == id && hex.EncodeToString(s.GetTraceId()) != traceID {
			t.Errorf("span %s@%s of the task is in trace %x, not the app's", s.GetName(), s.instance, s.GetTraceId())
		}
	}
	names := map[string]map[string]int{} // span name → agent → count
	for _, s := range v.spans {
		if names[s.GetName()] == nil {
			names[s.GetName()] = map[string]int{}
		}
		names[s.GetName()][s.instance]++
	}
	want := map[string][]string{
		"forward to leader":                    {"client-orders"},
		"tasker.v1.WorkflowService/StartTask":  {"server-0"},
		"tasker.agent.v1.AgentService/Deliver": {"server-0", "client-orders", "client-stock"},
		"tasker.v1.WorkerService/CompleteStep": {"client-orders", "client-stock", "server-0"},
		"raft commit":                          {"server-0"},
	}
	for _, s := range steps {
		want["step "+s] = []string{"server-0"}
	}
	for name, agents := range want {
		for _, a := range agents {
			if names[name][a] == 0 {
				t.Errorf("no %q span from %s in the trace; have %v", name, a, names)
			}
		}
	}
	// Each attempt's span links to its dispatch batch (a trace of its
	// own), whose commit is its child.
	byID := map[string]otlpSpan{}
	for _, s := range all {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	for _, s := range v.spans {
		if !strings.HasPrefix(s.GetName(), "step ") {
			continue
		}
		linked := false
		for _, l := range s.GetLinks() {
			if d, ok := byID[hex.EncodeToString(l.GetSpanId())]; ok && d.GetName() == "dispatch" && attrOf(d.Span, "tasker.dispatch.batch_size") != "" {
				linked = true
			}
		}
		if !linked {
			t.Errorf("%s links to no exported dispatch span", s.GetName())
		}
	}
	t.Logf("trace %s: %d spans from %d agents (%v), every parent resolved", traceID, len(v.spans), len(v.agents), v.agents)
}
