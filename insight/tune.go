package insight

import (
	"fmt"
	"strconv"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/workflow"
)

// Advice is one proposed change to a step's settings, from measurements.
type Advice struct {
	Step string `json:"step"`
	// Setting is "timeout", "retry.max_attempts" or "breaker".
	Setting    string  `json:"setting"`
	Current    string  `json:"current"`
	Proposed   string  `json:"proposed"` // "" when there is too little data to propose
	Rationale  string  `json:"rationale"`
	Confidence float64 `json:"confidence"`
	// Remediation is the change as an action of the vocabulary; nil for
	// breaker advice (breakers are agent policy, not a manifest change)
	// and when nothing is proposed.
	Remediation *Remediation `json:"remediation,omitempty"`
}

// Advice settings.
const (
	SettingTimeout     = "timeout"
	SettingMaxAttempts = "retry.max_attempts"
	SettingBreaker     = "breaker"
)

// Tuning thresholds.
const (
	// MinTimeoutSamples is the completed runs a timeout proposal needs:
	// below it the p99 is one or two runs, not a tail.
	MinTimeoutSamples = 20
	// TimeoutHeadroom multiplies p99 into a proposed timeout.
	TimeoutHeadroom = 1.5
	// minRetrySamples is the attempts (numbered 2 and up for lowering, at
	// the limit for raising) retry advice needs.
	minRetrySamples = 10
	// raiseRate is the success rate of the last allowed attempt from which
	// one more is worth it; raiseTwoRate from which two are.
	raiseRate    = 0.3
	raiseTwoRate = 0.5
	// looseFactor: a timeout this many times the proposal is loose enough
	// to lower, so that hangs are caught sooner.
	looseFactor = 3
)

// Tune proposes timeouts, retry limits and breaker thresholds for the
// steps of p from a's measurements. A timeout is p99 × TimeoutHeadroom
// rounded up to a sensible unit (never below p99), proposed only when it
// differs materially from the current one; a retry limit is lowered to the
// last attempt number that ever succeeds, raised by one or two when the
// last allowed attempt still often succeeds; a breaker threshold is
// proposed when an agent fails in bursts the default breaker lets through.
// Advice comes in manifest order, timeout, retry, breaker for each step.
func Tune(a *Analysis, p *workflow.Plan) []Advice {
	out := []Advice{}
	if a == nil || p == nil {
		return out
	}
	byName := map[string]StepStats{}
	for _, s := range a.Steps {
		byName[s.Step] = s
	}
	for _, ps := range p.Steps {
		s, ok := byName[ps.Name]
		if !ok {
			continue
		}
		if ad, ok := tuneTimeout(ps, s); ok {
			out = append(out, ad)
		}
		if ad, ok := tuneRetry(ps, s); ok {
			out = append(out, ad)
		}
		out = append(out, tuneBreaker(ps, s)...)
	}
	return out
}

func tuneTimeout(ps workflow.PlanStep, s StepStats) (Advice, bool) {
	cur := ps.Timeout
	ad := Advice{Step: ps.Name, Setting: SettingTimeout, Current: fmtDur(cur)}
	n := s.Duration.N
	if n < MinTimeoutSamples {
		if s.Attempts == 0 {
			return ad, false
		}
		ad.Rationale = fmt.Sprintf("too little data: %d completed runs in the window, %d needed for a p99", n, MinTimeoutSamples)
		return ad, true
	}
	p99 := s.Duration.P99
	proposed := proposeTimeout(p99)
	timedOut := s.Outcomes[OutcomeTimedOut]
	// More runs, a better p99: 0.54 at 20 runs, 0.9 from 200.
	conf := 0.5 + 0.4*min(1, float64(n)/200)
	switch {
	case proposed > cur:
		ad.Rationale = fmt.Sprintf("p99 of %d successful runs is %s, %.0f%% of the %s timeout: %s is p99 × %.1f rounded up", n, fmtDur(p99), 100*float64(p99)/float64(cur), fmtDur(cur), fmtDur(proposed), TimeoutHeadroom)
		if timedOut > 0 {
			ad.Rationale += fmt.Sprintf("; %d attempts timed out in the window", timedOut)
			conf += 0.05
		}
	case cur >= looseFactor*proposed && timedOut == 0:
		ad.Rationale = fmt.Sprintf("p99 of %d successful runs is %s, a fraction of the %s timeout: %s still leaves 50%% headroom and catches a hung attempt sooner", n, fmtDur(p99), fmtDur(cur), fmtDur(proposed))
		conf -= 0.1
	default:
		return ad, false
	}
	ad.Proposed = fmtDur(proposed)
	ad.Confidence = clamp01(conf)
	r := rem(ActionChangeTimeout, map[string]string{"step": ps.Name, "timeout": ad.Proposed}, ad.Rationale, nil, ad.Confidence)
	ad.Remediation = &r
	return ad, true
}

func tuneRetry(ps workflow.PlanStep, s StepStats) (Advice, bool) {
	limit := ps.Retry.MaxAttempts
	ad := Advice{Step: ps.Name, Setting: SettingMaxAttempts, Current: strconv.Itoa(limit)}
	if limit <= 0 || len(s.ByAttempt) == 0 {
		return ad, false
	}
	// Lower: from attempt j on, nothing ever succeeded.
	for j := 2; j <= limit; j++ {
		tried, won := 0, 0
		for _, b := range s.ByAttempt {
			if b.Attempt >= j {
				tried += b.Count
				won += b.Succeeded
			}
		}
		if won > 0 {
			continue
		}
		if tried < minRetrySamples {
			break
		}
		ad.Proposed = strconv.Itoa(j - 1)
		ad.Rationale = fmt.Sprintf("none of the %d attempts numbered %d or later succeeded: they only delay the failure", tried, j)
		ad.Confidence = clamp01(0.5 + 0.3*min(1, float64(tried)/100))
		break
	}
	if ad.Proposed == "" {
		var last AttemptStats
		for _, b := range s.ByAttempt {
			if b.Attempt == limit {
				last = b
			}
		}
		if last.Count < minRetrySamples || last.Rate < raiseRate {
			return ad, false
		}
		up := 1
		if last.Rate >= raiseTwoRate {
			up = 2
		}
		ad.Proposed = strconv.Itoa(limit + up)
		ad.Rationale = fmt.Sprintf("the last allowed attempt (%d) still succeeds %d of %d times (%.0f%%): the step recovers on later tries", limit, last.Succeeded, last.Count, 100*last.Rate)
		ad.Confidence = clamp01(0.45 + 0.3*min(1, float64(last.Count)/100))
	}
	r := rem(ActionChangeRetryPolicy, map[string]string{"step": ps.Name, "max_attempts": ad.Proposed}, ad.Rationale, nil, ad.Confidence)
	ad.Remediation = &r
	return ad, true
}

// tuneBreaker flags agents that fail a step in repeated bursts too short
// to trip the built-in breaker: every burst sends the next steps to an
// agent that is evidently down.
func tuneBreaker(ps workflow.PlanStep, s StepStats) []Advice {
	def := breaker.DefaultPolicy().CircuitBreaker.Trip
	limit := 0
	if _, err := fmt.Sscanf(def, "consecutiveFailures > %d", &limit); err != nil {
		return nil
	}
	var out []Advice
	for _, ag := range s.Agents {
		if ag.Bursts < 2 || ag.LongestBurst > limit {
			continue
		}
		out = append(out, Advice{
			Step: ps.Name, Setting: SettingBreaker,
			Current:  def + " (built-in default; a breakers file may override it)",
			Proposed: fmt.Sprintf("consecutiveFailures > %d for %s", BurstMin-1, breaker.Target(ag.Agent, ps.Capability)),
			Rationale: fmt.Sprintf("agent %s failed step %s in %d bursts of %d or more consecutive failures (longest %d), none long enough to open the default breaker",
				ag.Agent, ps.Name, ag.Bursts, BurstMin, ag.LongestBurst),
			Confidence: clamp01(0.4 + 0.1*float64(min(ag.Bursts, 5))),
		})
	}
	return out
}
