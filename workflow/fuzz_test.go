package workflow_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// fuzzLimits are the default limits with a smaller value budget, so that
// alias bombs cost the fuzzer milliseconds rather than seconds.
var fuzzLimits = workflow.Limits{MaxNodes: 1 << 14}

// FuzzLoad: whatever the bytes, Load returns either a consistent plan or a
// *ValidationError whose problems are in source order, and it says the same
// thing every time.
func FuzzLoad(f *testing.F) {
	for _, path := range []string{"../examples/order-fulfilment.yaml", "testdata/order-fulfilment.json"} {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		plan, err := workflow.Load(src, fuzzLimits)
		if err != nil {
			checkValidationError(t, err)
			if plan != nil {
				t.Fatal("Load returned a plan and an error")
			}
		} else {
			checkPlan(t, plan)
		}
		_, again := workflow.Load(src, fuzzLimits)
		if errText(err) != errText(again) {
			t.Fatalf("Load is not deterministic:\n%v\n---\n%v", err, again)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func checkValidationError(t *testing.T, err error) {
	t.Helper()
	var ve *workflow.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load failed with %T, not a *ValidationError: %v", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("a ValidationError without problems")
	}
	last := 0
	for i, p := range ve.Problems {
		if p.Message == "" {
			t.Errorf("problem %d has no message: %+v", i, p)
		}
		switch {
		case p.Line < 0:
			t.Errorf("problem %d has line %d", i, p.Line)
		case p.Line == 0:
			last = -1 // problems without a line come last
		case last < 0 || p.Line < last:
			t.Errorf("problems out of line order: %v", ve.Problems)
		default:
			last = p.Line
		}
	}
}

// checkPlan asserts what the scheduler relies on in a compiled plan.
func checkPlan(t *testing.T, plan *workflow.Plan) {
	t.Helper()
	n := plan.Len()
	if n == 0 || n != len(plan.Steps) {
		t.Fatalf("plan has Len %d and %d steps", n, len(plan.Steps))
	}
	checkOrder(t, plan)
	maxLevel := 0
	for i, st := range plan.Steps {
		if j, ok := plan.StepIndex(st.Name); !ok || j != i {
			t.Errorf("StepIndex(%q) = %d, %v; want %d", st.Name, j, ok, i)
		}
		if st.Capability == "" || st.Timeout <= 0 || st.Retry.MaxAttempts < 1 || st.Retry.Backoff.Max < st.Retry.Backoff.Initial {
			t.Errorf("step %q compiled to %+v", st.Name, st)
		}
		want := 0
		for _, p := range plan.Parents(i) {
			want = max(want, plan.Steps[p].Level+1)
		}
		if st.Level != want {
			t.Errorf("step %q has level %d, want %d", st.Name, st.Level, want)
		}
		maxLevel = max(maxLevel, st.Level)
		anc := ancestorsOf(plan, i)
		for _, r := range st.Input.Reads() {
			if !anc[int32(r)] {
				t.Errorf("step %q reads step %d, which is not an ancestor", st.Name, r)
			}
		}
		if _, err := st.Input.Resolve(nil, func(int) any { return nil }); err != nil {
			t.Errorf("step %q: resolving without input or results: %v", st.Name, err)
		}
	}
	if plan.Levels() != maxLevel+1 {
		t.Errorf("Levels() = %d, want %d", plan.Levels(), maxLevel+1)
	}
	s := plan.Summarize()
	if s.Steps != n || s.Levels != plan.Levels() || len(s.Roots) == 0 || len(s.Leaves) == 0 || len(s.CriticalPath) == 0 {
		t.Errorf("Summarize() = %+v", s)
	}
	for k := 1; k < len(s.CriticalPath); k++ {
		child, _ := plan.StepIndex(s.CriticalPath[k])
		parent, _ := plan.StepIndex(s.CriticalPath[k-1])
		if !contains(plan.Parents(child), int32(parent)) {
			t.Errorf("critical path %v: %s is not a parent of %s", s.CriticalPath, s.CriticalPath[k-1], s.CriticalPath[k])
		}
	}
	// The manifest a plan came from compiles again, to the same shape.
	again, err := workflow.Compile(plan.Manifest(), fuzzLimits)
	if err != nil {
		t.Fatalf("the plan's own manifest does not compile: %v", err)
	}
	if !reflect.DeepEqual(again.Summarize(), s) {
		t.Errorf("recompiled summary %+v, want %+v", again.Summarize(), s)
	}
}

func contains(list []int32, x int32) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

func ancestorsOf(plan *workflow.Plan, i int) map[int32]bool {
	seen := map[int32]bool{}
	stack := append([]int32(nil), plan.Parents(i)...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !seen[p] {
			seen[p] = true
			stack = append(stack, plan.Parents(int(p))...)
		}
	}
	return seen
}

// FuzzParseExpr: ParseExpr never panics, keeps the expression as written,
// and names it in every error.
func FuzzParseExpr(f *testing.F) {
	for _, s := range []string{"$.input", "$.input.a.b", "$.input.items[0].sku", `$.input["odd key"]`, "$.steps.x.result.a[2]", "$.steps", "$.input[", `$.steps[""].result`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := workflow.ParseExpr(s)
		if err != nil {
			if e != nil {
				t.Fatalf("ParseExpr returned %+v and %v", e, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not name the expression %q", err, s)
			}
			return
		}
		if e.Source != s {
			t.Fatalf("Source = %q, want %q", e.Source, s)
		}
		if strings.HasPrefix(s, "$.steps") && e.Step == "" {
			t.Fatalf("%q reads a step, but Step is empty", s)
		}
		if strings.HasPrefix(s, "$.input") && e.Step != "" {
			t.Fatalf("%q reads the input, but Step is %q", s, e.Step)
		}
	})
}

// resolveManifest maps many kinds of expression; FuzzResolve runs it over
// arbitrary JSON, standing in for both the task input and the result of
// step up.
const resolveManifest = `name: resolve
version: 1.0.0
steps:
  - name: up
    capability: x.up
  - name: down
    capability: x.down
    depends_on: [up]
    input:
      whole: $.input
      field: $.input.a
      deep: $.input.a.b.c
      index: $.input[0]
      mixed: $.input.a[1].b
      quoted: $.input["x y"]
      result: $.steps.up.result
      result_field: $.steps.up.result.a[0]
      literal: text
      escaped: "$$.input"
      list: [$.input.a, "$.steps.up.result[2]", 3]
      nested: {x: {y: $.input.b}}
`

// FuzzResolve: resolving never panics; it either fails naming an
// expression or builds an input that encodes as JSON.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `[1, 2, 3]`, `{"a": {"b": {"c": 1}}}`, `{"a": [0, {"b": "x"}]}`, `{"x y": "é😀", "b": 12345678901234567890}`, `"text"`, `{"a": "str"}`} {
		f.Add([]byte(s))
	}
	plan, err := workflow.Load([]byte(resolveManifest), workflow.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	m := plan.Steps[1].Input
	sources := map[string]bool{}
	for _, e := range m.Exprs() {
		sources[e.Source] = true
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := workflow.DecodeJSON(raw)
		if err != nil {
			return
		}
		got, err := m.Resolve(v, func(step int) any {
			if step != 0 {
				t.Fatalf("Resolve asked for step %d", step)
			}
			return v
		})
		if err != nil {
			src, _, _ := strings.Cut(err.Error(), ":")
			if !sources[src] {
				t.Fatalf("error %q does not start with one of the mapping's expressions", err)
			}
			return
		}
		obj, ok := got.(map[string]any)
		if !ok {
			t.Fatalf("Resolve returned %T, want an object", got)
		}
		if !reflect.DeepEqual(obj["whole"], v) && v != nil {
			t.Errorf("whole = %#v, want the input %#v", obj["whole"], v)
		}
		if obj["literal"] != "text" || obj["escaped"] != "$.input" {
			t.Errorf("literals changed: %#v %#v", obj["literal"], obj["escaped"])
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("the resolved input does not encode: %v", err)
		}
	})
}

// FuzzGraph builds manifests from fuzzed DAG shapes, up to 80 steps (past
// one 64-bit word of ancestry), and compares what Load says with a plain
// reference: every cycle reported is real and there is one per strongly
// connected component, a mapping is refused exactly when it reads a step
// that is not an ancestor, and levels are the longest chains.
//
// The first byte picks the number of steps; each following pair (x, y)
// makes step x depend on step y, or, when x's top bit is set, makes step x
// read step y's result.
func FuzzGraph(f *testing.F) {
	f.Add([]byte{3, 1, 0, 2, 1})                        // a chain
	f.Add([]byte{2, 0, 1, 1, 0})                        // a 2-cycle
	f.Add([]byte{5, 0, 2, 1, 0, 2, 1, 3, 4, 4, 3})      // a 3-cycle and a 2-cycle
	f.Add([]byte{4, 1, 0, 2, 0, 3, 1, 3, 2, 0x83, 0})   // a diamond whose leaf reads the root
	f.Add([]byte{4, 1, 0, 2, 0, 0x81, 2})               // a read of a sibling
	f.Add([]byte{70, 66, 1, 1, 0, 0x80 | 66, 0, 69, 3}) // past 64 steps
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		n := 1 + int(b[0])%80
		deps := make([][]int, n)
		type read struct{ step, of int }
		var reads []read
		seen := map[[2]int]bool{}
		for k := 1; k+1 < len(b); k += 2 {
			i, j := int(b[k]&0x7f)%n, int(b[k+1])%n
			switch {
			case i == j:
			case b[k]&0x80 != 0:
				reads = append(reads, read{i, j})
			case !seen[[2]int{i, j}]:
				seen[[2]int{i, j}] = true
				deps[i] = append(deps[i], j)
			}
		}
		type jsonStep struct {
			Name       string            `json:"name"`
			Capability string            `json:"capability"`
			DependsOn  []string          `json:"depends_on,omitempty"`
			Input      map[string]string `json:"input,omitempty"`
		}
		steps := make([]jsonStep, n)
		for i := range steps {
			steps[i] = jsonStep{Name: "s" + strconv.Itoa(i), Capability: "x.s" + strconv.Itoa(i)}
			for _, j := range deps[i] {
				steps[i].DependsOn = append(steps[i].DependsOn, "s"+strconv.Itoa(j))
			}
		}
		for k, r := range reads {
			if steps[r.step].Input == nil {
				steps[r.step].Input = map[string]string{}
			}
			steps[r.step].Input["r"+strconv.Itoa(k)] = "$.steps.s" + strconv.Itoa(r.of) + ".result"
		}
		src, err := json.Marshal(map[string]any{"name": "graph", "version": "1.0.0", "steps": steps})
		if err != nil {
			t.Fatal(err)
		}

		// The reference: reach[i][j] when step i depends on step j, directly or not.
		reach := make([][]bool, n)
		for i := range reach {
			reach[i] = make([]bool, n)
			stack := append([]int(nil), deps[i]...)
			for len(stack) > 0 {
				j := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if !reach[i][j] {
					reach[i][j] = true
					stack = append(stack, deps[j]...)
				}
			}
		}
		components := map[int]bool{} // the first step of each cyclic component
		for i := range n {
			if reach[i][i] {
				first := i
				for j := range i {
					if reach[i][j] && reach[j][i] {
						first = min(first, j)
					}
				}
				components[first] = true
			}
		}

		plan, err := workflow.Load(src, workflow.Limits{})
		var problems []workflow.Problem
		if err != nil {
			var ve *workflow.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Load failed with %T: %v", err, err)
			}
			problems = ve.Problems
		}
		index := func(name string) int {
			i, err := strconv.Atoi(strings.TrimPrefix(name, "s"))
			if err != nil || i < 0 || i >= n {
				t.Fatalf("bad step name %q in %v", name, problems)
			}
			return i
		}

		if len(components) > 0 {
			if len(problems) != len(components) {
				t.Fatalf("%d cyclic components, but problems %v\nmanifest %s", len(components), problems, src)
			}
			for _, p := range problems {
				names := strings.Split(strings.TrimPrefix(p.Message, "dependency cycle: "), " → ")
				if len(names) < 3 || names[0] != names[len(names)-1] {
					t.Fatalf("not a cycle: %q", p.Message)
				}
				first := index(names[0])
				if !components[first] || p.Path != "steps["+strconv.Itoa(first)+"].depends_on" {
					t.Errorf("cycle %q reported at %s, want at the first step of its component", p.Message, p.Path)
				}
				onCycle := map[int]bool{}
				for k := 0; k+1 < len(names); k++ {
					from, to := index(names[k]), index(names[k+1])
					if onCycle[from] || !slicesContains(deps[from], to) || !reach[to][first] {
						t.Errorf("cycle %q: %s → %s is not an edge of one simple cycle", p.Message, names[k], names[k+1])
					}
					onCycle[from] = true
				}
			}
			return
		}

		want := 0
		for _, r := range reads {
			if !reach[r.step][r.of] {
				want++
			}
		}
		if len(problems) != want {
			t.Fatalf("%d reads of steps that are not ancestors, but problems %v\nmanifest %s", want, problems, src)
		}
		for _, p := range problems {
			if !strings.Contains(p.Message, "which is not an ancestor of") {
				t.Errorf("unexpected problem %v", p)
			}
		}
		if want > 0 {
			return
		}
		checkPlan(t, plan)
		longest := make([]int, n) // memoised longest chain of ancestors
		var depth func(i int) int
		depth = func(i int) int {
			if longest[i] == 0 {
				longest[i] = 1
				for _, j := range deps[i] {
					longest[i] = max(longest[i], depth(j)+1)
				}
			}
			return longest[i]
		}
		levels := 0
		for i := range n {
			if plan.Steps[i].Level != depth(i)-1 {
				t.Errorf("step s%d has level %d, want %d", i, plan.Steps[i].Level, depth(i)-1)
			}
			levels = max(levels, depth(i))
		}
		if plan.Levels() != levels {
			t.Errorf("Levels() = %d, want %d", plan.Levels(), levels)
		}
	})
}

func slicesContains(list []int, x int) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}
