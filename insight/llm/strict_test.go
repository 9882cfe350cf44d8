package llm

import "testing"

// TestStrictable: only a schema OpenAI's strict mode accepts is sent
// strict; an open one would be refused by the server outright.
func TestStrictable(t *testing.T) {
	for _, c := range []struct {
		name, schema string
		want         bool
	}{
		{"closed", `{"type":"object","additionalProperties":false,"required":["a"],"properties":{"a":{"type":"string"}}}`, true},
		{"not every property required", `{"type":"object","additionalProperties":false,"required":[],"properties":{"a":{"type":"string"}}}`, false},
		{"additional properties allowed", `{"type":"object","required":["a"],"properties":{"a":{"type":"string"}}}`, false},
		{"nested open object", `{"type":"object","additionalProperties":false,"required":["m"],"properties":{"m":{"type":"object"}}}`, false},
		{"array of closed objects", `{"type":"array","items":{"type":"object","additionalProperties":false,"required":["a"],"properties":{"a":{"type":"number"}}}}`, true},
		{"not JSON", `{`, false},
	} {
		if got := strictable([]byte(c.schema)); got != c.want {
			t.Errorf("%s: strictable = %v, want %v", c.name, got, c.want)
		}
	}
	if !strictable(answerSchema([]string{"e1"})) {
		t.Error("the explanation answer schema is not strict-mode compatible")
	}
}
