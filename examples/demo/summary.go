package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// summary is what the batch did, from the tasks as the agent reported them.
type summary struct {
	tasks, complete   int
	started           int                           // tasks StartTask returned
	states            map[string]taskerv1.TaskState // by task id, as last seen
	notComplete       []string                      // "ord_0007 (tsk_...): error: charge failed: card_declined"
	steps, stepsDone  int
	attempts, retries int
	retriesByStep     map[string]int
	stepOrder         []string
	latencies         []time.Duration // of complete tasks, created to ended
	slowest           string          // the slowest complete task and why
	wall              time.Duration

	failover                   *failover      // nil when the leader was not killed
	lost                       []string       // started tasks not found, or no longer complete, at the end
	found                      map[string]int // the started tasks read back at the end, by state
	verifyErr                  error          // why the tasks could not all be read back
	startRetries, watchRetries int
	executions                 []serviceExecutions
	breakersOpened             map[string]int // "server: agent/capability" → times opened
	breakersFile               string         // -breakers; "" for the demo's policy
}

func summarize(results []result, wall time.Duration) summary {
	s := summary{tasks: len(results), retriesByStep: map[string]int{}, wall: wall, states: map[string]taskerv1.TaskState{}}
	for _, r := range results {
		t := r.task
		if t == nil {
			s.notComplete = append(s.notComplete, fmt.Sprintf("%s: not started: %v", r.order, r.err))
			continue
		}
		s.started++
		s.states[t.GetId()] = t.GetState()
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
	row("orders", "%d complete of %d", s.complete, s.tasks)
	switch f := s.failover; {
	case f == nil:
		row("failover", "none: the leader was not killed")
	case f.elected.IsZero():
		row("failover", "leader %s killed at %d/%d complete; NO new leader named before the batch ended", f.killed, f.atComplete, s.tasks)
	default:
		row("failover", "%s: leader %s (term %d) killed with SIGKILL at %d/%d complete; %s named leader (term %d) by the survivors (RaftPeers polled every %s)",
			round(f.took()), f.killed, f.term, f.atComplete, s.tasks, f.leader, f.newTerm, pollPeriod)
	}
	if f := s.failover; f != nil {
		done := 0
		for _, id := range f.inflight {
			if s.states[id] == taskerv1.TaskState_TASK_STATE_COMPLETE {
				done++
			}
		}
		row("", "%d orders were in flight at the kill: %d of them complete", len(f.inflight), done)
	}
	switch {
	case s.verifyErr != nil:
		row("lost", "UNKNOWN: %v", s.verifyErr)
	case len(s.lost) == 0:
		var states []string
		for _, st := range slices.Sorted(maps.Keys(s.found)) {
			states = append(states, fmt.Sprintf("%d %s", s.found[st], st))
		}
		row("lost", "0 tasks: all %d task ids started were read back (consistent reads through the %s sidecar): %s",
			s.started, verifyVia, strings.Join(states, ", "))
	default:
		row("lost", "%d TASKS: %s", len(s.lost), strings.Join(s.lost, "; "))
	}
	if s.startRetries+s.watchRetries > 0 {
		row("clients", "%d StartTask calls retried with their idempotency key, %d watches resumed, while the leader changed", s.startRetries, s.watchRetries)
	}
	row("steps", "%d complete of %d, in %d attempts", s.stepsDone, s.steps, s.attempts)
	row("retries", "%d%s", s.retries, retryDetail)
	if len(s.executions) > 0 {
		var parts []string
		dup := 0
		for _, e := range s.executions {
			parts = append(parts, e.String())
			dup += e.duplicates
		}
		row("executions", "%s", strings.Join(parts, " · "))
		if dup > 0 {
			row("", "%d steps ran to success twice (at-least-once across the failover; results are keyed by the step's idempotency key)", dup)
		}
	}
	policy := "the demo's policy: payments.charge opens after 10 consecutive failures, for 5s"
	if s.breakersFile != "" {
		policy = s.breakersFile
	}
	if len(s.breakersOpened) == 0 {
		row("breakers", "none opened (%s)", policy)
	} else {
		var opened []string
		for _, t := range slices.Sorted(maps.Keys(s.breakersOpened)) {
			opened = append(opened, fmt.Sprintf("%s %d×", t, s.breakersOpened[t]))
		}
		row("breakers", "opened: %s (%s)", strings.Join(opened, ", "), policy)
	}
	if len(s.latencies) > 0 {
		row("latency", "p50 %s, p99 %s, max %s (task created to completed; slowest %s)",
			round(percentile(s.latencies, 0.50)), round(percentile(s.latencies, 0.99)), round(s.latencies[len(s.latencies)-1]), s.slowest)
	}
	row("wall time", "%s for the batch (%.1f orders/s), %s in all", round(s.wall), float64(s.complete)/s.wall.Seconds(), round(total))
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
