package refdoc

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Presence says whether a field must be there.
type Presence uint8

// Presences.
const (
	// Always is the contract's value itself, or an array element: it is
	// there whenever its parent is, so "required" does not apply.
	Always Presence = iota
	// Required is a property listed in its object's "required".
	Required
	// Optional is any other property.
	Optional
)

// String renders the presence as the Required column shows it.
func (p Presence) String() string {
	switch p {
	case Required:
		return "yes"
	case Optional:
		return "no"
	}
	return "—"
}

// Field is one row of a contract table: a value the schema describes.
type Field struct {
	// Path is where the value sits, in the syntax of mapping expressions
	// ($.input.items[*].sku); [*] stands for every element of an array.
	Path     string
	Type     string
	Presence Presence
	// Constraints are the schema's rules on the value, one per keyword,
	// rendered for people ("≥ 1", "format: email").
	Constraints []string
	Description string
}

// maxDepth bounds the walk: deeper schemas are legal but no reader wants a
// table that deep, and it keeps a hostile schema from costing much.
const maxDepth = 32

// Fields flattens a JSON Schema into table rows, each parent before its
// children and properties in name order, so that the output is the same on
// every run. root names the value the schema describes ("$.input"); the
// first row is that value itself. Local references ("#/$defs/x") are
// followed; a reference back into one being expanded is reported as
// recursive instead of followed, so recursive schemas terminate.
func Fields(schema any, root string) []Field {
	w := &walker{doc: schema}
	w.walk(root, schema, Always, 0)
	return w.out
}

type walker struct {
	doc any
	out []Field
	// expanding holds the references being expanded on the current path.
	expanding []string
}

func (w *walker) walk(path string, s any, pres Presence, depth int) {
	m, refs, cyclic := w.resolve(s)
	if cyclic != "" {
		w.out = append(w.out, Field{Path: path, Type: "object", Presence: pres,
			Constraints: []string{"recursive: same shape as " + cyclic}, Description: description(m)})
		return
	}
	w.expanding = append(w.expanding, refs...)
	defer func() { w.expanding = w.expanding[:len(w.expanding)-len(refs)] }()

	w.out = append(w.out, Field{Path: path, Type: typeOf(w.doc, m), Presence: pres, Constraints: constraints(m), Description: description(m)})
	if depth >= maxDepth {
		return
	}
	if props, ok := m["properties"].(map[string]any); ok {
		req := requiredSet(m)
		for _, k := range sortedKeys(props) {
			p := Optional
			if req[k] {
				p = Required
			}
			w.walk(childPath(path, k), props[k], p, depth+1)
		}
	}
	if prefix, ok := m["prefixItems"].([]any); ok {
		for i, it := range prefix {
			w.walk(fmt.Sprintf("%s[%d]", path, i), it, Always, depth+1)
		}
	}
	if items, ok := m["items"]; ok {
		w.element(path+"[*]", items, depth+1)
	}
}

// element walks an array's item schema. Its own row is left out when the
// array's row already says all there is ("array of string"), to keep
// tables short; the fields inside it still get rows.
func (w *walker) element(path string, s any, depth int) {
	before := len(w.out)
	w.walk(path, s, Always, depth)
	if len(w.out) == before {
		return
	}
	f := w.out[before]
	if len(f.Constraints) == 0 && f.Description == "" {
		w.out = append(w.out[:before], w.out[before+1:]...)
	}
}

// resolve follows s's local references to a schema object. refs are the
// references it followed; cyclic is set, instead, to the first one that is
// already being expanded further up.
func (w *walker) resolve(s any) (m map[string]any, refs []string, cyclic string) {
	m, _ = s.(map[string]any)
	outer := m
	for range maxDepth {
		ref, ok := m["$ref"].(string)
		if !ok || !strings.HasPrefix(ref, "#") {
			break
		}
		if slices.Contains(w.expanding, ref) || slices.Contains(refs, ref) {
			return outer, nil, ref
		}
		target, ok := pointer(w.doc, strings.TrimPrefix(ref, "#")).(map[string]any)
		if !ok {
			break
		}
		refs = append(refs, ref)
		m = merge(target, m)
	}
	return m, refs, ""
}

// merge overlays the keywords written beside a $ref (a description, most
// often) on the schema it points to.
func merge(target, beside map[string]any) map[string]any {
	out := make(map[string]any, len(target)+len(beside))
	for k, v := range target {
		out[k] = v
	}
	for k, v := range beside {
		if k != "$ref" {
			out[k] = v
		}
	}
	if ref, ok := target["$ref"]; ok {
		out["$ref"] = ref
	} else {
		delete(out, "$ref")
	}
	return out
}

// pointer evaluates a JSON pointer (RFC 6901) in doc.
func pointer(doc any, ptr string) any {
	if ptr == "" {
		return doc
	}
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch t := cur.(type) {
		case map[string]any:
			cur = t[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(t) {
				return nil
			}
			cur = t[i]
		default:
			return nil
		}
	}
	return cur
}

// childPath appends a property name in expression syntax: .name for
// identifiers, ["name"] for anything else.
func childPath(path, key string) string {
	if key != "" && strings.IndexFunc(key, func(r rune) bool {
		return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) < 0 {
		return path + "." + key
	}
	q, _ := json.Marshal(key)
	return path + "[" + string(q) + "]"
}

func requiredSet(m map[string]any) map[string]bool {
	out := map[string]bool{}
	if req, ok := m["required"].([]any); ok {
		for _, r := range req {
			if s, ok := r.(string); ok {
				out[s] = true
			}
		}
	}
	return out
}

func description(m map[string]any) string {
	if d, ok := m["description"].(string); ok && d != "" {
		return d
	}
	t, _ := m["title"].(string)
	return t
}

// typeOf names the type of a schema, inferring it from enum, const,
// properties or items when "type" is not written.
func typeOf(doc any, m map[string]any) string {
	if m == nil {
		return "any"
	}
	var names []string
	switch t := m["type"].(type) {
	case string:
		names = []string{t}
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				names = append(names, s)
			}
		}
	}
	if len(names) == 0 {
		switch {
		case m["const"] != nil:
			names = []string{valueType(m["const"])}
		case m["enum"] != nil:
			if t := enumType(m["enum"]); t != "" {
				names = []string{t}
			}
		case m["properties"] != nil || m["additionalProperties"] != nil:
			names = []string{"object"}
		case m["items"] != nil || m["prefixItems"] != nil:
			names = []string{"array"}
		}
	}
	if len(names) == 0 {
		return "any"
	}
	for i, n := range names {
		if n == "array" {
			if items, ok := m["items"].(map[string]any); ok {
				w := &walker{doc: doc}
				im, _, cyclic := w.resolve(items)
				if it := typeOf(doc, im); it != "any" && cyclic == "" && !strings.Contains(it, " or ") {
					names[i] = "array of " + it
				}
			}
		}
	}
	return strings.Join(names, " or ")
}

// enumType is the JSON type shared by every enum value, or "".
func enumType(e any) string {
	vals, ok := e.([]any)
	if !ok || len(vals) == 0 {
		return ""
	}
	t := valueType(vals[0])
	for _, v := range vals[1:] {
		vt := valueType(v)
		if vt == t {
			continue
		}
		if (vt == "integer" || vt == "number") && (t == "integer" || t == "number") {
			t = "number"
			continue
		}
		return ""
	}
	return t
}

// valueType is the JSON type of a decoded value.
func valueType(v any) string {
	switch t := v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	case json.Number:
		if !strings.ContainsAny(string(t), ".eE") {
			return "integer"
		}
	case int, int64, int32:
		return "integer"
	}
	return "number"
}

// constraints renders a schema's validation keywords in a fixed order.
func constraints(m map[string]any) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if v, ok := m["const"]; ok {
		add("always %s", code(v))
	}
	if e, ok := m["enum"].([]any); ok {
		vals := make([]string, len(e))
		for i, v := range e {
			vals[i] = code(v)
		}
		add("one of %s", strings.Join(vals, ", "))
	}
	if f, ok := m["format"].(string); ok {
		add("format: %s", f)
	}
	if p, ok := m["pattern"].(string); ok {
		add("pattern: %s", code(p))
	}
	for _, kw := range []struct{ key, sym string }{
		{"minimum", "≥"}, {"exclusiveMinimum", ">"}, {"maximum", "≤"}, {"exclusiveMaximum", "<"},
	} {
		if v, ok := m[kw.key]; ok {
			add("%s %s", kw.sym, number(v))
		}
	}
	if v, ok := m["multipleOf"]; ok {
		add("multiple of %s", number(v))
	}
	if r := bounds(m, "minLength", "maxLength"); r != "" {
		add("length %s", r)
	}
	if r := bounds(m, "minItems", "maxItems"); r != "" {
		add("items %s", r)
	}
	if u, ok := m["uniqueItems"].(bool); ok && u {
		add("unique items")
	}
	if r := bounds(m, "minProperties", "maxProperties"); r != "" {
		add("fields %s", r)
	}
	if pp, ok := m["patternProperties"].(map[string]any); ok {
		for _, k := range sortedKeys(pp) {
			add("fields matching %s", code(k))
		}
	}
	switch ap := m["additionalProperties"].(type) {
	case bool:
		if !ap {
			add("no other fields")
		}
	case map[string]any:
		add("other fields: %s", typeOf(nil, ap))
	}
	for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
		if list, ok := m[kw].([]any); ok {
			add("%s %d schemas", map[string]string{"allOf": "all of", "anyOf": "any of", "oneOf": "one of"}[kw], len(list))
		}
	}
	if _, ok := m["not"]; ok {
		add("not a schema")
	}
	if _, ok := m["if"]; ok {
		add("conditional (if/then)")
	}
	if ref, ok := m["$ref"].(string); ok {
		add("see %s", code(ref))
	}
	if v, ok := m["default"]; ok {
		add("default %s", code(v))
	}
	if ex, ok := m["examples"].([]any); ok && len(ex) > 0 {
		add("e.g. %s", code(ex[0]))
	}
	return out
}

// bounds renders a min/max pair: "2", "2..10", "≥ 1" or "≤ 64".
func bounds(m map[string]any, minKey, maxKey string) string {
	lo, hasLo := m[minKey]
	hi, hasHi := m[maxKey]
	switch {
	case hasLo && hasHi && number(lo) == number(hi):
		return number(lo)
	case hasLo && hasHi:
		return number(lo) + ".." + number(hi)
	case hasLo:
		return "≥ " + number(lo)
	case hasHi:
		return "≤ " + number(hi)
	}
	return ""
}

func number(v any) string {
	if n, ok := v.(json.Number); ok {
		return n.String()
	}
	return fmt.Sprint(v)
}

// code renders a value as inline code: strings bare, anything else as JSON.
func code(v any) string {
	s, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			s = fmt.Sprint(v)
		} else {
			s = string(b)
		}
	}
	if strings.Contains(s, "`") {
		// A code span holding a backtick needs a longer fence.
		return "`` " + s + " ``"
	}
	return "`" + s + "`"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
