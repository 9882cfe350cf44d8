package llm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func TestRedact(t *testing.T) {
	tests := []struct {
		name   string
		value  string
		schema string // "" means none
		want   string
	}{
		{
			name:   "sensitive property",
			value:  `{"name": "Ada", "pin": "1234"}`,
			schema: `{"properties": {"pin": {"type": "string", "x-sensitive": true}}}`,
			want:   `{"name": "Ada", "pin": "[redacted]"}`,
		},
		{
			name:   "nested, through items and additionalProperties",
			value:  `{"cards": [{"pan": "x", "holder": "Ada"}], "notes": {"a": {"ssh": "k", "ok": 1}}}`,
			schema: `{"properties": {"cards": {"items": {"properties": {"pan": {"x-sensitive": true}}}}, "notes": {"additionalProperties": {"properties": {"ssh": {"x-sensitive": true}}}}}}`,
			want:   `{"cards": [{"pan": "[redacted]", "holder": "Ada"}], "notes": {"a": {"ssh": "[redacted]", "ok": 1}}}`,
		},
		{
			name:   "whole object sensitive",
			value:  `{"creds": {"user": "u", "pw": "p"}}`,
			schema: `{"properties": {"creds": {"type": "object", "x-sensitive": true}}}`,
			want:   `{"creds": "[redacted]"}`,
		},
		{
			name:   "local $ref and allOf",
			value:  `{"a": {"v": "1"}, "b": {"v": "2"}, "c": "3"}`,
			schema: `{"$defs": {"s": {"properties": {"v": {"x-sensitive": true}}}}, "properties": {"a": {"$ref": "#/$defs/s"}, "b": {"allOf": [{"$ref": "#/$defs/s"}]}}}`,
			want:   `{"a": {"v": "[redacted]"}, "b": {"v": "[redacted]"}, "c": "3"}`,
		},
		{
			name:   "recursive $ref terminates",
			value:  `{"next": {"next": {"secret_val": "x", "k": "y"}}}`,
			schema: `{"$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}, "k": {"x-sensitive": true}}}}, "$ref": "#/$defs/n"}`,
			want:   `{"next": {"next": {"secret_val": "[redacted]", "k": "[redacted]"}}}`,
		},
		{
			name:   "prefixItems and patternProperties",
			value:  `{"t": ["pub", "priv"], "x_key1": "k"}`,
			schema: `{"properties": {"t": {"prefixItems": [{}, {"x-sensitive": true}]}}, "patternProperties": {"^x_key": {"x-sensitive": true}}}`,
			want:   `{"t": ["pub", "[redacted]"], "x_key1": "[redacted]"}`,
		},
		{
			name:  "key names without a schema",
			value: `{"Password": "p", "db_passwd": "p", "clientSecret": "s", "access_token": "t", "X-Api-Key": "k", "apikey": "k", "Authorization": "Basic x", "card_number": "1", "cardNumber": "1", "cvv": "1", "customer_ssn": "1", "IBAN": "1", "private_key": "1", "className": "Payment", "max_tokens": 5, "session": "s1"}`,
			want:  `{"Password": "[redacted]", "db_passwd": "[redacted]", "clientSecret": "[redacted]", "access_token": "[redacted]", "X-Api-Key": "[redacted]", "apikey": "[redacted]", "Authorization": "[redacted]", "card_number": "[redacted]", "cardNumber": "[redacted]", "cvv": "[redacted]", "customer_ssn": "[redacted]", "IBAN": "[redacted]", "private_key": "[redacted]", "className": "Payment", "max_tokens": 5, "session": "s1"}`,
		},
		{
			name:  "card numbers as numbers",
			value: `{"pan": 4111111111111111, "amount": 4200, "order": 4111111111111112}`,
			want:  `{"pan": "[redacted]", "amount": 4200, "order": 4111111111111112}`,
		},
		{
			name:  "text inside values",
			value: `{"error": "declined card 4111-1111-1111-1111", "list": ["Bearer abc.def"]}`,
			want:  `{"error": "declined card [redacted]", "list": ["Bearer [redacted]"]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := decode(t, tt.value)
			var schema any
			if tt.schema != "" {
				schema = json.RawMessage(tt.schema)
			}
			got := Redact(v, schema)
			if want := decode(t, tt.want); !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				t.Errorf("got  %s\nwant %s", g, tt.want)
			}
			if !reflect.DeepEqual(v, decode(t, tt.value)) {
				t.Errorf("Redact modified its input")
			}
		})
	}
}

func TestRedactStruct(t *testing.T) {
	type creds struct {
		User     string `json:"user"`
		Password string `json:"password"`
		PAN      int64  `json:"pan"`
	}
	got, _ := json.Marshal(Redact(map[string]any{"c": creds{"ada", "hunter2", 4111111111111111}}, nil))
	if strings.Contains(string(got), "hunter2") || strings.Contains(string(got), "4111") || !strings.Contains(string(got), "ada") {
		t.Errorf("got %s", got)
	}
}

func TestRedactText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"card 4111 1111 1111 1111 declined", "card [redacted] declined"},
		{"card 4111111111111111", "card [redacted]"},
		{"amex 378282246310005.", "amex [redacted]."},
		{"order 4111111111111112 (not Luhn)", "order 4111111111111112 (not Luhn)"},
		{"took 1234567890 ms", "took 1234567890 ms"},
		{"at 2026-11-30 06:00", "at 2026-11-30 06:00"},
		{"Authorization: Bearer eyJ.abc-def_ghi==", "Authorization: Bearer [redacted]"},
		{"bearer sk-abc123", "bearer [redacted]"},
		{"dsn host=db password=hunter2 user=app", "dsn host=db password=[redacted] user=app"},
		{`{"password":"hunter2","user":"app"}`, `{"password":"[redacted]","user":"app"}`},
		{"PASSWORD: 'a b c' next", "PASSWORD: '[redacted]' next"},
		{"https://x/?api_key=abc&x=1", "https://x/?api_key=[redacted]&x=1"},
		{"nothing secret here", "nothing secret here"},
	}
	for _, tt := range tests {
		if got := RedactText(tt.in); got != tt.want {
			t.Errorf("RedactText(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestSensitiveKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"password", true}, {"userPassword", true}, {"API_KEY", true}, {"refreshToken", true},
		{"token", true}, {"tokens", false}, {"ssn", true}, {"classname", false}, {"iban", true},
		{"ribbon", false}, {"step", false}, {"task", false}, {"avoid_agent", false},
	}
	for _, tt := range tests {
		if got := SensitiveKey(tt.key); got != tt.want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}
