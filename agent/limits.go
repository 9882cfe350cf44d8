package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tasker-run/tasker/proto/tasker/agent/v1/agentv1connect"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// Limits are the settings that keep one client, one workflow or one burst
// of work from exhausting the cluster (docs/operations.md, "Limits"). Each
// refusal is ResourceExhausted and names its setting. MaxPayloadBytes,
// older than the rest, stays in Config.
type Limits struct {
	// MaxTasksInFlight caps the tasks in the cluster that are not yet
	// complete, cancelled or resolved. The leader's setting applies: it
	// travels in each CreateTask command, so every server decides alike.
	MaxTasksInFlight int `yaml:"max_tasks_in_flight"`
	// MaxWorkflowSteps caps the steps of one workflow version, checked by
	// the leader when the workflow is applied.
	MaxWorkflowSteps int `yaml:"max_workflow_steps"`
	// MaxWatchers caps the WatchTask and WatchEvents streams one agent
	// serves at once.
	MaxWatchers int `yaml:"max_watchers"`
	// MaxWorkers caps the app registrations (worker ids) one agent keeps.
	// At the cap, registrations that can receive nothing (no stream, no
	// push URL, no attempts held, not renewed for reclaim_grace) make room.
	MaxWorkers int `yaml:"max_workers"`
	// RateLimit is the requests per second one client (an API token, or
	// else a remote IP) may send to this agent; 0 turns rate limiting off.
	RateLimit float64 `yaml:"rate_limit"`
	// RateBurst is how many requests a client may send at once above the
	// rate; 0 means the rate rounded up.
	RateBurst int `yaml:"rate_burst"`
}

// Ranges of the limits, for validation and for the FSM's own checks.
const (
	maxPayloadCeiling       = 64 << 20
	maxWorkflowStepsCeiling = 65535 // step state counts unmet parents in 16 bits
	maxTasksInFlightCeiling = 100_000_000
	maxWatchersCeiling      = 1_000_000
	maxRateCeiling          = 1_000_000
	// rateClients bounds the per-client limiters an agent keeps.
	rateClients = 10000
)

func defaultLimits() Limits {
	return Limits{
		MaxTasksInFlight: 100000,
		MaxWorkflowSteps: workflow.DefaultLimits().MaxSteps,
		MaxWatchers:      10000,
		MaxWorkers:       10000,
	}
}

// limitSettings are the limits' flags and environment variables.
func limitSettings() []setting {
	num := func(name, usage string, field func(*Config) *int) setting {
		return setting{name: name, usage: usage, apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			*field(c) = n
			return nil
		}}
	}
	return []setting{
		num("max-tasks-in-flight", "tasks not yet ended the cluster accepts; StartTask beyond it is refused (the leader's setting applies)", func(c *Config) *int { return &c.MaxTasksInFlight }),
		num("max-workflow-steps", "steps one workflow version may have (the leader's setting applies)", func(c *Config) *int { return &c.MaxWorkflowSteps }),
		num("max-watchers", "WatchTask and WatchEvents streams this agent serves at once", func(c *Config) *int { return &c.MaxWatchers }),
		num("max-workers", "app registrations (worker ids) this agent keeps", func(c *Config) *int { return &c.MaxWorkers }),
		{name: "rate-limit", usage: "requests per second one client (API token, or else IP) may send this agent; 0 is off", apply: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.RateLimit = f
			return nil
		}},
		num("rate-burst", "requests one client may send at once above -rate-limit (0: the rate, rounded up)", func(c *Config) *int { return &c.RateBurst }),
	}
}

// validate checks the limits; bad is Config.Validate's reporter.
func (l Limits) validate(bad func(setting, format string, args ...any)) {
	if l.MaxTasksInFlight < 1 || l.MaxTasksInFlight > maxTasksInFlightCeiling {
		bad("max-tasks-in-flight", "%d is out of range: use 1 to %d (default 100000)", l.MaxTasksInFlight, maxTasksInFlightCeiling)
	}
	if l.MaxWorkflowSteps < 1 || l.MaxWorkflowSteps > maxWorkflowStepsCeiling {
		bad("max-workflow-steps", "%d is out of range: use 1 to %d (default %d)", l.MaxWorkflowSteps, maxWorkflowStepsCeiling, workflow.DefaultLimits().MaxSteps)
	}
	if l.MaxWatchers < 1 || l.MaxWatchers > maxWatchersCeiling {
		bad("max-watchers", "%d is out of range: use 1 to %d (default 10000)", l.MaxWatchers, maxWatchersCeiling)
	}
	if l.MaxWorkers < 1 || l.MaxWorkers > maxWatchersCeiling {
		bad("max-workers", "%d is out of range: use 1 to %d (default 10000)", l.MaxWorkers, maxWatchersCeiling)
	}
	if math.IsNaN(l.RateLimit) || l.RateLimit < 0 || l.RateLimit > maxRateCeiling {
		bad("rate-limit", "%v is out of range: use 0 (off) to %d requests per second", l.RateLimit, maxRateCeiling)
	}
	if l.RateBurst < 0 || l.RateBurst > maxRateCeiling {
		bad("rate-burst", "%d is out of range: use 0 (the rate, rounded up) to %d", l.RateBurst, maxRateCeiling)
	}
	if l.RateBurst > 0 && l.RateLimit == 0 {
		bad("rate-burst", "has no effect without -rate-limit; set both or neither")
	}
}

// fsmLimits are the manifest limits every server's FSM checks: the widest
// any setting allows, the same on every server whatever its own settings,
// so that replicas never disagree on a manifest (and a snapshot always
// restores). The leader checks the configured, narrower limits before it
// proposes (checkWorkflow).
func fsmLimits() workflow.Limits {
	return workflow.Limits{MaxManifestBytes: maxPayloadCeiling, MaxSteps: maxWorkflowStepsCeiling}
}

// attrLimit labels tasker.limit.rejections with the limit that refused.
const attrLimit = attribute.Key("tasker.limit")

// Names of the limits, as the rejections metric labels them.
const (
	limitPayload     = "payload"
	limitSteps       = "workflow_steps"
	limitInFlight    = "tasks_in_flight"
	limitWatchers    = "watchers"
	limitWorkers     = "workers"
	limitRate        = "rate"
	limitCommandSize = "command_payload"
	limitProposals   = "proposals"
)

// limitError marks a refusal by one of the limits, so that the limits
// interceptor counts it by name.
type limitError struct {
	limit string
	err   error
}

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// exhausted is the ResourceExhausted refusal of limit.
func exhausted(limit string, err error) *connect.Error {
	return connect.NewError(connect.CodeResourceExhausted, &limitError{limit: limit, err: err})
}

// limits holds the agent's runtime side of the limits: the watcher count,
// the per-client rate limiters and the rejections counter.
type limits struct {
	a          *Agent
	rejections metric.Int64Counter
	errw       *connect.ErrorWriter
	rate       *rateLimiter // nil when rate limiting is off

	mu       sync.Mutex
	watchers int
}

func newLimits(a *Agent) (*limits, error) {
	l := &limits{a: a, errw: connect.NewErrorWriter()}
	var err error
	l.rejections, err = a.tel.Meter.Int64Counter("tasker.limit.rejections", metric.WithUnit("{request}"),
		metric.WithDescription("Requests refused by a limit (payload, workflow_steps, tasks_in_flight, watchers, workers, rate, command_payload)."))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	// Every series from 0, so rate() and alerts work before the first refusal.
	for _, name := range []string{limitPayload, limitSteps, limitInFlight, limitWatchers, limitWorkers, limitRate, limitCommandSize, limitProposals} {
		l.rejections.Add(context.Background(), 0, metric.WithAttributes(attrLimit.String(name)))
	}
	if a.cfg.RateLimit > 0 {
		l.rate = newRateLimiter(a.cfg.RateLimit, a.cfg.RateBurst, rateClients, time.Now)
	}
	return l, nil
}

// count records a refusal if err is one.
func (l *limits) count(ctx context.Context, err error) {
	var le *limitError
	if errors.As(err, &le) {
		l.rejections.Add(ctx, 1, metric.WithAttributes(attrLimit.String(le.limit)))
	}
}

// refuse answers a request outside the Connect handlers (before routing)
// with a limit's refusal, in the request's protocol, and counts it.
func (l *limits) refuse(w http.ResponseWriter, r *http.Request, err *connect.Error) {
	l.count(r.Context(), err)
	_ = l.errw.Write(w, r, err)
}

// watch takes one of the agent's watcher slots; release gives it back.
func (l *limits) watch() (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if max := l.a.cfg.MaxWatchers; l.watchers >= max {
		return nil, exhausted(limitWatchers, fmt.Errorf("%d watch streams open on %s, at the limit of %d (max_watchers); close idle watches or raise the limit", l.watchers, l.a.cfg.NodeName, max))
	}
	l.watchers++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.watchers--
			l.mu.Unlock()
		})
	}, nil
}

// admit makes room for the registration of worker id, at most max of
// them: a known id re-registers freely; at the cap, registrations that
// can receive nothing and were not renewed within grace are forgotten
// (an app that comes back registers again); if none can go, the new one
// is refused. Concurrent registrations may pass the cap by their number.
func (ws *workers) admit(id, node string, max int, grace time.Duration, now time.Time) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.byID[id] != nil || len(ws.byID) < max {
		return nil
	}
	for wid, w := range ws.byID {
		if w.stream == nil && w.pushURL == "" && len(w.inflight) == 0 && now.Sub(w.seen) > grace {
			delete(ws.byID, wid)
		}
	}
	if n := len(ws.byID); n >= max {
		return exhausted(limitWorkers, fmt.Errorf("%d workers registered on %s, at the limit of %d (max_workers); reuse worker ids across restarts, or raise the limit", n, node, max))
	}
	return nil
}

// checkWorkflow applies the leader's configured limits to a compiled
// workflow, beyond the FSM's fixed ones.
func (a *Agent) checkWorkflow(p *workflow.Plan) error {
	if n, max := p.Len(), a.cfg.MaxWorkflowSteps; n > max {
		return exhausted(limitSteps, fmt.Errorf("workflow %s has %d steps, over the limit of %d (max_workflow_steps); split the workflow or raise the limit", p.Name, n, max))
	}
	return nil
}

// checkInFlight refuses a new task at the cap before anything is proposed,
// sparing the log a command the FSM would refuse. The FSM decides anyway,
// with the cap the command carries; id is checked so that the retry of a
// forwarded StartTask that did create its task still gets the task.
func (a *Agent) checkInFlight(id string) error {
	err := a.state.CheckInFlight(a.cfg.MaxTasksInFlight)
	if err == nil {
		return nil
	}
	if _, terr := a.state.PlanOf(id); terr == nil {
		return nil
	}
	return toConnect(err)
}

// stampLimits writes the leader's cluster-wide limits into a command it is
// about to propose, so every server applies the same ones.
func (a *Agent) stampLimits(c *fsmv1.Command) {
	switch k := c.GetKind().(type) {
	case *fsmv1.Command_CreateTask:
		k.CreateTask.MaxTasksInFlight = uint32(min(a.cfg.MaxTasksInFlight, math.MaxUint32))
	case *fsmv1.Command_Batch:
		for _, sub := range k.Batch.GetCommands() {
			a.stampLimits(sub)
		}
	}
}

// checkCommandSize applies the leader's payload limit to a command another
// agent forwarded: that agent checked its app's payload against its own
// setting, which may be larger.
func (a *Agent) checkCommandSize(c *fsmv1.Command) error {
	field, v := "", ""
	switch k := c.GetKind().(type) {
	case *fsmv1.Command_CreateTask:
		field, v = "input_json", k.CreateTask.GetInputJson()
	case *fsmv1.Command_CompleteStep:
		field, v = "result_json", k.CompleteStep.GetResultJson()
	case *fsmv1.Command_ResolveStep:
		field, v = "result_json", k.ResolveStep.GetResultJson()
	case *fsmv1.Command_FailStep:
		field, v = "details_json", k.FailStep.GetDetailsJson()
	case *fsmv1.Command_PutWorkflow:
		field, v = "manifest", k.PutWorkflow.GetManifest()
	case *fsmv1.Command_Batch:
		for _, sub := range k.Batch.GetCommands() {
			if err := a.checkCommandSize(sub); err != nil {
				return err
			}
		}
	}
	if err := checkSize(field, v, a.cfg.MaxPayloadBytes); err != nil {
		var le *limitError
		if errors.As(err, &le) {
			le.limit = limitCommandSize
		}
		return err
	}
	return nil
}

// limitsInterceptor counts the refusals of the calls it wraps by limit.
type limitsInterceptor struct{ l *limits }

func (i limitsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			i.l.count(ctx, err)
		}
		return res, err
	}
}

func (i limitsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i limitsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		if err != nil {
			i.l.count(ctx, err)
		}
		return err
	}
}

// limitRate wraps an API port's handler with the per-client rate limit
// (nothing when it is off). Only RPCs are limited: health checks,
// reflection and /metrics are not. On the RPC port (rpcPort), calls
// another agent makes (AgentService, and calls it forwards for its
// clients) are not limited again: their clients were limited where they
// called in, and limiting the forwarding agent as one client would
// throttle all of them together, the leader's dispatches too. The header
// is not proof of an agent, but whoever reaches the RPC port can already
// commit any command through AgentService.Apply: what protects that port
// is the network (and mutual TLS), not a rate limit. Matching the caller's
// IP against gossip members instead would throttle agents whose traffic
// leaves from another address than the one they advertise.
func (a *Agent) limitRate(next http.Handler, rpcPort bool) http.Handler {
	rl := a.lim.rate
	if rl == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/tasker.") {
			next.ServeHTTP(w, r)
			return
		}
		if rpcPort && (r.Header.Get(hdrForwarded) != "" || strings.HasPrefix(r.URL.Path, "/"+agentv1connect.AgentServiceName+"/")) {
			next.ServeHTTP(w, r)
			return
		}
		key, who := clientKey(r, remoteIP(r))
		if ok, wait := rl.allow(key); !ok {
			a.lim.refuse(w, r, rateError(a.cfg.RateLimit, rl.burst, who, wait))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateError is the refusal of a request over the rate, with the wait as a
// Retry-After header (whole seconds, as HTTP has it) and as a
// google.rpc.RetryInfo detail (exact), which the Go SDK honours.
func rateError(limit float64, burst int, who string, wait time.Duration) *connect.Error {
	wait = max(wait, time.Millisecond)
	e := exhausted(limitRate, fmt.Errorf("%s sent more than %g requests per second (burst %d), the limit of rate_limit and rate_burst; retry after %v or raise the limit",
		who, limit, burst, wait.Round(time.Millisecond)))
	e.Meta().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	if d, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		e.AddDetail(d)
	}
	return e
}

// clientKey identifies the client of a request: its API token when it
// sends one (hashed: the map need not hold secrets), else its IP.
func clientKey(r *http.Request, ip string) (key, who string) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		sum := sha256.Sum256([]byte(auth))
		h := hex.EncodeToString(sum[:8])
		return "token:" + h, "the client with token " + h[:8] + "…"
	}
	return "ip:" + ip, "the client at " + ip
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rateLimiter keeps a token bucket per client, at most max of them. A
// bucket left alone for burst/rate is full again, the same as a new one,
// so idle buckets are dropped when the map is full without changing any
// answer; if it is still full, new clients share one overflow bucket
// rather than growing the map.
type rateLimiter struct {
	limit rate.Limit
	burst int
	max   int
	idle  time.Duration // time to refill a bucket
	now   func() time.Time

	mu        sync.Mutex
	clients   map[string]*rateClient
	overflow  *rate.Limiter
	lastSweep time.Time
}

type rateClient struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRateLimiter(perSecond float64, burst, max int, now func() time.Time) *rateLimiter {
	if burst <= 0 {
		burst = int(math.Ceil(perSecond))
	}
	idle := time.Duration(float64(burst) / perSecond * float64(time.Second))
	return &rateLimiter{
		limit: rate.Limit(perSecond), burst: burst, max: max, idle: max1(idle), now: now,
		clients:  map[string]*rateClient{},
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

func max1(d time.Duration) time.Duration { return max(d, time.Millisecond) }

// allow takes a token from key's bucket; if there is none, it says how
// long until there is.
func (rl *rateLimiter) allow(key string) (bool, time.Duration) {
	now := rl.now()
	rl.mu.Lock()
	c := rl.clients[key]
	var lim *rate.Limiter
	switch {
	case c != nil:
		c.seen, lim = now, c.lim
	case len(rl.clients) < rl.max || rl.sweep(now):
		c = &rateClient{lim: rate.NewLimiter(rl.limit, rl.burst), seen: now}
		rl.clients[key] = c
		lim = c.lim
	default:
		lim = rl.overflow
	}
	rl.mu.Unlock()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return false, rl.idle
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops the buckets idle long enough to be full; it reports whether
// there is room now. It walks the map at most once per refill time, so a
// flood of new clients costs one walk, not one per request. Called with mu
// held.
func (rl *rateLimiter) sweep(now time.Time) bool {
	if now.Sub(rl.lastSweep) < rl.idle {
		return false
	}
	rl.lastSweep = now
	for k, c := range rl.clients {
		if now.Sub(c.seen) >= rl.idle {
			delete(rl.clients, k)
		}
	}
	return len(rl.clients) < rl.max
}

// size is the number of clients with a bucket.
func (rl *rateLimiter) size() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.clients)
}
