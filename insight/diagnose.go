package insight

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// DiagnoseInput is everything Diagnose looks at for one task.
type DiagnoseInput struct {
	Task TaskSnapshot `json:"task"`
	// Plan is the task's workflow version; nil when it is not at hand, and
	// then the snapshot's depends_on lists and the attempts' timeouts and
	// max_attempts stand in for it.
	Plan *workflow.Plan `json:"-"`
	// Attempts are this task's attempts, in any order.
	Attempts []Attempt `json:"attempts,omitempty"`
	// Similar are recent attempts of the same workflow's steps in other
	// tasks: how the same failures went elsewhere, and how long the same
	// steps take when they succeed.
	Similar []Attempt      `json:"similar,omitempty"`
	Cluster []ClusterEvent `json:"cluster,omitempty"`
	Now     time.Time      `json:"now"`
	// StuckAfter is how long a step may wait for an agent before the task
	// counts as stuck; zero means DefaultStuckAfter.
	StuckAfter time.Duration `json:"stuck_after,omitempty"`
}

// DefaultStuckAfter is the wait for an agent after which a step is stuck
// when DiagnoseInput.StuckAfter is zero: longer than a breaker's default
// open period (30 s) with room for a retry backoff.
const DefaultStuckAfter = 5 * time.Minute

// ClusterWindow is how far around a failure cluster events are taken as
// evidence.
const ClusterWindow = 5 * time.Minute

// Diagnosis statuses.
const (
	StatusFailed    = "failed"
	StatusStuck     = "stuck"
	StatusRunning   = "running"
	StatusCompleted = "completed"
)

// Diagnosis is what Diagnose concluded about one task.
type Diagnosis struct {
	TaskID string `json:"task_id"`
	// Status is "failed", "stuck", "running" or "completed".
	Status string `json:"status"`
	// Findings lists the root causes first, the earliest failure first,
	// then their consequences in manifest order.
	Findings []Finding  `json:"findings"`
	Evidence []Evidence `json:"evidence"`
	Summary  string     `json:"summary"`
}

// RootCause returns the first root-cause finding, nil when there is none.
func (d *Diagnosis) RootCause() *Finding {
	for i := range d.Findings {
		if d.Findings[i].Role == RoleRootCause {
			return &d.Findings[i]
		}
	}
	return nil
}

// Confidence. Every rule starts from a base that says how directly the
// record names the cause (a contract_violation code is the cause itself; a
// retry exhaustion is an inference from several attempts), then
//
//	+0.10 when cluster events corroborate it (a member failure for a lost
//	      lease, breaker events for a breaker wait, a capability going
//	      unhealthy for an unhealthy capability),
//	+0.05 when every failed attempt of the step agrees on the class,
//	+0.05 when at least two similar failures elsewhere agree,
//	−0.15 when the failed attempts disagree (mixed codes),
//	−0.10 when there is no attempt record and the snapshot alone speaks,
//
// clamped to [0, 1] and rounded to two decimals. A remediation's
// confidence is its finding's times how well its own evidence supports it.
const (
	corroborated  = 0.10
	consistent    = 0.05
	seenElsewhere = 0.05
	conflicting   = 0.15
	noRecord      = 0.10
)

// baseConfidence is each rule's starting confidence.
func baseConfidence(c Class) float64 {
	switch c {
	case ClassContractViolation, ClassInputMapping:
		return 0.95 // the code names the cause
	case ClassAppError:
		return 0.85
	case ClassTimeout, ClassBreakerOpen, ClassCapabilityMissing:
		return 0.80
	case ClassLeaseLost:
		return 0.75
	case ClassRetryExhausted, ClassCapabilityUnhealth:
		return 0.70 // inferred from several attempts or a vaguer wait reason
	case ClassDependency:
		return 0.90
	}
	return 0.30
}

// Diagnose explains why a task failed or is stuck: which steps are the
// root causes and of what class, which steps failed or wait only because
// of them, the evidence for each, and the remediations the rules propose.
// It is a pure function of its input.
func Diagnose(in DiagnoseInput) *Diagnosis {
	d := newDiag(in)
	dg := &Diagnosis{TaskID: in.Task.ID}
	type root struct {
		i  int
		at time.Time
		f  Finding
	}
	var roots []root
	for i := range d.steps {
		if f, at, ok := d.rootFinding(i); ok {
			roots = append(roots, root{i, at, f})
		}
	}
	// Explained failures before unexplained ones (a step that was still
	// retrying when its task stopped explains nothing), then the earliest
	// first: a later failure may have been made worse by an earlier one
	// even where the graph does not say so. Ties keep manifest order.
	slices.SortStableFunc(roots, func(a, b root) int {
		return cmp.Or(cmp.Compare(unexplained(a.f), unexplained(b.f)), a.at.Compare(b.at))
	})
	isRoot := map[string]int{}
	for k, r := range roots {
		isRoot[d.steps[r.i].Name] = k
		dg.Findings = append(dg.Findings, r.f)
	}
	for i, st := range d.steps {
		if _, ok := isRoot[st.Name]; ok || isDone(st.State) {
			continue
		}
		cause, via := d.rootAncestor(st.Name, isRoot)
		if cause < 0 {
			continue
		}
		rf := roots[cause].f
		dg.Findings = append(dg.Findings, d.consequence(i, rf, via))
	}
	dg.Evidence = d.ev
	if dg.Evidence == nil {
		dg.Evidence = []Evidence{}
	}
	if dg.Findings == nil {
		dg.Findings = []Finding{}
	}
	dg.Status = d.status(roots == nil, dg.Findings)
	dg.Summary = summarize(dg)
	return dg
}

func unexplained(f Finding) int {
	if f.Class == ClassUnknown {
		return 1
	}
	return 0
}

// diag is the state of one Diagnose call.
type diag struct {
	in       DiagnoseInput
	steps    []StepSnapshot
	index    map[string]int
	parents  map[string][]string
	attempts map[string][]Attempt
	ev       []Evidence
	stuck    time.Duration
}

func newDiag(in DiagnoseInput) *diag {
	d := &diag{in: in, steps: in.Task.Steps, index: map[string]int{}, parents: map[string][]string{}, attempts: map[string][]Attempt{}, stuck: in.StuckAfter}
	if d.stuck <= 0 {
		d.stuck = DefaultStuckAfter
	}
	if len(d.steps) == 0 && in.Plan != nil {
		for _, s := range in.Plan.Steps {
			d.steps = append(d.steps, StepSnapshot{Name: s.Name, Capability: s.Capability, DependsOn: s.DependsOn, State: statePending})
		}
	}
	for i, s := range d.steps {
		d.index[s.Name] = i
		d.parents[s.Name] = s.DependsOn
		if ps := d.planStep(s.Name); ps != nil && len(s.DependsOn) == 0 {
			d.parents[s.Name] = ps.DependsOn
		}
	}
	for _, a := range in.Attempts {
		d.attempts[a.Step] = append(d.attempts[a.Step], a)
	}
	for _, as := range d.attempts {
		slices.SortStableFunc(as, func(a, b Attempt) int { return cmp.Compare(a.Attempt, b.Attempt) })
	}
	return d
}

func (d *diag) planStep(name string) *workflow.PlanStep {
	if d.in.Plan == nil {
		return nil
	}
	i, ok := d.in.Plan.StepIndex(name)
	if !ok {
		return nil
	}
	return &d.in.Plan.Steps[i]
}

// add records one piece of evidence and returns its ID.
func (d *diag) add(kind string, at time.Time, step, text string) string {
	id := fmt.Sprintf("e%d", len(d.ev)+1)
	d.ev = append(d.ev, Evidence{ID: id, Kind: kind, At: at.UTC(), Step: step, Text: text})
	return id
}

func isDone(state string) bool { return state == stateComplete || state == stateResolvedManually }

func (d *diag) status(noRoots bool, fs []Finding) string {
	switch d.in.Task.State {
	case stateComplete, stateResolvedManually:
		if noRoots {
			return StatusCompleted
		}
	case stateError, stateCancelled:
		return StatusFailed
	}
	stuck := false
	for _, f := range fs {
		if f.Role != RoleRootCause {
			continue
		}
		if d.failedForGood(d.steps[d.index[f.Step]]) {
			return StatusFailed
		}
		stuck = true
	}
	if stuck {
		return StatusStuck
	}
	return StatusRunning
}

// maxAttempts is the step's attempt limit from the plan, the snapshot or
// its attempts, 0 when none says.
func (d *diag) maxAttempts(st StepSnapshot) int {
	if ps := d.planStep(st.Name); ps != nil && ps.Retry.MaxAttempts > 0 {
		return ps.Retry.MaxAttempts
	}
	if st.MaxAttempts > 0 {
		return st.MaxAttempts
	}
	for _, a := range d.attempts[st.Name] {
		if a.MaxAttempts > 0 {
			return a.MaxAttempts
		}
	}
	return 0
}

func (d *diag) timeout(st StepSnapshot) time.Duration {
	if ps := d.planStep(st.Name); ps != nil && ps.Timeout > 0 {
		return ps.Timeout
	}
	as := d.attempts[st.Name]
	for i := len(as) - 1; i >= 0; i-- {
		if as[i].Timeout > 0 {
			return as[i].Timeout
		}
	}
	return 0
}

// retries reports whether the step's policy retries its last failure.
func (d *diag) retries(st StepSnapshot) bool {
	code, retryable := st.LastCode, st.LastRetryable
	if as := d.attempts[st.Name]; len(as) > 0 && st.LastCode == "" {
		code, retryable = as[len(as)-1].Code, as[len(as)-1].Retryable
	}
	if ps := d.planStep(st.Name); ps != nil {
		return ps.Retry.Retries(code, retryable)
	}
	return workflow.RetryPolicy{}.Retries(code, retryable)
}

// failedForGood reports whether an errored step will not run again by
// itself: its task has stopped, or its policy or its attempt limit rules
// out another attempt.
func (d *diag) failedForGood(st StepSnapshot) bool {
	if st.State != stateError {
		return false
	}
	if s := d.in.Task.State; s != stateInProgress && s != statePending {
		return true
	}
	n := max(st.Attempts, len(d.attempts[st.Name]))
	if m := d.maxAttempts(st); m > 0 && n >= m {
		return true
	}
	return !d.retries(st)
}

// rootFinding judges step i on its own: failed for good, or stuck.
func (d *diag) rootFinding(i int) (Finding, time.Time, bool) {
	st := d.steps[i]
	switch {
	case d.failedForGood(st):
		f, at := d.failed(st)
		return f, at, true
	case st.WaitReason != "" && (st.State == statePending || st.State == stateError):
		since := firstNonZero(st.ReadyAt, st.EndedAt, d.in.Task.CreatedAt)
		if since.IsZero() || d.in.Now.Sub(since) < d.stuck {
			return Finding{}, time.Time{}, false
		}
		return d.waiting(st, since), since, true
	case (st.State == stateInProgress || st.State == stateEnqueued) && !st.Deadline.IsZero() && d.in.Now.After(st.Deadline):
		return d.pastDeadline(st), st.Deadline, true
	}
	return Finding{}, time.Time{}, false
}

func firstNonZero(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

var agentLeft = regexp.MustCompile(`^agent \S+ left$`)

// isLost reports whether an attempt ended because its agent or worker went
// away rather than because the app was slow.
func (d *diag) isLost(a Attempt) bool {
	if a.Code == "lease_lost" || a.Outcome == OutcomeReleased {
		return true
	}
	m := strings.ToLower(a.Message)
	if agentLeft.MatchString(m) {
		return true
	}
	// What the scheduler says when it ends an attempt whose agent or
	// worker went away (agent/dispatch.go abandon, deliver), and the words
	// apps and SDKs use for the same.
	for _, s := range [...]string{"failed while running the attempt", "its agent left", "is not polling", "disconnect", "lease lost", "lease_lost", "heartbeat"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	if isTimeout(a) && a.Agent != "" && !a.StartedAt.IsZero() {
		// The lease lapsed after its agent failed, before gossip said so.
		end := firstNonZero(a.EndedAt, a.StartedAt.Add(a.Timeout))
		for _, e := range d.in.Cluster {
			if (e.Kind == EventMemberFailed || e.Kind == EventMemberLeft) && agentOf(e.Subject) == a.Agent && !e.At.Before(a.StartedAt) && !e.At.After(end) {
				return true
			}
		}
	}
	return false
}

func isTimeout(a Attempt) bool { return a.Code == workflow.CodeTimeout || a.Outcome == OutcomeTimedOut }

func isFailure(a Attempt) bool {
	return a.Outcome != OutcomeCompleted && a.Outcome != OutcomeCancelled && a.Outcome != ""
}

// agentOf is the agent of a breaker target ("agent/capability") or agent.
func agentOf(subject string) string {
	a, _, _ := strings.Cut(subject, "/")
	return a
}

// attemptClass is one failed attempt's class on its own.
func (d *diag) attemptClass(a Attempt) Class {
	switch {
	case a.Code == workflow.CodeContractViolation:
		return ClassContractViolation
	case a.Code == workflow.CodeInputMapping:
		return ClassInputMapping
	case d.isLost(a):
		return ClassLeaseLost
	case isTimeout(a):
		return ClassTimeout
	}
	return ClassAppError
}

// failed classifies a step that failed for good.
func (d *diag) failed(st StepSnapshot) (Finding, time.Time) {
	as := d.attempts[st.Name]
	var fails []Attempt
	for _, a := range as {
		if isFailure(a) {
			fails = append(fails, a)
		}
	}
	conf := 0.0
	if len(fails) == 0 {
		// Only the snapshot speaks: make the attempt it describes.
		fails = []Attempt{{Step: st.Name, Attempt: st.Attempts, Outcome: OutcomeFailed, Code: st.LastCode, Message: st.LastMessage, Retryable: st.LastRetryable, DetailsJSON: st.LastDetailsJSON, EndedAt: st.EndedAt, Agent: st.Agent}}
		if st.LastCode == workflow.CodeTimeout {
			fails[0].Outcome = OutcomeTimedOut
		}
		conf -= noRecord
	}
	last := fails[len(fails)-1]
	at := firstNonZero(last.EndedAt, st.EndedAt, d.in.Now)
	counts := map[Class]int{}
	for _, a := range fails {
		counts[d.attemptClass(a)]++
	}
	n := max(st.Attempts, len(as))
	limit := d.maxAttempts(st)
	exhausted := limit > 0 && n >= limit && d.retries(st)
	f := Finding{Step: st.Name, Role: RoleRootCause, Code: last.Code}
	lastClass := d.attemptClass(last)
	var note string
	switch {
	case lastClass == ClassContractViolation || lastClass == ClassInputMapping:
		f.Class = lastClass
	case counts[ClassLeaseLost]*2 > len(fails) && lastClass == ClassLeaseLost:
		f.Class = ClassLeaseLost
	case counts[ClassTimeout]+counts[ClassLeaseLost] == len(fails) && counts[ClassTimeout] > 0:
		// Retries ran out, but every one timed out: the timeout is
		// the cause, the exhaustion only its count.
		f.Class = ClassTimeout
		if exhausted {
			note = fmt.Sprintf("; retries exhausted, all %d attempts timed out", len(fails))
		}
	case exhausted:
		f.Class = ClassRetryExhausted
		if k := counts[ClassTimeout]; k > 0 {
			note = fmt.Sprintf("; %d of %d attempts timed out", k, len(fails))
		}
	case !d.retries(st):
		f.Class = ClassAppError
	default:
		f.Class = ClassUnknown
	}
	if len(counts) > 1 {
		conf -= conflicting
	} else if len(fails) > 1 {
		conf += consistent
	}

	errID := d.add("error", at, st.Name, fmt.Sprintf("step %s attempt %d failed: %s", st.Name, last.Attempt, codeMsg(last.Code, last.Message)))
	f.Evidence = append(f.Evidence, errID)
	var contractIDs []string
	if f.Class == ClassContractViolation {
		for _, v := range violations(last.DetailsJSON, last.Message) {
			contractIDs = append(contractIDs, d.add("contract", at, st.Name, "contract violation: "+v))
		}
		f.Evidence = append(f.Evidence, contractIDs...)
	}
	attemptIDs := d.attemptEvidence(st.Name, as)
	f.Evidence = append(f.Evidence, attemptIDs...)
	agents := map[string]bool{}
	for _, a := range fails {
		if a.Agent != "" {
			agents[a.Agent] = true
		}
	}
	clusterIDs, corro := d.clusterEvidence(st, at.Add(-ClusterWindow), at.Add(ClusterWindow), agents, f.Class)
	f.Evidence = append(f.Evidence, clusterIDs...)
	if corro {
		conf += corroborated
	}
	sim := d.similarFailures(st, f.Class)
	var simID string
	if sim.n > 0 {
		simID = d.add("similar", time.Time{}, st.Name, sim.text)
		f.Evidence = append(f.Evidence, simID)
		if sim.n >= 2 {
			conf += seenElsewhere
		}
	}
	f.Confidence = clamp01(baseConfidence(f.Class) + conf)
	f.Summary = d.failSummary(st, f.Class, last, len(fails), limit) + note

	// Remediations.
	cite := func(ids ...string) []string {
		var out []string
		for _, id := range ids {
			if id != "" {
				out = append(out, id)
			}
		}
		return out
	}
	task := d.in.Task.ID
	switch f.Class {
	case ClassTimeout:
		if r, ok := d.timeoutRemedy(st, f.Confidence, errID); ok {
			f.Remediations = append(f.Remediations, r)
		}
	case ClassContractViolation:
		f.Remediations = append(f.Remediations,
			rem(ActionEscalate, nil, "the app's result breaks the step's contract: the same code would break it again, so the app or the contract must change", cite(append([]string{errID}, contractIDs...)...), f.Confidence),
			rem(ActionResolveManually, map[string]string{"task": task, "step": st.Name}, "an operator who knows the right result can supply it so that the task goes on", cite(errID), f.Confidence*0.6))
	case ClassInputMapping:
		f.Remediations = append(f.Remediations,
			rem(ActionEscalate, nil, "the step's input cannot be built from the upstream values: the manifest's mapping or an upstream result must change", cite(errID), f.Confidence),
			rem(ActionResolveManually, map[string]string{"task": task, "step": st.Name}, "an operator can supply the step's result", cite(errID), f.Confidence*0.6))
	case ClassAppError:
		if ps := d.planStep(st.Name); ps != nil && slices.Contains(ps.ErrorCodes, last.Code) {
			// A code the error contract declares is an outcome the
			// workflow's authors foresaw (a declined card), not a fault:
			// an operator settles it rather than an engineer fixing it.
			f.Remediations = append(f.Remediations,
				rem(ActionResolveManually, map[string]string{"task": task, "step": st.Name}, fmt.Sprintf("%q is a failure the step's error contract declares: an operator settles it (supplying the result or cancelling)", last.Code), cite(errID), f.Confidence*0.85),
				rem(ActionCancel, map[string]string{"task": task}, "when the declared failure means the task cannot go on", cite(errID), f.Confidence*0.6),
				rem(ActionEscalate, nil, fmt.Sprintf("the app failed the step permanently with code %q", last.Code), cite(errID), f.Confidence*0.5))
			break
		}
		f.Remediations = append(f.Remediations,
			rem(ActionEscalate, nil, fmt.Sprintf("the app failed the step permanently with code %q, which its error contract does not declare: retrying would fail the same way", last.Code), cite(errID), f.Confidence*0.9),
			rem(ActionResolveManually, map[string]string{"task": task, "step": st.Name}, "an operator can settle the step by hand once the cause is fixed", cite(errID), f.Confidence*0.6))
	}
	if f.Class == ClassTimeout || f.Class == ClassRetryExhausted || f.Class == ClassLeaseLost {
		// A plain retry may land on the same agent: when the failures
		// concentrate on one, rerouting is worth more than retrying.
		retryWeight := 1.0
		if agent, ids, ok := d.concentrated(st, fails); ok {
			retryWeight = 0.8
			f.Remediations = append(f.Remediations, rem(ActionReroute, map[string]string{"task": task, "step": st.Name, "avoid_agent": agent},
				fmt.Sprintf("the failures concentrate on agent %s: another agent may run the step", agent), cite(append([]string{errID}, ids...)...), f.Confidence*0.9))
		}
		switch {
		case sim.retried >= 3 && float64(sim.retried) >= 0.6*float64(sim.resolved):
			f.Remediations = append(f.Remediations, rem(ActionRetryStep, map[string]string{"task": task, "step": st.Name},
				fmt.Sprintf("%d of %d similar failures elsewhere went through on a retry", sim.retried, sim.resolved), cite(errID, simID), retryWeight*f.Confidence*float64(sim.retried)/float64(sim.resolved)))
		case f.Class == ClassLeaseLost:
			f.Remediations = append(f.Remediations, rem(ActionRetryStep, map[string]string{"task": task, "step": st.Name},
				"the attempt was lost with its agent or worker, not refused by the app: a new attempt elsewhere is likely to succeed", cite(errID), f.Confidence*0.8))
		case f.Class == ClassRetryExhausted && len(f.Remediations) == 0:
			f.Remediations = append(f.Remediations, rem(ActionEscalate, nil,
				"every attempt failed with a retryable error and nothing shows another try would do better", cite(errID), f.Confidence*0.6))
		}
	}
	sortRemediations(f.Remediations)
	f.Evidence = withCites(f.Evidence, f.Remediations)
	return f, at
}

// withCites adds to ids the evidence the remediations cite that the
// finding does not list yet (the metrics a remediation computed).
func withCites(ids []string, rs []Remediation) []string {
	for _, r := range rs {
		for _, c := range r.Cites {
			if !slices.Contains(ids, c) {
				ids = append(ids, c)
			}
		}
	}
	return ids
}

func codeMsg(code, msg string) string {
	switch {
	case code == "":
		return msg
	case msg == "":
		return code
	}
	return code + ": " + msg
}

func rem(a Action, params map[string]string, why string, cites []string, conf float64) Remediation {
	if cites == nil {
		cites = []string{}
	}
	return Remediation{Action: a, Params: params, Rationale: why, Cites: cites, Confidence: clamp01(conf), Source: "rules"}
}

// sortRemediations puts the most confident first; ties keep rule order.
func sortRemediations(rs []Remediation) {
	slices.SortStableFunc(rs, func(a, b Remediation) int { return cmp.Compare(b.Confidence, a.Confidence) })
}

func (d *diag) failSummary(st StepSnapshot, c Class, last Attempt, n, limit int) string {
	of := ""
	if limit > 0 {
		of = fmt.Sprintf(" of %d", limit)
	}
	switch c {
	case ClassTimeout:
		return fmt.Sprintf("step %s timed out (%d attempt(s)%s)", st.Name, n, of)
	case ClassContractViolation:
		if strings.HasPrefix(last.Message, "error ") {
			return fmt.Sprintf("step %s reported an error that breaks its error contract", st.Name)
		}
		return fmt.Sprintf("step %s returned a result that breaks its contract", st.Name)
	case ClassInputMapping:
		return fmt.Sprintf("step %s's input could not be built from upstream values", st.Name)
	case ClassAppError:
		return fmt.Sprintf("step %s failed permanently with app error %q", st.Name, last.Code)
	case ClassRetryExhausted:
		return fmt.Sprintf("step %s ran out of attempts (%d%s) on retryable errors, the last %q", st.Name, n, of, last.Code)
	case ClassLeaseLost:
		return fmt.Sprintf("step %s lost its attempt with its agent or worker (%s)", st.Name, codeMsg(last.Code, last.Message))
	}
	if d.retries(st) && (limit == 0 || n < limit) {
		return fmt.Sprintf("step %s failed (%s) with attempts left, and was not retried because task %s stopped (%s)", st.Name, codeMsg(last.Code, last.Message), d.in.Task.ID, d.in.Task.State)
	}
	return fmt.Sprintf("step %s failed: %s", st.Name, codeMsg(last.Code, last.Message))
}

// attemptEvidence records one Evidence per attempt.
func (d *diag) attemptEvidence(step string, as []Attempt) []string {
	var ids []string
	for _, a := range as {
		var b strings.Builder
		fmt.Fprintf(&b, "attempt %d", a.Attempt)
		if a.Agent != "" {
			fmt.Fprintf(&b, " on %s", a.Agent)
		}
		if a.Worker != "" {
			fmt.Fprintf(&b, " (worker %s)", a.Worker)
		}
		fmt.Fprintf(&b, ": %s", cmp.Or(a.Outcome, "unknown"))
		if !a.StartedAt.IsZero() && !a.EndedAt.IsZero() {
			fmt.Fprintf(&b, " after %s", fmtDur(a.EndedAt.Sub(a.StartedAt)))
		}
		if a.Timeout > 0 {
			fmt.Fprintf(&b, " (timeout %s)", fmtDur(a.Timeout))
		}
		if isFailure(a) {
			fmt.Fprintf(&b, ", %s", codeMsg(a.Code, a.Message))
		}
		ids = append(ids, d.add("attempt", firstNonZero(a.StartedAt, a.DispatchedAt, a.ReadyAt, a.EndedAt), step, b.String()))
	}
	return ids
}

// clusterEvidence records the cluster events in [from, to] about the
// step's capability or the given agents, and reports whether one
// corroborates class.
func (d *diag) clusterEvidence(st StepSnapshot, from, to time.Time, agents map[string]bool, c Class) ([]string, bool) {
	var ids []string
	corro := false
	for _, e := range d.sortedCluster() {
		if e.At.Before(from) || e.At.After(to) {
			continue
		}
		about := agents[agentOf(e.Subject)] ||
			(st.Capability != "" && (e.Subject == st.Capability || strings.HasSuffix(e.Subject, "/"+st.Capability)))
		if !about {
			continue
		}
		kind := "member"
		switch e.Kind {
		case EventBreakerOpen, EventBreakerHalfOpen, EventBreakerClosed:
			kind = "breaker"
		case EventCapabilityHealthy, EventCapabilityUnhealthy:
			kind = "capability"
		}
		text := e.Kind + " " + e.Subject
		if e.Detail != "" {
			text += ": " + e.Detail
		}
		ids = append(ids, d.add(kind, e.At, st.Name, text))
		switch {
		case c == ClassLeaseLost && (e.Kind == EventMemberFailed || e.Kind == EventMemberLeft),
			c == ClassBreakerOpen && (e.Kind == EventBreakerOpen || e.Kind == EventMemberFailed),
			c == ClassCapabilityUnhealth && (e.Kind == EventCapabilityUnhealthy || e.Kind == EventMemberFailed || e.Kind == EventMemberLeft),
			c == ClassTimeout && e.Kind == EventBreakerOpen:
			corro = true
		}
	}
	return ids, corro
}

// sortedCluster is the cluster events by time, then kind and subject, so
// that evidence comes out in the same order whatever order they came in.
func (d *diag) sortedCluster() []ClusterEvent {
	es := slices.Clone(d.in.Cluster)
	slices.SortStableFunc(es, func(a, b ClusterEvent) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Subject, b.Subject))
	})
	return es
}

// similar sums up the failures of the same step in other tasks.
type similar struct {
	n        int // similar failures
	resolved int // of those, settled
	retried  int // of those, settled by a retry
	text     string
}

// similarFailures looks at the other tasks' failures of the same step and
// class, one per task and step (the last attempt says how it ended).
func (d *diag) similarFailures(st StepSnapshot, c Class) similar {
	last := map[string]Attempt{}
	for _, a := range d.in.Similar {
		if a.Step != st.Name || a.TaskID == d.in.Task.ID || (d.in.Task.Workflow != "" && a.Workflow != "" && a.Workflow != d.in.Task.Workflow) {
			continue
		}
		if !isFailure(a) || d.attemptClass(a) != c && !(c == ClassRetryExhausted && a.Retryable) {
			continue
		}
		if p, ok := last[a.TaskID]; !ok || a.Attempt > p.Attempt {
			last[a.TaskID] = a
		}
	}
	var s similar
	by := map[string]int{}
	for _, a := range last {
		s.n++
		if a.Resolution != "" {
			s.resolved++
			by[a.Resolution]++
			if a.Resolution == ResolutionRetrySucceeded || a.Resolution == ResolutionRetriedManually {
				s.retried++
			}
		}
	}
	if s.n == 0 {
		return s
	}
	var parts []string
	for _, r := range []string{ResolutionRetrySucceeded, ResolutionRetriedManually, ResolutionResolvedManually, ResolutionCancelled, ResolutionDeadLettered} {
		if by[r] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", by[r], r))
		}
	}
	if k := s.n - s.resolved; k > 0 {
		parts = append(parts, fmt.Sprintf("%d unsettled", k))
	}
	what := string(c)
	if c == ClassTimeout {
		what = "timeouts"
	} else {
		what += " failures"
	}
	s.text = fmt.Sprintf("%d similar %s on step %s in other tasks: %s", s.n, what, st.Name, strings.Join(parts, ", "))
	if s.resolved > 0 {
		s.text += fmt.Sprintf(" (%d of %d succeeded on retry)", s.retried, s.resolved)
	}
	return s
}

// timeoutRemedy proposes a longer timeout when the step's successful runs
// elsewhere come close to the one it has: the timeouts are then the slow
// tail of normal runs, not hangs.
func (d *diag) timeoutRemedy(st StepSnapshot, conf float64, errID string) (Remediation, bool) {
	cur := d.timeout(st)
	var ok []time.Duration
	for _, a := range d.in.Similar {
		if a.Step == st.Name && a.Outcome == OutcomeCompleted && !a.StartedAt.IsZero() && !a.EndedAt.IsZero() {
			ok = append(ok, a.EndedAt.Sub(a.StartedAt))
		}
	}
	if cur <= 0 {
		return Remediation{}, false
	}
	if len(ok) < 5 {
		return d.slowdownRemedy(st, cur, ok, conf, errID)
	}
	p := percentiles(ok)
	if float64(p.P99) < 0.8*float64(cur) {
		return d.slowdownRemedy(st, cur, ok, conf, errID)
	}
	proposed := min(proposeTimeout(p.P99), 10*cur)
	if proposed <= cur {
		return Remediation{}, false
	}
	mID := d.add("metric", time.Time{}, st.Name, fmt.Sprintf("successful runs of %s elsewhere: p50 %s, p99 %s over %d runs; timeout %s (p99 is %.0f%% of it)",
		st.Name, fmtDur(p.P50), fmtDur(p.P99), p.N, fmtDur(cur), 100*float64(p.P99)/float64(cur)))
	// Fewer samples, less trust in their p99.
	w := 0.9
	if p.N < 20 {
		w = 0.7
	}
	return rem(ActionChangeTimeout, map[string]string{"step": st.Name, "timeout": fmtDur(proposed)},
		fmt.Sprintf("successful runs reach %s at p99, close to the %s timeout: %s (p99 × 1.5, rounded up) leaves headroom", fmtDur(p.P99), fmtDur(cur), fmtDur(proposed)),
		[]string{errID, mID}, conf*w), true
}

// slowdownWindow is how many of a step's latest attempts in other tasks
// must all have timed out for a slowdown: enough that one slow host or
// one bad input does not make it.
const slowdownWindow = 3

// slowdownRemedy proposes doubling a timeout when the step's latency
// grew past it: its latest attempts in other tasks all timed out, while
// earlier runs completed. How slow it became is not known (a timed-out
// attempt says only "longer than the timeout"), so the proposal is the
// smallest step that may help, 2×, with less confidence than one measured
// from p99; a healing policy bounds it further.
func (d *diag) slowdownRemedy(st StepSnapshot, cur time.Duration, ok []time.Duration, conf float64, errID string) (Remediation, bool) {
	if len(ok) == 0 {
		return Remediation{}, false // never completed: a hang or a bug, not a slowdown
	}
	var latest []Attempt
	for _, a := range d.in.Similar {
		if a.Step == st.Name && a.Outcome != OutcomeReleased && a.Outcome != OutcomeCancelled && !a.EndedAt.IsZero() {
			latest = append(latest, a)
		}
	}
	slices.SortFunc(latest, func(a, b Attempt) int { return b.EndedAt.Compare(a.EndedAt) })
	if len(latest) < slowdownWindow {
		return Remediation{}, false
	}
	tasks := map[string]bool{}
	for _, a := range latest[:slowdownWindow] {
		if a.Outcome != OutcomeTimedOut && a.Code != workflow.CodeTimeout {
			return Remediation{}, false
		}
		tasks[a.TaskID] = true
	}
	p := percentiles(ok)
	mID := d.add("metric", time.Time{}, st.Name, fmt.Sprintf("the last %d attempts of %s in other tasks (%d task(s)) all timed out at %s; earlier runs completed in p99 %s over %d runs",
		slowdownWindow, st.Name, len(tasks), fmtDur(cur), fmtDur(p.P99), p.N))
	proposed := 2 * cur
	return rem(ActionChangeTimeout, map[string]string{"step": st.Name, "timeout": fmtDur(proposed)},
		fmt.Sprintf("%s slowed down past its %s timeout: its latest attempts everywhere time out, where it used to complete in %s (p99); %s (2×) lets slow runs finish while it is investigated", st.Name, fmtDur(cur), fmtDur(p.P99), fmtDur(proposed)),
		[]string{errID, mID}, conf*0.75), true
}

// proposeTimeout is p99 with 50% headroom, rounded up to a unit people
// write; never below p99.
func proposeTimeout(p99 time.Duration) time.Duration {
	return max(roundUp(p99*3/2), p99)
}

// concentrated reports the agent most failures of the step ran on, here
// and in similar tasks, when one stands out: at least two failures, three
// in four of them on it, and at least one attempt of the step elsewhere or
// on another agent to show there is somewhere else to go.
func (d *diag) concentrated(st StepSnapshot, fails []Attempt) (string, []string, bool) {
	by := map[string]int{}
	total := 0
	others := map[string]bool{}
	for _, a := range fails {
		if a.Agent != "" {
			by[a.Agent]++
			total++
		}
	}
	for _, a := range d.in.Similar {
		if a.Step != st.Name || a.Agent == "" {
			continue
		}
		if isFailure(a) {
			by[a.Agent]++
			total++
		}
		others[a.Agent] = true
	}
	best, n := "", 0
	for ag, k := range by {
		if k > n || k == n && ag < best {
			best, n = ag, k
		}
	}
	alt := false
	for ag := range others {
		if ag != best {
			alt = true
		}
	}
	if n < 2 || 4*n < 3*total || !alt {
		return "", nil, false
	}
	id := d.add("metric", time.Time{}, st.Name, fmt.Sprintf("%d of %d failures of step %s (here and in similar tasks) ran on agent %s", n, total, st.Name, best))
	return best, []string{id}, true
}

// violations lists a contract violation's violations, from the details
// JSON when it has them ({"violations": [{"pointer", "message"}]} or the
// bare list) or else from the message the agent commits
// ("result of step x violates its contract: /a: ...; /b: ...").
func violations(details, message string) []string {
	type v struct {
		Pointer string `json:"pointer"`
		Message string `json:"message"`
	}
	var list []v
	if details != "" {
		var wrap struct {
			Violations []v `json:"violations"`
		}
		if json.Unmarshal([]byte(details), &wrap) == nil && len(wrap.Violations) > 0 {
			list = wrap.Violations
		} else if json.Unmarshal([]byte(details), &list) != nil {
			list = nil
		}
	}
	var out []string
	for _, x := range list {
		out = append(out, workflow.Violation{Pointer: x.Pointer, Message: x.Message}.String())
	}
	if len(out) > 0 {
		return out
	}
	if _, rest, ok := strings.Cut(message, "violates its contract: "); ok {
		for _, p := range strings.Split(rest, "; ") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 && message != "" {
		out = []string{message}
	}
	return out
}

var breakerTarget = regexp.MustCompile(`circuit breaker (?:open|half-open) for (\S+?)(?: until|,|;|$)`)

// waiting classifies a step that has waited too long for an agent, from
// the scheduler's wait reason (agent/dispatch.go waitReason) and the
// cluster events.
func (d *diag) waiting(st StepSnapshot, since time.Time) Finding {
	f := Finding{Step: st.Name, Role: RoleRootCause}
	r := strings.ToLower(st.WaitReason)
	agents := map[string]bool{}
	for _, m := range breakerTarget.FindAllStringSubmatch(st.WaitReason, -1) {
		agents[agentOf(m[1])] = true
	}
	if st.Agent != "" {
		agents[st.Agent] = true
	}
	// The agents that have run this capability: when they fail, its
	// providers are gone.
	providers := map[string]bool{}
	for _, a := range slices.Concat(d.in.Attempts, d.in.Similar) {
		if a.Agent != "" && (a.Step == st.Name || st.Capability != "" && a.Capability == st.Capability) {
			providers[a.Agent] = true
		}
	}
	switch {
	case strings.Contains(r, "circuit breaker"):
		f.Class = ClassBreakerOpen
	case strings.Contains(r, "no agent offers capability") || strings.Contains(r, "no agent of system"):
		f.Class = ClassCapabilityMissing
		for _, e := range d.in.Cluster {
			if e.At.After(since.Add(-ClusterWindow)) && !e.At.After(d.in.Now) &&
				(e.Kind == EventCapabilityUnhealthy && e.Subject == st.Capability ||
					(e.Kind == EventMemberFailed || e.Kind == EventMemberLeft) && providers[agentOf(e.Subject)]) {
				// Its providers were there and went away: it is
				// offered, by agents that are down.
				f.Class = ClassCapabilityUnhealth
				agents[agentOf(e.Subject)] = true
			}
		}
	case strings.Contains(r, "concurrency limit") || strings.Contains(r, "no healthy") || strings.Contains(r, "did not take the last step"):
		f.Class = ClassCapabilityUnhealth
	default:
		f.Class = ClassUnknown
	}
	waited := d.in.Now.Sub(since)
	wID := d.add("wait", since, st.Name, fmt.Sprintf("step %s has waited %s for an agent: %s", st.Name, fmtDur(waited), st.WaitReason))
	f.Evidence = append(f.Evidence, wID)
	f.Evidence = append(f.Evidence, d.attemptEvidence(st.Name, d.attempts[st.Name])...)
	if f.Class == ClassCapabilityMissing || f.Class == ClassCapabilityUnhealth {
		maps := providers
		for a := range agents {
			maps[a] = true
		}
		agents = maps
	}
	ids, corro := d.clusterEvidence(st, since.Add(-ClusterWindow), d.in.Now, agents, f.Class)
	f.Evidence = append(f.Evidence, ids...)
	conf := baseConfidence(f.Class)
	if corro {
		conf += corroborated
	}
	f.Confidence = clamp01(conf)
	task := d.in.Task.ID
	switch f.Class {
	case ClassBreakerOpen:
		names := sortedKeys(agents)
		f.Summary = fmt.Sprintf("step %s has waited %s because the circuit breaker of %s is open", st.Name, fmtDur(waited), strings.Join(names, ", "))
		if failed := d.memberFailed(names, since.Add(-ClusterWindow), d.in.Now); failed != "" {
			f.Summary += fmt.Sprintf(" (opened after %s failed)", failed)
		}
		if strings.Contains(r, "no other") || len(names) == 0 {
			f.Remediations = append(f.Remediations, rem(ActionEscalate, nil,
				"no other agent offers the capability: the broken agent must recover or another must be started", append([]string{wID}, ids...), f.Confidence*0.8))
		} else {
			f.Remediations = append(f.Remediations, rem(ActionReroute, map[string]string{"task": task, "step": st.Name, "avoid_agent": names[0]},
				"other agents offer the capability", append([]string{wID}, ids...), f.Confidence*0.7))
		}
	case ClassCapabilityMissing:
		f.Summary = fmt.Sprintf("step %s has waited %s: no agent offers capability %s", st.Name, fmtDur(waited), st.Capability)
		f.Remediations = append(f.Remediations, rem(ActionEscalate, nil,
			"no agent offers the capability: an app offering it must be deployed or its agent labeled for the step's system", []string{wID}, f.Confidence))
	case ClassCapabilityUnhealth:
		f.Summary = fmt.Sprintf("step %s has waited %s: the agents offering %s are down or full", st.Name, fmtDur(waited), st.Capability)
		f.Remediations = append(f.Remediations, rem(ActionEscalate, nil,
			"the capability's agents are unhealthy or at their concurrency limit: capacity must be restored or added", append([]string{wID}, ids...), f.Confidence*0.9))
	default:
		f.Summary = fmt.Sprintf("step %s has waited %s: %s", st.Name, fmtDur(waited), st.WaitReason)
	}
	sortRemediations(f.Remediations)
	return f
}

// memberFailed names the first of agents that failed or left in [from, to].
func (d *diag) memberFailed(agents []string, from, to time.Time) string {
	for _, e := range d.sortedCluster() {
		if (e.Kind == EventMemberFailed || e.Kind == EventMemberLeft) && slices.Contains(agents, agentOf(e.Subject)) && !e.At.Before(from) && !e.At.After(to) {
			return agentOf(e.Subject)
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// pastDeadline classifies an attempt still recorded in flight after its
// deadline: the lease should have failed it, so either its agent went
// away or the attempt hangs.
func (d *diag) pastDeadline(st StepSnapshot) Finding {
	f := Finding{Step: st.Name, Role: RoleRootCause, Class: ClassTimeout}
	over := d.in.Now.Sub(st.Deadline)
	wID := d.add("wait", st.Deadline, st.Name, fmt.Sprintf("step %s is %s on %s, %s past its deadline %s", st.Name, st.State, cmp.Or(st.Agent, "an unknown agent"), fmtDur(over), st.Deadline.UTC().Format(time.RFC3339)))
	f.Evidence = append(f.Evidence, wID)
	f.Evidence = append(f.Evidence, d.attemptEvidence(st.Name, d.attempts[st.Name])...)
	agents := map[string]bool{}
	if st.Agent != "" {
		agents[st.Agent] = true
	}
	from := firstNonZero(st.StartedAt, st.DispatchedAt, st.Deadline).Add(-ClusterWindow)
	if d.memberFailed([]string{st.Agent}, from, d.in.Now) != "" {
		f.Class = ClassLeaseLost
	}
	ids, corro := d.clusterEvidence(st, from, d.in.Now, agents, f.Class)
	f.Evidence = append(f.Evidence, ids...)
	conf := baseConfidence(f.Class) - 0.1 // no failure recorded yet
	if corro {
		conf += corroborated
	}
	f.Confidence = clamp01(conf)
	task := d.in.Task.ID
	if f.Class == ClassLeaseLost {
		f.Summary = fmt.Sprintf("step %s's attempt was lost with agent %s and is past its deadline", st.Name, st.Agent)
		f.Remediations = append(f.Remediations, rem(ActionReroute, map[string]string{"task": task, "step": st.Name, "avoid_agent": st.Agent},
			"its agent failed: a new attempt elsewhere is likely to succeed", append([]string{wID}, ids...), f.Confidence*0.8))
	} else {
		f.Summary = fmt.Sprintf("step %s is still %s %s past its deadline", st.Name, st.State, fmtDur(over))
		f.Remediations = append(f.Remediations, rem(ActionEscalate, nil,
			"the attempt outlived its lease without being failed: the agent or the scheduler needs a look", []string{wID}, f.Confidence*0.7))
	}
	return f
}

// rootAncestor finds the root-cause step among name's ancestors that
// explains why name is not done (the first root in roots order), and the
// parent through which it reaches name. It returns -1 when none.
func (d *diag) rootAncestor(name string, roots map[string]int) (int, string) {
	best, via := -1, ""
	seen := map[string]bool{}
	for _, par := range d.parents[name] {
		if i, ok := d.index[par]; ok && isDone(d.steps[i].State) {
			continue
		}
		stack := []string{par}
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue
			}
			seen[s] = true
			if k, ok := roots[s]; ok {
				if best < 0 || k < best {
					best, via = k, par
				}
				continue
			}
			stack = append(stack, d.parents[s]...)
		}
	}
	return best, via
}

// consequence describes step i, not done because root failed upstream.
func (d *diag) consequence(i int, root Finding, via string) Finding {
	st := d.steps[i]
	how := "waits on"
	if st.State == stateCancelled {
		how = "was cancelled after"
	}
	path := fmt.Sprintf("%s, the root cause (%s)", root.Step, root.Class)
	if via != root.Step {
		path = fmt.Sprintf("%s, downstream of the root cause %s (%s)", via, root.Step, root.Class)
	}
	ev := []string{}
	if len(root.Evidence) > 0 {
		ev = append(ev, root.Evidence[0])
	}
	return Finding{
		Step: st.Name, Role: RoleConsequence, Class: ClassDependency, CausedBy: root.Step,
		Summary:    fmt.Sprintf("step %s (%s) %s %s", st.Name, st.State, how, path),
		Confidence: clamp01(min(baseConfidence(ClassDependency), root.Confidence+0.1)),
		Evidence:   ev,
	}
}

// summarize says in a sentence or two what the diagnosis found.
func summarize(dg *Diagnosis) string {
	var roots, cons []string
	for _, f := range dg.Findings {
		if f.Role == RoleRootCause {
			roots = append(roots, f.Summary)
		} else {
			cons = append(cons, f.Step)
		}
	}
	if len(roots) == 0 {
		return fmt.Sprintf("task %s %s: no failure or stuck step found", dg.TaskID, statusPhrase(dg.Status))
	}
	s := fmt.Sprintf("task %s %s: %s", dg.TaskID, statusPhrase(dg.Status), strings.Join(roots, "; "))
	if len(cons) > 0 {
		s += fmt.Sprintf(". Consequently not done: %s", strings.Join(cons, ", "))
	}
	return s + "."
}

func statusPhrase(status string) string {
	switch status {
	case StatusFailed:
		return "failed"
	case StatusCompleted:
		return "completed"
	}
	return "is " + status
}
