package refdoc

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// schema decodes a JSON Schema the way manifests are decoded (numbers as
// json.Number).
func schema(t *testing.T, src string) any {
	t.Helper()
	v, err := workflow.DecodeJSON([]byte(src))
	if err != nil {
		t.Fatalf("bad test schema: %v", err)
	}
	return v
}

// row renders a Field compactly: "path type presence [constraints] description".
func row(f Field) string {
	s := f.Path + " " + f.Type + " " + f.Presence.String()
	if len(f.Constraints) > 0 {
		s += " [" + strings.Join(f.Constraints, "; ") + "]"
	}
	if f.Description != "" {
		s += " " + f.Description
	}
	return s
}

func TestFields(t *testing.T) {
	tests := []struct {
		name   string
		schema string
		want   []string
	}{
		{
			name:   "properties in name order, required marked",
			schema: `{"type":"object","required":["b"],"properties":{"b":{"type":"string"},"a":{"type":"integer","description":"count"}}}`,
			want:   []string{"$ object —", "$.a integer no count", "$.b string yes"},
		},
		{
			name: "nested objects",
			schema: `{"type":"object","required":["customer"],"properties":{"customer":{"type":"object","required":["email"],
				"properties":{"email":{"type":"string","format":"email"}}}}}`,
			want: []string{"$ object —", "$.customer object yes", "$.customer.email string yes [format: email]"},
		},
		{
			name: "array of objects: element fields under [*], element row left out",
			schema: `{"type":"object","properties":{"items":{"type":"array","minItems":1,"items":{"type":"object","required":["sku"],
				"properties":{"sku":{"type":"string"}}}}}}`,
			want: []string{"$ object —", "$.items array of object no [items ≥ 1]", "$.items[*].sku string yes"},
		},
		{
			name:   "array of constrained scalars keeps the element row",
			schema: `{"type":"array","uniqueItems":true,"items":{"type":"string","format":"email"}}`,
			want:   []string{"$ array of string — [unique items]", "$[*] string — [format: email]"},
		},
		{
			name:   "array of arrays",
			schema: `{"type":"array","items":{"type":"array","items":{"type":"number"}}}`,
			want:   []string{"$ array of array of number —"},
		},
		{
			name:   "tuple items",
			schema: `{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}]}`,
			want:   []string{"$ array —", "$[0] string —", "$[1] integer —"},
		},
		{
			name: "local $ref followed, with a description beside it",
			schema: `{"$defs":{"money":{"type":"object","required":["cents"],"properties":{"cents":{"type":"integer","minimum":1}}}},
				"type":"object","properties":{"total":{"$ref":"#/$defs/money","description":"order total"}}}`,
			want: []string{"$ object —", "$.total object no order total", "$.total.cents integer yes [≥ 1]"},
		},
		{
			name:   "definitions and escaped pointer tokens",
			schema: `{"definitions":{"a/b":{"type":"boolean"}},"type":"object","properties":{"x":{"$ref":"#/definitions/a~1b"}}}`,
			want:   []string{"$ object —", "$.x boolean no"},
		},
		{
			name: "recursive $ref stops",
			schema: `{"$defs":{"node":{"type":"object","properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}}}},
				"$ref":"#/$defs/node"}`,
			want: []string{"$ object —", "$.children array of object no", "$.children[*] object — [recursive: same shape as #/$defs/node]", "$.name string no"},
		},
		{
			name:   "type inferred from enum and const",
			schema: `{"type":"object","properties":{"code":{"enum":["a","b"]},"n":{"enum":[1,2.5]},"mixed":{"enum":["a",1]},"k":{"const":true}}}`,
			want: []string{"$ object —", "$.code string no [one of `a`, `b`]", "$.k boolean no [always `true`]",
				"$.mixed any no [one of `a`, `1`]", "$.n number no [one of `1`, `2.5`]"},
		},
		{
			name:   "type lists",
			schema: `{"type":"object","properties":{"prev":{"type":["string","null"]}}}`,
			want:   []string{"$ object —", "$.prev string or null no"},
		},
		{
			name:   "names that are not identifiers are quoted",
			schema: `{"type":"object","properties":{"odd key":{"type":"string"},"a.b":{"type":"string"},"ok_key-1":{"type":"string"}}}`,
			want:   []string{"$ object —", `$["a.b"] string no`, `$["odd key"] string no`, "$.ok_key-1 string no"},
		},
		{
			name: "constraints in a fixed order",
			schema: `{"type":"object","additionalProperties":false,"properties":{
				"s":{"type":"string","pattern":"^a+$","minLength":2,"maxLength":2,"default":"aa"},
				"n":{"type":"number","exclusiveMinimum":0,"maximum":1,"multipleOf":0.5},
				"l":{"type":"array","minItems":1,"maxItems":3},
				"m":{"type":"object","additionalProperties":{"type":"string"},"minProperties":1},
				"c":{"oneOf":[{"type":"string"},{"type":"integer"}]}}}`,
			want: []string{"$ object — [no other fields]",
				"$.c any no [one of 2 schemas]",
				"$.l array no [items 1..3]",
				"$.m object no [fields ≥ 1; other fields: string]",
				"$.n number no [> 0; ≤ 1; multiple of 0.5]",
				"$.s string no [pattern: `^a+$`; length 2; default `aa`]"},
		},
		{
			name:   "title when there is no description",
			schema: `{"type":"string","title":"Name"}`,
			want:   []string{"$ string — Name"},
		},
		{
			name:   "true schema",
			schema: `true`,
			want:   []string{"$ any —"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, f := range Fields(schema(t, tt.schema), "$") {
				got = append(got, row(f))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Fields:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A schema nested deeper than anyone reads stops at maxDepth rather than
// growing the table without bound.
func TestFieldsDepthBound(t *testing.T) {
	s := `{"type":"string"}`
	for range maxDepth + 10 {
		s = `{"type":"object","properties":{"a":` + s + `}}`
	}
	got := Fields(schema(t, s), "$")
	if len(got) != maxDepth+1 {
		t.Errorf("%d rows, want %d", len(got), maxDepth+1)
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"abc", "`abc`"},
		{"a`b", "`` a`b ``"},
		{json.Number("3"), "`3`"},
		{[]any{"x"}, "`[\"x\"]`"},
	}
	for _, tt := range tests {
		if got := code(tt.in); got != tt.want {
			t.Errorf("code(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestCell(t *testing.T) {
	if got, want := cell("a | b\n  c"), `a \| b c`; got != want {
		t.Errorf("cell = %q, want %q", got, want)
	}
}
