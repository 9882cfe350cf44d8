package workflow

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a manifest. Path names the field in the
// manifest ("steps[2].retry.max_attempts"), Line is its 1-based line in the
// source document (0 when unknown), and Message says what is wrong and, where
// it can, how to fix it.
type Problem struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Path != "" {
		b.WriteString(p.Path)
	} else {
		b.WriteString("(manifest)")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError carries every problem found in a manifest, in source order.
// Callers that need the individual problems use errors.As.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid workflow: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid workflow: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems accumulates Problems while a manifest is checked, resolving each
// path to a source line through the document's position index.
type problems struct {
	lines map[string]int
	list  []Problem
}

func (ps *problems) add(path, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Line: ps.line(path), Message: fmt.Sprintf(format, args...)})
}

// line finds the line of path, or of its nearest ancestor that has one.
func (ps *problems) line(path string) int {
	for p := path; ; {
		if l, ok := ps.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
		p = parentPath(p)
	}
}

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	sort.SliceStable(ps.list, func(i, j int) bool {
		a, b := ps.list[i], ps.list[j]
		if a.Line != b.Line {
			// Problems without a line go last: they are about the whole document.
			if a.Line == 0 || b.Line == 0 {
				return b.Line == 0 && a.Line != 0
			}
			return a.Line < b.Line
		}
		// On one line (flow style) the order of discovery depends on map
		// iteration; the path makes it the same every time.
		return a.Line > 0 && a.Path < b.Path
	})
	return &ValidationError{Problems: ps.list}
}

// parentPath drops the last element of a field path: "a.b[2]" → "a.b",
// "a.b" → "a", "a" → "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// joinPath appends a field name to a path.
func joinPath(base, field string) string {
	if base == "" {
		return field
	}
	return base + "." + field
}

// indexPath appends an array index to a path.
func indexPath(base string, i int) string {
	return fmt.Sprintf("%s[%d]", base, i)
}
