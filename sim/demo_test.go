package sim_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/sim"
	"github.com/tasker-run/tasker/workflow"
)

// On every example the demo tells its three stories: a retry that ends in
// completion, a broken result that blocks the task before its last step,
// and an input that is refused.
func TestDemoExamples(t *testing.T) {
	for _, name := range []string{"order-fulfilment", "user-onboarding", "fan-out-fan-in"} {
		t.Run(name, func(t *testing.T) {
			p := example(t, name)
			runs, err := sim.Demo(p, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(runs) != 3 {
				t.Fatalf("%d scenarios, want 3", len(runs))
			}

			happy := runs[0]
			if happy.Task.State != workflow.TaskComplete {
				t.Errorf("scenario 1: task %v, want complete", happy.Task.State)
			}
			retried := 0
			for _, r := range happy.Log {
				if r.Retry {
					retried++
				}
			}
			if retried != 1 {
				t.Errorf("scenario 1: %d retries, want 1", retried)
			}

			broken := runs[1]
			if broken.Task.State != workflow.TaskError {
				t.Errorf("scenario 2: task %v, want error", broken.Task.State)
			}
			var violation *sim.Record
			for i, r := range broken.Log {
				if r.Code == workflow.CodeContractViolation {
					violation = &broken.Log[i]
				}
			}
			if violation == nil || violation.Retry || violation.Detail == "" {
				t.Errorf("scenario 2: violation %+v, want one, explained, not retried", violation)
			}
			if !strings.Contains(broken.Title, violation.Step) {
				t.Errorf("scenario 2: title %q does not name the step that breaks its contract", broken.Title)
			}

			refused := runs[2]
			if refused.Refused == nil || len(refused.Log) != 0 {
				t.Errorf("scenario 3: refused %v with %d records, want refused with none", refused.Refused, len(refused.Log))
			}
		})
	}
}

// The demo the CLI prints by default: payments.charge is the flaky step,
// because it allows the most attempts of the steps that retry a code of
// their own, and ship's broken result leaves notify undispatched.
func TestDemoOrderFulfilment(t *testing.T) {
	runs, err := sim.Demo(example(t, "order-fulfilment"), nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	var retry sim.Record
	for _, r := range runs[0].Log {
		if r.Retry {
			retry = r
		}
	}
	if retry.Step != "charge" || retry.Code != "gateway_unavailable" {
		t.Errorf("retried %s with %s, want charge with gateway_unavailable", retry.Step, retry.Code)
	}
	steps := runs[1].Task.Steps
	if ship, notify := steps[3], steps[4]; ship.State != workflow.StepError || notify.Attempts != 0 {
		t.Errorf("ship %v, notify %d attempts; want ship failed and notify never dispatched", ship.State, notify.Attempts)
	}
}

func TestDemoIsDeterministic(t *testing.T) {
	p := example(t, "user-onboarding")
	a, errA := sim.Demo(p, nil, 3)
	b, errB := sim.Demo(p, nil, 3)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("two demos with seed 3 differ")
	}
}

// A workflow that can neither retry nor break a contract still runs.
func TestDemoMinimal(t *testing.T) {
	p := plan(t, `
name: tiny
version: 1.0.0
defaults: {retry: {max_attempts: 1}}
steps:
  - {name: a, capability: x.a}
  - {name: b, capability: x.b, depends_on: [a]}
`)
	runs, err := sim.Demo(p, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Task.State != workflow.TaskComplete {
		t.Errorf("got %d scenarios, first %v; want one that completes", len(runs), runs[0].Task.State)
	}
}

// A given input replaces the sample; an input that cannot be sampled asks
// for one.
func TestDemoInput(t *testing.T) {
	p := plan(t, `
name: in
version: 1.0.0
input_schema: {type: object, required: [n], properties: {n: {type: integer, minimum: 5}}}
steps: [{name: a, capability: x.a}]
`)
	runs, err := sim.Demo(p, map[string]any{"n": 7}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := runs[0].Input; !reflect.DeepEqual(got, map[string]any{"n": 7}) {
		t.Errorf("input %v, want the one given", got)
	}

	p = plan(t, `
name: in
version: 1.0.0
input_schema: {type: object, required: [s], properties: {s: {type: string, not: {minLength: 0}}}}
steps: [{name: a, capability: x.a}]
`)
	if _, err := sim.Demo(p, nil, 1); err == nil || !strings.Contains(err.Error(), "sample input") {
		t.Errorf("Demo error = %v, want one asking for an input", err)
	}
}

// Simulated durations depend on the capability and step only, and stay
// in the documented range.
func TestSampleDuration(t *testing.T) {
	if a, b := sim.SampleDuration("payments.charge", "charge"), sim.SampleDuration("payments.charge", "charge"); a != b {
		t.Errorf("SampleDuration is not stable: %v then %v", a, b)
	}
	for _, c := range []string{"a.b", "payments.charge", "search.index_shard", "x.y"} {
		for _, s := range []string{"a", "index_0", "charge"} {
			if d := sim.SampleDuration(c, s); d < 75*time.Millisecond || d > 1125*time.Millisecond {
				t.Errorf("SampleDuration(%s, %s) = %v, outside 75ms..1.125s", c, s, d)
			}
		}
	}
}
