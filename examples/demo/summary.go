package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// summary is what the batch did, from the tasks as the agent reported them.
type summary struct {
	tasks, complete   int
	notComplete       []string // "ord_0007 (tsk_...): error: charge failed: card_declined"
	steps, stepsDone  int
	attempts, retries int
	retriesByStep     map[string]int
	stepOrder         []string
	latencies         []time.Duration // of complete tasks, created to ended
	slowest           string          // the slowest complete task and why
	wall              time.Duration
}

func summarize(results []result, wall time.Duration) summary {
	s := summary{tasks: len(results), retriesByStep: map[string]int{}, wall: wall}
	for _, r := range results {
		t := r.task
		if t == nil {
			s.notComplete = append(s.notComplete, fmt.Sprintf("%s: not started: %v", r.order, r.err))
			continue
		}
		for _, st := range t.GetSteps() {
			if !slices.Contains(s.stepOrder, st.GetName()) {
				s.stepOrder = append(s.stepOrder, st.GetName())
			}
			s.steps++
			if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE {
				s.stepsDone++
			}
			s.attempts += int(st.GetAttempts())
			s.retries += max(int(st.GetAttempts())-1, 0)
			s.retriesByStep[st.GetName()] += max(int(st.GetAttempts())-1, 0)
		}
		if t.GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE {
			s.complete++
			d := t.GetEndedAt().AsTime().Sub(t.GetCreatedAt().AsTime())
			if len(s.latencies) == 0 || d > slices.Max(s.latencies) {
				s.slowest = r.order + slowBecause(t)
			}
			s.latencies = append(s.latencies, d)
			continue
		}
		s.notComplete = append(s.notComplete, fmt.Sprintf("%s (%s): %s", r.order, t.GetId(), why(t, r.err)))
	}
	slices.Sort(s.latencies)
	return s
}

// slowBecause names the steps of a task that took more than one attempt.
func slowBecause(t *taskerv1.Task) string {
	var retried []string
	for _, st := range t.GetSteps() {
		if st.GetAttempts() > 1 {
			retried = append(retried, fmt.Sprintf("%s took %d attempts", st.GetName(), st.GetAttempts()))
		}
	}
	if len(retried) == 0 {
		return ""
	}
	return ": " + strings.Join(retried, ", ")
}

// why says what stopped a task that did not complete.
func why(t *taskerv1.Task, err error) string {
	state := strings.ToLower(strings.TrimPrefix(t.GetState().String(), "TASK_STATE_"))
	for _, st := range t.GetSteps() {
		if st.GetState() == taskerv1.StepState_STEP_STATE_ERROR && st.GetNextAttemptAt() == nil {
			e := st.GetLastError()
			return fmt.Sprintf("%s: step %s failed for good after %d attempts: %s: %s", state, st.GetName(), st.GetAttempts(), e.GetCode(), e.GetMessage())
		}
	}
	if err != nil {
		return fmt.Sprintf("%s: %v", state, err)
	}
	return state
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 1) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (s summary) write(w io.Writer, total time.Duration) {
	var by []string
	for _, name := range s.stepOrder {
		if n := s.retriesByStep[name]; n > 0 {
			by = append(by, fmt.Sprintf("%s %d", name, n))
		}
	}
	retryDetail := ""
	if len(by) > 0 {
		retryDetail = " (" + strings.Join(by, ", ") + ")"
	}
	fmt.Fprintln(w, "Summary:")
	row := func(k, format string, args ...any) { fmt.Fprintf(w, "  %-10s %s\n", k, fmt.Sprintf(format, args...)) }
	row("tasks", "%d complete of %d", s.complete, s.tasks)
	row("steps", "%d complete of %d", s.stepsDone, s.steps)
	row("attempts", "%d", s.attempts)
	row("retries", "%d%s", s.retries, retryDetail)
	if len(s.latencies) > 0 {
		row("latency", "p50 %s, p99 %s, max %s (task created to completed; slowest %s)",
			round(percentile(s.latencies, 0.50)), round(percentile(s.latencies, 0.99)), round(s.latencies[len(s.latencies)-1]), s.slowest)
	}
	row("wall time", "%s for the batch (%.1f tasks/s), %s in all", round(s.wall), float64(s.tasks)/s.wall.Seconds(), round(total))
	for i, n := range s.notComplete {
		if i == 10 {
			fmt.Fprintf(w, "  ... and %d more\n", len(s.notComplete)-i)
			break
		}
		fmt.Fprintf(w, "  NOT COMPLETE %s\n", n)
	}
}

// round shortens a duration for people: milliseconds below 10s, else
// tenths of a second.
func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
