package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const taskWatchUsage = `
Usage: tasker task watch ID [-stale|-consistent] [-addr URL] [-o table|json]

Follows a task: prints where it is, then each event as the agent reports
it, one line each: time (UTC), type, step, attempt and what happened,
until the task ends. ^C stops watching; the task goes on.

With -o json it prints every message of the watch as one JSON object per
line (the first holds the task; each later one an event and the task
after it).
` + consistencyHelp + apiFlagsHelp + `
Exit status: 0 when the task completes or is resolved manually, 1 when it
fails (error), is cancelled, or the watch breaks off, 2 on a usage error.
`

func taskWatchCommand() command {
	return command{name: "task watch", synopsis: "follow a task's events until it ends", usage: taskWatchUsage, run: runTaskWatch}
}

func runTaskWatch(args []string, stdout, stderr io.Writer) int {
	c := taskWatchCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
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
	return cn.watch(pos[0])
}

// eventTypeWidth fits the longest event type, step.resolved_manually.
const eventTypeWidth = 22

// watch follows a task until it ends, and returns the exit status its end
// calls for.
func (c *conn) watch(id string) int {
	ctx, cancel := c.context()
	defer cancel()
	stream, err := c.workflows.WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id}))
	if err != nil {
		return c.fail(err)
	}
	defer stream.Close()
	var task *taskerv1.Task
	stepWidth := 1
	for stream.Receive() {
		msg := stream.Msg()
		if msg.Task != nil {
			task = msg.Task
			for _, s := range task.Steps {
				stepWidth = max(stepWidth, len(s.Name))
			}
		}
		switch {
		case c.json():
			if code := c.writeProto(msg, true); code != exitOK {
				return code
			}
		case msg.Event == nil && task != nil:
			fmt.Fprintf(c.stdout, "task %s: %s %s, %s, %d of %d steps done\n",
				task.Id, workflowName(task.Namespace, task.Workflow), task.Version, taskState(task.State), stepsDone(task), len(task.Steps))
		case msg.Event != nil:
			e := msg.Event
			attempt := "-"
			if e.Attempt > 0 {
				attempt = fmt.Sprint(e.Attempt)
			}
			fmt.Fprintf(c.stdout, "%-12s  %-*s  %-*s  %2s  %s\n", clock(e.At), eventTypeWidth, e.Type, stepWidth, dash(e.Step), attempt, e.Message)
		}
		if endsWatch(msg) {
			break
		}
	}
	if err := stream.Err(); err != nil {
		return c.fail(err)
	}
	if task == nil || !taskEnded(task.State) {
		state := "unknown"
		if task != nil {
			state = taskState(task.State)
		}
		fmt.Fprintf(c.stderr, "tasker %s: the agent ended the watch before the task ended (state %s)\n", c.cmd.name, state)
		return exitFail
	}
	if !c.json() {
		fmt.Fprintln(c.stdout, taskOutcome(task))
	}
	switch task.State {
	case taskerv1.TaskState_TASK_STATE_COMPLETE, taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY:
		return exitOK
	}
	return exitFail
}

// endsWatch reports whether a watch stops after msg: the task has ended
// and msg is the first message, or the event that ended it. Every message
// of a batch of events may carry the task as it is after the last one, so
// the state alone would stop before the events that led to it are printed.
func endsWatch(msg *taskerv1.WatchTaskResponse) bool {
	if !taskEnded(msg.GetTask().GetState()) {
		return false
	}
	switch msg.GetEvent().GetType() {
	case "", "task.completed", "task.failed", "task.cancelled", "task.resolved_manually":
		return true
	}
	return false
}

// taskEnded reports whether a watch stops at state s: the task finished,
// or failed and waits for an operator.
func taskEnded(s taskerv1.TaskState) bool {
	switch s {
	case taskerv1.TaskState_TASK_STATE_COMPLETE, taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY,
		taskerv1.TaskState_TASK_STATE_ERROR, taskerv1.TaskState_TASK_STATE_CANCELLED:
		return true
	}
	return false
}

// taskOutcome sums up an ended task; for a failed one it names the steps
// that failed and what an operator can do.
func taskOutcome(t *taskerv1.Task) string {
	s := fmt.Sprintf("task %s %s", t.Id, taskState(t.State))
	if t.CreatedAt != nil && t.EndedAt != nil {
		s += " after " + elapsed(t.EndedAt.AsTime().Sub(t.CreatedAt.AsTime()))
	}
	if t.State != taskerv1.TaskState_TASK_STATE_ERROR {
		return s
	}
	var failed []string
	for _, st := range t.Steps {
		if st.State == taskerv1.StepState_STEP_STATE_ERROR {
			failed = append(failed, st.Name)
		}
	}
	if len(failed) > 0 {
		s += fmt.Sprintf(": %s failed for good; 'tasker step retry %s %s' retries it, 'tasker step resolve %s %s -result JSON' resolves it",
			strings.Join(failed, ", "), t.Id, failed[0], t.Id, failed[0])
	}
	return s
}
