package insight

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// AnalyzeInput is a window of one workflow version's execution history.
type AnalyzeInput struct {
	Plan *workflow.Plan `json:"-"`
	// Attempts are the attempts in the window, of any steps of Plan, in
	// any order; attempts of steps Plan does not have are ignored.
	Attempts []Attempt `json:"attempts"`
	// Since and Until bound the window; the trend compares its halves.
	// Zero values are taken from the attempts.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
}

// Trend labels.
const (
	TrendFaster  = "faster"
	TrendSlower  = "slower"
	TrendStable  = "stable"
	TrendUnknown = "unknown" // too few runs in a half to say
)

// TrendThreshold is the change of p50 between the window's halves, in
// percent, beyond which a step is "faster" or "slower": smaller moves are
// within the noise of a few dozen runs.
const TrendThreshold = 20.0

// trendMin is the runs each half needs for a trend.
const trendMin = 5

// NearTimeoutRatio is the p95/timeout ratio from which a step is flagged
// as running close to its timeout.
const NearTimeoutRatio = 0.8

// Analysis is the measured behaviour of one workflow version over a window.
type Analysis struct {
	Workflow string    `json:"workflow"`
	Version  string    `json:"version"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	// Tasks and Attempts count what the numbers come from.
	Tasks    int         `json:"tasks"`
	Attempts int         `json:"attempts"`
	Steps    []StepStats `json:"steps"`
	// CriticalPath is the longest chain through the DAG weighed by each
	// step's measured p50 (its timeout where nothing was measured, those
	// steps listed in Estimated), and CriticalTime its length.
	CriticalPath []string      `json:"critical_path"`
	CriticalTime time.Duration `json:"critical_time"`
	Estimated    []string      `json:"estimated,omitempty"`
	Bottlenecks  []Bottleneck  `json:"bottlenecks"`
}

// StepStats is one step's measured behaviour.
type StepStats struct {
	Step       string `json:"step"`
	Capability string `json:"capability,omitempty"`
	// Attempts counts the step's attempts, Tasks the tasks they belong to,
	// Completed the attempts that succeeded.
	Attempts  int `json:"attempts"`
	Tasks     int `json:"tasks"`
	Completed int `json:"completed"`
	// Duration is started → ended of the completed attempts.
	Duration Percentiles `json:"duration"`
	// Wait is dispatched (or ready) → started, over every started attempt.
	Wait  Percentiles `json:"wait"`
	Trend Trend       `json:"trend"`
	// RetryRate is the share of tasks that needed more than one attempt;
	// SuccessRate the share of attempts that completed.
	RetryRate   float64 `json:"retry_rate"`
	SuccessRate float64 `json:"success_rate"`
	// ByAttempt is the success of the 1st, 2nd, ... attempts.
	ByAttempt []AttemptStats `json:"by_attempt"`
	// Outcomes counts the attempts by outcome.
	Outcomes map[string]int `json:"outcomes"`
	// Timeout and MaxAttempts are the plan's; TimeoutRatio is
	// Duration.P95/Timeout, and NearTimeout flags it above
	// NearTimeoutRatio.
	Timeout      time.Duration `json:"timeout"`
	MaxAttempts  int           `json:"max_attempts"`
	TimeoutRatio float64       `json:"timeout_ratio"`
	NearTimeout  bool          `json:"near_timeout"`
	// Agents is the step's record per agent, for breaker tuning.
	Agents []AgentStats `json:"agents,omitempty"`
}

// Trend compares the p50 durations of the window's two halves.
type Trend struct {
	FirstP50  time.Duration `json:"first_p50"`
	SecondP50 time.Duration `json:"second_p50"`
	FirstN    int           `json:"first_n"`
	SecondN   int           `json:"second_n"`
	// ChangePct is (second − first) / first × 100.
	ChangePct float64 `json:"change_pct"`
	Label     string  `json:"label"`
}

// AttemptStats is how the attempts numbered Attempt went.
type AttemptStats struct {
	Attempt   int     `json:"attempt"`
	Count     int     `json:"count"`
	Succeeded int     `json:"succeeded"`
	Rate      float64 `json:"rate"`
}

// AgentStats is one agent's record on a step. LongestBurst is the longest
// run of consecutive failed attempts, Bursts the runs of BurstMin or more.
type AgentStats struct {
	Agent        string `json:"agent"`
	Attempts     int    `json:"attempts"`
	Failures     int    `json:"failures"`
	LongestBurst int    `json:"longest_burst"`
	Bursts       int    `json:"bursts"`
}

// BurstMin is the run of consecutive failures on one agent counted as a
// burst.
const BurstMin = 3

// Bottleneck is a step that holds tasks up: on the critical path (Share of
// its time) or waiting long for an agent.
type Bottleneck struct {
	Step    string        `json:"step"`
	Reason  string        `json:"reason"` // "critical_path" or "wait"
	Share   float64       `json:"share"`  // of the critical path's time; 0 for a wait
	P50     time.Duration `json:"p50"`
	WaitP95 time.Duration `json:"wait_p95"`
}

// Analyze measures a window of a workflow version's attempts: per step
// durations, waits, trends, retries and timeout headroom, and for the
// whole workflow the measured critical path and its bottlenecks.
func Analyze(in AnalyzeInput) *Analysis {
	an := &Analysis{Since: in.Since.UTC(), Until: in.Until.UTC(), Steps: []StepStats{}, Bottlenecks: []Bottleneck{}}
	p := in.Plan
	if p == nil {
		return an
	}
	an.Workflow, an.Version = p.Name, p.Version
	byStep := make([][]Attempt, len(p.Steps))
	tasks := map[string]bool{}
	var lo, hi time.Time
	for _, a := range in.Attempts {
		i, ok := p.StepIndex(a.Step)
		if !ok {
			continue
		}
		byStep[i] = append(byStep[i], a)
		tasks[a.TaskID] = true
		an.Attempts++
		t := firstNonZero(a.StartedAt, a.DispatchedAt, a.ReadyAt, a.EndedAt)
		if lo.IsZero() || t.Before(lo) {
			lo = t
		}
		if e := firstNonZero(a.EndedAt, t); e.After(hi) {
			hi = e
		}
	}
	an.Tasks = len(tasks)
	if an.Since.IsZero() {
		an.Since = lo.UTC()
	}
	if an.Until.IsZero() {
		an.Until = hi.UTC()
	}
	mid := an.Since.Add(an.Until.Sub(an.Since) / 2)
	p50 := map[string]time.Duration{}
	for i, s := range p.Steps {
		st := stepStats(s, byStep[i], mid)
		if st.Duration.N > 0 {
			p50[s.Name] = st.Duration.P50
		}
		an.Steps = append(an.Steps, st)
	}
	for _, s := range p.Steps {
		if _, ok := p50[s.Name]; !ok {
			an.Estimated = append(an.Estimated, s.Name)
		}
	}
	path, total := p.CriticalPath(stepWeight(p, p50))
	an.CriticalPath, an.CriticalTime = names(p, path), total
	an.Bottlenecks = bottlenecks(an, path)
	return an
}

// stepWeight weighs step i of q by its measured duration, or by its
// timeout when none was measured.
func stepWeight(q *workflow.Plan, durations map[string]time.Duration) func(int) time.Duration {
	return func(i int) time.Duration {
		if d, ok := durations[q.Steps[i].Name]; ok {
			return d
		}
		return q.Steps[i].Timeout
	}
}

func stepStats(s workflow.PlanStep, as []Attempt, mid time.Time) StepStats {
	st := StepStats{Step: s.Name, Capability: s.Capability, Attempts: len(as), Timeout: s.Timeout, MaxAttempts: s.Retry.MaxAttempts, Outcomes: map[string]int{}, ByAttempt: []AttemptStats{}}
	// A stable order makes burst counting independent of input order.
	as = slices.Clone(as)
	slices.SortStableFunc(as, func(a, b Attempt) int {
		return cmp.Or(firstNonZero(a.StartedAt, a.DispatchedAt, a.EndedAt).Compare(firstNonZero(b.StartedAt, b.DispatchedAt, b.EndedAt)), cmp.Compare(a.TaskID, b.TaskID), cmp.Compare(a.Attempt, b.Attempt))
	})
	var durs, waits, first, second []time.Duration
	tasks := map[string]int{}
	byN := map[int]*AttemptStats{}
	agents := map[string]*AgentStats{}
	run := map[string]int{}
	for _, a := range as {
		tasks[a.TaskID] = max(tasks[a.TaskID], a.Attempt)
		st.Outcomes[cmp.Or(a.Outcome, "unknown")]++
		n := byN[a.Attempt]
		if n == nil {
			n = &AttemptStats{Attempt: a.Attempt}
			byN[a.Attempt] = n
		}
		n.Count++
		if !a.StartedAt.IsZero() {
			if from := firstNonZero(a.DispatchedAt, a.ReadyAt); !from.IsZero() && !a.StartedAt.Before(from) {
				waits = append(waits, a.StartedAt.Sub(from))
			}
		}
		ok := a.Outcome == OutcomeCompleted
		if ok {
			st.Completed++
			n.Succeeded++
			if !a.StartedAt.IsZero() && !a.EndedAt.IsZero() {
				d := a.EndedAt.Sub(a.StartedAt)
				durs = append(durs, d)
				if a.StartedAt.Before(mid) {
					first = append(first, d)
				} else {
					second = append(second, d)
				}
			}
		}
		if a.Agent != "" && a.Outcome != OutcomeCancelled {
			ag := agents[a.Agent]
			if ag == nil {
				ag = &AgentStats{Agent: a.Agent}
				agents[a.Agent] = ag
			}
			ag.Attempts++
			if ok {
				run[a.Agent] = 0
			} else {
				ag.Failures++
				run[a.Agent]++
				ag.LongestBurst = max(ag.LongestBurst, run[a.Agent])
				if run[a.Agent] == BurstMin {
					ag.Bursts++
				}
			}
		}
	}
	st.Tasks = len(tasks)
	st.Duration = percentiles(durs)
	st.Wait = percentiles(waits)
	st.Trend = trend(first, second)
	if st.Tasks > 0 {
		retried := 0
		for _, m := range tasks {
			if m > 1 {
				retried++
			}
		}
		st.RetryRate = ratio(retried, st.Tasks)
	}
	st.SuccessRate = ratio(st.Completed, st.Attempts)
	for _, k := range sortedIntKeys(byN) {
		n := byN[k]
		n.Rate = ratio(n.Succeeded, n.Count)
		st.ByAttempt = append(st.ByAttempt, *n)
	}
	for _, k := range sortedKeys(agents) {
		st.Agents = append(st.Agents, *agents[k])
	}
	if s.Timeout > 0 && st.Duration.N > 0 {
		st.TimeoutRatio = round3(float64(st.Duration.P95) / float64(s.Timeout))
		st.NearTimeout = st.TimeoutRatio > NearTimeoutRatio
	}
	return st
}

func trend(first, second []time.Duration) Trend {
	a, b := percentiles(first), percentiles(second)
	t := Trend{FirstP50: a.P50, SecondP50: b.P50, FirstN: a.N, SecondN: b.N, Label: TrendUnknown}
	if a.N < trendMin || b.N < trendMin || a.P50 <= 0 {
		return t
	}
	t.ChangePct = math.Round(1000*float64(b.P50-a.P50)/float64(a.P50)) / 10
	switch {
	case t.ChangePct > TrendThreshold:
		t.Label = TrendSlower
	case t.ChangePct < -TrendThreshold:
		t.Label = TrendFaster
	default:
		t.Label = TrendStable
	}
	return t
}

// Bottleneck thresholds: a critical-path step is one when it takes at
// least this share of the path; a wait is one when its p95 is at least
// waitMin and half the step's own p50.
const (
	bottleneckShare = 0.25
	waitMin         = time.Second
)

func bottlenecks(an *Analysis, path []int) []Bottleneck {
	out := []Bottleneck{}
	if an.CriticalTime > 0 {
		for _, i := range path {
			s := an.Steps[i]
			w := s.Duration.P50
			if s.Duration.N == 0 {
				w = s.Timeout
			}
			share := float64(w) / float64(an.CriticalTime)
			if share >= bottleneckShare {
				out = append(out, Bottleneck{Step: s.Step, Reason: "critical_path", Share: round3(share), P50: w, WaitP95: s.Wait.P95})
			}
		}
		slices.SortStableFunc(out, func(a, b Bottleneck) int { return cmp.Compare(b.Share, a.Share) })
	}
	var waits []Bottleneck
	for _, s := range an.Steps {
		if s.Wait.N > 0 && s.Wait.P95 >= waitMin && 2*s.Wait.P95 >= s.Duration.P50 {
			waits = append(waits, Bottleneck{Step: s.Step, Reason: "wait", P50: s.Duration.P50, WaitP95: s.Wait.P95})
		}
	}
	slices.SortStableFunc(waits, func(a, b Bottleneck) int { return cmp.Compare(b.WaitP95, a.WaitP95) })
	return append(out, waits...)
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return round3(float64(a) / float64(b))
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func sortedIntKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
