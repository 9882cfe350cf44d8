package llm

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// redacted replaces every value and piece of text that must not leave the
// process.
const redacted = "[redacted]"

// Redact returns a copy of v, a decoded JSON value (or anything that
// marshals to JSON), with secrets replaced by "[redacted]":
//
//   - the value of every field whose JSON Schema property in schema carries
//     "x-sensitive": true, at any depth, found through properties,
//     patternProperties, additionalProperties, items, prefixItems, local
//     $refs and allOf/anyOf/oneOf;
//   - the value of every key that names a secret (see SensitiveKey),
//     whatever the schema says;
//   - secrets inside every remaining string (see RedactText).
//
// schema is a decoded JSON Schema document (as workflow.Contract.Doc
// returns), its raw JSON, or nil. v is never modified.
func Redact(v any, schema any) any {
	root := schemaDoc(schema)
	return redactValue(root, normalize(v), expand(root, root, nil))
}

// schemaDoc accepts a schema as a decoded document or as raw JSON.
func schemaDoc(schema any) map[string]any {
	switch s := schema.(type) {
	case map[string]any:
		return s
	case json.RawMessage:
		return schemaDoc([]byte(s))
	case []byte:
		var m map[string]any
		if json.Unmarshal(s, &m) == nil {
			return m
		}
	case string:
		return schemaDoc([]byte(s))
	}
	return nil
}

// normalize turns v into the generic JSON shapes (map[string]any, []any,
// string, json.Number, bool, nil) so that structs and typed maps are
// redacted like any other value.
func normalize(v any) any {
	switch v.(type) {
	case nil, string, bool, json.Number, float64, map[string]any, []any:
		return v
	}
	data, err := json.Marshal(v)
	if err != nil {
		// Unencodable values cannot be sent either; say so rather than
		// risk sending something half-redacted.
		return redacted
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return redacted
	}
	return out
}

// redactValue walks v with the schemas that apply to it; root is the
// document their $refs resolve against.
func redactValue(root map[string]any, v any, schemas []map[string]any) any {
	if isSensitive(schemas) {
		return redacted
	}
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			if SensitiveKey(k) {
				out[k] = redacted
				continue
			}
			out[k] = redactValue(root, normalize(val), childSchemas(root, schemas, k))
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, val := range v {
			out[i] = redactValue(root, normalize(val), itemSchemas(root, schemas, i))
		}
		return out
	case string:
		return RedactText(v)
	case json.Number:
		// A card number stored as a number is still a card number.
		if isCardNumber(string(v)) {
			return redacted
		}
	case float64:
		if v == math.Trunc(v) && isCardNumber(strconv.FormatFloat(v, 'f', -1, 64)) {
			return redacted
		}
	}
	return v
}

func isSensitive(schemas []map[string]any) bool {
	for _, s := range schemas {
		if b, _ := s["x-sensitive"].(bool); b {
			return true
		}
	}
	return false
}

// expand returns s and every schema that applies to the same value with it:
// the targets of local $refs and the branches of allOf, anyOf, oneOf,
// then and else. Redaction must be conservative, so a value is treated as
// sensitive if any branch that might apply says it is.
func expand(root, s map[string]any, seen map[string]bool) []map[string]any {
	if s == nil {
		return nil
	}
	out := []map[string]any{s}
	if ref, ok := s["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
		if seen == nil {
			seen = map[string]bool{}
		}
		if !seen[ref] {
			seen[ref] = true
			out = append(out, expand(root, resolve(root, ref), seen)...)
		}
	}
	for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
		branches, _ := s[kw].([]any)
		for _, b := range branches {
			bm, _ := b.(map[string]any)
			out = append(out, expand(root, bm, seen)...)
		}
	}
	for _, kw := range []string{"then", "else"} {
		bm, _ := s[kw].(map[string]any)
		out = append(out, expand(root, bm, seen)...)
	}
	return out
}

// resolve follows a local JSON pointer reference ("#/$defs/card").
func resolve(root map[string]any, ref string) map[string]any {
	var cur any = root
	p := strings.TrimPrefix(ref, "#")
	if p == "" {
		return root
	}
	for _, tok := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}

func childSchemas(root map[string]any, schemas []map[string]any, key string) []map[string]any {
	var out []map[string]any
	for _, s := range schemas {
		matched := false
		if props, ok := s["properties"].(map[string]any); ok {
			if p, ok := props[key].(map[string]any); ok {
				out = append(out, expand(root, p, nil)...)
				matched = true
			}
		}
		if pats, ok := s["patternProperties"].(map[string]any); ok {
			for pat, p := range pats {
				re, err := regexp.Compile(pat)
				if pm, ok := p.(map[string]any); ok && err == nil && re.MatchString(key) {
					out = append(out, expand(root, pm, nil)...)
					matched = true
				}
			}
		}
		if !matched {
			if ap, ok := s["additionalProperties"].(map[string]any); ok {
				out = append(out, expand(root, ap, nil)...)
			}
		}
	}
	return out
}

func itemSchemas(root map[string]any, schemas []map[string]any, i int) []map[string]any {
	var out []map[string]any
	for _, s := range schemas {
		prefix, _ := s["prefixItems"].([]any)
		if tuple, ok := s["items"].([]any); ok { // drafts before 2020-12
			prefix = tuple
		}
		if i < len(prefix) {
			if pm, ok := prefix[i].(map[string]any); ok {
				out = append(out, expand(root, pm, nil)...)
			}
			continue
		}
		for _, kw := range []string{"items", "additionalItems"} {
			if im, ok := s[kw].(map[string]any); ok {
				out = append(out, expand(root, im, nil)...)
				break
			}
		}
	}
	return out
}

// sensitiveWords are key names whose values are secret wherever they
// appear, matched within the key with separators and case ignored
// ("db_password", "clientSecret", "X-Api-Key").
func sensitiveWords() []string {
	return []string{"password", "passwd", "secret", "apikey", "authorization", "cardnumber", "privatekey"}
}

// sensitiveTokens are too short to match inside other words ("classname"
// contains "ssn"), so they must be a whole word of the key ("customer_ssn",
// "accessToken").
func sensitiveTokens() []string { return []string{"token", "cvv", "ssn", "iban"} }

// SensitiveKey reports whether a key's name says its value is a secret.
func SensitiveKey(k string) bool {
	var joined strings.Builder
	for _, r := range k {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			joined.WriteRune(unicode.ToLower(r))
		}
	}
	j := joined.String()
	for _, w := range sensitiveWords() {
		if strings.Contains(j, w) {
			return true
		}
	}
	for _, w := range keyWords(k) {
		for _, t := range sensitiveTokens() {
			if w == t {
				return true
			}
		}
	}
	return false
}

// keyWords splits a key at separators and lower-to-upper case changes.
func keyWords(k string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	var prev rune
	for _, r := range k {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
		case unicode.IsUpper(r) && unicode.IsLower(prev):
			flush()
			cur = append(cur, r)
		default:
			cur = append(cur, r)
		}
		prev = r
	}
	flush()
	return words
}

var (
	// "Bearer <token>" and "Basic <credentials>", as in Authorization
	// headers quoted by error messages.
	bearerRE = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*`)
	// "password=hunter2", "api_key: abc", `"secret":"abc"`.
	pairRE = regexp.MustCompile(`(?i)\b(password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api_key|apikey|api-key)(["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&,;"'}\]]+)`)
	// Runs of 13 to 19 digits, optionally grouped by spaces or dashes.
	cardRE = regexp.MustCompile(`\b(?:\d[ -]?){12,18}\d\b`)
)

// RedactText replaces secrets found in free text: bearer and basic
// credentials, key=value pairs naming a password, secret, token or API
// key, and digit runs that pass the Luhn check as card numbers do. It is a
// safety net for text nobody wrote a schema for (error messages, logs), not
// a guarantee.
func RedactText(s string) string {
	// Bearer first: in "Authorization: Bearer abc" the pair rule would
	// otherwise take "Bearer" as the value and leave the token.
	s = bearerRE.ReplaceAllString(s, "$1 "+redacted)
	s = pairRE.ReplaceAllStringFunc(s, func(m string) string {
		g := pairRE.FindStringSubmatch(m)
		v := redacted
		if q := g[3][0]; q == '"' || q == '\'' {
			v = string(q) + redacted + string(q) // keep JSON and quoted text well-formed
		}
		return g[1] + g[2] + v
	})
	s = cardRE.ReplaceAllStringFunc(s, func(m string) string {
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, m)
		if isCardNumber(digits) {
			return redacted
		}
		return m
	})
	return s
}

// isCardNumber reports whether digits (digits only) could be a payment card
// number: 13 to 19 digits passing the Luhn check.
func isCardNumber(digits string) bool {
	if len(digits) < 13 || len(digits) > 19 {
		return false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return false
		}
	}
	return luhn(digits)
}

func luhn(digits string) bool {
	sum := 0
	double := false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}
