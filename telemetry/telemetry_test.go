package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestLogHandlerAddsTraceID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewTextHandler(&buf, nil))).With("node", "s1")
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	t0, err := Setup(context.Background(), Config{ServiceName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t0.WithTraceParent(context.Background(), tp)
	if got := t0.TraceParent(ctx); got != tp {
		t.Fatalf("traceparent round trip: %q, want %q", got, tp)
	}
	log.InfoContext(ctx, "task started", "task", "tsk_1")
	log.Info("no trace")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.Contains(lines[0], "trace_id=4bf92f3577b34da6a3ce929d0e0e4736") || !strings.Contains(lines[0], "node=s1") {
		t.Errorf("traced line: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("untraced line has a trace id: %s", lines[1])
	}
}

func TestTracingOffIsNoop(t *testing.T) {
	tel, err := Setup(context.Background(), Config{ServiceName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.Tracing {
		t.Fatal("tracing on by default")
	}
	if is, err := tel.Interceptors(); err != nil || len(is) != 0 {
		t.Fatalf("interceptors with tracing off: %v %v", is, err)
	}
	_, span := tel.Tracer.Start(context.Background(), "x")
	if span.IsRecording() || trace.SpanContextFromContext(trace.ContextWithSpan(context.Background(), span)).IsValid() {
		t.Fatal("the off tracer records spans")
	}
}

func TestEndpointForms(t *testing.T) {
	for in, want := range map[string]string{
		"localhost:4318":                  "http://localhost:4318/v1/traces",
		"http://collector:4318":           "http://collector:4318/v1/traces",
		"http://collector:4318/":          "http://collector:4318/v1/traces",
		"https://collector/custom/traces": "https://collector/custom/traces",
	} {
		if got := withPath(withScheme(in), "/v1/traces"); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func TestUnknownProtocolIsAnError(t *testing.T) {
	_, err := Setup(context.Background(), Config{Tracing: true, Getenv: func(k string) string {
		if k == "OTEL_EXPORTER_OTLP_PROTOCOL" {
			return "http/json"
		}
		return ""
	}})
	if err == nil || !strings.Contains(err.Error(), "http/json") {
		t.Fatalf("want an error naming the protocol, got %v", err)
	}
}
