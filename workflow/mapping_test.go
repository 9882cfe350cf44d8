package workflow_test

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

func TestParseExpr(t *testing.T) {
	valid := []struct {
		src  string
		step string // the step read, "" for the task input
	}{
		{"$.input", ""},
		{"$.input.a.b", ""},
		{"$.input.items[0].sku", ""},
		{`$.input["odd key"]`, ""},
		{`$.input['odd key'].x`, ""},
		{`$.input["prénom"]`, ""},
		{`$.input[""]`, ""},
		{`$.input["a]b"]`, ""},
		{`$.input["it's"]`, ""},
		{"$.input.snake_case-and-dash.X1", ""},
		{"$.input[0][1][2]", ""},
		{`$["input"]`, ""},
		{"$.steps.x.result", "x"},
		{"$.steps.x.result.a[2]", "x"},
		{"$.steps.reserve-stock.result.id", "reserve-stock"},
		{`$.steps["x"].result`, "x"},
	}
	for _, tt := range valid {
		t.Run(tt.src, func(t *testing.T) {
			e, err := workflow.ParseExpr(tt.src)
			if err != nil {
				t.Fatalf("ParseExpr: %v", err)
			}
			if e.Source != tt.src || e.Step != tt.step {
				t.Errorf("got Source %q Step %q, want %q and %q", e.Source, e.Step, tt.src, tt.step)
			}
		})
	}
	invalid := []struct {
		src string
		msg string // what the error tells the user
	}{
		{"", "must start with $.input or $.steps.<name>.result"},
		{"input.a", "must start with $.input or $.steps.<name>.result"},
		{"$", "must start with $.input or $.steps.<name>.result"},
		{"$[0]", "must start with $.input or $.steps.<name>.result"},
		{"$.foo", `unknown root "foo"; use $.input or $.steps.<name>.result`},
		{"$.Input", `unknown root "Input"`},
		{"$.steps", "a step's value is read as $.steps.<name>.result[.field...]"},
		{"$.steps.x", "a step's value is read as $.steps.<name>.result"},
		{"$.steps.x.output", "a step's value is read as $.steps.<name>.result"},
		{"$.steps[0].result", "a step's value is read as $.steps.<name>.result"},
		{"$.steps.x[0]", "a step's value is read as $.steps.<name>.result"},
		{`$.steps[""].result.a`, "a step's value is read as $.steps.<name>.result"},
		{"$.input.", "empty field name at offset 8"},
		{"$.input..a", "empty field name at offset 8"},
		{"$.input[", "unclosed [ at offset 8"},
		{"$.input[0", "unclosed ["},
		{"$.input[-1]", "index [-1] must be a non-negative integer or a quoted field name"},
		{"$.input[abc]", "index [abc] must be a non-negative integer or a quoted field name"},
		{"$.input[]", "index [] must be"},
		{"$.input[1.5]", "index [1.5] must be"},
		{"$.input[99999999999999999999]", "must be a non-negative integer"},
		{`$.input["a"`, "unclosed [ at offset 8"},
		{`$.input['a"]`, "unclosed [ at offset 8"},
		{"$.input a", `unexpected ' ' at offset 8`},
		{"$.input.a b", `unexpected ' '`},
		{"$.input.é", "empty field name"},
		{"$input", `unexpected 'i' at offset 2`},
	}
	for _, tt := range invalid {
		t.Run(tt.src, func(t *testing.T) {
			e, err := workflow.ParseExpr(tt.src)
			if err == nil {
				t.Fatalf("ParseExpr accepted %q as %+v", tt.src, e)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if q := strconv.Quote(tt.src); !strings.Contains(err.Error(), q) {
				t.Errorf("error %q does not quote the expression", err)
			}
		})
	}
}

// resolvePlan has one step whose input maps field v from expr, downstream
// of a step "up".
func resolvePlan(t *testing.T, expr string) *workflow.Plan {
	t.Helper()
	b, _ := json.Marshal(expr)
	return mustLoad(t, `{"name": "resolve", "version": "1.0.0", "steps": [
		{"name": "up", "capability": "x.up"},
		{"name": "down", "capability": "x.down", "depends_on": ["up"], "input": {"v": `+string(b)+`}}]}`)
}

func TestMappingResolve(t *testing.T) {
	const input = `{
		"a": {"b": "deep", "n": null, "s": "text", "num": 7},
		"items": [{"sku": "S1"}, {"sku": "S2"}],
		"odd key": "odd",
		"a]b": "bracket",
		"prénom": "Zoë 😀 日本",
		"big": 123456789012345678901234567890,
		"precise": 0.1000000000000000000001
	}`
	const upResult = `{"id": "r1", "lines": [{"qty": 3}], "total": 9007199254740993}`
	tests := []struct {
		name   string
		expr   string
		want   string // JSON; "" means the field is left out
		errMsg string
	}{
		{name: "whole input", expr: "$.input", want: input},
		{name: "nested field", expr: "$.input.a.b", want: `"deep"`},
		{name: "array element", expr: "$.input.items[1].sku", want: `"S2"`},
		{name: "quoted key", expr: `$.input["odd key"]`, want: `"odd"`},
		{name: "quoted key with a bracket", expr: `$.input["a]b"]`, want: `"bracket"`},
		{name: "unicode key and value", expr: `$.input["prénom"]`, want: `"Zoë 😀 日本"`},
		{name: "big integer", expr: "$.input.big", want: "123456789012345678901234567890"},
		{name: "precise decimal", expr: "$.input.precise", want: "0.1000000000000000000001"},
		{name: "whole result", expr: "$.steps.up.result", want: upResult},
		{name: "result field", expr: "$.steps.up.result.id", want: `"r1"`},
		{name: "result beyond float64 precision", expr: "$.steps.up.result.total", want: "9007199254740993"},
		{name: "result array element", expr: "$.steps.up.result.lines[0].qty", want: "3"},
		{name: "explicit null is kept", expr: "$.input.a.n", want: "null"},
		{name: "absent field", expr: "$.input.missing"},
		{name: "absent parent", expr: "$.input.missing.child"},
		{name: "field of null", expr: "$.input.a.n.child"},
		{name: "index past the end", expr: "$.input.items[2].sku"},
		{name: "absent result field", expr: "$.steps.up.result.missing"},
		{name: "field of a string", expr: "$.input.a.s.x", errMsg: "$.input.a.s.x: $.input.a.s is a string, it has no .x"},
		{name: "index of a number", expr: "$.input.a.num[0]", errMsg: "$.input.a.num[0]: $.input.a.num is a number, it has no [0]"},
		{name: "index of an object", expr: "$.input.a[0]", errMsg: "$.input.a[0]: $.input.a is an object, not an array"},
		{name: "field of an array", expr: "$.input.items.sku", errMsg: "$.input.items.sku: $.input.items is an array, not an object"},
		{name: "index of a result object", expr: "$.steps.up.result[0]", errMsg: "$.steps.up.result[0]: $.steps.up.result is an object, not an array"},
		{name: "field of a result number", expr: "$.steps.up.result.total.x", errMsg: "$.steps.up.result.total is a number"},
	}
	in := decode(t, input)
	up := decode(t, upResult)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := resolvePlan(t, tt.expr)
			got, err := plan.Steps[1].Input.Resolve(in, func(step int) any {
				if step != 0 {
					t.Errorf("Resolve asked for the result of step %d, want 0", step)
				}
				return up
			})
			if tt.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
					t.Fatalf("Resolve error = %v, want one saying %q", err, tt.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			obj := got.(map[string]any)
			v, present := obj["v"]
			if tt.want == "" {
				if present {
					t.Errorf("v = %#v, want it left out", v)
				}
				return
			}
			if !present {
				t.Fatalf("v is missing from %v", obj)
			}
			if want := decode(t, tt.want); !reflect.DeepEqual(v, want) {
				t.Errorf("v = %#v, want %#v", v, want)
			}
			// What the step receives encodes to the same JSON it came from.
			enc, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := json.Marshal(decode(t, tt.want)); string(enc) != string(want) {
				t.Errorf("encoded %s, want %s", enc, want)
			}
		})
	}
}

func TestMappingResolveShapes(t *testing.T) {
	plan := mustLoad(t, `name: shapes
version: 1.0.0
steps:
  - name: a
    capability: x.a
  - name: b
    capability: x.b
  - name: c
    capability: x.c
    depends_on: [a, b]
    input:
      list: [$.input.x, $.input.missing, "$.steps.b.result.y"]
      object: {x: $.input.x, missing: $.input.missing}
      deep: {one: {two: [{three: $.steps.a.result}]}}
`)
	m := plan.Steps[2].Input
	if got, want := m.Reads(), []int{0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("Reads() = %v, want %v", got, want)
	}
	var paths []string
	for p, e := range m.Exprs() {
		paths = append(paths, p+"="+e.Source)
	}
	wantPaths := []string{
		"deep.one.two[0].three=$.steps.a.result",
		"list[0]=$.input.x",
		"list[1]=$.input.missing",
		"list[2]=$.steps.b.result.y",
		"object.missing=$.input.missing",
		"object.x=$.input.x",
	}
	if !sameSet(paths, wantPaths) {
		t.Errorf("Exprs() = %v, want %v", paths, wantPaths)
	}
	results := []any{"A", map[string]any{"y": "Y"}}
	got, err := m.Resolve(decode(t, `{"x": 1}`), func(i int) any { return results[i] })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		// An absent value keeps its place in an array as null, and is left
		// out of an object.
		"list":   []any{json.Number("1"), nil, "Y"},
		"object": map[string]any{"x": json.Number("1")},
		"deep":   map[string]any{"one": map[string]any{"two": []any{map[string]any{"three": "A"}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve() = %#v\nwant %#v", got, want)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestMappingMayReadAnyAncestor: depends_on need not list every step a
// mapping reads, only make it an ancestor.
func TestMappingMayReadAnyAncestor(t *testing.T) {
	plan := mustLoad(t, `name: chain
version: 1.0.0
steps:
  - {name: a, capability: x.a}
  - {name: b, capability: x.b, depends_on: [a]}
  - {name: c, capability: x.c, depends_on: [b]}
  - name: d
    capability: x.d
    depends_on: [c]
    input: {first: $.steps.a.result.id, last: $.steps.c.result.id}
`)
	m := plan.Steps[3].Input
	if got, want := m.Reads(), []int{0, 2}; !reflect.DeepEqual(got, want) {
		t.Errorf("Reads() = %v, want %v", got, want)
	}
	results := []any{map[string]any{"id": "A"}, nil, map[string]any{"id": "C"}}
	got, err := m.Resolve(nil, func(i int) any { return results[i] })
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"first": "A", "last": "C"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve() = %v, want %v", got, want)
	}
}

func TestMappingWithoutInput(t *testing.T) {
	plan := mustLoad(t, "name: n\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: x.a\n")
	m := plan.Steps[0].Input // no input: section
	got, err := m.Resolve(decode(t, `{"x": 1}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]any{}) {
		t.Errorf("Resolve() = %#v, want an empty object", got)
	}
	if m.Reads() != nil || len(m.Exprs()) != 0 {
		t.Errorf("a step without input reads %v and has expressions %v", m.Reads(), m.Exprs())
	}
}

// TestResolveWithoutTaskInput: a task started without input reads nothing,
// which is no error.
func TestResolveWithoutTaskInput(t *testing.T) {
	plan := resolvePlan(t, "$.input.a.b")
	got, err := plan.Steps[1].Input.Resolve(nil, func(int) any { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]any{}) {
		t.Errorf("Resolve() = %#v, want an empty object", got)
	}
}
