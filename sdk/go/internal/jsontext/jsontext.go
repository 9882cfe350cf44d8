// Package jsontext encodes values as the JSON text the API's *_json fields
// carry, the same way for every package of the SDK.
package jsontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Encode encodes v as JSON text without HTML escaping: nil as {}, a
// json.RawMessage as it is (after checking it is valid JSON).
func Encode(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "{}", nil
	case json.RawMessage:
		if len(bytes.TrimSpace(v)) == 0 {
			return "{}", nil
		}
		if !json.Valid(v) {
			return "", errors.New("json.RawMessage is not valid JSON")
		}
		return string(v), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("encode JSON: %w", err)
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}
