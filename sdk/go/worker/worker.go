package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tasker-run/tasker/internal/sleep"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/internal/jsontext"
	"github.com/tasker-run/tasker/sdk/go/internal/transport"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// DefaultConcurrency is how many steps of one capability a worker runs at
// once unless [Concurrency] says otherwise; it matches the sidecar's
// default.
const DefaultConcurrency = 16

// DefaultDrainTimeout is how long Run waits for running steps at shutdown
// unless [Options].DrainTimeout says otherwise.
const DefaultDrainTimeout = 30 * time.Second

const (
	// callTimeout bounds one unary call to the sidecar.
	callTimeout = 10 * time.Second
	// reportTimeout bounds reporting one result, retries included.
	reportTimeout = 30 * time.Second
	// minHeartbeat is the shortest wait between two lease extensions.
	minHeartbeat = 10 * time.Millisecond
)

// Options configure a [Worker]. The zero value is usable.
type Options struct {
	// Addr is the sidecar's base URL, such as "http://127.0.0.1:7420".
	// Empty means the TASKER_ADDR environment variable, else
	// http://127.0.0.1:7420.
	Addr string
	// WorkerID names this app instance to the sidecar. Empty lets the
	// sidecar pick one; the worker reuses it when it registers again.
	WorkerID string
	// Logger receives the worker's logs; nil means [slog.Default].
	Logger *slog.Logger
	// DrainTimeout is how long Run waits for running steps once its
	// context is cancelled, before it cancels their contexts. Zero means
	// [DefaultDrainTimeout].
	DrainTimeout time.Duration
	// Token is the ACL token sent to the sidecar as "Authorization:
	// Bearer", when the cluster runs with ACLs (docs/acl.md). Empty means
	// the TASKER_TOKEN environment variable, else none.
	Token string
	// HTTPClient carries the calls to the sidecar. nil means the SDK's
	// shared client, which speaks HTTP/2 without TLS (h2c); a replacement
	// must too, for the stream of assignments to work.
	HTTPClient *http.Client
}

// Worker runs the steps of the capabilities it handles. Configure it with
// Handle, then call Run.
type Worker struct {
	api          taskerv1connect.WorkerServiceClient
	log          *slog.Logger
	workerID     string
	drainTimeout time.Duration
	// Delays between attempts to register and poll, and how long Run waits
	// for handlers after cancelling them; tests shorten them.
	retryMin, retryMax time.Duration
	drainGrace         time.Duration

	mu      sync.Mutex
	caps    map[string]*capability
	order   []*capability
	running bool
}

// capability is one registered capability and its handler.
type capability struct {
	name         string
	handler      Handler
	version      string
	description  string
	inputSchema  string
	outputSchema string
	limit        int
	// slots holds one token per running step.
	slots chan struct{}
}

// New returns a Worker that talks to the sidecar described by opts.
func New(opts Options) *Worker {
	hc := opts.HTTPClient
	if hc == nil {
		hc = transport.HTTPClient()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	drain := opts.DrainTimeout
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	return &Worker{
		api:          taskerv1connect.NewWorkerServiceClient(hc, transport.BaseURL(opts.Addr), transport.ClientOptions(opts.Token)...),
		log:          log,
		workerID:     opts.WorkerID,
		drainTimeout: drain,
		// Capped low: the sidecar is local, and a worker that stays away
		// for long has its running steps handed to others.
		retryMin:   100 * time.Millisecond,
		retryMax:   2 * time.Second,
		drainGrace: 2 * time.Second,
		caps:       map[string]*capability{},
	}
}

// HandleOption configures one capability in [Worker.Handle].
type HandleOption func(*capability)

// Concurrency sets how many steps of the capability run at once; n <= 0
// means [DefaultConcurrency]. The sidecar is told, so it does not assign
// more; the worker enforces it too.
func Concurrency(n int) HandleOption {
	return func(c *capability) {
		if n <= 0 {
			n = DefaultConcurrency
		}
		c.limit = n
	}
}

// Schemas sets the JSON Schemas (as JSON text) of the input the capability
// accepts and the result it returns; either may be empty. The cluster
// gossips them so workflows can be checked against them at apply time.
func Schemas(input, output string) HandleOption {
	return func(c *capability) {
		c.inputSchema = input
		c.outputSchema = output
	}
}

// Version sets the implementation's version, shown to operators.
func Version(v string) HandleOption {
	return func(c *capability) { c.version = v }
}

// Description sets a line about the capability, shown to operators.
func Description(d string) HandleOption {
	return func(c *capability) { c.description = d }
}

// Handle registers h for the capability name, such as "payments.charge".
// Call it before Run. It panics when name is empty, h is nil, name is
// already handled, a schema is not valid JSON, or Run is running: each is
// a mistake in the program, not a condition to handle.
func (w *Worker) Handle(name string, h Handler, opts ...HandleOption) {
	if name == "" {
		panic("worker: Handle: empty capability name")
	}
	if h == nil {
		panic(fmt.Sprintf("worker: Handle(%q): nil handler", name))
	}
	c := &capability{name: name, handler: h, limit: DefaultConcurrency}
	for _, o := range opts {
		o(c)
	}
	for what, s := range map[string]string{"input": c.inputSchema, "output": c.outputSchema} {
		if s != "" && !json.Valid([]byte(s)) {
			panic(fmt.Sprintf("worker: Handle(%q): the %s schema is not valid JSON", name, what))
		}
	}
	c.slots = make(chan struct{}, c.limit)

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		panic(fmt.Sprintf("worker: Handle(%q) called while Run is running", name))
	}
	if _, dup := w.caps[name]; dup {
		panic(fmt.Sprintf("worker: Handle(%q): capability already handled", name))
	}
	w.caps[name] = c
	w.order = append(w.order, c)
}

// Run registers the worker's capabilities with the sidecar and executes
// the steps assigned to it until ctx is cancelled; then it drains (see the
// package documentation) and returns nil. It keeps trying while the
// sidecar is unreachable. It returns an error when no capability is
// handled, when Run is already running, or when the sidecar refuses the
// registration itself (for example an invalid schema), after draining.
func (w *Worker) Run(ctx context.Context) error {
	r, err := w.start(ctx)
	if err != nil {
		return err
	}
	defer w.stop()
	defer r.cancelReports()

	// The stream outlives ctx: it stays open while running steps drain, so
	// that the sidecar keeps them assigned to this worker.
	streamCtx, closeStream := context.WithCancel(context.WithoutCancel(ctx))
	defer closeStream()
	fatal := make(chan error, 1)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		if err := r.poll(ctx, streamCtx); err != nil {
			fatal <- err
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
		w.log.Error("worker stopping", "error", runErr)
	}
	r.drain()
	closeStream()
	<-polled
	return runErr
}

func (w *Worker) start(ctx context.Context) (*run, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return nil, errors.New("worker: Run is already running")
	}
	if len(w.order) == 0 {
		return nil, errors.New("worker: no capability to offer: call Handle before Run")
	}
	w.running = true
	base := context.WithoutCancel(ctx)
	r := &run{
		w:        w,
		caps:     make(map[string]*capability, len(w.caps)),
		register: &taskerv1.RegisterCapabilitiesRequest{},
		workerID: w.workerID,
		draining: make(chan struct{}),
	}
	for name, c := range w.caps {
		r.caps[name] = c
	}
	for _, c := range w.order {
		r.register.Capabilities = append(r.register.Capabilities, &taskerv1.Capability{
			Name:             c.name,
			Version:          c.version,
			Description:      c.description,
			InputSchemaJson:  c.inputSchema,
			OutputSchemaJson: c.outputSchema,
			MaxConcurrency:   int32(c.limit),
		})
	}
	r.execCtx, r.cancelExec = context.WithCancelCause(base)
	r.reportCtx, r.cancelReports = context.WithCancel(base)
	return r, nil
}

func (w *Worker) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running = false
}

// run is the state of one call to Run.
type run struct {
	w        *Worker
	caps     map[string]*capability
	register *taskerv1.RegisterCapabilitiesRequest
	// workerID is read and written by the poll goroutine only; reportID
	// is its copy for the goroutines that report results.
	workerID string
	reportID atomic.Value // string

	// execCtx is the parent of every handler's context; the drain timeout
	// cancels it. reportCtx bounds reports; Run cancels it when it returns.
	execCtx       context.Context
	cancelExec    context.CancelCauseFunc
	reportCtx     context.Context
	cancelReports context.CancelFunc

	// mu orders inflight.Add before drain's inflight.Wait: once draining is
	// closed, nothing is added.
	mu       sync.Mutex
	draining chan struct{}
	inflight sync.WaitGroup
	// running counts handlers executing now.
	running atomic.Int64
}

func (r *run) isDraining() bool {
	select {
	case <-r.draining:
		return true
	default:
		return false
	}
}

// poll registers and holds the stream of assignments open, again and again
// with backoff, until ctx is cancelled or the worker drains. It returns an
// error only when the sidecar refuses the registration for good.
func (r *run) poll(ctx, streamCtx context.Context) error {
	log := r.w.log
	b := transport.Backoff{Min: r.w.retryMin, Max: r.w.retryMax}
	for !r.isDraining() && ctx.Err() == nil {
		req := r.register
		req.WorkerId = r.workerID
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		res, err := r.w.api.RegisterCapabilities(cctx, connect.NewRequest(req))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if refused(err) {
				return fmt.Errorf("worker: register capabilities: %w", err)
			}
			d := b.After(err)
			log.Warn("cannot register with the sidecar; retrying", "error", err, "retry_in", d)
			sleep.For(ctx, d)
			continue
		}
		if id := res.Msg.GetWorkerId(); id != "" {
			r.workerID = id
			r.reportID.Store(id)
		}
		log.Info("registered with the sidecar", "worker_id", r.workerID, "capabilities", len(req.Capabilities))

		opened := time.Now()
		n, err := r.receive(streamCtx)
		if r.isDraining() || ctx.Err() != nil {
			return nil
		}
		if n > 0 || time.Since(opened) > r.w.retryMax {
			b.Reset()
		}
		d := b.Next()
		log.Warn("step stream ended; registering again", "error", err, "retry_in", d)
		sleep.For(ctx, d)
	}
	return nil
}

// refused reports whether a registration error will not go away by
// retrying: the sidecar says the request itself is wrong or not allowed.
func refused(err error) bool {
	if !connect.IsWireError(err) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeUnimplemented,
		connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

// receive holds one PollSteps stream open and accepts its assignments. It
// returns how many it received and why the stream ended.
func (r *run) receive(ctx context.Context) (int, error) {
	stream, err := r.w.api.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: r.workerID}))
	if err != nil {
		return 0, fmt.Errorf("poll steps: %w", err)
	}
	defer stream.Close()
	n := 0
	for stream.Receive() {
		if a := stream.Msg().GetAssignment(); a != nil {
			n++
			r.accept(a)
		}
	}
	if err := stream.Err(); err != nil {
		return n, fmt.Errorf("poll steps: %w", err)
	}
	return n, errors.New("poll steps: the sidecar closed the stream")
}

// accept starts executing an assignment, unless the worker is draining.
func (r *run) accept(a *taskerv1.StepAssignment) {
	log := r.w.log.With("task_id", a.GetTaskId(), "step", a.GetStep(), "attempt", a.GetAttempt(), "capability", a.GetCapability())
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isDraining() {
		log.Info("not starting step: the worker is draining; the sidecar takes it back when the stream closes")
		return
	}
	r.inflight.Add(1)
	c := r.caps[a.GetCapability()]
	if c == nil {
		go func() {
			defer r.inflight.Done()
			log.Error("step assigned for a capability this worker does not handle")
			r.fail(a, &Error{Code: CodeUnknownCapability, Message: fmt.Sprintf("this worker does not handle capability %q", a.GetCapability()), Retryable: true}, log)
		}()
		return
	}
	go r.execute(c, a, log)
}

// execute runs one assignment when a slot of its capability is free, and
// reports the outcome.
func (r *run) execute(c *capability, a *taskerv1.StepAssignment, log *slog.Logger) {
	defer r.inflight.Done()
	acquired := false
	select {
	case c.slots <- struct{}{}:
		acquired = true
	case <-r.draining:
	}
	if r.isDraining() {
		// The step had not started: leave it to the sidecar.
		if acquired {
			<-c.slots
		}
		log.Info("not starting step: the worker is draining; the sidecar takes it back when the stream closes")
		return
	}
	defer func() { <-c.slots }()

	s := newStep(a)
	l := newLease(continueTrace(r.execCtx, s.TraceParent), s.Deadline)
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		r.heartbeat(l, a, log)
	}()

	r.running.Add(1)
	log.Debug("step started", "deadline", s.Deadline)
	res, err := call(l.ctx, c.handler, s, log)
	r.running.Add(-1)

	cause := context.Cause(l.ctx)
	l.end(context.Canceled)
	<-beat

	switch {
	case cause == ErrLeaseLost:
		log.Warn("step outcome not reported: the lease was lost", "handler_error", err)
	case cause == ErrDrainTimeout && err != nil:
		log.Info("step cancelled by the drain timeout; not reported, so the sidecar hands it back", "handler_error", err)
	case err != nil:
		r.fail(a, failureOf(err), log)
	default:
		r.complete(a, res, log)
	}
}

// call runs the handler, turning a panic into a permanent failure.
func call(ctx context.Context, h Handler, s *Step, log *slog.Logger) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("step handler panicked", "panic", p, "stack", string(debug.Stack()))
			res, err = nil, &Error{Code: CodePanic, Message: fmt.Sprint(p)}
		}
	}()
	return h(ctx, s)
}

// heartbeat extends the lease whenever a third of the time to its deadline
// remains, until the lease's context ends.
func (r *run) heartbeat(l *lease, a *taskerv1.StepAssignment, log *slog.Logger) {
	deadline := l.Deadline()
	if deadline.IsZero() {
		return
	}
	granted := time.Now()
	for {
		wait := max(time.Until(deadline)-deadline.Sub(granted)/3, minHeartbeat)
		if !sleep.For(l.ctx, wait) {
			return
		}
		cctx, cancel := context.WithTimeout(l.ctx, callTimeout)
		res, err := r.w.api.ExtendLease(cctx, connect.NewRequest(&taskerv1.ExtendLeaseRequest{
			TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), WorkerId: r.id(),
		}))
		cancel()
		if l.ctx.Err() != nil {
			return
		}
		granted = time.Now()
		switch code := connect.CodeOf(err); {
		case err == nil:
			if d := res.Msg.GetDeadline(); d != nil && d.IsValid() {
				deadline = d.AsTime()
				l.extend(deadline)
			}
			log.Debug("lease extended", "deadline", deadline)
		case code == connect.CodeFailedPrecondition || code == connect.CodeNotFound:
			log.Warn("lease lost: the sidecar no longer holds this attempt for this worker; cancelling the step", "error", err)
			l.end(ErrLeaseLost)
			return
		default:
			log.Warn("cannot extend the lease; trying again before the deadline", "error", err, "deadline", deadline)
		}
	}
}

// complete reports a handler's result.
func (r *run) complete(a *taskerv1.StepAssignment, res any, log *slog.Logger) {
	body, err := jsontext.Encode(res)
	switch {
	case errors.Is(err, jsontext.ErrInvalidRaw):
		err = errors.New("the result is a json.RawMessage that is not valid JSON")
	case err != nil:
		err = fmt.Errorf("encode result: %w", err)
	}
	if err != nil {
		log.Error("step result cannot be encoded as JSON", "error", err)
		r.fail(a, &Error{Code: CodeInvalidResult, Message: err.Error(), cause: err}, log)
		return
	}
	ctx, cancel := context.WithTimeout(r.reportCtx, reportTimeout)
	defer cancel()
	err = r.retry(ctx, func(ctx context.Context) error {
		req := connect.NewRequest(&taskerv1.CompleteStepRequest{
			TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(), ResultJson: body, WorkerId: r.id(),
		})
		withTrace(req.Header(), a)
		_, err := r.w.api.CompleteStep(ctx, req)
		return err
	})
	switch {
	case err == nil:
		log.Debug("step completed")
	case connect.CodeOf(err) == connect.CodeInvalidArgument && connect.IsWireError(err):
		log.Error("step result REJECTED: it breaks the step's result contract, so the attempt failed with contract_violation and will not be retried; fix the handler or the workflow's result_schema",
			"error", err, "violations", violations(err))
	case connect.CodeOf(err) == connect.CodeFailedPrecondition:
		log.Warn("step result discarded: this attempt is no longer current", "error", err)
	default:
		log.Error("cannot report the step result", "error", err)
	}
}

// id is the worker id the sidecar knows this worker by, for reports.
func (r *run) id() string {
	id, _ := r.reportID.Load().(string)
	return id
}

// fail reports a failed attempt.
func (r *run) fail(a *taskerv1.StepAssignment, f *Error, log *slog.Logger) {
	req := &taskerv1.FailStepRequest{
		TaskId: a.GetTaskId(), Step: a.GetStep(), Attempt: a.GetAttempt(),
		Code: f.Code, Message: f.Message, Retryable: f.Retryable, WorkerId: r.id(),
	}
	if f.RetryAfter > 0 {
		req.RetryAfter = durationpb.New(f.RetryAfter)
	}
	if f.Details != nil {
		if b, err := json.Marshal(f.Details); err != nil {
			log.Warn("failure details cannot be encoded as JSON; reporting without them", "error", err)
		} else {
			req.DetailsJson = string(b)
		}
	}
	ctx, cancel := context.WithTimeout(r.reportCtx, reportTimeout)
	defer cancel()
	var res *connect.Response[taskerv1.FailStepResponse]
	err := r.retry(ctx, func(ctx context.Context) error {
		var err error
		creq := connect.NewRequest(req)
		withTrace(creq.Header(), a)
		res, err = r.w.api.FailStep(ctx, creq)
		return err
	})
	switch {
	case err == nil:
		attrs := []any{"code", f.Code, "message", f.Message, "retryable", f.Retryable, "will_retry", res.Msg.GetWillRetry()}
		if t := res.Msg.GetNextAttemptAt(); t != nil && t.IsValid() {
			attrs = append(attrs, "next_attempt_at", t.AsTime())
		}
		log.Warn("step failed", attrs...)
	case connect.CodeOf(err) == connect.CodeFailedPrecondition:
		log.Warn("step failure discarded: this attempt is no longer current", "code", f.Code, "error", err)
	case connect.CodeOf(err) == connect.CodeInvalidArgument && connect.IsWireError(err):
		// Checked against the step's error_schema, like a result: the
		// attempt failed for good as contract_violation.
		log.Error("step error REJECTED: it breaks the step's error contract, so the attempt failed with contract_violation and will not be retried; report one of the codes the workflow's error_schema lists",
			"code", f.Code, "error", err, "violations", violations(err))
	default:
		log.Error("cannot report the step failure", "code", f.Code, "message", f.Message, "error", err)
	}
}

// retry calls fn until it succeeds, fails for a reason that repeating
// will not fix, or ctx ends.
func (r *run) retry(ctx context.Context, fn func(context.Context) error) error {
	b := transport.Backoff{Min: r.w.retryMin / 2, Max: 2 * time.Second}
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := fn(cctx)
		cancel()
		if err == nil || !transport.Transient(err) || ctx.Err() != nil {
			return err
		}
		if !sleep.For(ctx, b.After(err)) {
			return err
		}
	}
}

// drain stops new steps, waits for running ones up to the drain timeout,
// then cancels them and waits a little longer for them to return.
func (r *run) drain() {
	r.mu.Lock()
	close(r.draining)
	r.mu.Unlock()

	log := r.w.log
	log.Info("worker draining: taking no new steps", "running", r.running.Load(), "timeout", r.w.drainTimeout)
	done := make(chan struct{})
	go func() {
		r.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(r.w.drainTimeout)
	defer t.Stop()
	select {
	case <-done:
		log.Info("worker drained")
		return
	case <-t.C:
	}
	log.Warn("drain timeout: cancelling the running steps", "running", r.running.Load())
	r.cancelExec(ErrDrainTimeout)
	g := time.NewTimer(r.w.drainGrace)
	defer g.Stop()
	select {
	case <-done:
		log.Info("worker drained")
	case <-g.C:
		log.Error("steps still running or reporting after cancellation; abandoning them (the sidecar takes them back)", "running", r.running.Load())
	}
}

// violations lists the contract violations carried by an error's
// ContractFailure detail, as "pointer: message".
func violations(err error) []string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	var out []string
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if cf, ok := v.(*taskerv1.ContractFailure); ok {
			for _, vi := range cf.GetViolations() {
				out = append(out, vi.GetPointer()+": "+vi.GetMessage())
			}
		}
	}
	return out
}
