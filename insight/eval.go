package insight

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// The evaluation set: recorded failure scenarios with the root cause a
// person found, replayed through Diagnose to measure how often its first
// finding names the right step and class, and dependency-optimizer
// scenarios with the edges it must remove. insight/testdata/eval holds the
// set; TestEval and insight/cmd/eval replay it.

// Scenario kinds.
const (
	ScenarioDiagnose = "diagnose"
	ScenarioOptimize = "optimize"
)

// MinAccuracy is the top-1 accuracy below which the evaluation fails.
const MinAccuracy = 0.9

// Scenario is one evaluation case.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Kind is "diagnose" (the default) or "optimize".
	Kind string `json:"kind,omitempty"`
	// Manifest is the workflow's YAML; it compiles to the Plan.
	Manifest string         `json:"manifest"`
	Task     TaskSnapshot   `json:"task,omitzero"`
	Attempts []Attempt      `json:"attempts,omitempty"`
	Similar  []Attempt      `json:"similar,omitempty"`
	Cluster  []ClusterEvent `json:"cluster,omitempty"`
	Now      time.Time      `json:"now,omitzero"`
	// StuckAfter is a duration ("5m"); "" means DefaultStuckAfter.
	StuckAfter string `json:"stuck_after,omitempty"`
	// Durations are the optimizer's measured p50s by step ("1.5s").
	Durations map[string]string `json:"durations,omitempty"`
	Expect    Expectation       `json:"expect"`
}

// Expectation is what a scenario must produce.
type Expectation struct {
	// RootStep and Class are the first finding's, for a diagnosis.
	RootStep string `json:"root_step,omitempty"`
	Class    Class  `json:"class,omitempty"`
	// Action, when set, must be the root finding's first (most
	// confident) remediation.
	Action Action `json:"action,omitempty"`
	// CausedBy, when set, maps steps that must be found as consequences
	// to the root-cause step they are attributed to.
	CausedBy map[string]string `json:"caused_by,omitempty"`
	// Removed are the edges ("parent->child") the optimizer must remove,
	// in any order; an empty list expects none.
	Removed []string `json:"removed,omitempty"`
}

// ScenarioResult is one scenario's replay.
type ScenarioResult struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
	// Top1 reports whether the first finding (or the removed edges) was
	// right; ActionOK whether the expected remediation was proposed (true
	// when none was expected); OK both.
	Top1     bool   `json:"top1"`
	ActionOK bool   `json:"action_ok"`
	OK       bool   `json:"ok"`
	Err      string `json:"error,omitempty"`
}

// EvalReport is the replay of a whole set.
type EvalReport struct {
	Results []ScenarioResult `json:"results"`
	// Diagnoses counts the diagnosis scenarios and Correct those whose
	// first finding was right; Optimizations and OptimizeOK the same for
	// the optimizer; Actions and ActionsOK the scenarios expecting a
	// remediation and those that got it.
	Diagnoses     int `json:"diagnoses"`
	Correct       int `json:"correct"`
	Optimizations int `json:"optimizations"`
	OptimizeOK    int `json:"optimize_ok"`
	Actions       int `json:"actions"`
	ActionsOK     int `json:"actions_ok"`
}

// Accuracy is the top-1 accuracy of the diagnosis scenarios.
func (r *EvalReport) Accuracy() float64 {
	if r.Diagnoses == 0 {
		return 0
	}
	return float64(r.Correct) / float64(r.Diagnoses)
}

// Passed reports whether the set meets MinAccuracy and every optimizer
// scenario matched.
func (r *EvalReport) Passed() bool {
	return r.Accuracy() >= MinAccuracy && r.OptimizeOK == r.Optimizations
}

// ParseScenario decodes one scenario, rejecting unknown fields so that a
// misspelt expectation cannot pass unchecked.
func ParseScenario(b []byte) (Scenario, error) {
	var s Scenario
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("decode scenario: %w", err)
	}
	if s.Kind == "" {
		s.Kind = ScenarioDiagnose
	}
	if s.Name == "" {
		return s, fmt.Errorf("scenario has no name")
	}
	switch s.Kind {
	case ScenarioDiagnose:
		if s.Expect.RootStep == "" || s.Expect.Class == "" {
			return s, fmt.Errorf("scenario %s: expect needs root_step and class", s.Name)
		}
		if !slices.Contains(Classes, s.Expect.Class) {
			return s, fmt.Errorf("scenario %s: unknown class %q", s.Name, s.Expect.Class)
		}
		if s.Expect.Action != "" {
			if _, err := ParseAction(string(s.Expect.Action)); err != nil {
				return s, fmt.Errorf("scenario %s: %w", s.Name, err)
			}
		}
	case ScenarioOptimize:
		if s.Manifest == "" {
			return s, fmt.Errorf("scenario %s: an optimize scenario needs a manifest", s.Name)
		}
	default:
		return s, fmt.Errorf("scenario %s: unknown kind %q", s.Name, s.Kind)
	}
	return s, nil
}

// LoadScenarios reads every *.json file of fsys's root, in name order.
func LoadScenarios(fsys fs.FS) ([]Scenario, error) {
	files, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return nil, fmt.Errorf("list scenarios: %w", err)
	}
	slices.Sort(files)
	out := make([]Scenario, 0, len(files))
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("read scenario: %w", err)
		}
		s, err := ParseScenario(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Base(f), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Evaluate replays the scenarios.
func Evaluate(scs []Scenario) *EvalReport {
	r := &EvalReport{Results: []ScenarioResult{}}
	for _, s := range scs {
		var res ScenarioResult
		switch s.Kind {
		case ScenarioOptimize:
			res = evalOptimize(s)
			r.Optimizations++
			if res.OK {
				r.OptimizeOK++
			}
		default:
			res = evalDiagnose(s)
			r.Diagnoses++
			if res.Top1 {
				r.Correct++
			}
			if s.Expect.Action != "" {
				r.Actions++
				if res.ActionOK {
					r.ActionsOK++
				}
			}
		}
		r.Results = append(r.Results, res)
	}
	return r
}

// ScenarioInput builds the Diagnose input of a diagnosis scenario.
func ScenarioInput(s Scenario) (DiagnoseInput, error) {
	in := DiagnoseInput{Task: s.Task, Attempts: s.Attempts, Similar: s.Similar, Cluster: s.Cluster, Now: s.Now}
	if s.StuckAfter != "" {
		d, err := time.ParseDuration(s.StuckAfter)
		if err != nil {
			return in, fmt.Errorf("stuck_after: %w", err)
		}
		in.StuckAfter = d
	}
	if s.Manifest != "" {
		p, err := workflow.Load([]byte(s.Manifest), workflow.Limits{})
		if err != nil {
			return in, fmt.Errorf("manifest: %w", err)
		}
		in.Plan = p
	}
	return in, nil
}

func evalDiagnose(s Scenario) ScenarioResult {
	res := ScenarioResult{Name: s.Name, Kind: s.Kind, Expected: s.Expect.RootStep + "/" + string(s.Expect.Class)}
	if s.Expect.Action != "" {
		res.Expected += " → " + string(s.Expect.Action)
	}
	in, err := ScenarioInput(s)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	dg := Diagnose(in)
	rc := dg.RootCause()
	if rc == nil {
		res.Got = "(no root cause)"
		return res
	}
	res.Got = rc.Step + "/" + string(rc.Class)
	res.Top1 = rc.Step == s.Expect.RootStep && rc.Class == s.Expect.Class
	res.ActionOK = s.Expect.Action == ""
	if len(rc.Remediations) > 0 {
		var acts []string
		for _, m := range rc.Remediations {
			acts = append(acts, string(m.Action))
		}
		res.ActionOK = res.ActionOK || rc.Remediations[0].Action == s.Expect.Action
		res.Got += " → " + strings.Join(acts, ",")
	}
	res.OK = res.Top1 && res.ActionOK
	for _, step := range sortedKeys(s.Expect.CausedBy) {
		if !hasConsequence(dg, step, s.Expect.CausedBy[step]) {
			res.OK = false
			res.Got += fmt.Sprintf("; %s not a consequence of %s", step, s.Expect.CausedBy[step])
		}
	}
	return res
}

func hasConsequence(dg *Diagnosis, step, cause string) bool {
	for _, f := range dg.Findings {
		if f.Step == step && f.Role == RoleConsequence && f.Class == ClassDependency && f.CausedBy == cause {
			return true
		}
	}
	return false
}

func evalOptimize(s Scenario) ScenarioResult {
	want := slices.Clone(s.Expect.Removed)
	slices.Sort(want)
	res := ScenarioResult{Name: s.Name, Kind: s.Kind, Expected: "remove [" + strings.Join(want, " ") + "]", ActionOK: true}
	p, err := workflow.Load([]byte(s.Manifest), workflow.Limits{})
	if err != nil {
		res.Err = fmt.Sprintf("manifest: %v", err)
		return res
	}
	durs := map[string]time.Duration{}
	for k, v := range s.Durations {
		d, err := time.ParseDuration(v)
		if err != nil {
			res.Err = fmt.Sprintf("duration of %s: %v", k, err)
			return res
		}
		durs[k] = d
	}
	prop, err := Optimize(p, []byte(s.Manifest), durs)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	var got []string
	for _, e := range prop.Removed {
		got = append(got, e.Parent+"->"+e.Child)
	}
	slices.Sort(got)
	res.Got = "remove [" + strings.Join(got, " ") + "]"
	if prop.Saved > 0 {
		res.Got += ", saves " + fmtDur(prop.Saved)
	}
	res.Top1 = slices.Equal(got, want)
	res.OK = res.Top1
	return res
}

// String renders the report as a table with the totals.
func (r *EvalReport) String() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tkind\texpected\tgot\tok")
	for _, x := range r.Results {
		ok := "ok"
		switch {
		case x.Err != "":
			ok = "ERROR: " + x.Err
		case !x.Top1:
			ok = "WRONG"
		case !x.ActionOK:
			ok = "top-1 ok, action missing"
		case !x.OK:
			ok = "top-1 ok, consequences wrong"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Name, x.Kind, x.Expected, x.Got, ok)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\ntop-1 accuracy: %d/%d (%.1f%%), minimum %.0f%%\n", r.Correct, r.Diagnoses, 100*r.Accuracy(), 100*MinAccuracy)
	fmt.Fprintf(&b, "top remediation as expected: %d/%d\n", r.ActionsOK, r.Actions)
	fmt.Fprintf(&b, "optimizer: %d/%d scenarios matched\n", r.OptimizeOK, r.Optimizations)
	return b.String()
}
