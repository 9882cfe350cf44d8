package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight/llm/llmtest"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
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
		"the median of completed attempts over the last 5 task(s)", "validate → reserve: reserve reads nothing from validate", "-    depends_on: [validate]")
	// Bad input changes nothing and names the fix.
	if r := tasker(t, a.addr, "ai", "optimize", "shop/nope"); r.code != 1 {
		t.Fatalf("an unknown workflow: exit %d, want 1: %s", r.code, r.stderr)
	}
	if r := tasker(t, a.addr, "ai", "optimize", "shop/order-fulfilment", "-tasks", "-1"); r.code != 2 || !strings.Contains(r.stderr, "-tasks -1 is out of range") {
		t.Fatalf("-tasks -1: exit %d, want 2 naming the flag: %s", r.code, r.stderr)
	}
}

// declinedOrder runs three good orders and one whose card is declined
// against a real agent and returns the agent and the failed task's id,
// once the failure is committed.
func declinedOrder(t *testing.T, cfg agentConfig) (*agentProc, string) {
	t.Helper()
	a := startAgent(t, cfg)
	startServices(t, a.addr, []string{"-delay", "1ms-5ms"})
	cl := newClient(a.addr)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	startBatch(t, cl, "good", 3).waitAllComplete(t, 60*time.Second)
	task, _, err := cl.StartTask(callCtx(t), "order-fulfilment", orderInput("ord_declined1", "tok_declined", "TEE-M"), client.Namespace("shop"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the declined order fails", func(ctx context.Context) (bool, error) {
		got, err := cl.GetTask(ctx, task.GetId())
		if err != nil {
			return false, nil
		}
		return got.GetState() == taskerv1.TaskState_TASK_STATE_ERROR, nil
	})
	return a, task.GetId()
}

// TestAIDiagnose: a declined card is diagnosed through the real binary as
// the root cause (an app error with its code), the steps it held back as
// its consequences, with evidence every finding and remediation cites;
// the execution history shows the attempt settled as dead-lettered, and
// the analysis measures every step. No model is configured, and the
// diagnosis says so when asked to explain.
func TestAIDiagnose(t *testing.T) {
	a, id := declinedOrder(t, agentConfig{})

	var d taskerv1.DiagnoseResponse
	tasker(t, a.addr, "ai", "diagnose", id, "-explain", "-o", "json").must(t, "tasker ai diagnose", 0).decode(t, &d)
	if d.GetStatus() != "failed" || len(d.GetFindings()) != 3 {
		t.Fatalf("want a failed task with 3 findings (charge, ship, notify), got %s with %d: %v", d.GetStatus(), len(d.GetFindings()), d.GetFindings())
	}
	root := d.GetFindings()[0]
	if root.GetStep() != "charge" || root.GetRole() != "root_cause" || root.GetClass() != "app_error" || root.GetCode() != "card_declined" {
		t.Fatalf("root cause = %s %s %s %s, want charge root_cause app_error card_declined", root.GetStep(), root.GetRole(), root.GetClass(), root.GetCode())
	}
	ids := map[string]bool{}
	for _, e := range d.GetEvidence() {
		ids[e.GetId()] = true
	}
	for _, f := range d.GetFindings()[1:] {
		if f.GetRole() != "consequence" || f.GetClass() != "dependency_failure" || f.GetCausedBy() != "charge" {
			t.Errorf("finding %s: %s %s caused by %q, want a dependency_failure consequence of charge", f.GetStep(), f.GetRole(), f.GetClass(), f.GetCausedBy())
		}
	}
	for _, f := range d.GetFindings() {
		for _, e := range f.GetEvidence() {
			if !ids[e] {
				t.Errorf("finding %s cites %s, which is not in the evidence", f.GetStep(), e)
			}
		}
		for _, r := range f.GetRemediations() {
			if len(r.GetCites()) == 0 || r.GetSource() != "rules" {
				t.Errorf("remediation %s of %s: cites %v, source %q; want evidence and source rules", r.GetAction(), f.GetStep(), r.GetCites(), r.GetSource())
			}
		}
	}
	if !strings.Contains(d.GetModelNote(), "no language model is configured") {
		t.Errorf("model_note = %q, want it to say no model is configured", d.GetModelNote())
	}
	tasker(t, a.addr, "ai", "diagnose", id).must(t, "tasker ai diagnose", 0, "Root cause charge: app_error", "Consequence ship: dependency_failure", "caused by: charge")

	var h taskerv1.ListAttemptsResponse
	tasker(t, a.addr, "ai", "history", "-task", id, "-step", "charge", "-o", "json").must(t, "tasker ai history", 0).decode(t, &h)
	if len(h.GetAttempts()) != 1 {
		t.Fatalf("history of charge: %d records, want 1: %v", len(h.GetAttempts()), h.GetAttempts())
	}
	if r := h.GetAttempts()[0]; r.GetOutcome() != "failed" || r.GetCode() != "card_declined" || r.GetResolution() != "dead_lettered" || r.GetStartedAt() == nil || r.GetAgent() == "" {
		t.Fatalf("charge's record = %v, want failed card_declined, settled dead_lettered, with its start and agent", r)
	}
	var an taskerv1.AnalyzeResponse
	tasker(t, a.addr, "ai", "analyze", "shop/order-fulfilment", "-window", "1d", "-o", "json").must(t, "tasker ai analyze", 0).decode(t, &an)
	if an.GetTasks() != 4 || len(an.GetSteps()) != 5 || len(an.GetCriticalPath()) == 0 {
		t.Fatalf("analysis: %d tasks, %d steps, critical path %v; want 4 tasks, 5 steps and a path", an.GetTasks(), len(an.GetSteps()), an.GetCriticalPath())
	}
	// Bad input changes nothing and names the fix.
	if r := tasker(t, a.addr, "ai", "diagnose", "tsk_nope"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("an unknown task: exit %d, want 1 saying not found: %s", r.code, r.stderr)
	}
	if r := tasker(t, a.addr, "ai", "history", "-outcome", "lost"); r.code != 1 || !strings.Contains(r.stderr, "outcome") {
		t.Fatalf("-outcome lost: exit %d, want 1 naming the field: %s", r.code, r.stderr)
	}
	if r := tasker(t, a.addr, "ai", "analyze", "shop/order-fulfilment", "-window", "7x"); r.code != 2 || !strings.Contains(r.stderr, "-window") {
		t.Fatalf("-window 7x: exit %d, want 2 naming the flag: %s", r.code, r.stderr)
	}
}

// TestAIExplain: with a model configured (a local OpenAI-compatible
// server playing scripted answers), a diagnosis carries the model's
// explanation; its malformed first answer is repaired once, and what the
// checks drop (an action outside the vocabulary, a remediation citing
// nothing) or cap (a confidence no rule backs) is said in model_note. No
// secret reaches the model: the key goes in the Authorization header only.
func TestAIExplain(t *testing.T) {
	good := `{"summary":"The card was declined.","explanation":"The issuer declined the card; nothing downstream ran.",
	  "remediations":[
	    {"action":"cancel","params":{"task":null,"step":null,"avoid_agent":null,"timeout":null,"max_attempts":null},"rationale":"the order cannot be paid","cites":["e1"],"confidence":0.97},
	    {"action":"reboot_the_bank","params":{"task":null,"step":null,"avoid_agent":null,"timeout":null,"max_attempts":null},"rationale":"?","cites":["e1"],"confidence":0.5},
	    {"action":"retry_step","params":{"task":null,"step":"charge","avoid_agent":null,"timeout":null,"max_attempts":null},"rationale":"maybe","cites":[],"confidence":0.9}]}`
	srv := llmtest.New(t, llmtest.Reply{Content: "The card was declined, I think."}, llmtest.Reply{Content: good})
	t.Setenv("E2E_MODEL_KEY", "sk-e2e-secret")
	a, id := declinedOrder(t, agentConfig{configFile: "ai_endpoint: " + srv.URL() + "\nai_model: scripted\nai_api_key_env: E2E_MODEL_KEY\n"})

	var d taskerv1.DiagnoseResponse
	tasker(t, a.addr, "ai", "diagnose", id, "-explain", "-o", "json").must(t, "tasker ai diagnose -explain", 0).decode(t, &d)
	if !strings.Contains(d.GetExplanation(), "The issuer declined the card") {
		t.Fatalf("explanation = %q, want the model's", d.GetExplanation())
	}
	if len(srv.Requests()) != 2 {
		t.Fatalf("the model was asked %d times, want 2 (one repair of the malformed answer)", len(srv.Requests()))
	}
	for _, want := range []string{"reboot_the_bank", "cites no evidence"} {
		if !strings.Contains(d.GetModelNote(), want) {
			t.Errorf("model_note %q does not say %q", d.GetModelNote(), want)
		}
	}
	var model []*taskerv1.Remediation
	for _, f := range d.GetFindings() {
		for _, r := range f.GetRemediations() {
			if r.GetSource() == "model" {
				model = append(model, r)
			}
		}
	}
	// cancel is also a rule's remediation here, so the model's confidence
	// stands; nothing else survived the checks.
	if len(model) != 1 || model[0].GetAction() != "cancel" {
		t.Fatalf("model remediations = %v, want only cancel", model)
	}
	for i, r := range srv.Requests() {
		if got := r.Header.Get("Authorization"); got != "Bearer sk-e2e-secret" {
			t.Errorf("request %d: Authorization %q, want the key from E2E_MODEL_KEY", i, got)
		}
		if strings.Contains(string(r.Body), "sk-e2e-secret") {
			t.Errorf("request %d: the API key is in the prompt", i)
		}
	}
}
