package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/workflow"
)

type workerAPI struct{ a *Agent }

var _ taskerv1connect.WorkerServiceHandler = (*workerAPI)(nil)

func (w *workerAPI) RegisterCapabilities(_ context.Context, req *connect.Request[taskerv1.RegisterCapabilitiesRequest]) (*connect.Response[taskerv1.RegisterCapabilitiesResponse], error) {
	r := req.Msg
	if len(r.GetCapabilities()) == 0 {
		return nil, invalid("capabilities", "at least one capability is required")
	}
	for _, f := range []struct{ name, url string }{{"push_url", r.GetPushUrl()}, {"health_url", r.GetHealthUrl()}} {
		if f.url == "" {
			continue
		}
		p, err := url.Parse(f.url)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, invalid(f.name, "%q is not an http:// or https:// URL", f.url)
		}
	}
	var caps []*capability
	seen := map[string]bool{}
	for i, c := range r.GetCapabilities() {
		field := fmt.Sprintf("capabilities[%d]", i)
		if err := workflow.CheckCapabilityName(c.GetName()); err != nil {
			return nil, invalid(field+".name", "%v", err)
		}
		if seen[c.GetName()] {
			return nil, invalid(field+".name", "%q is listed twice", c.GetName())
		}
		seen[c.GetName()] = true
		for _, sc := range []struct{ field, doc string }{{"input_schema_json", c.GetInputSchemaJson()}, {"output_schema_json", c.GetOutputSchemaJson()}} {
			if sc.doc == "" {
				continue
			}
			if _, err := workflow.CompileSchema(c.GetName(), []byte(sc.doc)); err != nil {
				return nil, invalid(field+"."+sc.field, "%v", err)
			}
		}
		n := int(c.GetMaxConcurrency())
		switch {
		case n < 0 || n > 10000:
			return nil, invalid(field+".max_concurrency", "%d is out of range: use 1 to 10000 (0 means %d)", n, defaultConcurrency)
		case n == 0:
			n = defaultConcurrency
		}
		caps = append(caps, &capability{
			name: c.GetName(), version: c.GetVersion(), description: c.GetDescription(),
			inputSchema: c.GetInputSchemaJson(), outSchema: c.GetOutputSchemaJson(), max: n,
		})
	}
	id := r.GetWorkerId()
	if id == "" {
		id = "w-" + w.a.newTaskID()[4:]
	}
	if err := w.a.workers.admit(id, w.a.cfg.NodeName, w.a.cfg.MaxWorkers, w.a.grace, w.a.now()); err != nil {
		return nil, err
	}
	w.a.workers.register(id, r.GetPushUrl(), r.GetHealthUrl(), caps, w.a.now())
	w.a.log.Info("worker registered", "worker", id, "capabilities", len(caps), "push", r.GetPushUrl() != "")
	return connect.NewResponse(&taskerv1.RegisterCapabilitiesResponse{WorkerId: id}), nil
}

func (w *workerAPI) PollSteps(ctx context.Context, req *connect.Request[taskerv1.PollStepsRequest], stream *connect.ServerStream[taskerv1.PollStepsResponse]) error {
	id := req.Msg.GetWorkerId()
	if err := required("worker_id", id); err != nil {
		return err
	}
	ch, detach, ok := w.a.workers.attach(id)
	if !ok {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("worker %q is not registered; call RegisterCapabilities first", id))
	}
	defer func() {
		detach()
		time.AfterFunc(w.a.grace, func() { w.a.reclaim(id) })
	}()
	// Send the headers now: clients wait for them before the call returns,
	// and the first assignment may be a long way off.
	if err := stream.Send(nil); err != nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.a.streams.Done():
			return nil
		case asg := <-ch:
			k := leaseKey{asg.TaskID, asg.Step, asg.Attempt}
			out := pbAssignment(asg)
			if w.a.tel.Tracing {
				out.TraceParent = w.a.asgTraces.take(asg)
			}
			err := stream.Send(&taskerv1.PollStepsResponse{Assignment: out})
			if err != nil {
				w.a.releaseAsync(k, "worker stream closed before delivery")
				return nil
			}
			w.a.startAsync(k, id)
		}
	}
}

// Bounds of a ClaimSteps call.
const (
	maxClaimSteps = 64
	maxClaimWait  = 30 * time.Second
)

func (w *workerAPI) ClaimSteps(ctx context.Context, req *connect.Request[taskerv1.ClaimStepsRequest]) (*connect.Response[taskerv1.ClaimStepsResponse], error) {
	id := req.Msg.GetWorkerId()
	if err := required("worker_id", id); err != nil {
		return nil, err
	}
	n := int(req.Msg.GetMaxSteps())
	switch {
	case n < 0 || n > maxClaimSteps:
		return nil, invalid("max_steps", "%d is out of range: use 1 to %d (0 means 1)", n, maxClaimSteps)
	case n == 0:
		n = 1
	}
	var wait time.Duration
	if d := req.Msg.GetWaitFor(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, invalid("wait_for", "%v", err)
		}
		if wait = d.AsDuration(); wait < 0 || wait > maxClaimWait {
			return nil, invalid("wait_for", "%v is out of range: use 0s to %v", wait, maxClaimWait)
		}
	}
	ch, ok := w.a.workers.claim(id)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("worker %q is not registered; call RegisterCapabilities first", id))
	}
	defer func() {
		if w.a.workers.unclaim(id, w.a.now()) {
			w.a.lingerCheck(id, w.a.workers.linger)
		}
	}()
	out := &taskerv1.ClaimStepsResponse{}
	take := func(asg *consensus.Assignment) {
		pb := pbAssignment(asg)
		if w.a.tel.Tracing {
			pb.TraceParent = w.a.asgTraces.take(asg)
		}
		out.Assignments = append(out.Assignments, pb)
		// The response may still be lost; the attempt then times out and
		// is retried, as with a stream that breaks after a send.
		w.a.startAsync(leaseKey{asg.TaskID, asg.Step, asg.Attempt}, id)
	}
	select {
	case asg := <-ch:
		take(asg)
	default:
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case asg := <-ch:
				take(asg)
			case <-t.C:
			case <-ctx.Done():
			case <-w.a.streams.Done():
			}
		}
	}
more:
	for len(out.Assignments) > 0 && len(out.Assignments) < n {
		select {
		case asg := <-ch:
			take(asg)
		default:
			break more
		}
	}
	return connect.NewResponse(out), nil
}

// lingerCheck disconnects a claiming worker once it has not claimed for
// the linger, and hands back its steps after the reclaim grace. One check
// runs per worker, rescheduling itself while the worker keeps claiming,
// so that a worker polling in a tight loop costs one timer, not one per
// call.
func (a *Agent) lingerCheck(id string, after time.Duration) {
	time.AfterFunc(after, func() {
		expired, again := a.workers.expireClaim(id, a.now())
		switch {
		case expired:
			time.AfterFunc(a.grace, func() { a.reclaim(id) })
		case again > 0:
			a.lingerCheck(id, again)
		}
	})
}

// reclaim hands back the steps a worker holds once it has stayed away
// past the grace period (its app died or lost its sidecar connection).
func (a *Agent) reclaim(id string) {
	if a.workers.connected(id) || a.draining.Load() {
		return
	}
	a.workers.discardQueue(id)
	for _, k := range a.workers.held(id) {
		a.releaseAsync(k, "worker "+id+" disconnected")
	}
}

// startAsync records that the app took an attempt. It runs off the hot
// path, batched with other starts into one commit: a result that commits
// first simply makes it a stale no-op, and under overload a start may be
// dropped (the step's timeline then lacks its start time, nothing else).
func (a *Agent) startAsync(k leaseKey, worker string) {
	select {
	case a.starts <- started{k, worker}:
	default:
		a.log.DebugContext(a.taskLog(context.Background(), k.task), "start not recorded: queue full", "task_id", k.task, "step", k.step, "attempt", k.attempt)
	}
}

// recordStarts commits queued starts, as many as are waiting, per entry.
func (a *Agent) recordStarts(ctx context.Context) {
	for {
		var first started
		select {
		case <-ctx.Done():
			return
		case first = <-a.starts:
		}
		cmds := []*fsmv1.Command{startCmd(first)}
	more:
		for len(cmds) < 256 {
			select {
			case st := <-a.starts:
				cmds = append(cmds, startCmd(st))
			default:
				break more
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := a.propose(pctx, batch(cmds))
		cancel()
		if err != nil {
			a.log.Debug("starts not recorded", "steps", len(cmds), "err", err)
			continue
		}
		for i, r := range res.Batch {
			var te *workflow.TransitionError
			if err := r.Err; err != nil && !errors.Is(err, consensus.ErrStaleAttempt) && !errors.As(err, &te) && !errors.Is(err, consensus.ErrTaskEnded) {
				x := cmds[i].GetStartStep()
				a.log.DebugContext(a.taskLog(ctx, x.GetTaskId()), "start not recorded", "task_id", x.GetTaskId(), "step", x.GetStep(), "attempt", x.GetAttempt(), "err", err)
			}
		}
	}
}

// started is an attempt a worker took.
type started struct {
	leaseKey
	worker string
}

func startCmd(st started) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_StartStep{StartStep: &fsmv1.StartStep{
		TaskId: st.task, Step: st.step, Attempt: int32(st.attempt), Worker: st.worker,
	}}}
}

func (w *workerAPI) CompleteStep(ctx context.Context, req *connect.Request[taskerv1.CompleteStepRequest]) (*connect.Response[taskerv1.CompleteStepResponse], error) {
	r := req.Msg
	if err := required("task_id", r.GetTaskId(), "step", r.GetStep()); err != nil {
		return nil, err
	}
	if r.GetAttempt() < 1 {
		return nil, invalid("attempt", "must be the attempt number from the assignment (1 or more)")
	}
	if err := checkSize("result_json", r.GetResultJson(), w.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	if err := w.a.complete(ctx, leaseKey{r.GetTaskId(), r.GetStep(), int(r.GetAttempt())}, r.GetResultJson(), r.GetWorkerId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.CompleteStepResponse{}), nil
}

// complete checks a result against its contract and commits it; a result
// that breaks the contract fails the attempt for good (the same code would
// break it again) and the caller learns every violation.
func (a *Agent) complete(ctx context.Context, k leaseKey, result, worker string) error {
	if !a.isLeader() {
		// The leader holds the contract and the state: it checks and commits.
		err := a.fwd.do(ctx, func(ctx context.Context, base string) error {
			_, err := a.fwd.workerClient(base).CompleteStep(ctx, forwarded(a, &taskerv1.CompleteStepRequest{
				TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), ResultJson: result, WorkerId: worker,
			}))
			return err
		})
		if settled(err) {
			a.workers.drop(k)
		}
		return err
	}
	if cerr := a.checkResult(k.task, k.step, result); cerr != nil {
		var ce *connect.Error
		if errors.As(cerr, &ce) && ce.Code() == connect.CodeInvalidArgument {
			_, err := a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
				TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: workflow.CodeContractViolation,
				Message: ce.Message(), Retryable: false, Rand: a.rand(), Worker: worker,
			}}})
			if err != nil {
				return toConnect(err)
			}
			a.workers.drop(k)
			a.log.WarnContext(a.taskLog(ctx, k.task), "result breaks its contract", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", logSafe(cerr))
		}
		return cerr
	}
	if _, err := a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_CompleteStep{CompleteStep: &fsmv1.CompleteStep{
		TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), ResultJson: result, Worker: worker,
	}}}); err != nil {
		return toConnect(err)
	}
	a.workers.drop(k)
	return nil
}

func (w *workerAPI) FailStep(ctx context.Context, req *connect.Request[taskerv1.FailStepRequest]) (*connect.Response[taskerv1.FailStepResponse], error) {
	r := req.Msg
	if err := required("task_id", r.GetTaskId(), "step", r.GetStep()); err != nil {
		return nil, err
	}
	if r.GetAttempt() < 1 {
		return nil, invalid("attempt", "must be the attempt number from the assignment (1 or more)")
	}
	if err := checkSize("details_json", r.GetDetailsJson(), w.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	if len(r.GetMessage()) > 64<<10 {
		return nil, invalid("message", "is %d bytes, over the limit of 65536", len(r.GetMessage()))
	}
	var after time.Duration
	if ra := r.GetRetryAfter(); ra != nil {
		if err := ra.CheckValid(); err != nil || ra.AsDuration() < 0 {
			return nil, invalid("retry_after", "must be a non-negative duration")
		}
		after = ra.AsDuration()
		if after > workflow.MaxRetryDelay {
			return nil, invalid("retry_after", "%v is over the limit of %v; fail the attempt without retrying (retryable false) or ask for less", after, workflow.MaxRetryDelay)
		}
	}
	res, err := w.a.fail(ctx, leaseKey{r.GetTaskId(), r.GetStep(), int(r.GetAttempt())}, failReport{
		code: r.GetCode(), message: r.GetMessage(), retryable: r.GetRetryable(), retryAfter: after, details: r.GetDetailsJson(),
		worker: r.GetWorkerId(), fromApp: true,
	})
	if err != nil {
		return nil, err
	}
	out := &taskerv1.FailStepResponse{WillRetry: res.Retry}
	if res.Retry {
		out.NextAttemptAt = timestamppb.New(res.RetryAt)
	}
	return connect.NewResponse(out), nil
}

type failReport struct {
	worker        string // the reporting worker, checked against the holder when set
	code, message string
	retryable     bool
	retryAfter    time.Duration
	details       string
	// fromApp marks an error object the app wrote itself: it is checked
	// against the step's error contract. Failures Tasker words itself (a
	// push endpoint's bare HTTP 503, a lost publish) are not the app's.
	fromApp bool
}

func (a *Agent) fail(ctx context.Context, k leaseKey, f failReport) (*consensus.Result, error) {
	if f.code == "" {
		f.code = "error"
	}
	// A push endpoint's Retry-After or a bus reply's retry_after_ms is the
	// app's word too; bounded like FailStep's (MaxRetryDelay says why).
	f.retryAfter = min(f.retryAfter, workflow.MaxRetryDelay)
	if !a.isLeader() {
		var res *consensus.Result
		err := a.fwd.do(ctx, func(ctx context.Context, base string) error {
			req := &taskerv1.FailStepRequest{
				TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: f.code, Message: f.message,
				Retryable: f.retryable, DetailsJson: f.details, WorkerId: f.worker,
			}
			if f.retryAfter > 0 {
				req.RetryAfter = durationpb.New(f.retryAfter)
			}
			resp, err := a.fwd.workerClient(base).FailStep(ctx, forwarded(a, req))
			if err != nil {
				return err
			}
			res = &consensus.Result{Retry: resp.Msg.GetWillRetry()}
			if t := resp.Msg.GetNextAttemptAt(); t != nil {
				res.RetryAt = t.AsTime()
			}
			return nil
		})
		if settled(err) {
			a.workers.drop(k)
		}
		return res, err
	}
	var broken error
	if f.fromApp {
		if broken = a.checkError(k.task, k.step, f); broken != nil {
			// Like a broken result: the same code would break it again.
			msg := broken.Error()
			var ce *connect.Error
			if errors.As(broken, &ce) {
				msg = ce.Message()
			}
			f = failReport{worker: f.worker, code: workflow.CodeContractViolation, message: fmt.Sprintf("error %q: %s", f.code, msg)}
		}
	}
	res, err := a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{
		TaskId: k.task, Step: k.step, Attempt: int32(k.attempt), Code: f.code, Message: f.message,
		Retryable: f.retryable, RetryAfterMs: f.retryAfter.Milliseconds(), Rand: a.rand(), DetailsJson: f.details, Worker: f.worker,
	}}})
	if err != nil {
		return nil, toConnect(err)
	}
	a.workers.drop(k)
	if broken != nil {
		a.log.WarnContext(a.taskLog(ctx, k.task), "error breaks its contract", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", logSafe(broken))
		return res, broken
	}
	return res, nil
}

func (w *workerAPI) ExtendLease(ctx context.Context, req *connect.Request[taskerv1.ExtendLeaseRequest]) (*connect.Response[taskerv1.ExtendLeaseResponse], error) {
	r := req.Msg
	if err := required("task_id", r.GetTaskId(), "step", r.GetStep()); err != nil {
		return nil, err
	}
	if !w.a.isLeader() {
		var out *taskerv1.ExtendLeaseResponse
		err := w.a.fwd.do(ctx, func(ctx context.Context, base string) error {
			resp, err := w.a.fwd.workerClient(base).ExtendLease(ctx, forwarded(w.a, r))
			if err == nil {
				out = resp.Msg
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(out), nil
	}
	plan, err := w.a.state.PlanOf(r.GetTaskId())
	if err != nil {
		return nil, toConnect(err)
	}
	i, ok := plan.StepIndex(r.GetStep())
	if !ok {
		return nil, toConnect(fmt.Errorf("%w: step %q", consensus.ErrNotFound, r.GetStep()))
	}
	by := plan.Steps[i].Timeout
	if e := r.GetExtendBy(); e != nil {
		if err := e.CheckValid(); err != nil || e.AsDuration() <= 0 || e.AsDuration() > 24*time.Hour {
			return nil, invalid("extend_by", "must be a positive duration up to 24h")
		}
		by = e.AsDuration()
	}
	deadline := w.a.now().Add(by)
	if _, err := w.a.propose(ctx, &fsmv1.Command{Kind: &fsmv1.Command_ExtendLease{ExtendLease: &fsmv1.ExtendLease{
		TaskId: r.GetTaskId(), Step: r.GetStep(), Attempt: r.GetAttempt(), Deadline: timestamppb.New(deadline), Worker: r.GetWorkerId(),
	}}}); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&taskerv1.ExtendLeaseResponse{Deadline: timestamppb.New(deadline)}), nil
}

// forwarded wraps a report this agent forwards to the leader, marked so a
// server that is not the leader refuses it instead of forwarding it again.
func forwarded[T any](a *Agent, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set(hdrForwarded, a.cfg.NodeName)
	return req
}

// settled reports whether a forwarded report reached a verdict, so the
// attempt no longer occupies its app's slot here: committed, refused as
// invalid or as stale, or the task is gone.
func settled(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown, connect.CodeInternal:
		return err == nil
	}
	return true
}
