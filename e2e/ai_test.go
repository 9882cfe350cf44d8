package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// TestAIOptimize runs `tasker ai optimize` against a real agent that has
// run the order workflow: durations come from the tasks it ran, the
// ordering-only edge validate → reserve is proposed for removal, and the
// proposed manifest loads without it.
func TestAIOptimize(t *testing.T) {
	a := startAgent(t, agentConfig{})
	startServices(t, a.addr, []string{"-delay", "5ms-15ms"})
	cl := newClient(a.addr)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, cl, "ai", 5)
	b.waitAllComplete(t, 60*time.Second)

	r := tasker(t, a.addr, "ai", "optimize", "shop/order-fulfilment", "-o", "json")
	r.must(t, "tasker ai optimize", 0)
	var out struct {
		Removed []struct {
			Parent, Child string
		} `json:"removed"`
		Tasks     int              `json:"tasks_measured"`
		Measured  map[string]int64 `json:"measured_p50_ms"`
		Estimated []string         `json:"estimated_from_timeouts"`
		SavedMS   int64            `json:"saved_ms"`
		BeforeMS  int64            `json:"critical_path_before_ms"`
		AfterMS   int64            `json:"critical_path_after_ms"`
		Manifest  string           `json:"manifest"`
		Diff      string           `json:"diff"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if out.Tasks != 5 || len(out.Measured) != 5 || len(out.Estimated) != 0 {
		t.Fatalf("want durations of all 5 steps from the 5 tasks, got %d tasks, measured %v, estimated %v", out.Tasks, out.Measured, out.Estimated)
	}
	if len(out.Removed) != 1 || out.Removed[0].Parent != "validate" || out.Removed[0].Child != "reserve" || out.Diff == "" {
		t.Fatalf("want validate → reserve proposed with a diff, got %+v, saved %d ms", out.Removed, out.SavedMS)
	}
	// The saving is the critical path's, measured: reserve no longer waits
	// for validate, so the path cannot grow.
	// (Each figure is truncated to whole milliseconds on its own.)
	if d := out.SavedMS - (out.BeforeMS - out.AfterMS); out.BeforeMS <= 0 || out.AfterMS > out.BeforeMS || d < -1 || d > 1 {
		t.Fatalf("critical path %d ms before, %d ms after, saved %d ms: want after <= before and saved = before - after (±1 ms)", out.BeforeMS, out.AfterMS, out.SavedMS)
	}
	plan, err := workflow.Load([]byte(out.Manifest), workflow.Limits{})
	if err != nil {
		t.Fatalf("the proposed manifest does not load: %v", err)
	}
	i, _ := plan.StepIndex("reserve")
	if parents := plan.Parents(i); len(parents) != 0 {
		t.Fatalf("reserve still depends on %v in the proposed manifest", parents)
	}
	// The table form says where its numbers come from.
	tasker(t, a.addr, "ai", "optimize", "shop/order-fulfilment").must(t, "tasker ai optimize", 0,
		"the median over 5 complete task(s)", "validate → reserve: reserve reads nothing from validate", "-    depends_on: [validate]")
	// Bad input changes nothing and names the fix.
	if r := tasker(t, a.addr, "ai", "optimize", "shop/nope"); r.code != 1 {
		t.Fatalf("an unknown workflow: exit %d, want 1: %s", r.code, r.stderr)
	}
	if r := tasker(t, a.addr, "ai", "optimize", "shop/order-fulfilment", "-tasks", "-1"); r.code != 2 || !strings.Contains(r.stderr, "-tasks -1 is out of range") {
		t.Fatalf("-tasks -1: exit %d, want 2 naming the flag: %s", r.code, r.stderr)
	}
}
