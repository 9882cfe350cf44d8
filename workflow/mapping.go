package workflow

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// An expression reads a value from the task input or an upstream result:
//
//	$.input                      the whole task input
//	$.input.customer.email       a field
//	$.input.items[0].sku         an array element
//	$.input["odd key"]           a field whose name is not an identifier
//	$.steps.reserve.result.id    a field of step reserve's result
//
// A string in a mapping is an expression when it starts with "$." or equals
// "$"; "$$" at the start escapes a literal "$".

// Expr is a parsed mapping expression.
type Expr struct {
	// Source is the expression as written.
	Source string
	// Step is the name of the step whose result is read, "" for the input.
	Step string
	// stepIndex is Step's index in the plan, -1 for the input.
	stepIndex int
	path      []accessor
}

type accessor struct {
	key   string
	index int // valid when isIndex
	isIdx bool
}

func (a accessor) String() string {
	if a.isIdx {
		return "[" + strconv.Itoa(a.index) + "]"
	}
	return "." + a.key
}

// isExpr reports whether a mapping string is an expression.
func isExpr(s string) bool {
	return s == "$" || strings.HasPrefix(s, "$.") || strings.HasPrefix(s, "$[")
}

// ParseExpr parses one expression.
func ParseExpr(s string) (*Expr, error) {
	if !strings.HasPrefix(s, "$") {
		return nil, fmt.Errorf("expression %q must start with $.input or $.steps.<name>.result", s)
	}
	acc, err := parseAccessors(s[1:])
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", s, err)
	}
	e := &Expr{Source: s, stepIndex: -1}
	if len(acc) == 0 || acc[0].isIdx {
		return nil, fmt.Errorf("expression %q must start with $.input or $.steps.<name>.result", s)
	}
	switch acc[0].key {
	case "input":
		e.path = acc[1:]
	case "steps":
		// An empty name would read as "" and be taken for the task input.
		if len(acc) < 3 || acc[1].isIdx || acc[1].key == "" || acc[2].isIdx || acc[2].key != "result" {
			return nil, fmt.Errorf("expression %q: a step's value is read as $.steps.<name>.result[.field...]", s)
		}
		e.Step = acc[1].key
		e.path = acc[3:]
	default:
		return nil, fmt.Errorf("expression %q: unknown root %q; use $.input or $.steps.<name>.result", s, acc[0].key)
	}
	return e, nil
}

// parseAccessors parses ".a.b[0][\"c d\"]".
func parseAccessors(s string) ([]accessor, error) {
	var out []accessor
	for i := 0; i < len(s); {
		switch s[i] {
		case '.':
			j := i + 1
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			if j == i+1 {
				return nil, fmt.Errorf("empty field name at offset %d", i+2)
			}
			out = append(out, accessor{key: s[i+1 : j]})
			i = j
		case '[':
			if i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\'') {
				// A quoted name ends at the quote before "]", so that it
				// may hold any other character, "]" included.
				end := strings.Index(s[i+2:], string(s[i+1])+"]")
				if end < 0 {
					return nil, fmt.Errorf("unclosed [ at offset %d", i+2)
				}
				out = append(out, accessor{key: s[i+2 : i+2+end]})
				i += end + 4
				continue
			}
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at offset %d", i+2)
			}
			inner := s[i+1 : i+end]
			n, err := strconv.Atoi(inner)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("index [%s] must be a non-negative integer or a quoted field name", inner)
			}
			out = append(out, accessor{index: n, isIdx: true})
			i += end + 1
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d", s[i], i+2)
		}
	}
	return out, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Mapping is a step's compiled input mapping: the shape of the step input
// with expressions at the leaves.
type Mapping struct {
	tree  any // map[string]any | []any | *Expr | literal
	reads []int
}

// Reads returns the indices of the steps whose results the mapping reads.
func (m *Mapping) Reads() []int {
	if m == nil {
		return nil
	}
	return m.reads
}

// Exprs returns the mapping's expressions keyed by the field path they fill
// ("customer.email"), for documentation.
func (m *Mapping) Exprs() map[string]*Expr {
	out := map[string]*Expr{}
	if m == nil {
		return out
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t := v.(type) {
		case *Expr:
			out[path] = t
		case map[string]any:
			for k, c := range t {
				walk(joinPath(path, k), c)
			}
		case []any:
			for i, c := range t {
				walk(indexPath(path, i), c)
			}
		}
	}
	walk("", m.tree)
	return out
}

// Resolve builds a step's input from the task input and the results of
// upstream steps. A field that is absent at run time is left out of the
// object being built (null in an array), matching JSONPath's "no match";
// reading into a value of the wrong type is an error.
func (m *Mapping) Resolve(input any, result func(step int) any) (any, error) {
	if m == nil {
		return map[string]any{}, nil
	}
	v, _, err := resolve(m.tree, input, result)
	return v, err
}

func resolve(node, input any, result func(int) any) (any, bool, error) {
	switch t := node.(type) {
	case *Expr:
		src := input
		if t.stepIndex >= 0 {
			src = result(t.stepIndex)
		}
		return t.eval(src)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, c := range t {
			v, ok, err := resolve(c, input, result)
			if err != nil {
				return nil, false, err
			}
			if ok {
				out[k] = v
			}
		}
		return out, true, nil
	case []any:
		out := make([]any, len(t))
		for i, c := range t {
			v, _, err := resolve(c, input, result)
			if err != nil {
				return nil, false, err
			}
			out[i] = v
		}
		return out, true, nil
	}
	return node, true, nil
}

// eval walks the expression's path through v. ok is false when a field or
// element is absent.
func (e *Expr) eval(v any) (any, bool, error) {
	for i, a := range e.path {
		switch t := v.(type) {
		case map[string]any:
			if a.isIdx {
				return nil, false, fmt.Errorf("%s: %s is an object, not an array", e.Source, e.prefix(i))
			}
			c, ok := t[a.key]
			if !ok {
				return nil, false, nil
			}
			v = c
		case []any:
			if !a.isIdx {
				return nil, false, fmt.Errorf("%s: %s is an array, not an object", e.Source, e.prefix(i))
			}
			if a.index >= len(t) {
				return nil, false, nil
			}
			v = t[a.index]
		case nil:
			return nil, false, nil
		default:
			return nil, false, fmt.Errorf("%s: %s is a %s, it has no %s", e.Source, e.prefix(i), jsonType(v), a)
		}
	}
	return v, true, nil
}

// prefix renders the part of the expression before path element i.
func (e *Expr) prefix(i int) string {
	var b strings.Builder
	if e.stepIndex >= 0 {
		b.WriteString("$.steps." + e.Step + ".result")
	} else {
		b.WriteString("$.input")
	}
	for _, a := range e.path[:i] {
		b.WriteString(a.String())
	}
	return b.String()
}

func jsonType(v any) string {
	switch v.(type) {
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
	}
	return "number"
}

// compileMapping parses every expression of a step's input mapping. index
// resolves step names; path is the mapping's field path for problems.
func compileMapping(in map[string]any, path string, index map[string]int, ps *problems) (*Mapping, []*mappedExpr) {
	var exprs []*mappedExpr
	reads := map[int]bool{}
	var walk func(p string, v any) any
	walk = func(p string, v any) any {
		switch t := v.(type) {
		case string:
			if strings.HasPrefix(t, "$$") {
				return t[1:]
			}
			if !isExpr(t) {
				return t
			}
			e, err := ParseExpr(t)
			if err != nil {
				ps.add(p, "%v", err)
				return nil
			}
			if e.Step != "" {
				i, ok := index[e.Step]
				if !ok {
					msg := fmt.Sprintf("%s reads step %q, which does not exist", t, e.Step)
					if s := suggest(e.Step, keys(index)); s != "" {
						msg += fmt.Sprintf("; did you mean %q?", s)
					}
					ps.add(p, "%s", msg)
					return nil
				}
				e.stepIndex = i
				reads[i] = true
			}
			exprs = append(exprs, &mappedExpr{path: p, expr: e})
			return e
		case map[string]any:
			out := make(map[string]any, len(t))
			for k, c := range t {
				out[k] = walk(joinPath(p, k), c)
			}
			return out
		case []any:
			out := make([]any, len(t))
			for i, c := range t {
				out[i] = walk(indexPath(p, i), c)
			}
			return out
		}
		return v
	}
	tree := walk(path, in)
	m := &Mapping{tree: tree}
	for i := range reads {
		m.reads = append(m.reads, i)
	}
	sort.Ints(m.reads)
	return m, exprs
}

// mappedExpr is an expression with the manifest path it was written at.
type mappedExpr struct {
	path string
	expr *Expr
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// schemaAt follows path through a JSON Schema document and reports whether
// the path can exist. It is deliberately lenient where a schema is open
// (no declared properties, combinators it does not model): a mapping is
// only rejected when the schema plainly says the field cannot be there.
func schemaAt(root, s any, path []accessor) error {
	for i, a := range path {
		s = deref(root, s)
		m, ok := s.(map[string]any)
		if !ok {
			if b, isBool := s.(bool); isBool && !b {
				return fmt.Errorf("the schema admits no value at %s", a)
			}
			return nil // true or absent: anything goes
		}
		if hasCombinator(m) {
			return nil
		}
		if a.isIdx {
			if !typeAllows(m, "array") {
				return fmt.Errorf("%s is %s, not an array", describePrefix(path[:i]), typeList(m))
			}
			if pi, ok := m["prefixItems"].([]any); ok && a.index < len(pi) {
				s = pi[a.index]
				continue
			}
			items, ok := m["items"]
			if !ok {
				return nil
			}
			s = items
			continue
		}
		if !typeAllows(m, "object") {
			return fmt.Errorf("%s is %s, it has no field %q", describePrefix(path[:i]), typeList(m), a.key)
		}
		props, hasProps := m["properties"].(map[string]any)
		if p, ok := props[a.key]; ok {
			s = p
			continue
		}
		if _, ok := m["patternProperties"]; ok {
			return nil
		}
		// additionalProperties: a schema is followed, true admits anything,
		// false or (with declared properties) absence means the field is not there.
		switch ap := m["additionalProperties"].(type) {
		case map[string]any:
			s = ap
			continue
		case bool:
			if ap {
				return nil
			}
		default:
			if !hasProps {
				return nil
			}
		}
		known := make([]string, 0, len(props))
		for k := range props {
			known = append(known, k)
		}
		sort.Strings(known)
		msg := fmt.Sprintf("field %q is not in the schema (it declares %s)", a.key, strings.Join(known, ", "))
		if sg := suggest(a.key, known); sg != "" {
			msg = fmt.Sprintf("field %q is not in the schema; did you mean %q?", a.key, sg)
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

func describePrefix(p []accessor) string {
	if len(p) == 0 {
		return "the value"
	}
	var b strings.Builder
	for _, a := range p {
		b.WriteString(a.String())
	}
	return strings.TrimPrefix(b.String(), ".")
}

func hasCombinator(m map[string]any) bool {
	for _, k := range []string{"allOf", "anyOf", "oneOf", "if", "$dynamicRef"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// deref resolves a local "$ref" ("#/$defs/x" or "#/definitions/x").
func deref(root, s any) any {
	for range 32 { // bound chains of references
		m, ok := s.(map[string]any)
		if !ok {
			return s
		}
		ref, ok := m["$ref"].(string)
		if !ok || !strings.HasPrefix(ref, "#") {
			return s
		}
		if ref != "#" && !strings.HasPrefix(ref, "#/") {
			return true // an anchor ("#name"): not followed, so anything goes
		}
		target := root
		for _, tok := range strings.Split(strings.TrimPrefix(ref, "#"), "/")[1:] {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			tm, ok := target.(map[string]any)
			if !ok {
				return nil
			}
			target = tm[tok]
		}
		s = target
	}
	return s
}

func typeAllows(m map[string]any, want string) bool {
	switch t := m["type"].(type) {
	case string:
		return t == want
	case []any:
		for _, x := range t {
			if x == want {
				return true
			}
		}
		return false
	}
	return true
}

func typeList(m map[string]any) string {
	switch t := m["type"].(type) {
	case string:
		if t != "" && strings.ContainsRune("aeiou", rune(t[0])) {
			return "an " + t
		}
		return "a " + t
	case []any:
		parts := make([]string, len(t))
		for i, x := range t {
			parts[i] = fmt.Sprint(x)
		}
		return "one of " + strings.Join(parts, "|")
	}
	return "untyped"
}
