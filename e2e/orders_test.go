package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// TestOrdersComplete runs a batch of orders through one agent and the
// example services, payments flaky, and checks every task completes with
// the results the services returned, each attempt executed once.
func TestOrdersComplete(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{})
	svc := startServices(t, a.addr, nil, "-flaky", "0.25", "-seed", "11")
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}

	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tasks := make([]*taskerv1.Task, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("ord_e2e%03d", i)
			task, created, err := c.StartTask(ctx, "order-fulfilment", orderInput(id, "tok_visa", "TEE-M"),
				client.Namespace("shop"), client.IdempotencyKey(id))
			if err != nil {
				errs <- err
				return
			}
			if !created {
				errs <- fmt.Errorf("%s: created = false for a new idempotency key", id)
			}
			if tasks[i], err = c.Wait(ctx, task.GetId()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, task := range tasks {
		if task.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
			t.Errorf("task %s is %s, want complete", task.GetId(), task.GetState())
		}
	}
	// Wait returns the task as its watch saw it; the results come with
	// GetTask.
	for i, task := range tasks {
		var err error
		if tasks[i], err = c.GetTask(callCtx(t), task.GetId()); err != nil {
			t.Fatal(err)
		}
	}
	execs := svc.executions(t)
	checkRuns(t, tasks, execs, nil)

	retries := 0
	for _, task := range tasks {
		for _, st := range task.GetSteps() {
			k := stepKey{task.GetId(), st.GetName()}
			// Without crashes, every attempt ran exactly once: attempts
			// 1..n, all failed but the last.
			var got []string
			for _, e := range execs[k] {
				got = append(got, fmt.Sprintf("%d:%s", e.Attempt, e.Outcome))
			}
			sort.Strings(got)
			var want []string
			for at := 1; at <= int(st.GetAttempts()); at++ {
				outcome := "ok"
				if at < int(st.GetAttempts()) {
					outcome = "gateway_unavailable"
				}
				want = append(want, fmt.Sprintf("%d:%s", at, outcome))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: executions (attempt:outcome) %v, want %v", k, got, want)
			}
			retries += int(st.GetAttempts()) - 1
			if st.GetName() != "charge" && st.GetAttempts() != 1 {
				t.Errorf("%s: %d attempts; only charge is flaky", k, st.GetAttempts())
			}
		}
		checkOrderResults(t, task)
	}
	if retries == 0 {
		t.Errorf("no charge was retried: the flaky payments service did not fail (seed changed?)")
	}
	t.Logf("%d tasks complete, %d retries", n, retries)
}

// checkRuns checks the services' journal against the tasks the agent
// reports:
//
//   - every step done by a service has, in the journal, an execution of
//     its final attempt that returned exactly its result_json: no result
//     is lost or mixed up;
//   - no execution ran an attempt beyond the step's final attempt count;
//   - no execution that did work began after the step completed: a
//     completed step never runs again.
//
// committedBefore, if not nil, maps the steps known complete at a moment
// to that moment: no execution of them may begin after it.
func checkRuns(t *testing.T, tasks []*taskerv1.Task, execs map[stepKey][]execution, committedBefore map[stepKey]time.Time) {
	t.Helper()
	for _, task := range tasks {
		for _, st := range task.GetSteps() {
			k := stepKey{task.GetId(), st.GetName()}
			for _, e := range execs[k] {
				if e.Attempt > int(st.GetAttempts()) {
					t.Errorf("%s: attempt %d executed at %s, but the step has %d attempts", k, e.Attempt, e.Time.Format(time.RFC3339Nano), st.GetAttempts())
				}
				if !e.didWork() {
					continue
				}
				if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE && e.Time.After(st.GetEndedAt().AsTime()) {
					t.Errorf("%s: attempt %d began at %s, after the step completed at %s: a completed step ran again",
						k, e.Attempt, e.Time.Format(time.RFC3339Nano), st.GetEndedAt().AsTime().Format(time.RFC3339Nano))
				}
				if at, ok := committedBefore[k]; ok && e.Time.After(at) {
					t.Errorf("%s: attempt %d began at %s, but the step's completion was committed before %s", k, e.Attempt,
						e.Time.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
				}
			}
			if st.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE {
				continue
			}
			found := false
			for _, e := range execs[k] {
				if e.Attempt == int(st.GetAttempts()) && e.Outcome == "ok" && sameJSON(e.Result, []byte(st.GetResultJson())) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: result_json %s (attempt %d) is not what any execution of that attempt returned; executions: %s",
					k, st.GetResultJson(), st.GetAttempts(), describe(execs[k]))
			}
		}
	}
}

// checkOrderResults checks that a complete order's results look like the
// services' work for this task.
func checkOrderResults(t *testing.T, task *taskerv1.Task) {
	t.Helper()
	want := map[string]func(map[string]any) bool{
		"validate": func(r map[string]any) bool { return r["valid"] == true },
		"reserve":  func(r map[string]any) bool { return strings.HasPrefix(fmt.Sprint(r["reservation_id"]), "res_") },
		"charge":   func(r map[string]any) bool { return strings.HasPrefix(fmt.Sprint(r["charge_id"]), "ch_") },
		"ship":     func(r map[string]any) bool { return r["carrier"] == "Royal Mail" && r["tracking_number"] != "" },
		"notify":   func(r map[string]any) bool { return strings.HasPrefix(fmt.Sprint(r["message_id"]), "msg_") },
	}
	for _, st := range task.GetSteps() {
		var r map[string]any
		if err := json.Unmarshal([]byte(st.GetResultJson()), &r); err != nil {
			t.Errorf("%s/%s: result_json %q: %v", task.GetId(), st.GetName(), st.GetResultJson(), err)
			continue
		}
		if ok := want[st.GetName()]; ok == nil || !ok(r) {
			t.Errorf("%s/%s: unexpected result %s", task.GetId(), st.GetName(), st.GetResultJson())
		}
	}
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// describe lists executions for a failure message.
func describe(es []execution) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("{attempt %d at %s: %s %s}", e.Attempt, e.Time.Format("15:04:05.000"), e.Outcome, e.Result))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
