package workflow

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Name rules, checked here rather than in ManifestSchema so that the
// messages can say what a valid name looks like.
var (
	workflowNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)
	stepNameRE     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)
	systemNameRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	capabilityRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$`)
)

// SystemNameRule says what a valid system name looks like, for messages.
const SystemNameRule = "1-63 lowercase letters, digits, '-' or '_', starting with a letter"

// ValidSystemName reports whether name is a valid system name, as a key
// under systems. An agent's system label (-system) follows the same rule,
// so that it can equal a step's owner.
func ValidSystemName(name string) bool { return systemNameRE.MatchString(name) }

// WorkflowNameRule says what a valid workflow or namespace name looks
// like, for messages.
const WorkflowNameRule = "1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter"

// ValidWorkflowName reports whether name is a valid workflow name or
// namespace.
func ValidWorkflowName(name string) bool { return workflowNameRE.MatchString(name) }

// MaxRetryDelay bounds every wait before a retry: a manifest's backoff and
// an app's retry_after. The scheduling state keeps a task's times as
// offsets from one base, and a delay of weeks would drag the base, and
// with it the task's other pending retries.
const MaxRetryDelay = 24 * time.Hour

// Limits on single settings.
const (
	maxTimeout    = 7 * 24 * time.Hour
	maxBackoff    = MaxRetryDelay
	maxMultiplier = 100
)

// Compile validates a manifest and builds its Plan. Every problem is
// reported at once in a *ValidationError. Manifests that come from source
// text should go through Load, which adds line numbers.
func Compile(m *Manifest, lim Limits) (*Plan, error) {
	if m == nil {
		return nil, &ValidationError{Problems: []Problem{{Message: "manifest is empty"}}}
	}
	return compile(m, nil, lim.orDefault())
}

func compile(m *Manifest, lines map[string]int, lim Limits) (*Plan, error) {
	ps := &problems{lines: lines}
	c := &compiler{m: m, lim: lim, ps: ps}
	p := c.run()
	if err := ps.err(); err != nil {
		return nil, err
	}
	p.lines = capabilityLines(lines)
	return p, nil
}

type compiler struct {
	m   *Manifest
	lim Limits
	ps  *problems
}

func (c *compiler) run() *Plan {
	m, ps := c.m, c.ps
	p := &Plan{
		Name:        m.Name,
		Namespace:   m.Namespace,
		Version:     m.Version,
		Description: m.Description,
		manifest:    m,
		index:       make(map[string]int, len(m.Steps)),
	}
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	switch {
	case m.Name == "":
		ps.add("name", "is required")
	case !workflowNameRE.MatchString(m.Name):
		ps.add("name", "%q is not a valid workflow name: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter", m.Name)
	}
	if m.Namespace != "" && !workflowNameRE.MatchString(m.Namespace) {
		ps.add("namespace", "%q is not a valid namespace: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter", m.Namespace)
	}
	if m.Version == "" {
		ps.add("version", "is required: a semantic version such as 1.0.0")
	} else if _, err := semver.StrictNewVersion(m.Version); err != nil {
		ps.add("version", "%q is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0): %v", m.Version, err)
	}
	if m.InputSchema != nil {
		ct, err := newContract(manifestBase+"input_schema", m.InputSchema)
		if err != nil {
			ps.add("input_schema", "invalid JSON Schema: %v", schemaErr(err))
		}
		p.Input = ct
	}
	if len(m.Steps) == 0 {
		ps.add("steps", "a workflow needs at least one step")
		return p
	}
	if len(m.Steps) > c.lim.MaxSteps {
		ps.add("steps", "%d steps is over the limit of %d; split the workflow", len(m.Steps), c.lim.MaxSteps)
		return p
	}
	owners := c.systems()
	defTimeout, defRetry := c.defaults()

	// Names first, so that dependencies and mappings can refer forward.
	for i, s := range m.Steps {
		path := indexPath("steps", i)
		switch {
		case s.Name == "":
			ps.add(joinPath(path, "name"), "is required")
			continue
		case !stepNameRE.MatchString(s.Name):
			ps.add(joinPath(path, "name"), "%q is not a valid step name: use 1-63 letters, digits, '_' or '-', starting with a letter", s.Name)
		}
		if j, dup := p.index[s.Name]; dup {
			ps.add(joinPath(path, "name"), "duplicate step name %q (also steps[%d]%s)", s.Name, j, c.lineNote(indexPath("steps", j)))
			continue
		}
		p.index[s.Name] = i
	}

	p.Steps = make([]PlanStep, len(m.Steps))
	var exprs [][]*mappedExpr = make([][]*mappedExpr, len(m.Steps))
	parents := make([][]int32, len(m.Steps))
	for i, s := range m.Steps {
		path := indexPath("steps", i)
		st := &p.Steps[i]
		st.Name, st.Description, st.Owner = s.Name, s.Description, s.Owner
		st.DependsOn = s.DependsOn
		st.Transport, st.Subject = c.transport(s, path)
		if st.Transport == TransportSidecar {
			st.Capability = c.capability(s, path, owners)
			if st.Owner == "" {
				// A capability listed under a system belongs to it: the step is
				// pinned there as if its owner had been written.
				st.Owner = owners[st.Capability]
			}
		}

		seen := map[string]bool{}
		for j, d := range s.DependsOn {
			dp := indexPath(joinPath(path, "depends_on"), j)
			switch k, ok := p.index[d]; {
			case d == s.Name:
				ps.add(dp, "step %q depends on itself", d)
			case !ok:
				msg := fmt.Sprintf("unknown step %q", d)
				if sg := suggest(d, keys(p.index)); sg != "" {
					msg += fmt.Sprintf("; did you mean %q?", sg)
				}
				ps.add(dp, "%s", msg)
			case seen[d]:
				ps.add(dp, "%q is listed twice", d)
			default:
				parents[i] = append(parents[i], int32(k))
			}
			seen[d] = true
		}

		st.Timeout = defTimeout
		if s.Timeout != "" {
			st.Timeout = c.duration(joinPath(path, "timeout"), s.Timeout, maxTimeout)
		}
		st.Retry = c.retry(joinPath(path, "retry"), s.Retry, defRetry)

		if s.ResultSchema != nil {
			ct, err := newContract(fmt.Sprintf("%ssteps/%d/result_schema", manifestBase, i), s.ResultSchema)
			if err != nil {
				ps.add(joinPath(path, "result_schema"), "invalid JSON Schema: %v", schemaErr(err))
			}
			st.Result = ct
		}
		if s.ErrorSchema != nil {
			ct, err := newContract(fmt.Sprintf("%ssteps/%d/error_schema", manifestBase, i), s.ErrorSchema)
			if err != nil {
				ps.add(joinPath(path, "error_schema"), "invalid JSON Schema: %v", schemaErr(err))
			}
			st.Error = ct
			st.ErrorCodes = enumAt(s.ErrorSchema, "code")
		}
		if s.Retry != nil && s.Retry.Retryable != nil {
			c.retryableCodes(joinPath(path, "retry.retryable"), "", st)
		} else {
			c.retryableCodes("defaults.retry.retryable", s.Name, st)
		}
		if s.Input != nil {
			st.Input, exprs[i] = compileMapping(s.Input, joinPath(path, "input"), p.index, ps)
		}
	}

	c.graph(p, parents)
	c.mappings(p, exprs)
	return p
}

// systems checks the systems section and returns capability → owning system.
func (c *compiler) systems() map[string]string {
	owners := map[string]string{}
	names := make([]string, 0, len(c.m.Systems))
	for n := range c.m.Systems {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := joinPath("systems", n)
		if !systemNameRE.MatchString(n) {
			c.ps.add(path, "%q is not a valid system name: use "+SystemNameRule, n)
		}
		for i, capName := range c.m.Systems[n].Capabilities {
			cp := indexPath(joinPath(path, "capabilities"), i)
			if !capabilityRE.MatchString(capName) {
				c.ps.add(cp, "%q is not a valid capability name: use dotted lowercase words such as payments.charge", capName)
				continue
			}
			if o, dup := owners[capName]; dup {
				c.ps.add(cp, "capability %q is already owned by system %q; a capability has one owner", capName, o)
				continue
			}
			owners[capName] = n
		}
	}
	return owners
}

// capability resolves and checks a step's capability against its owner.
func (c *compiler) capability(s Step, path string, owners map[string]string) string {
	capName := s.Capability
	if s.Owner != "" {
		if !c.ownerDeclared(s.Owner, path) {
			return capName
		}
		if capName == "" {
			capName = s.Owner + "." + s.Name
		}
	}
	switch {
	case capName == "":
		c.ps.add(path, "step %q needs a capability (e.g. payments.charge) or an owner system", s.Name)
		return ""
	case !capabilityRE.MatchString(capName) && s.Capability == "":
		c.ps.add(joinPath(path, "capability"), "%q, made of the owner and the step name, is not a valid capability name: set capability, such as payments.charge", capName)
		return capName
	case !capabilityRE.MatchString(capName):
		c.ps.add(joinPath(path, "capability"), "%q is not a valid capability name: use dotted lowercase words such as payments.charge", capName)
		return capName
	}
	if o, ok := owners[capName]; ok && s.Owner != "" && o != s.Owner {
		c.ps.add(joinPath(path, "owner"), "capability %q belongs to system %q, not %q", capName, o, s.Owner)
	}
	if sys, ok := c.m.Systems[s.Owner]; ok && s.Owner != "" && len(sys.Capabilities) > 0 {
		if _, listed := owners[capName]; !listed {
			c.ps.add(joinPath(path, "capability"), "capability %q is not among system %q's capabilities %v", capName, s.Owner, sys.Capabilities)
		}
	}
	return capName
}

// ownerDeclared reports whether a step's owner is declared under systems,
// and says so when it is not.
func (c *compiler) ownerDeclared(owner, path string) bool {
	if _, ok := c.m.Systems[owner]; ok {
		return true
	}
	msg := fmt.Sprintf("system %q is not declared under systems", owner)
	if len(c.m.Systems) > 0 {
		names := make([]string, 0, len(c.m.Systems))
		for n := range c.m.Systems {
			names = append(names, n)
		}
		sort.Strings(names) // among equally close names, the same one every time
		if sg := suggest(owner, names); sg != "" {
			msg += fmt.Sprintf("; did you mean %q?", sg)
		}
	}
	c.ps.add(joinPath(path, "owner"), "%s", msg)
	return false
}

// transport checks a step's transport and subject and returns them
// resolved. A bus step names no capability: whatever consumes its subject
// executes it, so there is no app to ask for one. Its owner, when written,
// only documents which system answers.
func (c *compiler) transport(s Step, path string) (transport, subject string) {
	switch s.Transport {
	case "", TransportSidecar:
		if s.Subject != "" {
			c.ps.add(joinPath(path, "subject"), "subject is only for steps with transport: bus; add transport: bus, or remove subject")
		}
		return TransportSidecar, ""
	case TransportBus:
	default:
		msg := fmt.Sprintf("%q is not a transport: use sidecar (the default: an app behind a Tasker agent) or bus (a request on the service bus)", s.Transport)
		if sg := suggest(s.Transport, []string{TransportSidecar, TransportBus}); sg != "" {
			msg = fmt.Sprintf("%q is not a transport; did you mean %q? (sidecar, the default, or bus)", s.Transport, sg)
		}
		c.ps.add(joinPath(path, "transport"), "%s", msg)
		// Neither checked as a sidecar step (it may well have no
		// capability) nor as a bus step: one problem is enough.
		return s.Transport, ""
	}
	if s.Capability != "" {
		c.ps.add(joinPath(path, "capability"), "a step with transport: bus is executed by whatever consumes its subject, not by an app's capability; remove capability, or remove transport: bus")
	}
	if s.Owner != "" {
		c.ownerDeclared(s.Owner, path)
	}
	switch err := CheckBusSubject(s.Subject); {
	case s.Subject == "":
		c.ps.add(path, "step %q has transport: bus but no subject; set subject to the bus subject its requests go to, such as billing.invoice.create", s.Name)
	case err != nil:
		c.ps.add(joinPath(path, "subject"), "%v", err)
	}
	return TransportBus, s.Subject
}

// CheckBusSubject checks the subject of a transport: bus step. It applies
// the rules of bus.ValidSubject (a test keeps the two in step; workflow
// does not import package bus, whose outbox brings a database), and keeps
// tasker.* for Tasker's own events, dead letters and replies.
func CheckBusSubject(subject string) error {
	const fix = "use dot-separated tokens without spaces or wildcards (*, >, #), such as billing.invoice.create"
	if subject == "" {
		return fmt.Errorf("subject is empty; %s", fix)
	}
	for _, tok := range strings.Split(subject, ".") {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n*>#") {
			return fmt.Errorf("%q is not a valid bus subject: %s", subject, fix)
		}
	}
	if strings.HasPrefix(subject, "tasker.") {
		return fmt.Errorf("subject %q is reserved: subjects under tasker. carry Tasker's own events, dead letters and replies; choose one of your own, such as billing.invoice.create", subject)
	}
	return nil
}

func (c *compiler) defaults() (time.Duration, RetryPolicy) {
	timeout := DefaultTimeout
	retry := RetryPolicy{MaxAttempts: DefaultMaxAttempts, Backoff: DefaultBackoff()}
	d := c.m.Defaults
	if d == nil {
		return timeout, retry
	}
	if d.Timeout != "" {
		timeout = c.duration("defaults.timeout", d.Timeout, maxTimeout)
	}
	return timeout, c.retry("defaults.retry", d.Retry, retry)
}

// retry resolves a retry spec over the inherited policy.
func (c *compiler) retry(path string, r *RetrySpec, base RetryPolicy) RetryPolicy {
	out := base
	if r == nil {
		return out
	}
	if r.MaxAttempts != nil {
		n := *r.MaxAttempts
		if n < 1 || n > c.lim.MaxAttempts {
			c.ps.add(joinPath(path, "max_attempts"), "%d is out of range: use 1 (no retries) to %d", n, c.lim.MaxAttempts)
		} else {
			out.MaxAttempts = n
		}
	}
	if r.Retryable != nil {
		out.Retryable = r.Retryable
	}
	b := r.Backoff
	if b == nil {
		return out
	}
	bp := joinPath(path, "backoff")
	// A duration that is wrong is reported once; the comparison of max and
	// initial below goes on with the inherited value.
	if b.Initial != "" {
		if d := c.duration(joinPath(bp, "initial"), b.Initial, maxBackoff); d > 0 {
			out.Backoff.Initial = d
		}
	}
	if b.Max != "" {
		if d := c.duration(joinPath(bp, "max"), b.Max, maxBackoff); d > 0 {
			out.Backoff.Max = d
		}
	}
	if b.Multiplier != nil {
		if m := *b.Multiplier; m < 1 || m > maxMultiplier || math.IsNaN(m) {
			c.ps.add(joinPath(bp, "multiplier"), "%v is out of range: use 1 (constant delay) to %d", m, maxMultiplier)
		} else {
			out.Backoff.Multiplier = m
		}
	}
	if b.Jitter != nil {
		if j := *b.Jitter; j < 0 || j > 1 || math.IsNaN(j) {
			c.ps.add(joinPath(bp, "jitter"), "%v is out of range: use a fraction from 0 (none) to 1", j)
		} else {
			out.Backoff.Jitter = j
		}
	}
	if out.Backoff.Max < out.Backoff.Initial {
		c.ps.add(bp, "max (%v) is shorter than initial (%v)", out.Backoff.Max, out.Backoff.Initial)
	}
	return out
}

// retryableCodes checks that retryable codes are ones the step can report.
// inheritedBy names the step when the codes come from defaults.retry, so
// that the problem points at the line that lists them.
func (c *compiler) retryableCodes(path, inheritedBy string, st *PlanStep) {
	if len(st.ErrorCodes) == 0 {
		return
	}
	allowed := append([]string{CodeTimeout}, st.ErrorCodes...)
	for i, code := range st.Retry.Retryable {
		ok := false
		for _, a := range allowed {
			ok = ok || a == code
		}
		switch {
		case ok:
		case inheritedBy != "":
			c.ps.add(indexPath(path, i), "error code %q is not in the error_schema of step %q, which inherits it (codes: %s); set retry.retryable on the step", code, inheritedBy, strings.Join(allowed, ", "))
		default:
			c.ps.add(indexPath(path, i), "error code %q is not in the step's error_schema (codes: %s)", code, strings.Join(allowed, ", "))
		}
	}
}

// duration parses a positive duration no longer than limit.
func (c *compiler) duration(path, s string, limit time.Duration) time.Duration {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		c.ps.add(path, "%q is not a duration: write a number and a unit, such as 500ms, 30s, 5m or 1h", s)
	case d <= 0:
		c.ps.add(path, "%q must be positive", s)
	case d > limit:
		c.ps.add(path, "%q is over the limit of %v", s, limit)
	default:
		return d
	}
	return 0
}

// graph builds the adjacency arrays, finds cycles, and assigns levels.
func (c *compiler) graph(p *Plan, parents [][]int32) {
	n := len(p.Steps)
	p.parentOff = make([]int32, n+1)
	childCount := make([]int32, n+1)
	for i, ps := range parents {
		p.parentOff[i+1] = p.parentOff[i] + int32(len(ps))
		for _, par := range ps {
			childCount[par+1]++
		}
	}
	p.parents = make([]int32, 0, p.parentOff[n])
	for _, ps := range parents {
		p.parents = append(p.parents, ps...)
	}
	p.childOff = make([]int32, n+1)
	for i := range n {
		p.childOff[i+1] = p.childOff[i] + childCount[i+1]
	}
	p.children = make([]int32, p.childOff[n])
	fill := make([]int32, n)
	for i, ps := range parents {
		for _, par := range ps {
			p.children[p.childOff[par]+fill[par]] = int32(i)
			fill[par]++
		}
	}

	// Kahn's algorithm: what it cannot order lies on or behind a cycle.
	indeg := make([]int32, n)
	for i := range n {
		indeg[i] = p.parentOff[i+1] - p.parentOff[i]
	}
	order := make([]int32, 0, n)
	for i := range n {
		if indeg[i] == 0 {
			order = append(order, int32(i))
		}
	}
	for k := 0; k < len(order); k++ {
		for _, ch := range p.Children(int(order[k])) {
			if indeg[ch]--; indeg[ch] == 0 {
				order = append(order, ch)
			}
		}
	}
	if len(order) < n {
		for _, cyc := range c.cycles(p, indeg) {
			names := make([]string, len(cyc)+1)
			for i, s := range cyc {
				names[i] = p.Steps[s].Name
			}
			names[len(cyc)] = names[0]
			c.ps.add(joinPath(indexPath("steps", int(cyc[0])), "depends_on"), "dependency cycle: %s", strings.Join(names, " → "))
		}
		return
	}
	p.order = order
	for _, s := range order {
		lvl := 0
		for _, par := range p.Parents(int(s)) {
			lvl = max(lvl, p.Steps[par].Level+1)
		}
		p.Steps[s].Level = lvl
		p.levels = max(p.levels, lvl+1)
	}
	if p.levels > c.lim.MaxDepth {
		c.ps.add("steps", "the longest chain of dependencies has %d steps, over the limit of %d; flatten the workflow", p.levels, c.lim.MaxDepth)
	}
}

// cycles returns one concrete cycle per strongly connected component among
// the steps Kahn's algorithm could not order (indeg > 0), each starting at
// its first step in manifest order.
func (c *compiler) cycles(p *Plan, indeg []int32) [][]int32 {
	n := len(p.Steps)
	// Tarjan's algorithm, iteratively, over the unordered steps.
	index := make([]int32, n)
	low := make([]int32, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int32
	var out [][]int32
	next := int32(0)
	type frame struct {
		v    int32
		edge int32
	}
	for root := range n {
		if indeg[root] == 0 || index[root] >= 0 {
			continue
		}
		call := []frame{{v: int32(root)}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, int32(root))
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			ps := p.Parents(int(f.v))
			if int(f.edge) < len(ps) {
				w := ps[f.edge]
				f.edge++
				if indeg[w] == 0 {
					continue
				}
				if index[w] < 0 {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{v: w})
				} else if onStack[w] {
					low[f.v] = min(low[f.v], index[w])
				}
				continue
			}
			v := f.v
			call = call[:len(call)-1]
			if len(call) > 0 {
				u := call[len(call)-1].v
				low[u] = min(low[u], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			var comp []int32
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			if len(comp) > 1 {
				out = append(out, cycleIn(p, comp))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// cycleIn finds a cycle through the smallest step of a strongly connected
// component, following "depends on" edges, with a breadth-first search so
// the printed cycle is a shortest one.
func cycleIn(p *Plan, comp []int32) []int32 {
	in := map[int32]bool{}
	start := comp[0]
	for _, s := range comp {
		in[s] = true
		start = min(start, s)
	}
	prev := map[int32]int32{start: -1}
	queue := []int32{start}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, w := range p.Parents(int(v)) {
			if !in[w] {
				continue
			}
			if w == start {
				var cyc []int32
				for x := v; x != -1; x = prev[x] {
					cyc = append(cyc, x)
				}
				// cyc is v ← ... ← start reversed; read as "start depends on ... depends on v depends on start".
				for i, j := 0, len(cyc)-1; i < j; i, j = i+1, j-1 {
					cyc[i], cyc[j] = cyc[j], cyc[i]
				}
				return cyc
			}
			if _, seen := prev[w]; !seen {
				prev[w] = v
				queue = append(queue, w)
			}
		}
	}
	return comp
}

// mappings checks that every expression reads an ancestor and a field the
// upstream contract can contain.
func (c *compiler) mappings(p *Plan, exprs [][]*mappedExpr) {
	var anc []bitset
	for i, list := range exprs {
		for _, me := range list {
			e := me.expr
			var schemaDoc any
			what := "input_schema"
			if e.stepIndex >= 0 {
				if anc == nil && p.order != nil {
					anc = ancestors(p)
				}
				if e.stepIndex == i {
					c.ps.add(me.path, "%s reads the result of step %q itself; a step can read only the results of its ancestors", e.Source, e.Step)
					continue
				}
				// With a cycle there is no ancestry to judge; the cycle is reported.
				if anc != nil && !anc[i].has(e.stepIndex) {
					c.ps.add(me.path, "%s reads step %q, which is not an ancestor of %q; add it to depends_on", e.Source, e.Step, p.Steps[i].Name)
					continue
				}
				what = fmt.Sprintf("result_schema of step %q", e.Step)
				if r := p.Steps[e.stepIndex].Result; r != nil {
					schemaDoc = r.doc
				}
			} else if p.Input != nil {
				schemaDoc = p.Input.doc
			}
			if schemaDoc == nil {
				continue
			}
			if err := schemaAt(schemaDoc, schemaDoc, e.path); err != nil {
				c.ps.add(me.path, "%s: %v (%s)", e.Source, err, what)
			}
		}
	}
}

type bitset []uint64

func (b bitset) has(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }

// ancestors computes every step's transitive ancestors in topological order.
func ancestors(p *Plan) []bitset {
	n := len(p.Steps)
	words := (n + 63) / 64
	backing := make([]uint64, n*words)
	out := make([]bitset, n)
	for i := range out {
		out[i] = backing[i*words : (i+1)*words]
	}
	for _, s := range p.order {
		a := out[s]
		for _, par := range p.Parents(int(s)) {
			a.set(int(par))
			for w, x := range out[par] {
				a[w] |= x
			}
		}
	}
	return out
}

// enumAt returns the string enum of property prop of an object schema.
func enumAt(schema any, prop string) []string {
	m, _ := deref(schema, schema).(map[string]any)
	props, _ := m["properties"].(map[string]any)
	ps, _ := deref(schema, props[prop]).(map[string]any)
	var out []string
	if e, ok := ps["enum"].([]any); ok {
		for _, v := range e {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
	}
	if s, ok := ps["const"].(string); ok {
		out = append(out, s)
	}
	return out
}

// schemaErr shortens jsonschema's compile errors to their useful part. A
// schema that breaks the metaschema gets its violations listed by location,
// in a stable order: the library's own message follows map order.
func schemaErr(err error) string {
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	if errors.As(err, &sve) && errors.As(sve.Err, &ve) {
		vs := violations(ve)
		parts := make([]string, len(vs))
		for i, v := range vs {
			parts[i] = "at " + v.String()
		}
		return strings.Join(parts, "; ")
	}
	s := err.Error()
	s = strings.ReplaceAll(s, manifestBase, "")
	return strings.Join(strings.Fields(s), " ")
}

// lineNote renders " at line N" when the path's line is known.
func (c *compiler) lineNote(path string) string {
	if l := c.ps.line(path); l > 0 {
		return fmt.Sprintf(" at line %d", l)
	}
	return ""
}
