package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const taskGetUsage = `
Usage: tasker task get ID [-results] [-stale|-consistent] [-addr URL] [-o table|json]

Shows a task: its workflow, state and times, then its steps as a tree
that follows depends_on, each with its state, attempts begun of those
allowed, how long its current or last attempt took (so far, when it is
running), the agent holding it, and its last error. A step that waits for
several others is drawn under the one that comes last in the manifest and
names the others: "(also after reserve)". Times are UTC.

-results also prints the task's input and every step's result. With
-o json the whole task is printed, results included.
` + consistencyHelp + apiFlagsHelp + apiExit

func taskGetCommand() command {
	return command{name: "task get", synopsis: "show a task and its steps as a tree", usage: taskGetUsage, run: runTaskGet}
}

func runTaskGet(args []string, stdout, stderr io.Writer) int {
	c := taskGetCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	results := fs.Bool("results", false, "print the input and the steps' results")
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
	resp, err := cn.workflows.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: pos[0]}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	writeTask(stdout, resp.Msg.GetTask(), *results, now())
	return exitOK
}

// writeTask prints a task's header and its steps as a tree.
func writeTask(w io.Writer, t *taskerv1.Task, results bool, at time.Time) {
	tw := table(w)
	row(tw, "Task:", t.Id)
	row(tw, "Workflow:", workflowName(t.Namespace, t.Workflow)+" "+t.Version)
	row(tw, "State:", taskState(t.State))
	row(tw, "Steps:", fmt.Sprintf("%d of %d done", stepsDone(t), len(t.Steps)))
	row(tw, "Created:", timestamp(t.CreatedAt))
	row(tw, "Ended:", timestamp(t.EndedAt))
	if t.IdempotencyKey != "" {
		row(tw, "Idempotency key:", t.IdempotencyKey)
	}
	tw.Flush()
	if len(t.Steps) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = table(w)
	row(tw, "STEP", "STATE", "ATTEMPTS", "DURATION", "AGENT", "LAST ERROR")
	for _, n := range stepTree(t.Steps) {
		s := n.step
		label := n.prefix + s.Name
		if len(n.alsoAfter) > 0 {
			label += " (also after " + strings.Join(n.alsoAfter, ", ") + ")"
		}
		row(tw, label, stepState(s.State), fmt.Sprintf("%d/%d", s.Attempts, s.MaxAttempts), stepDuration(s, at), dash(s.Agent), lastError(s))
	}
	tw.Flush()
	var waiting []string
	for _, s := range t.Steps {
		if s.Waiting != "" {
			waiting = append(waiting, "  "+s.Name+": "+s.Waiting)
		}
	}
	if len(waiting) > 0 {
		fmt.Fprintf(w, "\nWaiting:\n%s\n", strings.Join(waiting, "\n"))
	}
	if !results {
		return
	}
	fmt.Fprintf(w, "\nInput:\n  %s\n\nResults:\n", dash(t.InputJson))
	tw = table(w)
	for _, s := range t.Steps {
		row(tw, "  "+s.Name, dash(s.ResultJson))
	}
	tw.Flush()
}

// treeLine is one step as the tree draws it.
type treeLine struct {
	step      *taskerv1.Step
	prefix    string   // the branches before the name: "│  └─ "
	alsoAfter []string // the parents it is not drawn under
}

// stepTree lays the steps out as a tree following depends_on. A step is
// drawn under the parent that comes last in manifest order, which is
// usually the one drawn last, so a step comes after all its parents; the
// others are named beside it. Roots and children are in manifest order,
// and every step is drawn once, whatever the graph.
func stepTree(steps []*taskerv1.Step) []treeLine {
	index := make(map[string]int, len(steps))
	for i, s := range steps {
		index[s.Name] = i
	}
	children := make([][]int, len(steps))
	also := make([][]string, len(steps))
	var roots []int
	for i, s := range steps {
		parent := -1
		for _, d := range s.DependsOn {
			if j, ok := index[d]; ok && j != i && j > parent {
				parent = j
			}
		}
		if parent < 0 {
			roots = append(roots, i)
			continue
		}
		children[parent] = append(children[parent], i)
		for _, d := range s.DependsOn {
			if d != steps[parent].Name {
				also[i] = append(also[i], d)
			}
		}
	}
	var out []treeLine
	drawn := make([]bool, len(steps))
	var walk func(i int, indent, branch string)
	walk = func(i int, indent, branch string) {
		drawn[i] = true
		out = append(out, treeLine{step: steps[i], prefix: indent + branch, alsoAfter: also[i]})
		switch branch {
		case "├─ ":
			indent += "│  "
		case "└─ ":
			indent += "   "
		}
		kids := children[i]
		for k, j := range kids {
			if drawn[j] {
				continue
			}
			b := "├─ "
			if k == len(kids)-1 {
				b = "└─ "
			}
			walk(j, indent, b)
		}
	}
	for _, r := range roots {
		walk(r, "", "")
	}
	// A cycle (which a valid workflow cannot have) leaves steps unreached:
	// draw them as roots rather than lose them.
	for i := range steps {
		if !drawn[i] {
			walk(i, "", "")
		}
	}
	return out
}

// stepDuration is how long the current or last attempt took, or has taken
// so far when it is running: from when the app took it (else when it was
// dispatched) to when it ended or failed.
func stepDuration(s *taskerv1.Step, at time.Time) string {
	start := s.StartedAt
	if start == nil {
		start = s.DispatchedAt
	}
	if start == nil {
		return "-"
	}
	var end time.Time
	switch e := s.LastError; {
	case s.EndedAt != nil:
		end = s.EndedAt.AsTime()
	case s.State == taskerv1.StepState_STEP_STATE_IN_PROGRESS || s.State == taskerv1.StepState_STEP_STATE_ENQUEUED:
		end = at
	case e != nil && e.At != nil && e.Attempt == s.Attempts:
		// Failed, and waiting for its next attempt.
		end = e.At.AsTime()
	default:
		return "-"
	}
	return elapsed(end.Sub(start.AsTime()))
}

// lastError is "code: message (attempt N)", with when the next attempt is
// due for a step waiting for one.
func lastError(s *taskerv1.Step) string {
	e := s.LastError
	if e == nil {
		return "-"
	}
	text := e.Code
	if e.Message != "" {
		text += ": " + e.Message
	}
	if e.Attempt > 0 {
		text += fmt.Sprintf(" (attempt %d)", e.Attempt)
	}
	if s.NextAttemptAt != nil && s.State == taskerv1.StepState_STEP_STATE_ERROR {
		text += "; next attempt " + timestamp(s.NextAttemptAt)
	}
	return text
}
