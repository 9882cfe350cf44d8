package sim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// contract compiles a schema the way a manifest's input_schema is compiled,
// formats asserted.
func contract(t *testing.T, schema string) *workflow.Contract {
	t.Helper()
	src := fmt.Sprintf(`{"name":"s","version":"1.0.0","input_schema":%s,"steps":[{"name":"a","capability":"x.a"}]}`, schema)
	p, err := workflow.Load([]byte(src), workflow.Limits{})
	if err != nil {
		t.Fatalf("bad test schema: %v", err)
	}
	return p.Input
}

// Every sample satisfies the schema it was made from.
func TestSampleSatisfiesSchema(t *testing.T) {
	tests := []struct{ name, schema string }{
		{"formats", `{"type":"object","properties":{"e":{"type":"string","format":"email"},"t":{"type":"string","format":"date-time"},
			"d":{"type":"string","format":"date"},"u":{"type":"string","format":"uuid"},"w":{"type":"string","format":"uri"},
			"i":{"type":"string","format":"ipv4"},"h":{"type":"string","format":"hostname"},"p":{"type":"string","format":"duration"}}}`},
		{"prefixed id", `{"type":"string","pattern":"^ord_[a-zA-Z0-9]+$"}`},
		{"counted pattern", `{"type":"string","pattern":"^[A-Z]{3}-\\d{4}$"}`},
		{"alternation", `{"type":"string","pattern":"^(foo|bar)+baz?$"}`},
		{"unanchored pattern", `{"type":"string","pattern":"x[0-9]"}`},
		{"length bounds", `{"type":"string","minLength":12,"maxLength":12}`},
		{"integer bounds", `{"type":"integer","exclusiveMinimum":5,"maximum":10}`},
		{"integer below one", `{"type":"integer","maximum":-3}`},
		{"number steps", `{"type":"number","minimum":1.1,"multipleOf":0.25}`},
		{"closed range", `{"type":"number","minimum":0,"maximum":1}`},
		{"array length", `{"type":"array","minItems":3,"items":{"type":"integer"}}`},
		{"tuple", `{"type":"array","prefixItems":[{"type":"string"},{"type":"boolean"}]}`},
		{"enum", `{"enum":["EUR","USD"]}`},
		{"const", `{"const":42}`},
		{"default", `{"type":"string","default":"en-GB"}`},
		{"examples", `{"type":"string","pattern":"^[0-9]{5}$","examples":["12345"]}`},
		{"nullable", `{"type":["null","integer"],"minimum":3}`},
		{"ref", `{"$defs":{"m":{"type":"object","required":["cents"],"properties":{"cents":{"type":"integer","minimum":1}}}},
			"type":"object","required":["total"],"properties":{"total":{"$ref":"#/$defs/m"}}}`},
		{"allOf", `{"allOf":[{"type":"object","required":["a"],"properties":{"a":{"type":"string"}}},{"required":["b"],"properties":{"b":{"type":"integer"}}}]}`},
		{"oneOf", `{"oneOf":[{"type":"string","minLength":3},{"type":"integer"}]}`},
		{"required beyond properties", `{"type":"object","required":["extra"],"additionalProperties":{"type":"integer"}}`},
		{"closed object", `{"type":"object","additionalProperties":false,"required":["a"],"properties":{"a":{"type":"boolean"}}}`},
		{"untyped", `{}`},
		{"recursive, optional", `{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := contract(t, tt.schema)
			doc, _ := workflow.DecodeJSON([]byte(tt.schema))
			v, err := Sample(doc)
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			raw, _ := json.Marshal(v)
			if err := c.CheckJSON("sample", raw); err != nil {
				t.Errorf("sample %s: %v", raw, err)
			}
		})
	}
}

// Schemas no value satisfies, or that recurse without end, are reported.
func TestSampleErrors(t *testing.T) {
	for _, schema := range []string{
		`false`,
		`{"type":"object","required":["a"],"properties":{"a":false}}`,
		`{"enum":[]}`,
		`{"$defs":{"n":{"type":"object","required":["next"],"properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		`{"type":"string","pattern":"(unclosed"}`,
	} {
		doc, _ := workflow.DecodeJSON([]byte(schema))
		if v, err := Sample(doc); err == nil {
			t.Errorf("Sample(%s) = %v, want an error", schema, v)
		}
	}
}

// No schema at all still gives the apps an object to return.
func TestSampleWithoutSchema(t *testing.T) {
	for _, doc := range []any{nil, true} {
		v, err := Sample(doc)
		if m, ok := v.(map[string]any); err != nil || !ok || len(m) == 0 {
			t.Errorf("Sample(%v) = %v, %v; want a non-empty object", doc, v, err)
		}
	}
}

func TestMatching(t *testing.T) {
	for _, pattern := range []string{`^ord_[a-zA-Z0-9]+$`, `^acc_[0-9a-z]{12}$`, `^sha256:[0-9a-f]{64}$`, `^[a-z]{2}(-[A-Z]{2})?$`, `a|b`, `\w+@\w+\.com`, `[^a]`} {
		s, err := matching(pattern)
		if err != nil {
			t.Errorf("matching(%q): %v", pattern, err)
			continue
		}
		if !regexp.MustCompile(pattern).MatchString(s) {
			t.Errorf("matching(%q) = %q, which does not match", pattern, s)
		}
	}
}
