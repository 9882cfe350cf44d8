// Package telemetry sets up an agent's OpenTelemetry traces and metrics:
// traces exported over OTLP when asked for (off by default: a no-op
// tracer then, so instrumented code pays one interface call), metrics
// always, read by a Prometheus scrape of the agent's /metrics.
//
// Nothing here touches OpenTelemetry's global providers: each agent owns
// its own, so several agents in one process (tests, benchmarks) keep their
// spans and metrics apart.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config says what to set up.
type Config struct {
	// Tracing turns span export on. Off, the tracer is a no-op.
	Tracing bool
	// Endpoint is the OTLP collector's URL (http://host:4318 for
	// HTTP/protobuf, host:4317 or http://host:4317 for gRPC); empty leaves
	// it to the OTEL_EXPORTER_OTLP_ENDPOINT and
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables (and the exporter's
	// default, localhost).
	Endpoint string
	// ServiceName and Instance name the process in every span and metric
	// (service.name, service.instance.id).
	ServiceName string
	Instance    string
	// Getenv reads the environment (os.Getenv); nil reads nothing.
	Getenv func(string) string
}

// Telemetry is what an agent instruments itself with.
type Telemetry struct {
	// Tracing reports whether spans are exported: instrumented code checks
	// it before doing work only a recorded span needs.
	Tracing bool
	// Tracer makes the agent's spans; a no-op one when tracing is off.
	Tracer trace.Tracer
	// TracerProvider is for instrumentation libraries (otelconnect).
	TracerProvider trace.TracerProvider
	// Propagator reads and writes W3C traceparent and tracestate.
	Propagator propagation.TextMapPropagator
	// Meter makes the agent's instruments; Metrics serves them in the
	// Prometheus text format, from a registry of their own.
	Meter   metric.Meter
	Metrics http.Handler

	shutdown []func(context.Context) error
}

// Scope names the instrumentation in spans and metrics.
const Scope = "github.com/tasker-run/tasker"

// Setup builds the providers cfg asks for. Call Shutdown to flush spans.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(cfg.ServiceName),
		semconv.ServiceInstanceID(cfg.Instance),
	)
	t := &Telemetry{Propagator: propagation.TraceContext{}}

	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	t.shutdown = append(t.shutdown, mp.Shutdown)
	t.Meter = mp.Meter(Scope)
	t.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	if !cfg.Tracing {
		t.TracerProvider = noop.NewTracerProvider()
		t.Tracer = t.TracerProvider.Tracer(Scope)
		return t, nil
	}
	sx, err := spanExporter(ctx, cfg.Endpoint, getenv)
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(sx), sdktrace.WithResource(res))
	t.shutdown = append(t.shutdown, tp.Shutdown)
	t.Tracing = true
	t.TracerProvider = tp
	t.Tracer = tp.Tracer(Scope)
	return t, nil
}

// spanExporter builds the OTLP exporter the environment asks for:
// HTTP/protobuf unless OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (or
// OTEL_EXPORTER_OTLP_PROTOCOL) says grpc. The exporters read the other
// OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS) themselves.
func spanExporter(ctx context.Context, endpoint string, getenv func(string) string) (sdktrace.SpanExporter, error) {
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "", "http/protobuf":
		var opts []otlptracehttp.Option
		if endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(withPath(withScheme(endpoint), "/v1/traces")))
		}
		x, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP HTTP exporter: %w", err)
		}
		return x, nil
	case "grpc":
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(withScheme(endpoint)))
		}
		x, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP gRPC exporter: %w", err)
		}
		return x, nil
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", proto)
}

// withScheme lets an operator write host:port: plain HTTP, as collectors
// beside the agent usually listen.
func withScheme(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return endpoint
	}
	return "http://" + endpoint
}

// withPath adds the signal's path to a bare collector URL, as the
// OTEL_EXPORTER_OTLP_ENDPOINT variable does, so the flag and the variable
// take the same value.
func withPath(u, path string) string {
	rest := u[strings.Index(u, "://")+3:]
	if i := strings.IndexByte(rest, '/'); i >= 0 && rest[i:] != "/" {
		return u
	}
	return strings.TrimSuffix(u, "/") + path
}

// Shutdown flushes the spans not yet exported and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// TraceParent is the W3C traceparent of the span in ctx, "" without one.
func (t *Telemetry) TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	t.Propagator.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx continuing the trace of a W3C traceparent;
// ctx unchanged when it is empty or malformed.
func (t *Telemetry) WithTraceParent(ctx context.Context, traceParent string) context.Context {
	if traceParent == "" {
		return ctx
	}
	return t.Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceParent})
}

// Interceptors are the Connect interceptors that carry traces across a
// call (otelconnect, trusting the caller's trace context: every Connect
// hop of Tasker is an app or agent of the same cluster); none when tracing
// is off, so calls pay nothing.
func (t *Telemetry) Interceptors() ([]connect.Interceptor, error) {
	if !t.Tracing {
		return nil, nil
	}
	i, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(t.TracerProvider),
		otelconnect.WithPropagator(t.Propagator),
		otelconnect.WithTrustRemote(),
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("otelconnect: %w", err)
	}
	return []connect.Interceptor{i}, nil
}

// LogHandler adds the trace_id and span_id of the span in a record's
// context to h's records, so log lines written with a traced context
// (slog's *Context methods) can be found from the trace and back. Use it
// only while tracing: it costs a context lookup per record.
func LogHandler(h slog.Handler) slog.Handler { return traceLog{h} }

type traceLog struct{ slog.Handler }

func (t traceLog) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceLog) WithAttrs(as []slog.Attr) slog.Handler { return traceLog{t.Handler.WithAttrs(as)} }
func (t traceLog) WithGroup(name string) slog.Handler    { return traceLog{t.Handler.WithGroup(name)} }
