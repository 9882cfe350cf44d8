package insight

import (
	"fmt"
	"strings"
)

// diffContext is the number of unchanged lines around each hunk, as diff -u.
const diffContext = 3

// unifiedDiff renders the line edits made to src as a unified diff. The
// edits are known exactly, so no diff algorithm is needed: each edit is a
// hunk, and hunks closer than twice the context merge.
func unifiedDiff(src []byte, edits []lineEdit) string {
	if len(edits) == 0 {
		return ""
	}
	lines := strings.Split(string(src), "\n")
	n := len(lines)
	if n > 0 && lines[n-1] == "" {
		n-- // the text after the final newline is not a line
	}
	var b strings.Builder
	b.WriteString("--- current\n+++ proposed\n")
	shift := 0 // new line number − old line number before the hunk
	for i := 0; i < len(edits); {
		j := i + 1
		for j < len(edits) && edits[j].at-(edits[j-1].at+edits[j-1].del) <= 2*diffContext {
			j++
		}
		from := max(0, edits[i].at-diffContext)
		to := min(n, edits[j-1].at+edits[j-1].del+diffContext)
		var body strings.Builder
		oldLen, newLen := 0, 0
		pos := from
		for _, e := range edits[i:j] {
			for ; pos < e.at; pos++ {
				fmt.Fprintf(&body, " %s\n", lines[pos])
				oldLen++
				newLen++
			}
			for k := e.at; k < e.at+e.del; k++ {
				fmt.Fprintf(&body, "-%s\n", lines[k])
				oldLen++
			}
			for _, l := range e.ins {
				fmt.Fprintf(&body, "+%s\n", l)
				newLen++
			}
			pos = e.at + e.del
		}
		for ; pos < to; pos++ {
			fmt.Fprintf(&body, " %s\n", lines[pos])
			oldLen++
			newLen++
		}
		fmt.Fprintf(&b, "@@ -%s +%s @@\n", hunkRange(from, oldLen), hunkRange(from+shift, newLen))
		b.WriteString(body.String())
		for _, e := range edits[i:j] {
			shift += len(e.ins) - e.del
		}
		i = j
	}
	return b.String()
}

// hunkRange formats a hunk's start and length; an empty range names the
// line before it, as diff -u does.
func hunkRange(start, length int) string {
	if length == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	return fmt.Sprintf("%d,%d", start+1, length)
}
