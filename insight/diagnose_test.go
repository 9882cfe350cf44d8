package insight

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// chain is a → b → c → d, b with a retry policy listing its codes.
const chain = `name: chain
version: 1.0.0
defaults:
  timeout: 30s
  retry:
    max_attempts: 3
steps:
  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
    retry:
      max_attempts: 3
      retryable: [unavailable, timeout]
  - name: c
    capability: svc.c
    depends_on: [b]
  - name: d
    capability: svc.d
    depends_on: [c]
`

var base = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

func mins(m float64) time.Time { return base.Add(time.Duration(m * float64(time.Minute))) }

// task is chain's task with a done and b in the given state; c and d
// pending.
func task(state string, b StepSnapshot) TaskSnapshot {
	b.Name, b.Capability, b.DependsOn = "b", "svc.b", []string{"a"}
	return TaskSnapshot{ID: "t", Workflow: "chain", State: state, CreatedAt: base, Steps: []StepSnapshot{
		{Name: "a", Capability: "svc.a", State: "complete", EndedAt: mins(0.1)},
		b,
		{Name: "c", Capability: "svc.c", DependsOn: []string{"b"}, State: "pending"},
		{Name: "d", Capability: "svc.d", DependsOn: []string{"c"}, State: "pending"},
	}}
}

// att is attempt n of b.
func att(n int, agent, outcome, code, msg string, retryable bool, startMin, secs float64) Attempt {
	s := mins(startMin)
	return Attempt{TaskID: "t", Workflow: "chain", Step: "b", Capability: "svc.b", Attempt: n, DispatchedAt: s, StartedAt: s,
		EndedAt: s.Add(time.Duration(secs * float64(time.Second))), Agent: agent, Outcome: outcome, Code: code, Message: msg, Retryable: retryable,
		Timeout: 30 * time.Second, MaxAttempts: 3}
}

func timedOut(n int, agent string, start float64) Attempt {
	return att(n, agent, OutcomeTimedOut, "timeout", "no result before the deadline", true, start, 30)
}

func okRuns(step string, n int, secs ...float64) []Attempt {
	var out []Attempt
	for i := range n {
		s := mins(-100 + float64(i))
		out = append(out, Attempt{TaskID: fmt.Sprintf("o%d", i), Workflow: "chain", Step: step, Attempt: 1, StartedAt: s,
			EndedAt: s.Add(time.Duration(secs[i%len(secs)] * float64(time.Second))), Agent: []string{"x", "y"}[i%2], Outcome: OutcomeCompleted})
	}
	return out
}

func TestDiagnoseRules(t *testing.T) {
	p := load(t, chain)
	errB := func(code, msg string, retryable bool, n int) StepSnapshot {
		return StepSnapshot{State: "error", Attempts: n, LastCode: code, LastMessage: msg, LastRetryable: retryable, ReadyAt: mins(0.1), EndedAt: mins(3)}
	}
	tests := []struct {
		name       string
		in         DiagnoseInput
		noPlan     bool
		wantStatus string
		wantStep   string
		wantClass  Class
		wantAction Action // "" checks none
		wantParam  [2]string
	}{{
		name: "timeouts until the limit are a timeout",
		in: DiagnoseInput{Task: task("error", errB("timeout", "no result before the deadline", true, 3)),
			Attempts: []Attempt{timedOut(1, "x", 0.1), timedOut(2, "y", 1), timedOut(3, "x", 2)}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassTimeout,
	}, {
		name: "timeout near the p99 of successful runs proposes a longer timeout",
		in: DiagnoseInput{Task: task("error", errB("timeout", "", true, 3)),
			Attempts: []Attempt{timedOut(1, "x", 0.1), timedOut(2, "y", 1), timedOut(3, "x", 2)},
			Similar:  okRuns("b", 20, 20, 25, 28, 29)},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassTimeout, wantAction: ActionChangeTimeout, wantParam: [2]string{"timeout", "45s"},
	}, {
		name: "retryable failures of mixed codes until the limit are retry exhaustion",
		in: DiagnoseInput{Task: task("error", errB("unavailable", "503", true, 3)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "unavailable", "503", true, 0.1, 1), timedOut(2, "y", 1), att(3, "x", OutcomeFailed, "unavailable", "503", true, 2, 1)}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassRetryExhausted, wantAction: ActionEscalate,
	}, {
		name: "failures concentrated on one agent propose a reroute",
		in: DiagnoseInput{Task: task("error", errB("unavailable", "503", true, 3)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "unavailable", "503", true, 0.1, 1), att(2, "x", OutcomeFailed, "unavailable", "503", true, 1, 1), att(3, "x", OutcomeFailed, "unavailable", "503", true, 2, 1)},
			Similar:  okRuns("b", 4, 1)},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassRetryExhausted, wantAction: ActionReroute, wantParam: [2]string{"avoid_agent", "x"},
	}, {
		name: "a contract violation",
		in: DiagnoseInput{Task: task("error", errB("contract_violation", "result of step b violates its contract: /x: missing", false, 1)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "contract_violation", "result of step b violates its contract: /x: missing", false, 0.1, 1)}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassContractViolation, wantAction: ActionEscalate,
	}, {
		name:       "an input mapping failure, from the snapshot alone",
		in:         DiagnoseInput{Task: task("error", errB("input_mapping", "field x: want string", false, 1))},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassInputMapping, wantAction: ActionResolveManually,
	}, {
		name: "a permanent app error",
		in: DiagnoseInput{Task: task("error", errB("card_declined", "declined", false, 1)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "card_declined", "declined", false, 0.1, 1)}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassAppError, wantAction: ActionEscalate,
	}, {
		name: "a code the policy does not retry is permanent even if the app says retryable",
		in: DiagnoseInput{Task: task("error", errB("quota", "over quota", true, 1)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "quota", "over quota", true, 0.1, 1)}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassAppError,
	}, {
		name: "attempts lost with their agent",
		in: DiagnoseInput{Task: task("error", errB("timeout", "agent x failed while running the attempt", true, 3)),
			Attempts: []Attempt{
				att(1, "x", OutcomeTimedOut, "timeout", "agent x failed while running the attempt", true, 0.1, 5),
				att(2, "x", OutcomeTimedOut, "timeout", "its agent failed while running the attempt", true, 1, 5),
				att(3, "x", OutcomeTimedOut, "timeout", "agent x failed while running the attempt", true, 2, 5)},
			Similar: okRuns("b", 3, 1)},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassLeaseLost, wantAction: ActionReroute,
	}, {
		name: "a timeout during which gossip declared the agent failed is a lost lease",
		in: DiagnoseInput{Task: task("error", errB("timeout", "", true, 1)),
			Attempts: []Attempt{timedOut(1, "x", 0.1), timedOut(2, "x", 1), timedOut(3, "x", 2)},
			Cluster:  []ClusterEvent{{At: mins(0.2), Kind: EventMemberFailed, Subject: "x"}, {At: mins(1.2), Kind: EventMemberFailed, Subject: "x"}, {At: mins(2.2), Kind: EventMemberFailed, Subject: "x"}}},
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassLeaseLost,
	}, {
		name: "waiting behind an open breaker",
		in: DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "circuit breaker open for x/svc.b until 03:30:00; no other agent offers svc.b"}),
			Now: mins(20), Cluster: []ClusterEvent{{At: mins(0), Kind: EventBreakerOpen, Subject: "x/svc.b"}}},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassBreakerOpen, wantAction: ActionEscalate,
	}, {
		name:       "no agent offers the capability",
		in:         DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "no agent offers capability svc.b yet"}), Now: mins(20)},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassCapabilityMissing, wantAction: ActionEscalate,
	}, {
		name: "no agent offers it because its providers went down",
		in: DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "no agent offers capability svc.b yet"}), Now: mins(20),
			Cluster: []ClusterEvent{{At: mins(0), Kind: EventCapabilityUnhealthy, Subject: "svc.b"}}},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassCapabilityUnhealth,
	}, {
		name:       "every provider at its concurrency limit",
		in:         DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "every agent offering svc.b is at its concurrency limit"}), Now: mins(20)},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassCapabilityUnhealth,
	}, {
		name:       "a short wait is not stuck",
		in:         DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "no agent offers capability svc.b yet"}), Now: mins(2)},
		wantStatus: StatusRunning,
	}, {
		name:       "StuckAfter shortens the wait",
		in:         DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "pending", ReadyAt: mins(0.1), WaitReason: "no agent offers capability svc.b yet"}), Now: mins(2), StuckAfter: time.Minute},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassCapabilityMissing,
	}, {
		name:       "in flight past its deadline",
		in:         DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "in_progress", Agent: "x", StartedAt: mins(0.1), Deadline: mins(0.6)}), Now: mins(5)},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassTimeout, wantAction: ActionEscalate,
	}, {
		name: "in flight past its deadline on a failed agent",
		in: DiagnoseInput{Task: task("in_progress", StepSnapshot{State: "enqueued", Agent: "x", DispatchedAt: mins(0.1), Deadline: mins(0.6)}), Now: mins(5),
			Cluster: []ClusterEvent{{At: mins(0.2), Kind: EventMemberFailed, Subject: "x"}}},
		wantStatus: StatusStuck, wantStep: "b", wantClass: ClassLeaseLost, wantAction: ActionReroute, wantParam: [2]string{"avoid_agent", "x"},
	}, {
		name: "an error awaiting its retry is still running",
		in: DiagnoseInput{Task: task("in_progress", errB("unavailable", "503", true, 1)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "unavailable", "503", true, 0.1, 1)}, Now: mins(3.1)},
		wantStatus: StatusRunning,
	}, {
		name: "a completed task has no findings",
		in: DiagnoseInput{Task: TaskSnapshot{ID: "t", State: "complete", Steps: []StepSnapshot{{Name: "a", State: "complete"}, {Name: "b", State: "complete", DependsOn: []string{"a"}}}},
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "unavailable", "503", true, 0.1, 1), att(2, "x", OutcomeCompleted, "", "", false, 1, 1)}},
		wantStatus: StatusCompleted,
	}, {
		name: "without a plan the attempts give the limit",
		in: DiagnoseInput{Task: task("error", errB("unavailable", "503", true, 3)),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, "unavailable", "503", true, 0.1, 1), att(2, "y", OutcomeFailed, "boom", "x", true, 1, 1), att(3, "x", OutcomeFailed, "unavailable", "503", true, 2, 1)}},
		noPlan:     true,
		wantStatus: StatusFailed, wantStep: "b", wantClass: ClassRetryExhausted,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if !tt.noPlan {
				in.Plan = p
			}
			if in.Now.IsZero() {
				in.Now = mins(10)
			}
			dg := Diagnose(in)
			if dg.Status != tt.wantStatus {
				t.Errorf("status %q, want %q (%s)", dg.Status, tt.wantStatus, dg.Summary)
			}
			rc := dg.RootCause()
			if tt.wantStep == "" {
				if rc != nil {
					t.Fatalf("root cause %s/%s, want none", rc.Step, rc.Class)
				}
				return
			}
			if rc == nil {
				t.Fatalf("no root cause; want %s/%s (%s)", tt.wantStep, tt.wantClass, dg.Summary)
			}
			if rc.Step != tt.wantStep || rc.Class != tt.wantClass {
				t.Fatalf("root cause %s/%s, want %s/%s (%s)", rc.Step, rc.Class, tt.wantStep, tt.wantClass, rc.Summary)
			}
			checkFinding(t, dg, *rc)
			if tt.wantAction == "" {
				return
			}
			for _, r := range rc.Remediations {
				if r.Action != tt.wantAction {
					continue
				}
				if k := tt.wantParam[0]; k != "" && r.Params[k] != tt.wantParam[1] {
					t.Errorf("%s %s=%q, want %q", r.Action, k, r.Params[k], tt.wantParam[1])
				}
				return
			}
			t.Errorf("no %s among %+v", tt.wantAction, rc.Remediations)
		})
	}
}

// checkFinding checks the invariants every finding keeps: confidence in
// [0, 1], evidence and cites that exist, rules as the source.
func checkFinding(t *testing.T, dg *Diagnosis, f Finding) {
	t.Helper()
	ids := map[string]bool{}
	for _, e := range dg.Evidence {
		ids[e.ID] = true
	}
	if f.Confidence <= 0 || f.Confidence > 1 {
		t.Errorf("%s: confidence %v", f.Step, f.Confidence)
	}
	if len(f.Evidence) == 0 {
		t.Errorf("%s: no evidence", f.Step)
	}
	for _, id := range f.Evidence {
		if !ids[id] {
			t.Errorf("%s: evidence %s does not exist", f.Step, id)
		}
	}
	for _, r := range f.Remediations {
		if _, err := ParseAction(string(r.Action)); err != nil {
			t.Error(err)
		}
		if r.Source != "rules" || r.Confidence < 0 || r.Confidence > 1 || len(r.Cites) == 0 {
			t.Errorf("%s: remediation %+v", f.Step, r)
		}
		for _, c := range r.Cites {
			if !ids[c] || !slices.Contains(f.Evidence, c) {
				t.Errorf("%s: %s cites %s, not in the finding's evidence", f.Step, r.Action, c)
			}
		}
	}
}

func TestDiagnoseConsequences(t *testing.T) {
	p := load(t, chain)
	tk := task("error", StepSnapshot{State: "error", Attempts: 1, LastCode: "card_declined", EndedAt: mins(1)})
	tk.Steps[3].State = "cancelled"
	dg := Diagnose(DiagnoseInput{Task: tk, Plan: p, Now: mins(5)})
	var got []string
	for _, f := range dg.Findings {
		got = append(got, fmt.Sprintf("%s:%s:%s:%s", f.Step, f.Role, f.Class, f.CausedBy))
	}
	want := []string{"b:root_cause:app_error:", "c:consequence:dependency_failure:b", "d:consequence:dependency_failure:b"}
	if !slices.Equal(got, want) {
		t.Fatalf("findings %v, want %v", got, want)
	}
	if !strings.Contains(dg.Findings[2].Summary, "downstream of the root cause b") || !strings.Contains(dg.Findings[2].Summary, "cancelled") {
		t.Errorf("summary %q", dg.Findings[2].Summary)
	}
	for _, f := range dg.Findings {
		checkFinding(t, dg, f)
	}
}

// Two failures in parallel branches: the earlier is first, and a step
// below both is attributed to the earlier.
func TestDiagnoseTwoRoots(t *testing.T) {
	p := load(t, `name: fan
version: 1.0.0
steps:
  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
  - name: c
    capability: svc.c
    depends_on: [a, b]
`)
	for _, tt := range []struct {
		aEnd, bEnd float64
		first      string
	}{{1, 2, "a"}, {2, 1, "b"}} {
		tk := TaskSnapshot{ID: "t", State: "error", Steps: []StepSnapshot{
			{Name: "a", State: "error", LastCode: "x", EndedAt: mins(tt.aEnd)},
			{Name: "b", State: "error", LastCode: "y", EndedAt: mins(tt.bEnd)},
			{Name: "c", State: "pending", DependsOn: []string{"a", "b"}},
		}}
		dg := Diagnose(DiagnoseInput{Task: tk, Plan: p, Now: mins(5)})
		if len(dg.Findings) != 3 || dg.Findings[0].Step != tt.first || dg.Findings[1].Role != RoleRootCause || dg.Findings[2].CausedBy != tt.first {
			b, _ := json.MarshalIndent(dg.Findings, "", " ")
			t.Errorf("first %s: %s", tt.first, b)
		}
	}
}

func TestSimilarEvidence(t *testing.T) {
	p := load(t, chain)
	var sim []Attempt
	for i, r := range []string{"retry_succeeded", "retry_succeeded", "retry_succeeded", "dead_lettered", ""} {
		a := timedOut(1, "x", -50+float64(i))
		a.TaskID, a.Resolution = fmt.Sprintf("s%d", i), r
		sim = append(sim, a)
	}
	dg := Diagnose(DiagnoseInput{Task: task("error", StepSnapshot{State: "error", Attempts: 3, LastCode: "timeout", LastRetryable: true}), Plan: p, Now: mins(5),
		Attempts: []Attempt{timedOut(1, "x", 0), timedOut(2, "y", 1), timedOut(3, "z", 2)}, Similar: sim})
	want := "5 similar timeouts on step b in other tasks: 3 retry_succeeded, 1 dead_lettered, 1 unsettled (3 of 4 succeeded on retry)"
	found := false
	for _, e := range dg.Evidence {
		if e.Kind == "similar" {
			found = true
			if e.Text != want {
				t.Errorf("similar evidence %q, want %q", e.Text, want)
			}
		}
	}
	if !found {
		t.Fatal("no similar evidence")
	}
	rc := dg.RootCause()
	if rc.Remediations[0].Action != ActionRetryStep {
		t.Errorf("remediations %+v, want retry_step first", rc.Remediations)
	}
	if rc.Confidence != 0.9 { // 0.80 base + 0.05 consistent + 0.05 seen elsewhere
		t.Errorf("confidence %v, want 0.9", rc.Confidence)
	}
}

func TestClusterWindow(t *testing.T) {
	p := load(t, chain)
	ev := []ClusterEvent{
		{At: mins(-10), Kind: EventMemberFailed, Subject: "x", Detail: "too early"},
		{At: mins(1), Kind: EventBreakerOpen, Subject: "x/svc.b"},
		{At: mins(2), Kind: EventMemberJoined, Subject: "other", Detail: "unrelated agent"},
		{At: mins(9), Kind: EventMemberLeft, Subject: "x", Detail: "too late"},
	}
	dg := Diagnose(DiagnoseInput{Task: task("error", StepSnapshot{State: "error", Attempts: 1, LastCode: "boom", EndedAt: mins(3)}), Plan: p, Now: mins(20),
		Attempts: []Attempt{att(1, "x", OutcomeFailed, "boom", "", false, 2.9, 3)}, Cluster: ev})
	var got []string
	for _, e := range dg.Evidence {
		if e.Kind == "breaker" || e.Kind == "member" {
			got = append(got, e.Text)
		}
	}
	if !slices.Equal(got, []string{"breaker_open x/svc.b"}) {
		t.Errorf("cluster evidence %q", got)
	}
}

func TestViolations(t *testing.T) {
	tests := []struct {
		name, details, message string
		want                   []string
	}{
		{"details object", `{"violations":[{"pointer":"/a","message":"missing"},{"pointer":"","message":"not an object"}]}`, "", []string{"/a: missing", "/: not an object"}},
		{"details list", `[{"pointer":"/b","message":"too long"}]`, "whatever", []string{"/b: too long"}},
		{"message", "", "result of step x violates its contract: /a: missing; /b: wrong type", []string{"/a: missing", "/b: wrong type"}},
		{"bad details fall back to the message", "{not json", "result of step x violates its contract: /a: missing", []string{"/a: missing"}},
		{"plain message", "", "result is over the payload limit of 10 bytes", []string{"result is over the payload limit of 10 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := violations(tt.details, tt.message); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// The same input gives byte-identical JSON, whatever order the attempts,
// similar attempts and events come in.
func TestDiagnoseDeterministic(t *testing.T) {
	scs, err := LoadScenarios(evalDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scs {
		if s.Kind != ScenarioDiagnose {
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			in, err := ScenarioInput(s)
			if err != nil {
				t.Fatal(err)
			}
			first, _ := json.Marshal(Diagnose(in))
			again, _ := json.Marshal(Diagnose(in))
			if string(first) != string(again) {
				t.Fatalf("two runs differ:\n%s\n%s", first, again)
			}
			in.Attempts, in.Similar, in.Cluster = slices.Clone(in.Attempts), slices.Clone(in.Similar), slices.Clone(in.Cluster)
			slices.Reverse(in.Attempts)
			slices.Reverse(in.Similar)
			slices.Reverse(in.Cluster)
			rev, _ := json.Marshal(Diagnose(in))
			if string(first) != string(rev) {
				t.Fatalf("reversed input differs:\n%s\n%s", first, rev)
			}
		})
	}
}

// A permanent code the error contract declares is a business outcome: an
// operator settles it first. An undeclared one is a fault to escalate.
func TestAppErrorRemediationOrder(t *testing.T) {
	declared := strings.Replace(chain, "  - name: c\n", "    error_schema:\n      type: object\n      properties:\n        code: {enum: [declined, unavailable, timeout]}\n  - name: c\n", 1)
	for _, tt := range []struct {
		manifest, code string
		first          Action
	}{{declared, "declined", ActionResolveManually}, {chain, "declined", ActionEscalate}} {
		dg := Diagnose(DiagnoseInput{Plan: load(t, tt.manifest), Now: mins(5),
			Task:     task("error", StepSnapshot{State: "error", Attempts: 1, LastCode: tt.code, EndedAt: mins(1)}),
			Attempts: []Attempt{att(1, "x", OutcomeFailed, tt.code, "", false, 0.5, 1)}})
		rc := dg.RootCause()
		if rc == nil || rc.Class != ClassAppError || rc.Remediations[0].Action != tt.first {
			t.Errorf("%s: %+v, want %s first", tt.code, rc, tt.first)
		}
	}
}

// A step still retrying when its task stopped explains nothing: the
// explained failure ranks first even though it came later.
func TestUnexplainedRootRanksLast(t *testing.T) {
	p := load(t, `name: fan
version: 1.0.0
steps:
  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
  - name: c
    capability: svc.c
    depends_on: [a, b]
`)
	tk := TaskSnapshot{ID: "t", State: "error", Steps: []StepSnapshot{
		{Name: "a", State: "error", Attempts: 1, LastCode: "unavailable", LastRetryable: true, EndedAt: mins(1)},
		{Name: "b", State: "error", Attempts: 1, LastCode: "bad_input", EndedAt: mins(2)},
		{Name: "c", State: "pending", DependsOn: []string{"a", "b"}},
	}}
	dg := Diagnose(DiagnoseInput{Task: tk, Plan: p, Now: mins(5)})
	var got []string
	for _, f := range dg.Findings {
		got = append(got, f.Step+":"+string(f.Class)+":"+f.CausedBy)
	}
	if want := []string{"b:app_error:", "a:unknown:", "c:dependency_failure:b"}; !slices.Equal(got, want) {
		t.Errorf("findings %v, want %v", got, want)
	}
}
