package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/internal/sleep"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/internal/jsontext"
	"github.com/tasker-run/tasker/sdk/go/internal/transport"
)

// Options configure a [Client]. The zero value is usable.
type Options struct {
	// Addr is the sidecar's base URL, such as "http://127.0.0.1:7420".
	// Empty means the TASKER_ADDR environment variable, else
	// http://127.0.0.1:7420.
	Addr string
	// Token is the ACL token sent to the sidecar as "Authorization:
	// Bearer", when the cluster runs with ACLs (docs/acl.md). Empty means
	// the TASKER_TOKEN environment variable, else none.
	Token string
	// HTTPClient carries the calls. nil means the SDK's shared client,
	// which speaks HTTP/2 without TLS (h2c); a replacement must too, for
	// Watch and Wait to work.
	HTTPClient *http.Client
}

// Client calls the sidecar's WorkflowService. It is safe for concurrent
// use; make one and share it.
type Client struct {
	api taskerv1connect.WorkflowServiceClient
	// Delays between the watches of Wait; tests shorten them.
	retryMin, retryMax time.Duration
}

// New returns a Client of the sidecar described by opts.
func New(opts Options) *Client {
	hc := opts.HTTPClient
	if hc == nil {
		hc = transport.HTTPClient()
	}
	return &Client{
		api:      taskerv1connect.NewWorkflowServiceClient(hc, transport.BaseURL(opts.Addr), transport.ClientOptions(opts.Token)...),
		retryMin: 100 * time.Millisecond,
		retryMax: 5 * time.Second,
	}
}

// Service returns the generated client, for the calls this package does
// not wrap (GetWorkflow, ListWorkflows, ListTasks).
func (c *Client) Service() taskerv1connect.WorkflowServiceClient { return c.api }

// ApplyWorkflow validates a manifest (YAML or JSON, as written) and stores
// it as a new workflow version. The response's Created is false when this
// exact version and content were already stored. An invalid manifest
// returns a *[ValidationError] listing every problem; the same version
// with different content is an error with code FailedPrecondition.
func (c *Client) ApplyWorkflow(ctx context.Context, manifest []byte) (*taskerv1.ApplyWorkflowResponse, error) {
	res, err := c.api.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(manifest)}))
	if err != nil {
		if ve := validationError(err); ve != nil {
			return nil, ve
		}
		return nil, fmt.Errorf("apply workflow: %w", err)
	}
	return res.Msg, nil
}

// StartOption sets an optional field of a StartTask request.
type StartOption func(*taskerv1.StartTaskRequest)

// Namespace starts the task in the workflow's namespace ns ("default" when
// not given).
func Namespace(ns string) StartOption {
	return func(r *taskerv1.StartTaskRequest) { r.Namespace = ns }
}

// Version starts the task on one version of the workflow instead of the
// latest.
func Version(v string) StartOption {
	return func(r *taskerv1.StartTaskRequest) { r.Version = v }
}

// IdempotencyKey makes StartTask start at most one task for key: a later
// call with the same key returns the task the first one started. Use one
// key per business event, such as an order id.
func IdempotencyKey(key string) StartOption {
	return func(r *taskerv1.StartTaskRequest) { r.IdempotencyKey = key }
}

// StartTask starts a run of workflow with input, which is encoded as JSON
// (a json.RawMessage is sent as is; nil as {}). created is false when the
// idempotency key had already started the returned task. An input that
// breaks the workflow's input_schema returns a *[ContractError]. At the
// cluster's cap on tasks in flight (max_tasks_in_flight), or over the
// sidecar's rate limit, it returns a Connect error with code
// ResourceExhausted, which StartTask does not retry: the caller decides
// whether to wait ([RetryAfter] says how long a rate limit asked for) or
// shed the work. A retry with the same [IdempotencyKey] is safe.
func (c *Client) StartTask(ctx context.Context, workflow string, input any, opts ...StartOption) (task *taskerv1.Task, created bool, err error) {
	in, err := jsontext.Encode(input)
	if err != nil {
		return nil, false, fmt.Errorf("start task of %s: input: %w", workflow, err)
	}
	req := &taskerv1.StartTaskRequest{Workflow: workflow, InputJson: in}
	for _, o := range opts {
		o(req)
	}
	res, err := c.api.StartTask(ctx, connect.NewRequest(req))
	if err != nil {
		if ce := contractError(err); ce != nil {
			return nil, false, fmt.Errorf("start task of %s: %w", workflow, ce)
		}
		return nil, false, fmt.Errorf("start task of %s: %w", workflow, err)
	}
	return res.Msg.GetTask(), res.Msg.GetCreated(), nil
}

// GetTask returns a task with every step's state, attempts, timings,
// result and last error. An unknown id is an error with code NotFound.
func (c *Client) GetTask(ctx context.Context, id string) (*taskerv1.Task, error) {
	res, err := c.api.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return res.Msg.GetTask(), nil
}

// CancelTask cancels a task and its unfinished steps, recording reason.
// Cancelling a task that has ended is an error with code
// FailedPrecondition.
func (c *Client) CancelTask(ctx context.Context, id, reason string) (*taskerv1.Task, error) {
	res, err := c.api.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: id, Reason: reason}))
	if err != nil {
		return nil, fmt.Errorf("cancel task %s: %w", id, err)
	}
	return res.Msg.GetTask(), nil
}

// RetryStep gives a step that failed for good a fresh round of attempts,
// unblocking its task.
func (c *Client) RetryStep(ctx context.Context, taskID, step string) (*taskerv1.Task, error) {
	res, err := c.api.RetryStep(ctx, connect.NewRequest(&taskerv1.RetryStepRequest{TaskId: taskID, Step: step}))
	if err != nil {
		return nil, fmt.Errorf("retry step %s of task %s: %w", step, taskID, err)
	}
	return res.Msg.GetTask(), nil
}

// ResolveStep completes a pending or failed step by hand with result,
// encoded as JSON like StartTask's input, recording reason. A result that
// breaks the step's result_schema returns a *[ContractError].
func (c *Client) ResolveStep(ctx context.Context, taskID, step string, result any, reason string) (*taskerv1.Task, error) {
	body, err := jsontext.Encode(result)
	if err != nil {
		return nil, fmt.Errorf("resolve step %s of task %s: result: %w", step, taskID, err)
	}
	res, err := c.api.ResolveStep(ctx, connect.NewRequest(&taskerv1.ResolveStepRequest{
		TaskId: taskID, Step: step, ResultJson: body, Reason: reason,
	}))
	if err != nil {
		if ce := contractError(err); ce != nil {
			err = ce
		}
		return nil, fmt.Errorf("resolve step %s of task %s: %w", step, taskID, err)
	}
	return res.Msg.GetTask(), nil
}

// WatchFunc receives each message of a watch: ev is nil in the first
// call, which carries the task as it was when the watch began; each later
// call carries one event and the task after it. Returning an error stops
// the watch.
type WatchFunc func(ev *taskerv1.TaskEvent, t *taskerv1.Task) error

// Watch calls fn with the task and then with each of its events until the
// task is terminal (see [Terminal]), fn returns an error (which Watch
// returns as it is), or ctx ends. A task in TASK_STATE_ERROR is watched
// for as long as the sidecar streams it: its independent branches may run
// on, and an operator may retry or resolve the failed step.
//
// Watch does not reconnect: if the connection breaks, it returns the error,
// and a new Watch starts again from the task's current state (events in
// between are not replayed).
func (c *Client) Watch(ctx context.Context, id string, fn WatchFunc) error {
	stream, err := c.api.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		return fmt.Errorf("watch task %s: %w", id, err)
	}
	defer stream.Close()
	var state taskerv1.TaskState
	for stream.Receive() {
		msg := stream.Msg()
		if err := fn(msg.GetEvent(), msg.GetTask()); err != nil {
			return err
		}
		if state = msg.GetTask().GetState(); Terminal(state) {
			return nil
		}
	}
	if err := stream.Err(); err != nil {
		return fmt.Errorf("watch task %s: %w", id, err)
	}
	if state == taskerv1.TaskState_TASK_STATE_ERROR {
		// The sidecar ended the watch of a blocked task.
		return nil
	}
	return fmt.Errorf("watch task %s: %w", id, ErrStreamEnded)
}

// errStop ends the watch of Wait.
var errStop = errors.New("stop")

// Wait blocks until the task is terminal, or in TASK_STATE_ERROR (a step
// failed for good and nothing more happens without an operator), and
// returns it. If the connection to the sidecar breaks, Wait watches again,
// with backoff, until ctx ends.
func (c *Client) Wait(ctx context.Context, id string) (*taskerv1.Task, error) {
	b := transport.Backoff{Min: c.retryMin, Max: c.retryMax}
	for {
		var last *taskerv1.Task
		err := c.Watch(ctx, id, func(_ *taskerv1.TaskEvent, t *taskerv1.Task) error {
			last = t
			if t.GetState() == taskerv1.TaskState_TASK_STATE_ERROR {
				return errStop
			}
			return nil
		})
		switch {
		case err == nil || errors.Is(err, errStop):
			return last, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
		case !transport.Transient(err) && !errors.Is(err, ErrStreamEnded):
			return nil, fmt.Errorf("wait for task %s: %w", id, err)
		}
		if last != nil {
			b.Reset()
		}
		if !sleep.For(ctx, b.After(err)) {
			return nil, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
		}
	}
}

// Terminal reports whether a task in state s has ended for good: complete,
// cancelled or resolved manually. TASK_STATE_ERROR is not terminal: an
// operator can retry or resolve the failed step.
func Terminal(s taskerv1.TaskState) bool {
	switch s {
	case taskerv1.TaskState_TASK_STATE_COMPLETE,
		taskerv1.TaskState_TASK_STATE_CANCELLED,
		taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY:
		return true
	}
	return false
}
