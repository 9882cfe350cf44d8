package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
)

// maxSampleDepth stops recursive schemas: a required field that recurses
// deeper than this cannot be sampled.
const maxSampleDepth = 16

// Sample makes a plausible value that satisfies a JSON Schema, for
// simulated inputs and results: it prefers what the schema offers (const,
// examples, default, the first enum value), fills every declared property,
// honours formats, bounds and simple patterns, and follows local $refs.
// It is a best effort: callers check the value against the contract, and
// a nil or true schema gives an object with one field.
func Sample(schema any) (any, error) {
	g := sampler{root: schema}
	if schema == nil || schema == true {
		return map[string]any{"ok": true}, nil
	}
	return g.value(schema, "value", 0)
}

type sampler struct{ root any }

// errNoValue marks a schema that no value satisfies.
var errNoValue = errors.New("the schema admits no value")

func (g sampler) value(s any, key string, depth int) (any, error) {
	if depth > maxSampleDepth {
		return nil, fmt.Errorf("%s: schema nests or recurses more than %d levels", key, maxSampleDepth)
	}
	switch b := s.(type) {
	case bool:
		if !b {
			return nil, fmt.Errorf("%s: %w", key, errNoValue)
		}
		return key + "-1", nil
	case nil:
		return key + "-1", nil
	}
	m, ok := s.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: schema is a %T, not an object", key, s)
	}
	m = g.flatten(m)
	if v, ok := m["const"]; ok {
		return v, nil
	}
	if ex, ok := m["examples"].([]any); ok && len(ex) > 0 {
		return ex[0], nil
	}
	if v, ok := m["default"]; ok {
		return v, nil
	}
	if e, ok := m["enum"].([]any); ok {
		if len(e) == 0 {
			return nil, fmt.Errorf("%s: empty enum: %w", key, errNoValue)
		}
		return e[0], nil
	}
	switch schemaType(m) {
	case "object":
		return g.object(m, key, depth)
	case "array":
		return g.array(m, key, depth)
	case "string":
		return g.str(m, key)
	case "integer":
		return g.number(m, true), nil
	case "number":
		return g.number(m, false), nil
	case "boolean":
		return true, nil
	case "null":
		return nil, nil
	}
	return key + "-1", nil
}

// flatten resolves local references and folds allOf, and the first branch
// of anyOf and oneOf, into one schema object.
func (g sampler) flatten(m map[string]any) map[string]any {
	out := map[string]any{}
	var fold func(m map[string]any, d int)
	fold = func(m map[string]any, d int) {
		if d > maxSampleDepth {
			return
		}
		if ref, ok := m["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
			if t, ok := jsonPointer(g.root, strings.TrimPrefix(ref, "#")).(map[string]any); ok {
				fold(t, d+1)
			}
		}
		for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
			list, _ := m[kw].([]any)
			if kw != "allOf" && len(list) > 1 {
				list = list[:1]
			}
			for _, sub := range list {
				if sm, ok := sub.(map[string]any); ok {
					fold(sm, d+1)
				}
			}
		}
		for k, v := range m {
			switch k {
			case "$ref", "allOf", "anyOf", "oneOf":
			case "properties":
				props, _ := out[k].(map[string]any)
				merged := map[string]any{}
				for pk, pv := range props {
					merged[pk] = pv
				}
				if vm, ok := v.(map[string]any); ok {
					for pk, pv := range vm {
						merged[pk] = pv
					}
				}
				out[k] = merged
			case "required":
				prev, _ := out[k].([]any)
				vl, _ := v.([]any)
				out[k] = append(slices.Clone(prev), vl...)
			default:
				out[k] = v
			}
		}
	}
	fold(m, 0)
	return out
}

func schemaType(m map[string]any) string {
	switch t := m["type"].(type) {
	case string:
		return t
	case []any:
		// The first non-null type gives the most useful sample.
		for _, x := range t {
			if s, ok := x.(string); ok && s != "null" {
				return s
			}
		}
		return "null"
	}
	switch {
	case m["properties"] != nil || m["required"] != nil || m["additionalProperties"] != nil:
		return "object"
	case m["items"] != nil || m["prefixItems"] != nil:
		return "array"
	case m["pattern"] != nil || m["format"] != nil || m["minLength"] != nil:
		return "string"
	case m["minimum"] != nil || m["maximum"] != nil:
		return "number"
	}
	return ""
}

func (g sampler) object(m map[string]any, key string, depth int) (any, error) {
	out := map[string]any{}
	props, _ := m["properties"].(map[string]any)
	required := map[string]bool{}
	if req, ok := m["required"].([]any); ok {
		for _, r := range req {
			if s, ok := r.(string); ok {
				required[s] = true
			}
		}
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v, err := g.value(props[k], k, depth+1)
		if err != nil {
			if required[k] {
				return nil, err
			}
			continue // an optional field we cannot sample is left out
		}
		out[k] = v
	}
	for k := range required {
		if _, ok := out[k]; ok {
			continue
		}
		extra, ok := m["additionalProperties"]
		if !ok {
			extra = true
		}
		v, err := g.value(extra, k, depth+1)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

func (g sampler) array(m map[string]any, key string, depth int) (any, error) {
	var out []any
	prefix, _ := m["prefixItems"].([]any)
	for i, s := range prefix {
		v, err := g.value(s, fmt.Sprintf("%s[%d]", key, i), depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	n := max(intKeyword(m, "minItems", 1), 1)
	n = min(n, intKeyword(m, "maxItems", n))
	items, ok := m["items"]
	if !ok || items == false {
		return append([]any{}, out...), nil
	}
	for i := len(out); i < n; i++ {
		v, err := g.value(items, key, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// formatSample is a sample value for a format that contracts assert.
func formatSample(format string) (string, bool) {
	switch format {
	case "email", "idn-email":
		return "ada@example.com", true
	case "date-time":
		return "2025-01-01T09:00:00Z", true
	case "date":
		return "2025-01-01", true
	case "time":
		return "09:00:00Z", true
	case "duration":
		return "PT1M", true
	case "uri", "iri":
		return "https://example.com/", true
	case "uri-reference", "iri-reference", "json-pointer":
		return "/example", true
	case "uri-template":
		return "https://example.com/{id}", true
	case "hostname", "idn-hostname":
		return "example.com", true
	case "ipv4":
		return "192.0.2.1", true
	case "ipv6":
		return "2001:db8::1", true
	case "uuid":
		return "7c1d3f5e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", true
	case "regex":
		return ".*", true
	case "relative-json-pointer":
		return "0", true
	}
	return "", false
}

func (g sampler) str(m map[string]any, key string) (any, error) {
	if f, ok := m["format"].(string); ok {
		if v, ok := formatSample(f); ok {
			return v, nil
		}
	}
	s := key + "-1"
	if p, ok := m["pattern"].(string); ok {
		v, err := matching(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		s = v
	}
	if lo := intKeyword(m, "minLength", 0); len([]rune(s)) < lo {
		s += strings.Repeat("x", lo-len([]rune(s)))
	}
	if n := intKeyword(m, "maxLength", -1); n >= 0 && len([]rune(s)) > n {
		s = string([]rune(s)[:n])
	}
	return s, nil
}

// matching returns a short string that matches a regular expression: the
// first choice of every alternation, the least repetition allowed.
func matching(pattern string) (string, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return "", fmt.Errorf("pattern %q: %w", pattern, err)
	}
	var b strings.Builder
	var gen func(re *syntax.Regexp) error
	gen = func(re *syntax.Regexp) error {
		switch re.Op {
		case syntax.OpLiteral:
			b.WriteString(string(re.Rune))
		case syntax.OpCharClass:
			if len(re.Rune) == 0 {
				return fmt.Errorf("pattern %q: empty character class", pattern)
			}
			b.WriteRune(pickRune(re.Rune))
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			b.WriteByte('x')
		case syntax.OpCapture, syntax.OpPlus:
			return gen(re.Sub[0])
		case syntax.OpRepeat:
			for range re.Min {
				if err := gen(re.Sub[0]); err != nil {
					return err
				}
			}
		case syntax.OpConcat:
			for _, s := range re.Sub {
				if err := gen(s); err != nil {
					return err
				}
			}
		case syntax.OpAlternate:
			return gen(re.Sub[0])
		case syntax.OpNoMatch:
			return fmt.Errorf("pattern %q matches nothing", pattern)
		}
		// Anchors, boundaries, empty matches, star and quest add nothing.
		return nil
	}
	if err := gen(re.Simplify()); err != nil {
		return "", err
	}
	return b.String(), nil
}

// pickRune picks a readable rune from a class's ranges: a lowercase
// letter or a digit if the class has one, else its first rune.
func pickRune(ranges []rune) rune {
	for _, want := range []rune{'a', '1', 'A'} {
		for i := 0; i+1 < len(ranges); i += 2 {
			if ranges[i] <= want && want <= ranges[i+1] {
				return want
			}
		}
	}
	return ranges[0]
}

func (g sampler) number(m map[string]any, integer bool) any {
	lo, hasLo := floatKeyword(m, "minimum")
	if x, ok := floatKeyword(m, "exclusiveMinimum"); ok {
		lo, hasLo = x, true
		if integer {
			lo = math.Floor(x) + 1
		}
	}
	hi, hasHi := floatKeyword(m, "maximum")
	if x, ok := floatKeyword(m, "exclusiveMaximum"); ok {
		hi, hasHi = x, true
		if integer {
			hi = math.Ceil(x) - 1
		}
	}
	v := 1.0
	switch {
	case hasLo && hasHi:
		v = lo + (hi-lo)/2
	case hasLo:
		v = max(lo, 1)
	case hasHi:
		v = min(hi, 1)
	}
	if step, ok := floatKeyword(m, "multipleOf"); ok && step > 0 {
		v = math.Ceil(v/step) * step
	}
	if integer {
		return int64(math.Floor(v))
	}
	return v
}

func floatKeyword(m map[string]any, k string) (float64, bool) { return float(m[k]) }

func intKeyword(m map[string]any, k string, def int) int {
	if f, ok := float(m[k]); ok {
		return int(f)
	}
	return def
}

// float reads a schema's number, which decoding left as a json.Number.
func float(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

// jsonPointer evaluates a JSON pointer (RFC 6901) in doc.
func jsonPointer(doc any, ptr string) any {
	if ptr == "" {
		return doc
	}
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	return cur
}
