package insight

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

func secs(xs ...float64) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x * float64(time.Second))
	}
	return out
}

func TestPercentiles(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[99-i] = float64(i + 1) // reversed: percentiles sorts
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Percentiles
	}{
		{"empty", nil, Percentiles{}},
		{"one", secs(3), Percentiles{N: 1, P50: 3 * time.Second, P95: 3 * time.Second, P99: 3 * time.Second, Max: 3 * time.Second}},
		{"two: nearest rank never interpolates", secs(1, 9), Percentiles{N: 2, P50: time.Second, P95: 9 * time.Second, P99: 9 * time.Second, Max: 9 * time.Second}},
		{"1..100", secs(hundred...), Percentiles{N: 100, P50: 50 * time.Second, P95: 95 * time.Second, P99: 99 * time.Second, Max: 100 * time.Second}},
		{"ten with a tail", secs(1, 1, 1, 1, 1, 1, 1, 1, 1, 20), Percentiles{N: 10, P50: time.Second, P95: 20 * time.Second, P99: 20 * time.Second, Max: 20 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentiles(tt.in); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRoundUpAndProposeTimeout(t *testing.T) {
	tests := []struct {
		p99, want time.Duration
	}{
		{400 * time.Millisecond, time.Second},
		{3 * time.Second, 5 * time.Second},
		{29 * time.Second, 45 * time.Second},
		{31 * time.Second, 50 * time.Second},
		{100 * time.Second, 150 * time.Second},
		{3 * time.Minute, 270 * time.Second},
		{5 * time.Minute, 8 * time.Minute},
		{20 * time.Minute, 30 * time.Minute},
		{21 * time.Minute, 35 * time.Minute},
	}
	for _, tt := range tests {
		got := proposeTimeout(tt.p99)
		if got != tt.want {
			t.Errorf("proposeTimeout(%v) = %v, want %v", tt.p99, got, tt.want)
		}
		if got < tt.p99 {
			t.Errorf("proposeTimeout(%v) = %v is below p99", tt.p99, got)
		}
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45s", 2 * time.Minute: "2m", time.Hour: "1h", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s", 250 * time.Millisecond: "250ms",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTrend(t *testing.T) {
	five := func(x float64) []time.Duration { return secs(x, x, x, x, x) }
	tests := []struct {
		name          string
		first, second []time.Duration
		label         string
		pct           float64
	}{
		{"slower", five(10), five(15), TrendSlower, 50},
		{"faster", five(10), five(7), TrendFaster, -30},
		{"stable within the threshold", five(10), five(11.5), TrendStable, 15},
		{"too few runs", secs(1, 1), five(5), TrendUnknown, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := trend(tt.first, tt.second)
			if got.Label != tt.label || got.ChangePct != tt.pct {
				t.Errorf("got %+v, want %s %v%%", got, tt.label, tt.pct)
			}
		})
	}
}

// run makes attempt n of step in task with the given outcome, started at
// minute start after the base and lasting d, waiting w before it started.
func run(task, step string, n int, outcome, agent string, start float64, d, w time.Duration) Attempt {
	s := mins(start)
	return Attempt{TaskID: task, Workflow: "chain", Step: step, Attempt: n, DispatchedAt: s.Add(-w), StartedAt: s, EndedAt: s.Add(d), Outcome: outcome, Agent: agent}
}

func TestAnalyzeStep(t *testing.T) {
	p := load(t, chain)
	var as []Attempt
	// 20 tasks; b takes 10 s, 20 s from task 12 on (in the second half
	// of the hour); tasks 0-4 need a second attempt, 0-1 a third, which fails.
	for i := range 20 {
		task := fmt.Sprintf("t%02d", i)
		start := float64(i * 3)
		d := 10 * time.Second
		if i >= 12 {
			d = 20 * time.Second
		}
		switch {
		case i < 2:
			as = append(as, run(task, "b", 1, OutcomeFailed, "x", start, time.Second, time.Second),
				run(task, "b", 2, OutcomeFailed, "x", start+0.5, time.Second, time.Second),
				run(task, "b", 3, OutcomeTimedOut, "x", start+1, 30*time.Second, time.Second))
		case i < 5:
			as = append(as, run(task, "b", 1, OutcomeFailed, "y", start, time.Second, time.Second),
				run(task, "b", 2, OutcomeCompleted, "x", start+0.5, d, 3*time.Second))
		default:
			as = append(as, run(task, "b", 1, OutcomeCompleted, "y", start, d, time.Second))
		}
	}
	an := Analyze(AnalyzeInput{Plan: p, Attempts: as, Since: mins(0), Until: mins(60)})
	if an.Tasks != 20 || an.Attempts != 27 {
		t.Errorf("tasks %d attempts %d, want 20 and 27", an.Tasks, an.Attempts)
	}
	b := an.Steps[1]
	if b.Step != "b" || b.Attempts != 27 || b.Tasks != 20 || b.Completed != 18 {
		t.Fatalf("b: %+v", b)
	}
	if b.Duration.P50 != 10*time.Second || b.Duration.P99 != 20*time.Second {
		t.Errorf("duration %+v", b.Duration)
	}
	if b.Trend.Label != TrendSlower || b.Trend.ChangePct != 100 {
		t.Errorf("trend %+v", b.Trend)
	}
	if b.Wait.P50 != time.Second || b.Wait.P95 != 3*time.Second {
		t.Errorf("wait %+v", b.Wait)
	}
	if b.RetryRate != 0.25 || b.SuccessRate != round3(18.0/27) {
		t.Errorf("retry rate %v success rate %v", b.RetryRate, b.SuccessRate)
	}
	want := []AttemptStats{{1, 20, 15, 0.75}, {2, 5, 3, 0.6}, {3, 2, 0, 0}}
	if !slices.Equal(b.ByAttempt, want) {
		t.Errorf("by attempt %+v, want %+v", b.ByAttempt, want)
	}
	if b.Outcomes[OutcomeTimedOut] != 2 || b.Outcomes[OutcomeCompleted] != 18 {
		t.Errorf("outcomes %v", b.Outcomes)
	}
	if b.TimeoutRatio != round3(20.0/30) || b.NearTimeout {
		t.Errorf("timeout ratio %v near %v", b.TimeoutRatio, b.NearTimeout)
	}
	// Agent x: t00 fails 3 in a row, t01 3 more (a run of 6), then
	// t02-t04's second attempts succeed on x; y fails t02-t04's first
	// attempts in a row.
	wantAgents := []AgentStats{{Agent: "x", Attempts: 9, Failures: 6, LongestBurst: 6, Bursts: 1}, {Agent: "y", Attempts: 18, Failures: 3, LongestBurst: 3, Bursts: 1}}
	if !slices.Equal(b.Agents, wantAgents) {
		t.Errorf("agents %+v, want %+v", b.Agents, wantAgents)
	}
	if an.Steps[0].Attempts != 0 || an.Steps[0].Trend.Label != TrendUnknown {
		t.Errorf("a: %+v", an.Steps[0])
	}
}

func TestAnalyzeCriticalPath(t *testing.T) {
	p := load(t, `name: fan
version: 1.0.0
defaults:
  timeout: 1m
steps:
  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
  - name: c
    capability: svc.c
    depends_on: [a]
  - name: d
    capability: svc.d
    depends_on: [b, c]
  - name: e
    capability: svc.e
`)
	measure := func(durs map[string]time.Duration, wait map[string]time.Duration) []Attempt {
		var as []Attempt
		for i := range 10 {
			for _, s := range []string{"a", "b", "c", "d"} {
				if d, ok := durs[s]; ok {
					as = append(as, run(fmt.Sprintf("t%d", i), s, 1, OutcomeCompleted, "x", float64(i), d, wait[s]))
				}
			}
		}
		return as
	}
	tests := []struct {
		name      string
		durs      map[string]time.Duration
		wait      map[string]time.Duration
		path      []string
		total     time.Duration
		estimated []string
		bottle    []string
	}{{
		name:      "the measured branch through c is longest; e, unmeasured, weighs its timeout but is shorter",
		durs:      map[string]time.Duration{"a": 10 * time.Second, "b": 5 * time.Second, "c": 50 * time.Second, "d": 10 * time.Second},
		path:      []string{"a", "c", "d"},
		total:     70 * time.Second,
		estimated: []string{"e"},
		bottle:    []string{"c:critical_path"},
	}, {
		name:      "b slower: the path moves; a long wait on d is a bottleneck too",
		durs:      map[string]time.Duration{"a": 10 * time.Second, "b": 45 * time.Second, "c": 5 * time.Second, "d": 10 * time.Second},
		wait:      map[string]time.Duration{"d": 20 * time.Second},
		path:      []string{"a", "b", "d"},
		total:     65 * time.Second,
		estimated: []string{"e"},
		bottle:    []string{"b:critical_path", "d:wait"},
	}, {
		name:      "nothing measured: timeouts, the unmeasured standalone e is the path's end only if longer",
		durs:      map[string]time.Duration{},
		path:      []string{"a", "b", "d"},
		total:     3 * time.Minute,
		estimated: []string{"a", "b", "c", "d", "e"},
		bottle:    []string{"a:critical_path", "b:critical_path", "d:critical_path"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			an := Analyze(AnalyzeInput{Plan: p, Attempts: measure(tt.durs, tt.wait)})
			if !slices.Equal(an.CriticalPath, tt.path) || an.CriticalTime != tt.total {
				t.Errorf("critical path %v (%v), want %v (%v)", an.CriticalPath, an.CriticalTime, tt.path, tt.total)
			}
			if !slices.Equal(an.Estimated, tt.estimated) {
				t.Errorf("estimated %v, want %v", an.Estimated, tt.estimated)
			}
			var got []string
			for _, b := range an.Bottlenecks {
				got = append(got, b.Step+":"+b.Reason)
			}
			if !slices.Equal(got, tt.bottle) {
				t.Errorf("bottlenecks %v, want %v", got, tt.bottle)
			}
		})
	}
}

func TestAnalyzeDeterministic(t *testing.T) {
	p := load(t, chain)
	var as []Attempt
	for i := range 50 {
		as = append(as, run(fmt.Sprintf("t%d", i), []string{"a", "b", "c"}[i%3], 1+i%2, []string{OutcomeCompleted, OutcomeFailed}[i%4/3], []string{"x", "y"}[i%2], float64(i), time.Duration(i)*time.Second, time.Second))
	}
	first, _ := json.Marshal(Analyze(AnalyzeInput{Plan: p, Attempts: as}))
	slices.Reverse(as)
	again, _ := json.Marshal(Analyze(AnalyzeInput{Plan: p, Attempts: as}))
	if string(first) != string(again) {
		t.Fatalf("differs:\n%s\n%s", first, again)
	}
}
