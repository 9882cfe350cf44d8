package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func dlqCommand() command {
	return group("dlq", "list, show and replay dead letters: steps that failed for good", `
A dead letter is a step that failed for good: out of attempts, an error
its retry policy does not retry, or a result that broke its contract. Its
task waits for an operator. These commands list them, show one with its
error and input, and replay one: a new round of attempts for the step.
Its id is the id of its step.dead_lettered event, also on tasker.dlq.
`, dlqListCommand(), dlqShowCommand(), dlqReplayCommand())
}

const dlqListUsage = `
Usage: tasker dlq list [-status open|replayed|resolved|cancelled|all] [-workflow W]
                       [-namespace N] [-task ID] [-limit N] [-stale|-consistent]
                       [-addr URL] [-o table|json]

Lists dead letters, newest first: id, status, task, workflow, step,
attempts made of those allowed, when the step failed for good and its
error. -status keeps one status (open by default: the steps waiting for
an operator; all for every one). -workflow may carry its namespace
(shop/order-fulfilment). It follows the pages until it has -limit dead
letters (100 by default, 0 for all) and says on standard error when more
remain.
` + consistencyHelp + apiFlagsHelp + apiExit

func dlqListCommand() command {
	return command{name: "dlq list", synopsis: "list dead letters, newest first", usage: dlqListUsage, run: runDLQList}
}

// dlqStatuses are -status's values.
var dlqStatuses = map[string]taskerv1.DeadLetterStatus{
	"open":      taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN,
	"replayed":  taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED,
	"resolved":  taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_RESOLVED,
	"cancelled": taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_CANCELLED,
	"all":       taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_UNSPECIFIED,
}

// dlqStatus is a status's name as the commands write it: "open".
func dlqStatus(s taskerv1.DeadLetterStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DEAD_LETTER_STATUS_"))
}

func runDLQList(args []string, stdout, stderr io.Writer) int {
	c := dlqListCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	status := fs.String("status", "open", "only dead letters in status `S`: open, replayed, resolved, cancelled or all")
	wf := fs.String("workflow", "", "only dead letters of workflow `W` (may be namespace/name)")
	namespace := fs.String("namespace", "", "only dead letters in namespace `N`")
	task := fs.String("task", "", "only the dead letters of task `ID`")
	limit := fs.Int("limit", 100, "at most `N` dead letters; 0 for all")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q; 'tasker dlq show ID' shows one", pos[0])
	}
	if *limit < 0 {
		return usageError(stderr, c, "-limit must be 0 or more")
	}
	st, known := dlqStatuses[strings.ToLower(*status)]
	if !known {
		return usageError(stderr, c, "unknown status %q; want open, replayed, resolved, cancelled or all", *status)
	}
	req := &taskerv1.ListDeadLettersRequest{Namespace: *namespace, TaskId: *task, Status: st}
	if *wf != "" {
		ns, name, err := splitWorkflow(*wf, *namespace)
		if err != nil {
			return usageError(stderr, c, "%v", err)
		}
		req.Namespace, req.Workflow = ns, name
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.context()
	defer cancel()
	all := &taskerv1.ListDeadLettersResponse{}
	for {
		req.PageSize = maxPageSize
		if *limit > 0 {
			req.PageSize = int32(min(*limit-len(all.DeadLetters), maxPageSize))
		}
		callCtx, done := context.WithTimeout(ctx, callTimeout)
		resp, err := cn.workflows.ListDeadLetters(callCtx, connect.NewRequest(req))
		done()
		if err != nil {
			return cn.fail(err)
		}
		all.DeadLetters = append(all.DeadLetters, resp.Msg.DeadLetters...)
		all.NextPageToken = resp.Msg.NextPageToken
		if all.NextPageToken == "" || (*limit > 0 && len(all.DeadLetters) >= *limit) {
			break
		}
		if len(resp.Msg.DeadLetters) == 0 {
			fmt.Fprintf(stderr, "tasker %s: the agent returned an empty page with a next page token; stopping\n", c.name)
			return exitFail
		}
		req.PageToken = all.NextPageToken
	}
	if *limit > 0 && len(all.DeadLetters) > *limit {
		all.DeadLetters = all.DeadLetters[:*limit]
	}
	if cn.json() {
		return cn.writeProto(all, false)
	}
	if len(all.DeadLetters) == 0 {
		if st == taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_UNSPECIFIED {
			fmt.Fprintln(stderr, "no dead letters")
		} else {
			fmt.Fprintf(stderr, "no %s dead letters\n", dlqStatus(st))
		}
		return exitOK
	}
	tw := table(stdout)
	row(tw, "ID", "STATUS", "TASK", "WORKFLOW", "STEP", "ATTEMPTS", "FAILED", "ERROR")
	for _, d := range all.DeadLetters {
		row(tw, d.Id, dlqStatus(d.Status), d.TaskId, workflowName(d.Namespace, d.Workflow)+" "+d.Version, d.Step,
			fmt.Sprintf("%d/%d", d.Attempts, d.MaxAttempts), timestamp(d.At), oneLine(dlqError(d), 60))
	}
	tw.Flush()
	if all.NextPageToken != "" {
		fmt.Fprintf(stderr, "more dead letters remain: raise -limit (%d) or use -limit 0 for all\n", *limit)
	}
	return exitOK
}

// dlqError is "code: message".
func dlqError(d *taskerv1.DeadLetter) string {
	if d.Message == "" {
		return d.Code
	}
	return d.Code + ": " + d.Message
}

// oneLine keeps a table cell on one line and at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

const dlqShowUsage = `
Usage: tasker dlq show ID [-stale|-consistent] [-addr URL] [-o table|json]

Shows a dead letter: its status, task, workflow and step, when the step
failed for good, after how many attempts and why, the error's details, the
step's input, what became of it, and what to do next.
` + consistencyHelp + apiFlagsHelp + apiExit

func dlqShowCommand() command {
	return command{name: "dlq show", synopsis: "show a dead letter: its error, attempts, input and what to do", usage: dlqShowUsage, run: runDLQShow}
}

func runDLQShow(args []string, stdout, stderr io.Writer) int {
	c := dlqShowCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one dead letter ID (from 'tasker dlq list'), got %d arguments", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.GetDeadLetter(ctx, connect.NewRequest(&taskerv1.GetDeadLetterRequest{Id: pos[0]}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	writeDeadLetter(stdout, resp.Msg.GetDeadLetter(), resp.Msg.GetInputJson())
	return exitOK
}

// writeDeadLetter prints a dead letter for people.
func writeDeadLetter(w io.Writer, d *taskerv1.DeadLetter, input string) {
	tw := table(w)
	row(tw, "Dead letter:", d.GetId())
	row(tw, "Status:", dlqStatus(d.GetStatus()))
	row(tw, "Task:", fmt.Sprintf("%s (now %s)", d.GetTaskId(), taskState(d.GetTaskState())))
	row(tw, "Workflow:", workflowName(d.GetNamespace(), d.GetWorkflow())+" "+d.GetVersion())
	row(tw, "Step:", fmt.Sprintf("%s (capability %s, now %s)", d.GetStep(), d.GetCapability(), stepState(d.GetStepState())))
	row(tw, "Failed:", timestamp(d.GetAt()))
	why := "out of attempts"
	if d.GetAttempts() < d.GetMaxAttempts() {
		why = fmt.Sprintf("error %q is not retried by the step's policy", d.GetCode())
	}
	row(tw, "Attempts:", fmt.Sprintf("%d of %d: %s", d.GetAttempts(), d.GetMaxAttempts(), why))
	row(tw, "Error:", dlqError(d))
	if d.GetDetailsJson() != "" {
		row(tw, "Details:", d.GetDetailsJson())
	}
	switch d.GetStatus() {
	case taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED:
		row(tw, "Replayed:", closed(d))
		if d.GetReplayAttempt() > 0 {
			row(tw, "New round:", fmt.Sprintf("from attempt %d", d.GetReplayAttempt()))
		}
	case taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_RESOLVED:
		row(tw, "Resolved:", closed(d))
	case taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_CANCELLED:
		row(tw, "Cancelled:", closed(d))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nInput:\n  %s\n\n", dash(input))
	fmt.Fprintln(w, "Next:")
	next := table(w)
	switch d.GetStatus() {
	case taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN:
		row(next, "  tasker dlq replay "+d.GetId()+" -reason R", "a new round of attempts, once the cause is fixed")
		row(next, "  tasker step resolve "+d.GetTaskId()+" "+d.GetStep()+" -result JSON", "complete the step by hand")
		row(next, "  tasker task cancel "+d.GetTaskId(), "give the task up")
	case taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED:
		switch {
		case d.GetNextId() != "":
			row(next, "  tasker dlq show "+d.GetNextId(), "the new round failed for good too")
		case taskTerminal(d.GetTaskState()):
			row(next, "  nothing: the task is "+taskState(d.GetTaskState()))
		default:
			row(next, "  tasker task watch "+d.GetTaskId(), "follow the task: the step is "+stepState(d.GetStepState()))
		}
	default:
		row(next, "  nothing: this dead letter is closed")
	}
	next.Flush()
}

// taskTerminal reports whether a task has ended for good (not error).
func taskTerminal(s taskerv1.TaskState) bool {
	return s == taskerv1.TaskState_TASK_STATE_COMPLETE || s == taskerv1.TaskState_TASK_STATE_CANCELLED || s == taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY
}

// closed says when and by which event a dead letter ended, and why.
func closed(d *taskerv1.DeadLetter) string {
	s := fmt.Sprintf("%s (event %s)", timestamp(d.GetClosedAt()), d.GetClosedBy())
	if d.GetClosedReason() != "" {
		s += ": " + d.GetClosedReason()
	}
	return s
}

const dlqReplayUsage = `
Usage: tasker dlq replay ID [-reason R] [-addr URL] [-o table|json]

Replays an open dead letter: its step gets a new round of attempts (as
'tasker step retry' does) and its task goes on. The step's history
records the replay with -reason. A dead letter that is not open (already
replayed, resolved by hand, or its task cancelled) is refused with its
status.
` + apiFlagsHelp + apiExit

func dlqReplayCommand() command {
	return command{name: "dlq replay", synopsis: "give a dead letter's step a new round of attempts", usage: dlqReplayUsage, run: runDLQReplay}
}

func runDLQReplay(args []string, stdout, stderr io.Writer) int {
	c := dlqReplayCommand()
	fs := flags(c, stderr)
	reason := fs.String("reason", "", "the reason `R`, for the record")
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one dead letter ID (from 'tasker dlq list'), got %d arguments", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.ReplayDeadLetter(ctx, connect.NewRequest(&taskerv1.ReplayDeadLetterRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	d, t := resp.Msg.GetDeadLetter(), resp.Msg.GetTask()
	fmt.Fprintf(stdout, "dead letter %s replayed: step %s of task %s has a new round of attempts; task %s\n",
		d.GetId(), d.GetStep(), d.GetTaskId(), taskState(t.GetState()))
	return exitOK
}
