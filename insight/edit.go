package insight

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// lineEdit replaces lines [at, at+del) (0-based) of the source with ins.
type lineEdit struct {
	at, del int
	ins     []string
}

// editDependsOn rewrites the depends_on lists of the steps in deps (step
// name → the new list; empty removes the key) and returns the new text with
// the line edits made.
//
// The YAML node tree finds each list and its position, but the new text is
// spliced into the source line by line rather than re-encoded from the
// tree: re-encoding keeps comments but not blank lines, indentation or
// quoting, and the diff an operator reviews would be noise. So every line
// that is not a depends_on list comes out byte for byte as it went in.
func editDependsOn(src []byte, deps map[string][]string) ([]byte, []lineEdit, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("the manifest is not a mapping")
	}
	steps := value(doc.Content[0], "steps")
	if steps == nil || steps.Kind != yaml.SequenceNode {
		return nil, nil, errors.New("steps is not a list")
	}
	lines := strings.Split(string(src), "\n")
	var edits []lineEdit
	for _, st := range steps.Content {
		if st.Kind != yaml.MappingNode {
			return nil, nil, fmt.Errorf("a step at line %d is not a mapping", st.Line)
		}
		nameNode := value(st, "name")
		if nameNode == nil {
			continue
		}
		want, ok := deps[nameNode.Value]
		if !ok {
			continue
		}
		es, err := editStep(lines, st, want)
		if err != nil {
			return nil, nil, fmt.Errorf("step %q: %w", nameNode.Value, err)
		}
		edits = append(edits, es...)
	}
	slices.SortStableFunc(edits, func(a, b lineEdit) int { return a.at - b.at })
	var out []string
	next := 0
	for _, e := range edits {
		if e.at < next {
			// Two edits on one line: a manifest laid out in a way the
			// line splice does not handle.
			return nil, nil, fmt.Errorf("overlapping edits at line %d", e.at+1)
		}
		out = append(out, lines[next:e.at]...)
		out = append(out, e.ins...)
		next = e.at + e.del
	}
	out = append(out, lines[next:]...)
	return []byte(strings.Join(out, "\n")), edits, nil
}

// value returns the value of key in a mapping node, nil if absent.
func value(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// editStep returns the line edits that make one step's depends_on want.
// want keeps the written order: the current list without what is removed,
// then what is added.
func editStep(lines []string, st *yaml.Node, want []string) ([]lineEdit, error) {
	ki := -1
	for i := 0; i+1 < len(st.Content); i += 2 {
		if st.Content[i].Value == "depends_on" {
			ki = i
		}
	}
	if ki < 0 {
		// A step that reads another has ancestors, so has depends_on: the
		// optimizer never adds the key, it only edits or removes it.
		if len(want) == 0 {
			return nil, nil
		}
		return nil, errors.New("has no depends_on to edit")
	}
	key, v := st.Content[ki], st.Content[ki+1]
	if v.Kind == yaml.AliasNode || v.Anchor != "" {
		return nil, errors.New("depends_on is a YAML anchor or alias, shared with other steps; edit it by hand")
	}
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("depends_on is not a list")
	}
	quoted := len(v.Content) > 0 && v.Content[0].Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
	if v.Style&yaml.FlowStyle != 0 || len(v.Content) == 0 {
		return editFlow(lines, key, v, want, quoted)
	}
	return editBlock(lines, key, v, want)
}

// editFlow rewrites a flow list ([a, b]), which may span lines.
func editFlow(lines []string, key, v *yaml.Node, want []string, quoted bool) ([]lineEdit, error) {
	start := v.Line - 1
	col := byteCol(lines[start], v.Column)
	endLine, endCol := -1, -1
	// Step names hold no ']' (workflow's name rule), so the first one
	// after '[' closes the list.
	for l, c := start, col; l < len(lines); l, c = l+1, 0 {
		if i := strings.IndexByte(lines[l][c:], ']'); i >= 0 {
			endLine, endCol = l, c+i
			break
		}
	}
	if endLine < 0 || !strings.HasPrefix(lines[start][col:], "[") {
		return nil, fmt.Errorf("cannot find the list of depends_on at line %d", v.Line)
	}
	rest := lines[endLine][endCol+1:]
	if len(want) > 0 {
		return []lineEdit{{at: start, del: endLine - start + 1, ins: []string{lines[start][:col] + flowList(want, quoted) + rest}}}, nil
	}
	// Remove the key with its lines when nothing else shares them (as in
	// YAML written by hand); otherwise (JSON, "- depends_on: [a]" or a
	// flow mapping) leave an empty list, which means the same.
	kl := key.Line - 1
	if strings.TrimSpace(lines[kl][:byteCol(lines[kl], key.Column)]) != "" ||
		(strings.TrimSpace(rest) != "" && !strings.HasPrefix(strings.TrimSpace(rest), "#")) {
		return []lineEdit{{at: start, del: endLine - start + 1, ins: []string{lines[start][:col] + "[]" + rest}}}, nil
	}
	return []lineEdit{{at: kl, del: endLine - kl + 1}}, nil
}

// editBlock edits a block list (one "- name" line per parent) item by item,
// so that comments on the other items stay where they are.
func editBlock(lines []string, key, v *yaml.Node, want []string) ([]lineEdit, error) {
	keep := map[string]bool{}
	for _, w := range want {
		keep[w] = true
	}
	var edits []lineEdit
	last := -1
	have := map[string]bool{}
	for _, it := range v.Content {
		if it.Line-1 <= last {
			return nil, fmt.Errorf("depends_on at line %d has two items on a line; edit it by hand", key.Line)
		}
		last = it.Line - 1
		have[it.Value] = true
	}
	if len(want) == 0 {
		kl := key.Line - 1
		if p := lines[kl][:byteCol(lines[kl], key.Column)]; strings.TrimSpace(p) != "" {
			// "- depends_on:" opens the step: keep the key, with an
			// empty list, which means the same.
			return []lineEdit{{at: kl, del: last - kl + 1, ins: []string{p + "depends_on: []"}}}, nil
		}
		return []lineEdit{{at: kl, del: last - kl + 1}}, nil
	}
	for _, it := range v.Content {
		if !keep[it.Value] {
			edits = append(edits, lineEdit{at: it.Line - 1, del: 1})
		}
	}
	first := v.Content[0]
	prefix := lines[first.Line-1][:byteCol(lines[first.Line-1], first.Column)]
	var ins []string
	for _, w := range want {
		if !have[w] {
			ins = append(ins, prefix+w)
		}
	}
	if len(ins) > 0 {
		edits = append(edits, lineEdit{at: last + 1, ins: ins})
	}
	return edits, nil
}

// byteCol turns the parser's 1-based column, counted in characters, into a
// byte offset in line.
func byteCol(line string, col int) int {
	n := 0
	for i := range line {
		if n == col-1 {
			return i
		}
		n++
	}
	return len(line)
}

func flowList(names []string, quoted bool) string {
	parts := make([]string, len(names))
	for i, n := range names {
		if quoted {
			n = strconv.Quote(n)
		}
		parts[i] = n
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
