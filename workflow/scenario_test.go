package workflow

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scenario tests replay the life of a task from testdata/scenarios/*.txt,
// in the manner of etcd-io/raft's data-driven tests. A file starts with
// directives that build the workflow:
//
//	step NAME [after P1,P2] [attempts N] [backoff INITIAL MAX MULT JITTER] [retryable C1,C2]
//
// then commands, each a line "> cmd args" followed by its expected output
// up to the next blank line:
//
//	> at +1.5s                     move the clock (relative to the task's start)
//	> add                          start the task; prints the ready roots
//	> dispatch S | start S | succeed S | release S | retry S | resolve S
//	> fail S code=C [retryable] [after=2s] [rand=0.5]
//	> cancel
//	> ready                        the steps ready now
//	> state                        the task and every step
//
// After every command the harness checks that the incremental state agrees
// with a full recompute. Run with -update to rewrite the expected output.
var update = flag.Bool("update", false, "rewrite testdata/scenarios with the actual output")

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScenario(t, f) })
	}
}

type scenario struct {
	t     *testing.T
	plan  *Plan
	runs  *Runs
	task  TaskRef
	start time.Time
	now   time.Time
	added bool
}

func runScenario(t *testing.T, file string) {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var (
		m       Manifest
		out     strings.Builder
		s       *scenario
		pending []string // expected output lines of the current command
		cmd     string
	)
	flush := func() {
		if cmd == "" {
			return
		}
		got := s.exec(cmd)
		want := strings.Join(pending, "\n")
		if got != want && !*update {
			t.Errorf("%s: > %s\n got:\n%s\nwant:\n%s", file, cmd, indent(got), indent(want))
		}
		out.WriteString("> " + cmd + "\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		out.WriteString("\n")
		cmd, pending = "", nil
	}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "step "):
			m.Steps = append(m.Steps, parseStepDirective(t, line))
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, "> "):
			if s == nil {
				s = newScenario(t, &m)
				out.WriteString("\n")
			}
			flush()
			cmd = strings.TrimPrefix(line, "> ")
		case line == "":
			flush()
		case strings.HasPrefix(line, "#") && cmd == "":
			out.WriteString(line + "\n")
		default:
			pending = append(pending, line)
		}
	}
	flush()
	if *update {
		if err := os.WriteFile(file, []byte(strings.TrimRight(collapseBlank(out.String()), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func collapseBlank(s string) string {
	for strings.Contains(s, "\n\n\n") {
		s = strings.ReplaceAll(s, "\n\n\n", "\n\n")
	}
	return s
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

func parseStepDirective(t *testing.T, line string) Step {
	f := strings.Fields(line)
	st := Step{Name: f[1], Capability: "test." + strings.ToLower(f[1])}
	for i := 2; i < len(f); i++ {
		switch f[i] {
		case "after":
			i++
			st.DependsOn = strings.Split(f[i], ",")
		case "attempts":
			i++
			n, err := strconv.Atoi(f[i])
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if st.Retry == nil {
				st.Retry = &RetrySpec{}
			}
			st.Retry.MaxAttempts = &n
		case "backoff":
			mult, _ := strconv.ParseFloat(f[i+3], 64)
			jit, _ := strconv.ParseFloat(f[i+4], 64)
			if st.Retry == nil {
				st.Retry = &RetrySpec{}
			}
			st.Retry.Backoff = &BackoffSpec{Initial: f[i+1], Max: f[i+2], Multiplier: &mult, Jitter: &jit}
			i += 4
		case "retryable":
			i++
			if st.Retry == nil {
				st.Retry = &RetrySpec{}
			}
			st.Retry.Retryable = strings.Split(f[i], ",")
		default:
			t.Fatalf("%s: unknown directive %q", line, f[i])
		}
	}
	return st
}

func newScenario(t *testing.T, m *Manifest) *scenario {
	m.Name, m.Version = "scenario", "1.0.0"
	p, err := Compile(m, Limits{})
	if err != nil {
		t.Fatalf("scenario workflow: %v", err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &scenario{t: t, plan: p, runs: NewRuns(), start: start, now: start}
}

func (s *scenario) names(idx []int32) string {
	if len(idx) == 0 {
		return "(none)"
	}
	n := make([]string, len(idx))
	for i, x := range idx {
		n[i] = s.plan.Steps[x].Name
	}
	slices.Sort(n)
	return strings.Join(n, " ")
}

func (s *scenario) rel(at time.Time) string {
	return fmt.Sprintf("+%.3fs", at.Sub(s.start).Seconds())
}

func (s *scenario) exec(cmd string) string {
	f := strings.Fields(cmd)
	step := func() int {
		if len(f) < 2 {
			s.t.Fatalf("> %s: which step?", cmd)
		}
		i, ok := s.plan.StepIndex(f[1])
		if !ok {
			s.t.Fatalf("> %s: no step %q", cmd, f[1])
		}
		return i
	}
	var out string
	switch f[0] {
	case "at":
		d, err := time.ParseDuration(strings.TrimPrefix(f[1], "+"))
		if err != nil {
			s.t.Fatalf("> %s: %v", cmd, err)
		}
		s.now = s.start.Add(d)
		return ""
	case "add":
		var ready []int32
		s.task, ready = s.runs.Add(s.runs.AddPlan(s.plan), s.start, nil)
		s.added = true
		out = "ready: " + s.names(ready)
	case "dispatch":
		n, err := s.runs.Dispatch(s.task, step(), s.now)
		out = orErr(fmt.Sprintf("attempt %d", n), err)
	case "start":
		out = orErr("ok", s.runs.Started(s.task, step()))
	case "succeed":
		ready, err := s.runs.Succeed(s.task, step(), nil)
		out = orErr("ready: "+s.names(ready), err)
	case "release":
		ready, err := s.runs.Release(s.task, step(), nil)
		out = orErr("ready: "+s.names(ready), err)
	case "retry":
		ready, err := s.runs.Retry(s.task, step(), nil)
		out = orErr("ready: "+s.names(ready), err)
	case "resolve":
		ready, err := s.runs.Resolve(s.task, step(), nil)
		out = orErr("ready: "+s.names(ready), err)
	case "cancel":
		inflight, err := s.runs.Cancel(s.task, nil)
		out = orErr("in flight: "+s.names(inflight), err)
	case "fail":
		fl := Failure{}
		for _, a := range f[2:] {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "code":
				fl.Code = v
			case "retryable":
				fl.Retryable = true
			case "after":
				fl.RetryAfter, _ = time.ParseDuration(v)
			case "rand":
				fl.Rand, _ = strconv.ParseFloat(v, 64)
			default:
				s.t.Fatalf("> %s: unknown argument %q", cmd, a)
			}
		}
		o, err := s.runs.Fail(s.task, step(), fl, s.now)
		switch {
		case err != nil:
			out = "error: " + err.Error()
		case o.Retry:
			out = "retry at " + s.rel(o.RetryAt)
		default:
			out = fmt.Sprintf("no retry; task blocked: %v", o.TaskBlocked)
		}
	case "ready":
		ready, err := s.runs.Ready(s.task, s.now, nil)
		out = orErr("ready: "+s.names(ready), err)
	case "state":
		ts, _ := s.runs.TaskState(s.task)
		lines := []string{"task " + ts.String()}
		for i, st := range s.plan.Steps {
			v, _ := s.runs.Step(s.task, i)
			l := fmt.Sprintf("  %s %s attempts=%d", st.Name, v.State, v.Attempts)
			if v.Blocked {
				l += " blocked"
			} else if !v.RetryAt.IsZero() {
				l += " retry_at=" + s.rel(v.RetryAt)
			}
			lines = append(lines, l)
		}
		out = strings.Join(lines, "\n")
	default:
		s.t.Fatalf("unknown command %q", cmd)
	}
	if s.added {
		checkAgreement(s.t, s.runs, s.task, s.now, cmd)
	}
	return out
}

func orErr(ok string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return ok
}

// checkAgreement asserts that the incrementally maintained state equals a
// full recompute: the same ready set and the same counts.
func checkAgreement(t *testing.T, r *Runs, task TaskRef, now time.Time, ctx string) {
	t.Helper()
	p, err := r.PlanOf(task)
	if err != nil {
		t.Fatalf("%s: %v", ctx, err)
	}
	before := make([]StepView, p.Len())
	for i := range before {
		before[i], _ = r.Step(task, i)
	}
	openBefore := r.tasks[task].open
	inc, _ := r.Ready(task, now, nil)
	full, _ := r.Recompute(task, now, nil)
	if !slices.Equal(inc, full) {
		t.Fatalf("%s: incremental ready %v, full recompute %v", ctx, inc, full)
	}
	for i := range p.Len() {
		if got, want := r.StepReady(task, i, now), slices.Contains(full, int32(i)); got != want {
			t.Fatalf("%s: StepReady(%d) = %v, the full recompute says %v", ctx, i, got, want)
		}
	}
	for i := range before {
		after, _ := r.Step(task, i)
		if after != before[i] {
			t.Fatalf("%s: step %d: incremental %+v, recomputed %+v", ctx, i, before[i], after)
		}
	}
	if r.tasks[task].open != openBefore {
		t.Fatalf("%s: open steps: incremental %d, recomputed %d", ctx, openBefore, r.tasks[task].open)
	}
}
