package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

// parseDocument decodes YAML or JSON (JSON is read as the YAML subset it is,
// so both formats share one parser and both get line numbers).
func parseDocument(src []byte, lim Limits) (*document, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(src, &n); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	d := &document{lines: map[string]int{}}
	if n.Kind == 0 { // empty document
		return d, nil
	}
	c := converter{lim: lim, lines: d.lines, budget: lim.MaxNodes}
	v, err := c.convert(&n, "", 0)
	if err != nil {
		return nil, err
	}
	d.root = v
	return d, nil
}

type converter struct {
	lim    Limits
	lines  map[string]int
	budget int // nodes left before the document is judged too large (guards alias expansion)
}

func (c *converter) convert(n *yaml.Node, path string, depth int) (any, error) {
	if depth > c.lim.MaxNesting {
		return nil, fmt.Errorf("%s: %w (more than %d levels; flatten the structure)", displayPath(path), errNesting, c.lim.MaxNesting)
	}
	c.budget--
	if c.budget < 0 {
		return nil, fmt.Errorf("manifest has more than %d values (aliases included); split it or remove repeated aliases", c.lim.MaxNodes)
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
				return nil, fmt.Errorf("line %d: %s: mapping keys must be strings", k.Line, displayPath(path))
			}
			if k.Tag == "!!merge" || k.Value == "<<" && k.Tag != "!!str" {
				return nil, fmt.Errorf("line %d: %s: YAML merge keys (<<) are not supported; write the fields out", k.Line, displayPath(path))
			}
			key := k.Value
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("line %d: %s: key %q appears twice", k.Line, displayPath(path), key)
			}
			child := joinPath(path, key)
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
		return scalar(n)
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

// scalar maps a YAML scalar to its JSON value. Numbers stay json.Number so
// that large integers in defaults and literals survive exactly.
func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return b, nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			// Too large for int64: keep the digits as written.
			return json.Number(strings.ReplaceAll(n.Value, "_", "")), nil
		}
		return json.Number(strconv.FormatInt(i, 10)), nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("line %d: %q is not a JSON number", n.Line, n.Value)
		}
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
			return json.Number(n.Value), nil
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
	case "!!str", "!!timestamp", "!!binary":
		return n.Value, nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML tag %s", n.Line, n.Tag)
}

// displayPath names the document root for messages.
func displayPath(p string) string {
	if p == "" {
		return "(manifest)"
	}
	return p
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
