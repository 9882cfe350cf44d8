package jsontext

import (
	"encoding/json"
	"testing"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    string
		wantErr bool
	}{
		{"nil is an empty object", nil, "{}", false},
		{"empty raw message", json.RawMessage(" "), "{}", false},
		{"raw message as is", json.RawMessage(`{"n":12345678901234567890}`), `{"n":12345678901234567890}`, false},
		{"invalid raw message", json.RawMessage(`{`), "", true},
		{"no HTML escaping", map[string]string{"q": "<a&b>"}, `{"q":"<a&b>"}`, false},
		{"unencodable", make(chan int), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Encode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Encode(%v) = %q, %v", tt.in, got, err)
			}
		})
	}
}
