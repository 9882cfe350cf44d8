package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func taskCommand() command {
	return group("task", "start, inspect, watch and cancel tasks on an agent", `
Tasks are runs of a workflow. These commands start one, show one as a tree
of its steps, list them, follow one's events as they happen, and cancel
one.
`, taskStartCommand(), taskGetCommand(), taskListCommand(), taskWatchCommand(), taskCancelCommand())
}

const taskStartUsage = `
Usage: tasker task start WORKFLOW [-input JSON|@FILE] [-namespace N] [-version V]
                         [-idempotency-key K] [-watch] [-addr URL] [-o table|json]

Starts a task of a workflow (its latest version unless -version says
which) with an input that must satisfy the workflow's input contract.
WORKFLOW may include its namespace: shop/order-fulfilment. -input is JSON
text, @FILE to read it from a file, or @- from standard input; without it
the input is {}.

With -idempotency-key, starting again with the same key returns the task
the key started and starts nothing: use one key per business event (an
order id). The output then says "already started".

-watch then follows the task as 'tasker task watch' does, and exits as
it does. With -o json and -watch, the response and every watch message
are printed one JSON object per line.
` + apiFlagsHelp + `
Exit status: 0 when the task was started (with -watch: when it
completed), 1 when the agent refused (an input that breaks the contract
is refused with every violation, one per line) or could not be reached,
2 on a usage error.
`

func taskStartCommand() command {
	return command{name: "task start", synopsis: "start a task of a workflow", usage: taskStartUsage, run: runTaskStart}
}

func runTaskStart(args []string, stdout, stderr io.Writer) int {
	c := taskStartCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	input := fs.String("input", "", "the task input: `JSON` text, @FILE, or @- for standard input")
	namespace := fs.String("namespace", "", "the workflow's namespace `N`; \"default\" when empty")
	version := fs.String("version", "", "workflow version `V` rather than the latest")
	key := fs.String("idempotency-key", "", "idempotency key `K`: start at most one task for it")
	watch := fs.Bool("watch", false, "follow the task until it ends")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one workflow name, got %d", len(pos))
	}
	ns, name, err := splitWorkflow(pos[0], *namespace)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	var inputJSON string
	if *input != "" {
		if inputJSON, err = jsonArg("input", *input); err != nil {
			return argError(stderr, c, err)
		}
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{
		Namespace: ns, Workflow: name, Version: *version, InputJson: inputJSON, IdempotencyKey: *key,
	}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		if code := cn.writeProto(resp.Msg, *watch); code != exitOK || !*watch {
			return code
		}
	} else {
		t := resp.Msg.GetTask()
		what := "started"
		if !resp.Msg.Created {
			what = fmt.Sprintf("already started with idempotency key %q; now %s", t.IdempotencyKey, taskState(t.State))
		}
		fmt.Fprintf(stdout, "task %s %s: %s %s\n", t.Id, what, workflowName(t.Namespace, t.Workflow), t.Version)
	}
	if !*watch {
		return exitOK
	}
	return cn.watch(resp.Msg.GetTask().GetId())
}

// argError reports a JSON argument that could not be read: a usage error
// when it was wrong on the command line, else a failure.
func argError(stderr io.Writer, c command, err error) int {
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, c, "%v", ue)
	}
	fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
	return exitFail
}

const taskListUsage = `
Usage: tasker task list [-state S] [-workflow W] [-namespace N] [-limit N]
                        [-stale|-consistent] [-addr URL] [-o table|json]

Lists tasks, newest first: ID WORKFLOW VERSION STATE STEPS (done of all)
CREATED (UTC). -state is one of pending, in_progress, complete, error,
cancelled, resolved_manually. It fetches page after page until it has
-limit tasks (100 by default; 0 for every task), and says so on standard
error when more remain.

With -o json it prints one ListTasksResponse holding every task fetched,
with next_page_token set when more remain.
` + consistencyHelp + apiFlagsHelp + apiExit

func taskListCommand() command {
	return command{name: "task list", synopsis: "list tasks, newest first", usage: taskListUsage, run: runTaskList}
}

// maxPageSize is the most tasks the API returns in one page.
const maxPageSize = 1000

func runTaskList(args []string, stdout, stderr io.Writer) int {
	c := taskListCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	state := fs.String("state", "", "only tasks in state `S`")
	wf := fs.String("workflow", "", "only tasks of workflow `W` (may be namespace/name)")
	namespace := fs.String("namespace", "", "only tasks in namespace `N`")
	limit := fs.Int("limit", 100, "at most `N` tasks; 0 for all")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *limit < 0 {
		return usageError(stderr, c, "-limit must be 0 or more")
	}
	req := &taskerv1.ListTasksRequest{Namespace: *namespace}
	if *wf != "" {
		ns, name, err := splitWorkflow(*wf, *namespace)
		if err != nil {
			return usageError(stderr, c, "%v", err)
		}
		req.Namespace, req.Workflow = ns, name
	}
	if *state != "" {
		s, err := parseTaskState(*state)
		if err != nil {
			return usageError(stderr, c, "%v", err)
		}
		req.State = s
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.context()
	defer cancel()
	all := &taskerv1.ListTasksResponse{}
	for {
		req.PageSize = maxPageSize
		if *limit > 0 {
			req.PageSize = int32(min(*limit-len(all.Tasks), maxPageSize))
		}
		callCtx, done := context.WithTimeout(ctx, callTimeout)
		resp, err := cn.workflows.ListTasks(callCtx, connect.NewRequest(req))
		done()
		if err != nil {
			return cn.fail(err)
		}
		all.Tasks = append(all.Tasks, resp.Msg.Tasks...)
		all.NextPageToken = resp.Msg.NextPageToken
		if all.NextPageToken == "" || (*limit > 0 && len(all.Tasks) >= *limit) {
			break
		}
		if len(resp.Msg.Tasks) == 0 {
			// A page with no tasks but a token would loop for ever.
			fmt.Fprintf(stderr, "tasker %s: the agent returned an empty page with a next page token; stopping\n", c.name)
			return exitFail
		}
		req.PageToken = all.NextPageToken
	}
	if *limit > 0 && len(all.Tasks) > *limit {
		all.Tasks = all.Tasks[:*limit]
	}
	if cn.json() {
		return cn.writeProto(all, false)
	}
	if len(all.Tasks) == 0 {
		fmt.Fprintln(stderr, "no tasks")
		return exitOK
	}
	tw := table(stdout)
	row(tw, "ID", "WORKFLOW", "VERSION", "STATE", "STEPS", "CREATED")
	for _, t := range all.Tasks {
		row(tw, t.Id, workflowName(t.Namespace, t.Workflow), t.Version, taskState(t.State),
			fmt.Sprintf("%d/%d", stepsDone(t), len(t.Steps)), timestamp(t.CreatedAt))
	}
	tw.Flush()
	if all.NextPageToken != "" {
		fmt.Fprintf(stderr, "more tasks remain: raise -limit (%d) or use -limit 0 for all\n", *limit)
	}
	return exitOK
}

const taskCancelUsage = `
Usage: tasker task cancel ID [-reason R] [-addr URL] [-o table|json]

Cancels a task and every step that has not finished. A task that has
ended (complete, cancelled, resolved_manually) cannot be cancelled.
-reason is recorded with the cancellation.
` + apiFlagsHelp + apiExit

func taskCancelCommand() command {
	return command{name: "task cancel", synopsis: "cancel a task and its unfinished steps", usage: taskCancelUsage, run: runTaskCancel}
}

func runTaskCancel(args []string, stdout, stderr io.Writer) int {
	c := taskCancelCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	reason := fs.String("reason", "", "the reason `R`, for the record")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one task ID, got %d", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	t := resp.Msg.GetTask()
	fmt.Fprintf(stdout, "task %s %s: %s of %s done\n", t.Id, taskState(t.State), plural(stepsDone(t), "step"), fmt.Sprint(len(t.Steps)))
	return exitOK
}
