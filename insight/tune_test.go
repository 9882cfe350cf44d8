package insight

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTune(t *testing.T) {
	// b: timeout 30s, max_attempts 3 (chain).
	p := load(t, chain)
	dur := func(n int, p99 time.Duration) Percentiles {
		return Percentiles{N: n, P50: p99 / 2, P95: p99 * 9 / 10, P99: p99, Max: p99}
	}
	tests := []struct {
		name string
		b    StepStats
		want []string // "setting current→proposed remediation-action", "" proposed for no data
	}{{
		name: "too little data: said, nothing proposed",
		b:    StepStats{Attempts: 12, Duration: dur(12, 29*time.Second)},
		want: []string{"timeout 30s→ "},
	}, {
		name: "no attempts at all: no advice",
		b:    StepStats{},
		want: nil,
	}, {
		name: "p99 close to the timeout: raise to p99 × 1.5 rounded up",
		b:    StepStats{Attempts: 100, Duration: dur(100, 28*time.Second), Outcomes: map[string]int{OutcomeTimedOut: 3}},
		want: []string{"timeout 30s→45s change_timeout"},
	}, {
		name: "p99 far below the timeout: lower it",
		b:    StepStats{Attempts: 100, Duration: dur(100, 4*time.Second)},
		want: []string{"timeout 30s→6s change_timeout"},
	}, {
		name: "p99 with headroom already: nothing",
		b:    StepStats{Attempts: 100, Duration: dur(100, 15*time.Second)},
		want: nil,
	}, {
		name: "attempts from the 2nd on never succeed: lower the limit to 1",
		b: StepStats{Attempts: 130, Duration: dur(100, 15*time.Second),
			ByAttempt: []AttemptStats{{1, 100, 80, 0.8}, {2, 20, 0, 0}, {3, 10, 0, 0}}},
		want: []string{"retry.max_attempts 3→1 change_retry_policy"},
	}, {
		name: "the 3rd attempt never succeeds: lower to 2",
		b: StepStats{Attempts: 140, Duration: dur(100, 15*time.Second),
			ByAttempt: []AttemptStats{{1, 100, 70, 0.7}, {2, 30, 18, 0.6}, {3, 12, 0, 0}}},
		want: []string{"retry.max_attempts 3→2 change_retry_policy"},
	}, {
		name: "too few late attempts to lower",
		b: StepStats{Attempts: 110, Duration: dur(100, 15*time.Second),
			ByAttempt: []AttemptStats{{1, 100, 95, 0.95}, {2, 5, 0, 0}, {3, 2, 0, 0}}},
		want: nil,
	}, {
		name: "the last attempt still succeeds often: raise by 2",
		b: StepStats{Attempts: 180, Duration: dur(100, 15*time.Second),
			ByAttempt: []AttemptStats{{1, 100, 40, 0.4}, {2, 60, 30, 0.5}, {3, 30, 16, 0.53}}},
		want: []string{"retry.max_attempts 3→5 change_retry_policy"},
	}, {
		name: "the last attempt sometimes succeeds: raise by 1",
		b: StepStats{Attempts: 180, Duration: dur(100, 15*time.Second),
			ByAttempt: []AttemptStats{{1, 100, 40, 0.4}, {2, 60, 30, 0.5}, {3, 30, 10, 0.33}}},
		want: []string{"retry.max_attempts 3→4 change_retry_policy"},
	}, {
		name: "bursts on one agent below the default trip",
		b: StepStats{Attempts: 100, Duration: dur(100, 15*time.Second),
			Agents: []AgentStats{{Agent: "x", Attempts: 50, Failures: 12, LongestBurst: 4, Bursts: 3}, {Agent: "y", Attempts: 50, Failures: 1, LongestBurst: 1}}},
		want: []string{"breaker consecutiveFailures > 5 (built-in default; a breakers file may override it)→consecutiveFailures > 2 for x/svc.b "},
	}, {
		name: "bursts long enough to trip the default breaker: nothing",
		b: StepStats{Attempts: 100, Duration: dur(100, 15*time.Second),
			Agents: []AgentStats{{Agent: "x", Attempts: 50, Failures: 20, LongestBurst: 9, Bursts: 2}}},
		want: nil,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.b.Step = "b"
			an := &Analysis{Steps: []StepStats{{Step: "a"}, tt.b}}
			var got []string
			for _, a := range Tune(an, p) {
				if a.Step != "b" {
					t.Errorf("advice for %s", a.Step)
				}
				act := ""
				if a.Remediation != nil {
					act = string(a.Remediation.Action)
					if a.Remediation.Params["step"] != "b" || a.Remediation.Source != "rules" {
						t.Errorf("remediation %+v", a.Remediation)
					}
				}
				if a.Rationale == "" || a.Confidence < 0 || a.Confidence > 1 || (a.Proposed == "") != (a.Confidence == 0) {
					t.Errorf("advice %+v", a)
				}
				got = append(got, fmt.Sprintf("%s %s→%s %s", a.Setting, a.Current, a.Proposed, act))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTuneTooLittleDataSaysSo(t *testing.T) {
	p := load(t, chain)
	an := &Analysis{Steps: []StepStats{{Step: "b", Attempts: 5, Duration: Percentiles{N: 5, P99: time.Second}}}}
	ads := Tune(an, p)
	if len(ads) != 1 || ads[0].Proposed != "" || ads[0].Remediation != nil || !strings.Contains(ads[0].Rationale, "too little data: 5 completed runs") {
		t.Fatalf("advice %+v", ads)
	}
	if Tune(nil, p) == nil || len(Tune(an, nil)) != 0 {
		t.Error("nil inputs")
	}
}

// Analyze and Tune together, from raw attempts.
func TestAnalyzeThenTune(t *testing.T) {
	p := load(t, chain)
	var as []Attempt
	for i := range 40 {
		as = append(as, run(fmt.Sprintf("t%d", i), "c", 1, OutcomeCompleted, "x", float64(i), time.Duration(20+i%10)*time.Second, 0))
	}
	ads := Tune(Analyze(AnalyzeInput{Plan: p, Attempts: as}), p)
	if len(ads) != 1 || ads[0].Step != "c" || ads[0].Setting != SettingTimeout || ads[0].Proposed != "45s" {
		t.Fatalf("advice %+v", ads)
	}
}
