package insight

import (
	"io/fs"
	"os"
	"strings"
	"testing"
)

func evalDir() fs.FS { return os.DirFS("testdata/eval") }

// TestEval replays the evaluation set: it fails when the top-1 accuracy
// of the diagnoses falls below MinAccuracy or an optimizer scenario does
// not match. `make eval` prints the same table.
func TestEval(t *testing.T) {
	scs, err := LoadScenarios(evalDir())
	if err != nil {
		t.Fatal(err)
	}
	r := Evaluate(scs)
	if r.Diagnoses < 22 || r.Optimizations < 3 {
		t.Errorf("the set has %d diagnosis and %d optimizer scenarios, want at least 22 and 3", r.Diagnoses, r.Optimizations)
	}
	for _, x := range r.Results {
		status := "ok"
		if !x.OK {
			status = "MISS"
		}
		t.Logf("%-4s %-34s expected %-40s got %s %s", status, x.Name, x.Expected, x.Got, x.Err)
	}
	t.Logf("top-1 accuracy %d/%d (%.1f%%); remediations %d/%d; optimizer %d/%d",
		r.Correct, r.Diagnoses, 100*r.Accuracy(), r.ActionsOK, r.Actions, r.OptimizeOK, r.Optimizations)
	if !r.Passed() {
		t.Fatalf("evaluation regressed:\n%s", r)
	}
}

// Every class of the vocabulary is some scenario's expected root cause or,
// for dependency failures, an expected consequence.
func TestEvalCoversClasses(t *testing.T) {
	scs, err := LoadScenarios(evalDir())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[Class]bool{}
	for _, s := range scs {
		seen[s.Expect.Class] = true
		if len(s.Expect.CausedBy) > 0 {
			seen[ClassDependency] = true
		}
	}
	for _, c := range Classes {
		if !seen[c] {
			t.Errorf("no scenario for class %s", c)
		}
	}
}

func TestParseScenarioRejects(t *testing.T) {
	for _, src := range []string{
		`{"name":"x","expect":{"root_step":"a","class":"nope"}}`,
		`{"name":"x","expect":{"root_step":"a"}}`,
		`{"name":"x","expect":{"root_step":"a","class":"timeout","action":"reboot"}}`,
		`{"name":"x","kind":"optimize","expect":{}}`,
		`{"name":"x","expect":{"root_step":"a","class":"timeout"},"typo":1}`,
		`{"expect":{"root_step":"a","class":"timeout"}}`,
	} {
		if _, err := ParseScenario([]byte(src)); err == nil {
			t.Errorf("%s: accepted", src)
		}
	}
}

// A wrong expectation lowers the accuracy and a wrong optimizer
// expectation fails the set on its own.
func TestEvaluateReportsRegressions(t *testing.T) {
	scs, err := LoadScenarios(evalDir())
	if err != nil {
		t.Fatal(err)
	}
	var diag, opt []Scenario
	for _, s := range scs {
		if s.Kind == ScenarioOptimize {
			opt = append(opt, s)
		} else {
			diag = append(diag, s)
		}
	}
	wrong := diag[0]
	wrong.Expect.Class = ClassAppError
	r := Evaluate([]Scenario{diag[1], wrong})
	if r.Correct != 1 || r.Diagnoses != 2 || r.Passed() || r.Results[1].OK {
		t.Errorf("wrong class: %+v", r)
	}
	badOpt := opt[0]
	badOpt.Expect.Removed = nil
	r = Evaluate(append(diag, badOpt))
	if r.Accuracy() != 1 || r.Passed() || r.OptimizeOK != 0 {
		t.Errorf("wrong optimizer expectation: %+v", r)
	}
	if !strings.Contains(r.String(), "WRONG") || !strings.Contains(r.String(), "top-1 accuracy: ") {
		t.Errorf("table:\n%s", r)
	}
}
