package main

import (
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func stepCommand() command {
	return group("step", "retry or resolve by hand a step that failed", `
Unblocks a task whose step failed for good: retry the step with a fresh
round of attempts, or complete it by hand with a result.
`, stepRetryCommand(), stepResolveCommand())
}

const stepRetryUsage = `
Usage: tasker step retry TASK STEP [-reason R] [-addr URL] [-o table|json]

Gives a step that failed for good a fresh round of attempts, and
unblocks its task. Retrying a step that has not failed is refused.
` + apiFlagsHelp + apiExit

func stepRetryCommand() command {
	return command{name: "step retry", synopsis: "give a failed step a fresh round of attempts", usage: stepRetryUsage, run: runStepRetry}
}

func runStepRetry(args []string, stdout, stderr io.Writer) int {
	c := stepRetryCommand()
	fs := flags(c, stderr)
	reason := fs.String("reason", "", "the reason `R`, for the record")
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		return usageError(stderr, c, "want a task ID and a step name, got %d arguments", len(pos))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.RetryStep(ctx, connect.NewRequest(&taskerv1.RetryStepRequest{TaskId: pos[0], Step: pos[1], Reason: *reason}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	cn.writeStepOutcome("retried", resp.Msg.GetTask(), pos[1])
	return exitOK
}

const stepResolveUsage = `
Usage: tasker step resolve TASK STEP -result JSON|@FILE [-reason R] [-addr URL] [-o table|json]

Completes a pending or failed step by hand with a result, which must
satisfy the step's result contract (a result that breaks it is refused
with every violation, one per line). The steps after it then run with
that result, and the task ends resolved_manually. -result is JSON text,
@FILE, or @- for standard input; -reason is recorded.
` + apiFlagsHelp + apiExit

func stepResolveCommand() command {
	return command{name: "step resolve", synopsis: "complete a step by hand with a result", usage: stepResolveUsage, run: runStepResolve}
}

func runStepResolve(args []string, stdout, stderr io.Writer) int {
	c := stepResolveCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	result := fs.String("result", "", "the step's result: `JSON` text, @FILE, or @- for standard input")
	reason := fs.String("reason", "", "the reason `R`, for the record")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		return usageError(stderr, c, "want a task ID and a step name, got %d arguments", len(pos))
	}
	if *result == "" {
		return usageError(stderr, c, "no result given: use -result JSON or -result @FILE")
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	resultJSON, err := jsonArg("result", *result)
	if err != nil {
		return argError(stderr, c, err)
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.ResolveStep(ctx, connect.NewRequest(&taskerv1.ResolveStepRequest{
		TaskId: pos[0], Step: pos[1], ResultJson: resultJSON, Reason: *reason,
	}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	cn.writeStepOutcome("resolved", resp.Msg.GetTask(), pos[1])
	return exitOK
}

// writeStepOutcome says what became of the step and its task.
func (c *conn) writeStepOutcome(verb string, t *taskerv1.Task, step string) {
	state := "?"
	for _, s := range t.GetSteps() {
		if s.Name == step {
			state = fmt.Sprintf("%s, %d/%d attempts", stepState(s.State), s.Attempts, s.MaxAttempts)
		}
	}
	fmt.Fprintf(c.stdout, "step %s of task %s %s: now %s; task %s\n", step, t.GetId(), verb, state, taskState(t.GetState()))
}
