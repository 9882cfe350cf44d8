package worker

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// continueTrace makes the attempt's span (W3C traceparent) the remote
// parent in ctx, so the handler's spans join the task's trace whichever
// OpenTelemetry tracer the app uses. ctx unchanged when there is none.
func continueTrace(ctx context.Context, traceParent string) context.Context {
	if traceParent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceParent})
}

// withTrace sends the attempt's traceparent with its report, so the
// sidecar's handling of the result is part of the attempt's trace too.
func withTrace(h http.Header, a *taskerv1.StepAssignment) {
	if tp := a.GetTraceParent(); tp != "" {
		h.Set("traceparent", tp)
	}
}
