// Package jsontext encodes values as the JSON text the API's *_json fields
// carry, the same way for every package of the SDK.
package jsontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// ErrInvalidRaw is returned for a json.RawMessage that is not valid JSON.
var ErrInvalidRaw = errors.New("json.RawMessage is not valid JSON")

// Encode encodes v as JSON text without HTML escaping: nil as {}, a
// json.RawMessage as it is (after checking it is valid JSON). Other
// failures are encoding/json's errors, unwrapped, for callers to word.
func Encode(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "{}", nil
	case json.RawMessage:
		if len(bytes.TrimSpace(v)) == 0 {
			return "{}", nil
		}
		if !json.Valid(v) {
			return "", ErrInvalidRaw
		}
		return string(v), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}
