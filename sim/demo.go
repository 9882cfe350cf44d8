package sim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// DemoRun is one scenario of the demo and what came of it.
type DemoRun struct {
	// Title says what the scenario shows.
	Title string
	// Input is the task input the scenario started with.
	Input any
	// Refused is the input contract's verdict when the task was refused;
	// Log and Task are then empty.
	Refused error
	Log     []Record
	Task    TaskReport
}

// DemoLatency is the simulated time between a dispatch and the app
// starting the step: a round trip between sidecars on one network.
const DemoLatency = 3 * time.Millisecond

// Demo runs the scenarios `tasker demo` shows on any valid plan, each as
// its own simulation from time zero:
//
//  1. a task that completes, where one step's first attempt fails with a
//     retryable error so that the backoff shows;
//  2. a task where one step returns a result that breaks its contract,
//     which fails the step for good, blocks the task and leaves the steps
//     downstream undispatched;
//  3. a task whose input breaks the input contract, which is refused.
//
// Scenarios that the plan cannot show (no step can be retried, no result
// contract, no input contract) are left out. Simulated apps answer with
// samples of their steps' result contracts (see Sample) after a duration
// derived from the capability, so runs differ only by seed. A nil input
// means a sample of the input contract.
func Demo(plan *workflow.Plan, input any, seed uint64) ([]DemoRun, error) {
	if input == nil {
		in, err := Sample(contractDoc(plan.Input))
		if err == nil {
			err = plan.Input.Check("input", mustNormalize(in))
		}
		if err != nil {
			return nil, fmt.Errorf("cannot make a sample input from the input contract (%w); provide one", err)
		}
		input = in
	}
	results := make([]any, len(plan.Steps))
	for i, st := range plan.Steps {
		r, err := Sample(contractDoc(st.Result))
		if err == nil {
			err = st.Result.Check("result of step "+st.Name, mustNormalize(r))
		}
		if err != nil {
			return nil, fmt.Errorf("cannot make a sample result for step %s: %w", st.Name, err)
		}
		results[i] = r
	}
	// Durations stay well inside each step's timeout: the demo shows
	// retries by failures, not by timeouts.
	dur := func(st workflow.PlanStep) time.Duration {
		return min(SampleDuration(st.Capability, st.Name), st.Timeout/2)
	}
	base := func() map[string]Handler {
		hs := make(map[string]Handler, len(plan.Steps))
		for i, st := range plan.Steps {
			hs[st.Name] = answer(results[i], dur(st))
		}
		return hs
	}

	var runs []DemoRun
	happy := base()
	title := "a task runs to completion"
	if i, code, ok := flakyStep(plan); ok {
		st := plan.Steps[i]
		happy[st.Name] = flaky(happy[st.Name], code, dur(st)/2)
		title = fmt.Sprintf("%s fails once with %s and is retried after its backoff", st.Capability, code)
	}
	run, err := demoRun(plan, title, input, seed, happy)
	if err != nil {
		return nil, err
	}
	runs = append(runs, run)

	if i, ok := brittleStep(plan); ok {
		st := plan.Steps[i]
		hs := base()
		hs[st.Name] = answer(map[string]any{}, dur(st))
		title := fmt.Sprintf("%s returns {}, breaking step %s's result contract: the task is blocked", st.Capability, st.Name)
		run, err := demoRun(plan, title, input, seed, hs)
		if err != nil {
			return nil, err
		}
		runs = append(runs, run)
	}

	if plan.Input != nil && plan.Input.Check("input", map[string]any{}) != nil {
		run, err := demoRun(plan, "a task whose input is {} breaks the input contract and is refused", map[string]any{}, seed, base())
		if err != nil {
			return nil, err
		}
		runs = append(runs, run)
	}
	return runs, nil
}

func demoRun(plan *workflow.Plan, title string, input any, seed uint64, steps map[string]Handler) (DemoRun, error) {
	run := DemoRun{Title: title, Input: input}
	s, err := New(plan, Config{Seed: seed, Latency: DemoLatency, Steps: steps})
	if err != nil {
		return run, err
	}
	t, err := s.AddTask(input)
	var ce *workflow.ContractError
	if errors.As(err, &ce) {
		run.Refused = ce
		return run, nil
	}
	if err != nil {
		return run, err
	}
	if err := s.Run(); err != nil {
		return run, err
	}
	run.Log = s.Log()
	run.Task, err = s.Report(t)
	return run, err
}

// flakyStep picks the step the demo makes fail once: the one allowed the
// most attempts among those that retry a code of their own (a step that
// retries only on the app's say-so comes second), so that the retry is
// what the manifest's author planned for.
func flakyStep(plan *workflow.Plan) (step int, code string, ok bool) {
	best, bestScore := -1, 0
	for i, st := range plan.Steps {
		if st.Retry.MaxAttempts < 2 {
			continue
		}
		c, named := "", false
		for _, r := range st.Retry.Retryable {
			if r != workflow.CodeTimeout && r != workflow.CodeContractViolation {
				c, named = r, true
				break
			}
		}
		if !named {
			if len(st.Retry.Retryable) > 0 {
				continue // only timeouts are retried: the demo does not time out
			}
			c = "unavailable"
			if len(st.ErrorCodes) > 0 {
				c = st.ErrorCodes[0]
			}
		}
		score := st.Retry.MaxAttempts
		if named {
			score += 1000
		}
		if score > bestScore {
			best, bestScore, code = i, score, c
		}
	}
	return best, code, best >= 0
}

// brittleStep picks the step whose result the demo breaks: the deepest
// one whose contract rejects an empty object, so that the most of the
// workflow runs before the task is blocked.
func brittleStep(plan *workflow.Plan) (int, bool) {
	best := -1
	for i, st := range plan.Steps {
		if st.Result == nil || st.Result.Check("", map[string]any{}) == nil {
			continue
		}
		if best < 0 || st.Level >= plan.Steps[best].Level {
			best = i
		}
	}
	return best, best >= 0
}

// answer is a handler that always succeeds with result after d.
func answer(result any, d time.Duration) Handler {
	return func(any, int) (any, time.Duration, *workflow.Failure) { return result, d, nil }
}

// flaky wraps h so that the first attempt fails with code after d.
func flaky(h Handler, code string, d time.Duration) Handler {
	return func(input any, attempt int) (any, time.Duration, *workflow.Failure) {
		if attempt == 1 {
			return nil, d, &workflow.Failure{Code: code, Retryable: true}
		}
		return h(input, attempt)
	}
}

// SampleDuration is how long a simulated app takes to run a step: a base
// between 100ms and 900ms fixed by the capability (the same app is as
// fast for every step), spread ±25% by the step name so that parallel
// steps of one capability do not finish in lockstep. It is a hash, not a
// random draw, so it does not depend on the seed.
func SampleDuration(capability, step string) time.Duration {
	base := 100 + hash(capability)%801 // ms
	spread := 75 + hash(step)%51       // percent
	return time.Duration(base*spread/100) * time.Millisecond
}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func contractDoc(c *workflow.Contract) any {
	if c == nil {
		return nil
	}
	return c.Doc()
}

// mustNormalize is normalize for values Sample made, which are always JSON.
func mustNormalize(v any) any {
	n, err := normalize(v)
	if err != nil {
		return v
	}
	return n
}
