package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// document is a manifest decoded into plain JSON values (map[string]any,
// []any, string, json.Number, bool, nil) together with the source line of
// every field path, so that problems found later can point at the line.
type document struct {
	root  any
	lines map[string]int
}

// errNesting is returned when a document nests deeper than Limits.MaxNesting.
var errNesting = errors.New("document nests too deeply")

// errEmpty is returned for a document without content (nothing, or only
// comments).
var errEmpty = errors.New("manifest is empty")

// docError is a problem that stops a document from being read at all. It
// names the field path and the line where they are known, so that it can be
// reported as a Problem like any other.
type docError struct {
	path string
	line int
	err  error
}

func (e *docError) Error() string {
	var b strings.Builder
	if e.line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.line)
	}
	if e.path != "" {
		b.WriteString(e.path + ": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *docError) Unwrap() error { return e.err }

func errorAt(path string, line int, format string, args ...any) *docError {
	return &docError{path: path, line: line, err: fmt.Errorf(format, args...)}
}

// yamlLineRE finds the line in the parser's syntax errors ("yaml: line 3: ...").
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument decodes YAML or JSON (JSON is read as the YAML subset it is,
// so both formats share one parser and both get line numbers).
func parseDocument(src []byte, lim Limits) (*document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(jsonSurrogates(src)))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if err == io.EOF {
			return nil, errEmpty
		}
		return nil, syntaxError(err)
	}
	if isEmptyDocument(&n) {
		return nil, errEmpty
	}
	// A second document would otherwise be ignored without a word.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		return nil, syntaxError(err)
	case !isEmptyDocument(&next):
		return nil, errorAt("", next.Line, "the manifest holds more than one YAML document (---); apply each workflow on its own")
	}
	d := &document{lines: map[string]int{}}
	c := converter{lim: lim, lines: d.lines, budget: lim.MaxNodes}
	v, err := c.convert(&n, "", 0)
	if err != nil {
		return nil, err
	}
	d.root = v
	return d, nil
}

// jsonSurrogates rewrites the UTF-16 surrogate escapes of a JSON document
// ("\ud83d\ude00", as Python's json module writes any emoji) into the YAML
// escape for the same character ("\U0001F600"), which the YAML parser
// needs; a lone surrogate becomes U+FFFD, as encoding/json decodes it.
// Lines do not move. Anything that is not valid JSON is returned as is.
func jsonSurrogates(src []byte) []byte {
	if !bytes.Contains(src, []byte(`\u`)) || !json.Valid(src) {
		return src
	}
	hex4 := func(b []byte) (rune, bool) {
		if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[2:6]), 16, 32)
		return rune(n), err == nil
	}
	out := make([]byte, 0, len(src))
	for i := 0; i < len(src); {
		if src[i] != '\\' { // in valid JSON a backslash starts an escape, in a string
			out = append(out, src[i])
			i++
			continue
		}
		r, ok := hex4(src[i:])
		switch {
		case !ok:
			out = append(out, src[i], src[i+1])
			i += 2
			continue
		case r < 0xD800 || r > 0xDFFF:
			out = append(out, src[i:i+6]...)
			i += 6
			continue
		}
		if lo, ok := hex4(src[i+6:]); ok && r < 0xDC00 && lo >= 0xDC00 && lo <= 0xDFFF {
			out = fmt.Appendf(out, `\U%08X`, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
			i += 12
			continue
		}
		out = append(out, `\uFFFD`...)
		i += 6
	}
	return out
}

// isEmptyDocument reports whether a document node holds no content at all
// (as opposed to an explicit null).
func isEmptyDocument(n *yaml.Node) bool {
	if n.Kind == 0 || n.Kind == yaml.DocumentNode && len(n.Content) == 0 {
		return true
	}
	if n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
		return false
	}
	c := n.Content[0]
	return c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null" && c.Value == "" && c.Style == 0
}

// syntaxError turns the YAML parser's error into a docError with its line.
func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		// The YAML library counts lines from 0 in its parser's errors (and
		// from 1 in its scanner's): "did not find expected ',' or ']'"
		// comes one line early.
		if strings.HasPrefix(msg, "did not find expected") || strings.HasPrefix(msg, "found duplicate %") ||
			msg == "found incompatible YAML document" || msg == "found undefined tag handle" {
			line++
		}
	}
	return errorAt("", line, "syntax error: %s", msg)
}

type converter struct {
	lim    Limits
	lines  map[string]int
	budget int // nodes left before the document is judged too large (guards alias expansion)
}

func (c *converter) convert(n *yaml.Node, path string, depth int) (any, error) {
	if depth > c.lim.MaxNesting {
		return nil, &docError{path: path, line: n.Line, err: fmt.Errorf("%w (more than %d levels; flatten the structure)", errNesting, c.lim.MaxNesting)}
	}
	c.budget--
	if c.budget < 0 {
		return nil, errorAt("", 0, "manifest has more than %d values (aliases included); split it or remove repeated aliases", c.lim.MaxNodes)
	}
	if _, seen := c.lines[path]; !seen {
		c.lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.convert(n.Content[0], path, depth)
	case yaml.AliasNode:
		return c.convert(n.Alias, path, depth+1)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, errorAt(path, k.Line, "mapping keys must be strings")
			}
			if k.Tag == "!!merge" || k.Value == "<<" && k.Tag != "!!str" {
				return nil, errorAt(path, k.Line, "YAML merge keys (<<) are not supported; write the fields out")
			}
			key := k.Value
			child := joinPath(path, key)
			if _, dup := m[key]; dup {
				return nil, errorAt(child, k.Line, "key %q appears twice (first at line %d)", key, c.lines[child])
			}
			c.lines[child] = k.Line
			cv, err := c.convert(v, child, depth+1)
			if err != nil {
				return nil, err
			}
			m[key] = cv
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			cv, err := c.convert(e, indexPath(path, i), depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, cv)
		}
		return s, nil
	case yaml.ScalarNode:
		v, err := scalar(n)
		if err != nil {
			return nil, &docError{path: path, line: n.Line, err: err}
		}
		return v, nil
	}
	return nil, errorAt(path, n.Line, "unsupported YAML node")
}

// scalar maps a YAML scalar to its JSON value. Numbers stay json.Number so
// that large integers in defaults and literals survive exactly; every
// json.Number it returns is valid JSON, whatever YAML spelling it came from
// (+1, .5, 0x1F, 1_000).
func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, err
		}
		return b, nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return json.Number(strconv.FormatInt(i, 10)), nil
		}
		// Too large for int64: keep the digits as written.
		if num, ok := jsonNumber(strings.ReplaceAll(n.Value, "_", "")); ok && !strings.ContainsAny(string(num), ".eE") {
			return num, nil
		}
		// 0x, 0o or 0b beyond 64 bits; the length bound keeps the base
		// conversion cheap.
		if len(n.Value) <= 1000 {
			if b, ok := new(big.Int).SetString(strings.TrimPrefix(n.Value, "+"), 0); ok {
				return json.Number(b.String()), nil
			}
		}
		return nil, fmt.Errorf("%q is not an integer", n.Value)
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, err
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("%q is not a JSON number", n.Value)
		}
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
			if num, ok := jsonNumber(n.Value); ok {
				return num, nil
			}
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
	case "!!str", "!!timestamp", "!!binary":
		return n.Value, nil
	}
	return nil, fmt.Errorf("unsupported YAML tag %s", n.Tag)
}

// jsonNumber returns s as a json.Number if, less a leading '+', it is
// written as JSON writes numbers.
func jsonNumber(s string) (json.Number, bool) {
	s = strings.TrimPrefix(s, "+")
	if s == "" || s[0] != '-' && (s[0] < '0' || s[0] > '9') || !json.Valid([]byte(s)) {
		return "", false
	}
	return json.Number(s), true
}

// pointerToPath turns a JSON pointer's tokens into a field path such as
// "steps[1].retry", consulting the document to tell indices from keys.
func pointerToPath(root any, tokens []string) string {
	path, cur := "", root
	for _, t := range tokens {
		switch v := cur.(type) {
		case []any:
			i, err := strconv.Atoi(t)
			if err == nil && i >= 0 && i < len(v) {
				path, cur = indexPath(path, i), v[i]
				continue
			}
			path, cur = joinPath(path, t), nil
		case map[string]any:
			path, cur = joinPath(path, t), v[t]
		default:
			path, cur = joinPath(path, t), nil
		}
	}
	return path
}
