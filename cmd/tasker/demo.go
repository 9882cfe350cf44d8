package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tasker-run/tasker/sim"
	"github.com/tasker-run/tasker/workflow"
)

const demoUsage = `
Usage: tasker demo [-seed N] [-input FILE] [-o text|json] [MANIFEST]

Runs a workflow through Tasker's scheduling engine with simulated apps on
a simulated clock, and prints every transition of every step with its
simulated time. Nothing is started and nothing sleeps: the clock jumps
from event to event, and the same seed prints the same run.

It shows up to three tasks:

  1. one step's first attempt fails with a retryable error, is retried
     after its backoff, and the task completes;
  2. one step returns a result that breaks its result contract: the step
     fails for good, the task is blocked and the steps after it never run;
  3. a task whose input breaks the input contract is refused.

Simulated apps answer with samples of their result contracts. The task
input is a sample of the input contract unless -input gives one.
MANIFEST defaults to examples/order-fulfilment.yaml.

Exit status: 0 when the demo ran, 1 when the manifest is invalid or the
demo cannot run it, 2 on a usage error.
`

// defaultDemoManifest is the manifest the demo runs when given none.
const defaultDemoManifest = "examples/order-fulfilment.yaml"

func demoCommand() command {
	return command{name: "demo", synopsis: "run a workflow with simulated apps on a simulated clock", usage: demoUsage, run: runDemo}
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	c := demoCommand()
	fs := flags(c, stderr)
	seed := fs.Uint64("seed", 1, "seed of the simulated backoff jitter")
	inputFile := fs.String("input", "", "task input as a JSON `FILE`, instead of a sample of the input contract")
	format := formatFlag(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	file := defaultDemoManifest
	switch len(pos) {
	case 0:
	case 1:
		file = pos[0]
	default:
		return usageError(stderr, c, "want at most one manifest, got %d", len(pos))
	}
	plan, ok := loadPlan(file, stderr)
	if !ok {
		return exitFail
	}
	var input any
	if *inputFile != "" {
		raw, err := os.ReadFile(*inputFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", *inputFile, readError(err))
			return exitFail
		}
		if input, err = workflow.DecodeJSON(raw); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", *inputFile, err)
			return exitFail
		}
	}
	runs, err := sim.Demo(plan, input, *seed)
	if err != nil {
		fmt.Fprintf(stderr, "tasker demo: %s: %v\n", file, err)
		return exitFail
	}
	if *format == formatJSON {
		return writeJSON(stdout, stderr, demoJSON(plan, *seed, runs))
	}
	writeDemo(stdout, plan, *seed, runs)
	return exitOK
}

// loadPlan reads and compiles a manifest, printing its problems.
func loadPlan(file string, stderr io.Writer) (*workflow.Plan, bool) {
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", file, readError(err))
		return nil, false
	}
	plan, err := workflow.Load(src, workflow.Limits{})
	var ve *workflow.ValidationError
	switch {
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			fmt.Fprintf(stderr, "%s: %s\n", file, p)
		}
		return nil, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return nil, false
	}
	return plan, true
}

func writeDemo(w io.Writer, plan *workflow.Plan, seed uint64, runs []sim.DemoRun) {
	fmt.Fprintf(w, "%s/%s %s: %s on a simulated clock (seed %d)\n", plan.Namespace, plan.Name, plan.Version, plural(len(plan.Steps), "step"), seed)
	width := len("task")
	for _, st := range plan.Steps {
		width = max(width, len(st.Name))
	}
	for i, r := range runs {
		fmt.Fprintf(w, "\n%d. %s\n", i+1, r.Title)
		if r.Refused != nil {
			fmt.Fprintf(w, "   refused: %v\n", r.Refused)
			continue
		}
		for _, rec := range r.Log {
			fmt.Fprintf(w, "   %-9s %-*s  %s\n", seconds(rec.At), width, name(rec), transition(rec))
		}
		fmt.Fprintf(w, "   %s\n", outcome(r.Task))
	}
}

// seconds renders a simulated time as "+1.234s".
func seconds(d time.Duration) string { return fmt.Sprintf("+%.3fs", d.Seconds()) }

func name(r sim.Record) string {
	if r.Step == "" {
		return "task"
	}
	return r.Step
}

// transition renders a record: "pending → enqueued (attempt 1)", or a
// failure with its code and what happens next.
func transition(r sim.Record) string {
	s := r.From + " → " + r.To
	switch {
	case r.Step == "":
		return s
	case r.To == workflow.StepEnqueued.String():
		return fmt.Sprintf("%s (attempt %d)", s, r.Attempt)
	case r.To != workflow.StepError.String():
		return s
	}
	s += ": " + r.Code
	if r.Detail != "" {
		s += " (" + r.Detail + ")"
	}
	if r.Retry {
		return s + ", retry at " + seconds(r.RetryAt)
	}
	return s + ", not retried"
}

// outcome sums up a task: how it ended, and what a blocked task left undone.
func outcome(t sim.TaskReport) string {
	attempts := 0
	var failed, never []string
	for _, st := range t.Steps {
		attempts += st.Attempts
		switch {
		case st.State == workflow.StepError:
			failed = append(failed, st.Name)
		case st.Attempts == 0 && !st.State.Done():
			never = append(never, st.Name)
		}
	}
	s := fmt.Sprintf("task %s after %s: %s, %s", t.State, strings.TrimPrefix(seconds(t.Elapsed), "+"), plural(len(t.Steps), "step"), plural(attempts, "attempt"))
	if len(failed) > 0 {
		s += "; failed: " + strings.Join(failed, ", ")
	}
	if len(never) > 0 {
		s += "; never dispatched: " + strings.Join(never, ", ")
	}
	return s
}

// The JSON output: states as names, durations in nanoseconds.
type (
	demoOutput struct {
		Workflow  string        `json:"workflow"`
		Namespace string        `json:"namespace"`
		Version   string        `json:"version"`
		Seed      uint64        `json:"seed"`
		Runs      []demoRunJSON `json:"runs"`
	}
	demoRunJSON struct {
		Title   string       `json:"title"`
		Input   any          `json:"input"`
		Refused string       `json:"refused,omitempty"`
		Log     []sim.Record `json:"log,omitempty"`
		Task    *demoTask    `json:"task,omitempty"`
	}
	demoTask struct {
		State   string     `json:"state"`
		Elapsed int64      `json:"elapsed_ns"`
		Steps   []demoStep `json:"steps"`
	}
	demoStep struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
		Result   any    `json:"result,omitempty"`
	}
)

func demoJSON(plan *workflow.Plan, seed uint64, runs []sim.DemoRun) demoOutput {
	out := demoOutput{Workflow: plan.Name, Namespace: plan.Namespace, Version: plan.Version, Seed: seed, Runs: []demoRunJSON{}}
	for _, r := range runs {
		j := demoRunJSON{Title: r.Title, Input: r.Input, Log: r.Log}
		if r.Refused != nil {
			j.Refused = r.Refused.Error()
			out.Runs = append(out.Runs, j)
			continue
		}
		t := &demoTask{State: r.Task.State.String(), Elapsed: int64(r.Task.Elapsed)}
		for _, st := range r.Task.Steps {
			t.Steps = append(t.Steps, demoStep{Name: st.Name, State: st.State.String(), Attempts: st.Attempts, Result: st.Result})
		}
		j.Task = t
		out.Runs = append(out.Runs, j)
	}
	return out
}
