package insight

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"
)

// The edits below make the workflow changes a proposal carries
// (change_timeout, change_retry_policy, a new version) to a manifest's
// text. As with depends_on (edit.go) they splice the lines they change and
// leave every other byte alone, so comments, blank lines and quoting
// survive and the diff shows only the change.

// SetVersion sets the manifest's top-level version.
func SetVersion(manifest []byte, version string) ([]byte, error) {
	out, _, err := setVersion(manifest, version)
	return out, err
}

// SetStepTimeout sets a step's timeout, adding the key when the step has
// none.
func SetStepTimeout(manifest []byte, step string, d time.Duration) ([]byte, error) {
	out, _, err := setStepTimeout(manifest, step, d)
	return out, err
}

// SetStepMaxAttempts sets a step's retry.max_attempts, adding the key (and
// retry) when the step has none.
func SetStepMaxAttempts(manifest []byte, step string, n int) ([]byte, error) {
	out, _, err := setStepMaxAttempts(manifest, step, n)
	return out, err
}

// StepChange is a change to one step of a manifest, for ChangeStep.
type StepChange struct {
	Step string
	// Timeout, when not zero, becomes the step's timeout.
	Timeout time.Duration
	// MaxAttempts, when not zero, becomes the step's retry.max_attempts.
	MaxAttempts int
}

// ChangeStep makes c to the manifest and sets its version to version, and
// returns the new text with the unified diff from the old.
func ChangeStep(manifest []byte, version string, c StepChange) ([]byte, string, error) {
	if c.Timeout == 0 && c.MaxAttempts == 0 {
		return nil, "", errors.New("nothing to change: give a timeout or max_attempts")
	}
	var edits []lineEdit
	for _, f := range []func() (lineEdit, error){
		func() (lineEdit, error) { return versionEdit(manifest, version) },
		func() (lineEdit, error) {
			if c.Timeout == 0 {
				return lineEdit{at: -1}, nil
			}
			return timeoutEdit(manifest, c.Step, c.Timeout)
		},
		func() (lineEdit, error) {
			if c.MaxAttempts == 0 {
				return lineEdit{at: -1}, nil
			}
			return maxAttemptsEdit(manifest, c.Step, c.MaxAttempts)
		},
	} {
		e, err := f()
		if err != nil {
			return nil, "", err
		}
		if e.at >= 0 {
			edits = append(edits, e)
		}
	}
	out, err := spliceLines(manifest, edits)
	if err != nil {
		return nil, "", err
	}
	return out, unifiedDiff(manifest, edits), nil
}

// WithVersion sets the version of a manifest another edit produced (the
// optimizer's) and returns the unified diff from base, the manifest both
// started from: the optimizer's edits and the version's together.
func WithVersion(base, edited []byte, version string) ([]byte, string, error) {
	out, err := SetVersion(edited, version)
	if err != nil {
		return nil, "", err
	}
	return out, Diff(base, out), nil
}

// Diff is the unified diff from a to b, line by line. Manifests are small
// and a proposal changes a few lines, so a longest common subsequence over
// what lies between the common head and tail is cheap; past a bound it
// falls back to one hunk replacing the middle.
func Diff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	head := 0
	for head < len(la) && head < len(lb) && la[head] == lb[head] {
		head++
	}
	tail := 0
	for tail < len(la)-head && tail < len(lb)-head && la[len(la)-1-tail] == lb[len(lb)-1-tail] {
		tail++
	}
	ma, mb := la[head:len(la)-tail], lb[head:len(lb)-tail]
	if len(ma) == 0 && len(mb) == 0 {
		return ""
	}
	if len(ma)*len(mb) > 4<<20 {
		return unifiedDiff(a, []lineEdit{{at: head, del: len(ma), ins: mb}})
	}
	// lcs[i][j]: the common subsequence length of ma[i:] and mb[j:].
	lcs := make([][]int32, len(ma)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(mb)+1)
	}
	for i := len(ma) - 1; i >= 0; i-- {
		for j := len(mb) - 1; j >= 0; j-- {
			if ma[i] == mb[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var edits []lineEdit
	cur := lineEdit{at: -1}
	flush := func() {
		if cur.at >= 0 {
			edits = append(edits, cur)
			cur = lineEdit{at: -1}
		}
	}
	i, j := 0, 0
	for i < len(ma) || j < len(mb) {
		switch {
		case i < len(ma) && j < len(mb) && ma[i] == mb[j]:
			flush()
			i, j = i+1, j+1
		case j < len(mb) && (i == len(ma) || lcs[i][j+1] >= lcs[i+1][j]):
			if cur.at < 0 {
				cur.at = head + i
			}
			cur.ins = append(cur.ins, mb[j])
			j++
		default:
			if cur.at < 0 {
				cur.at = head + i
			}
			cur.del++
			i++
		}
	}
	flush()
	return unifiedDiff(a, edits)
}

// NextVersion is the version a proposed change to base gets: the next
// patch's prerelease "<tag>.<n>" (1.2.0 → 1.2.1-ai.1), with n the first
// that is not in existing. A prerelease because it sorts above base, so it
// is a newer version, but below 1.2.1, the operator's own next release,
// which stays free and, once applied, sorts above every proposal made
// before it. A base that is itself a prerelease of tag (1.2.1-ai.1) is
// followed by the next n of the same patch (1.2.1-ai.2). A base that is
// not a semantic version gets "<base>-<tag>.<n>".
func NextVersion(base string, existing []string, tag string) string {
	if tag == "" {
		tag = "ai"
	}
	v, err := semver.StrictNewVersion(base)
	prefix := base + "-" + tag + "."
	switch {
	case err != nil:
	case v.Prerelease() == "":
		prefix = v.IncPatch().String() + "-" + tag + "."
	case strings.HasPrefix(v.Prerelease(), tag+"."):
		// Counting on from the base's own n, below.
		prefix = semver.New(v.Major(), v.Minor(), v.Patch(), "", "").String() + "-" + tag + "."
	default:
		// Another prerelease (1.2.0-rc.1): more fields sort above it.
		prefix = base + "." + tag + "."
	}
	for n := 1; ; n++ {
		c := prefix + strconv.Itoa(n)
		if slices.Contains(existing, c) {
			continue
		}
		if cv, cerr := semver.StrictNewVersion(c); err != nil || cerr != nil || cv.GreaterThan(v) {
			return c
		}
	}
}

// --- line edits -------------------------------------------------------------

func setVersion(src []byte, version string) ([]byte, []lineEdit, error) {
	e, err := versionEdit(src, version)
	if err != nil {
		return nil, nil, err
	}
	out, err := spliceLines(src, []lineEdit{e})
	return out, []lineEdit{e}, err
}

func setStepTimeout(src []byte, step string, d time.Duration) ([]byte, []lineEdit, error) {
	e, err := timeoutEdit(src, step, d)
	if err != nil {
		return nil, nil, err
	}
	out, err := spliceLines(src, []lineEdit{e})
	return out, []lineEdit{e}, err
}

func setStepMaxAttempts(src []byte, step string, n int) ([]byte, []lineEdit, error) {
	e, err := maxAttemptsEdit(src, step, n)
	if err != nil {
		return nil, nil, err
	}
	out, err := spliceLines(src, []lineEdit{e})
	return out, []lineEdit{e}, err
}

// spliceLines makes line edits, sorted by line, to src.
func spliceLines(src []byte, edits []lineEdit) ([]byte, error) {
	lines := strings.Split(string(src), "\n")
	slices.SortStableFunc(edits, func(a, b lineEdit) int { return a.at - b.at })
	var out []string
	next := 0
	for _, e := range edits {
		if e.at < next {
			return nil, fmt.Errorf("two edits on line %d; edit the manifest by hand", e.at+1)
		}
		out = append(out, lines[next:e.at]...)
		out = append(out, e.ins...)
		next = e.at + e.del
	}
	out = append(out, lines[next:]...)
	return []byte(strings.Join(out, "\n")), nil
}

type parsed struct {
	lines []string
	root  *yaml.Node
}

func parseManifest(src []byte) (*parsed, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the manifest is not a mapping")
	}
	return &parsed{lines: strings.Split(string(src), "\n"), root: doc.Content[0]}, nil
}

// step finds a step's mapping node.
func (p *parsed) step(name string) (*yaml.Node, error) {
	steps := value(p.root, "steps")
	if steps == nil || steps.Kind != yaml.SequenceNode {
		return nil, errors.New("steps is not a list")
	}
	for _, st := range steps.Content {
		if st.Kind == yaml.MappingNode {
			if n := value(st, "name"); n != nil && n.Value == name {
				return st, nil
			}
		}
	}
	return nil, fmt.Errorf("no step %q in the manifest", name)
}

// keyNode returns the key node of key in a mapping, nil if absent.
func keyNode(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

// replaceScalar is the edit that writes text in place of scalar v, keeping
// its quoting.
func (p *parsed) replaceScalar(v *yaml.Node, text string) (lineEdit, error) {
	if v.Kind != yaml.ScalarNode {
		return lineEdit{}, fmt.Errorf("the value at line %d is not a scalar", v.Line)
	}
	if v.Anchor != "" || v.Kind == yaml.AliasNode {
		return lineEdit{}, fmt.Errorf("the value at line %d is a YAML anchor; edit it by hand", v.Line)
	}
	l := v.Line - 1
	line := p.lines[l]
	start := byteCol(line, v.Column)
	var end int
	switch {
	case v.Style&yaml.DoubleQuotedStyle != 0, v.Style&yaml.SingleQuotedStyle != 0:
		q := line[start]
		i := strings.IndexByte(line[start+1:], q)
		if i < 0 {
			return lineEdit{}, fmt.Errorf("the quoted value at line %d spans lines; edit it by hand", v.Line)
		}
		end = start + 1 + i + 1
		text = string(q) + text + string(q)
	case v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return lineEdit{}, fmt.Errorf("the value at line %d is a block scalar; edit it by hand", v.Line)
	default:
		if !strings.HasPrefix(line[start:], v.Value) {
			return lineEdit{}, fmt.Errorf("cannot find the value %q at line %d", v.Value, v.Line)
		}
		end = start + len(v.Value)
	}
	return lineEdit{at: l, del: 1, ins: []string{line[:start] + text + line[end:]}}, nil
}

func versionEdit(src []byte, version string) (lineEdit, error) {
	if _, err := semver.StrictNewVersion(version); err != nil {
		return lineEdit{}, fmt.Errorf("version %q is not a semantic version (MAJOR.MINOR.PATCH): %w", version, err)
	}
	p, err := parseManifest(src)
	if err != nil {
		return lineEdit{}, err
	}
	v := value(p.root, "version")
	if v == nil {
		return lineEdit{}, errors.New("the manifest has no version")
	}
	return p.replaceScalar(v, version)
}

func timeoutEdit(src []byte, step string, d time.Duration) (lineEdit, error) {
	if d <= 0 {
		return lineEdit{}, fmt.Errorf("timeout %v must be positive", d)
	}
	p, err := parseManifest(src)
	if err != nil {
		return lineEdit{}, err
	}
	st, err := p.step(step)
	if err != nil {
		return lineEdit{}, err
	}
	if v := value(st, "timeout"); v != nil {
		return p.replaceScalar(v, formatDuration(d))
	}
	return p.addKey(st, "timeout", formatDuration(d), strconv.Quote(formatDuration(d)))
}

func maxAttemptsEdit(src []byte, step string, n int) (lineEdit, error) {
	if n < 1 {
		return lineEdit{}, fmt.Errorf("max_attempts %d must be at least 1", n)
	}
	p, err := parseManifest(src)
	if err != nil {
		return lineEdit{}, err
	}
	st, err := p.step(step)
	if err != nil {
		return lineEdit{}, err
	}
	text := strconv.Itoa(n)
	r := value(st, "retry")
	if r == nil {
		if st.Style&yaml.FlowStyle != 0 {
			return p.addKey(st, "retry", "{max_attempts: "+text+"}", `{"max_attempts": `+text+"}")
		}
		k := keyNode(st, "name")
		indent := strings.Repeat(" ", k.Column-1)
		return p.insertAfter(st, []string{indent + "retry:", indent + "  max_attempts: " + text})
	}
	if r.Kind != yaml.MappingNode {
		return lineEdit{}, fmt.Errorf("retry of step %q is not a mapping", step)
	}
	if v := value(r, "max_attempts"); v != nil {
		return p.replaceScalar(v, text)
	}
	return p.addKey(r, "max_attempts", text, text)
}

// addKey adds "key: text" to mapping m: in a flow mapping right after its
// '{', in a block mapping as a line of its own after the mapping's first
// key's line, at that key's indentation. A flow mapping whose keys are
// quoted (JSON) gets the key quoted and jsonText.
func (p *parsed) addKey(m *yaml.Node, key, text, jsonText string) (lineEdit, error) {
	if m.Style&yaml.FlowStyle != 0 {
		if len(m.Content) > 0 && m.Content[0].Style&yaml.DoubleQuotedStyle != 0 {
			key, text = strconv.Quote(key), jsonText
		}
		l := m.Line - 1
		line := p.lines[l]
		start := byteCol(line, m.Column)
		if !strings.HasPrefix(line[start:], "{") {
			return lineEdit{}, fmt.Errorf("cannot find the mapping at line %d", m.Line)
		}
		sep := ", "
		if len(m.Content) == 0 {
			sep = ""
		}
		return lineEdit{at: l, del: 1, ins: []string{line[:start+1] + key + ": " + text + sep + line[start+1:]}}, nil
	}
	if len(m.Content) == 0 {
		return lineEdit{}, fmt.Errorf("the mapping at line %d is empty; edit it by hand", m.Line)
	}
	first := m.Content[0]
	return p.insertAfter(m, []string{strings.Repeat(" ", first.Column-1) + key + ": " + text})
}

// insertAfter inserts lines after the first line of block mapping m that
// holds a whole key-value pair (in a step, usually "- name: x").
func (p *parsed) insertAfter(m *yaml.Node, ins []string) (lineEdit, error) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if onLine(v, k.Line) && !strings.Contains(p.lines[k.Line-1], "\t") {
			return lineEdit{at: k.Line, ins: ins}, nil
		}
	}
	return lineEdit{}, fmt.Errorf("the mapping at line %d is laid out in a way this edit does not handle; edit it by hand", m.Line)
}

// onLine reports whether value n is written whole on line (a scalar, or a
// flow collection such as [a, b] whose items are all there).
func onLine(n *yaml.Node, line int) bool {
	switch {
	case n.Line != line:
		return false
	case n.Kind == yaml.ScalarNode:
		return n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) == 0
	case n.Kind == yaml.AliasNode || n.Style&yaml.FlowStyle == 0:
		return false
	}
	for _, c := range n.Content {
		if !onLine(c, line) {
			return false
		}
	}
	return true
}

// formatDuration writes d as a manifest would: 30s, 5m, 1h30m.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
