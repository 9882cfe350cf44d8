package consensus

import (
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// Proposals (docs/proposals.md) are changes that wait for an operator: a
// new workflow version (a workflow change) or an operation on a task.
// They live in the replicated state so that every server shows the same
// list, and so that approving one and applying it commit in one log entry
// (an atomic Batch).

// Proposal kinds.
const (
	ProposalWorkflowChange = "workflow_change"
	ProposalOperation      = "operation"
)

// Proposal states.
const (
	ProposalPending    = "pending"
	ProposalApproved   = "approved"
	ProposalRejected   = "rejected"
	ProposalApplied    = "applied"
	ProposalRolledBack = "rolled_back"
	ProposalFailed     = "failed"
)

// ActionOptimizeDependencies is the dependency optimizer's action; the
// others are insight's remediation vocabulary (insight/finding.go), which
// this package does not import: the state only needs their names.
const ActionOptimizeDependencies = "optimize_dependencies"

// ActionCreateWorkflow proposes the first version of a workflow that does
// not exist yet (a drafted workflow, docs/ai.md): a workflow change with
// no base version, which cannot be rolled back since there is nothing
// before it.
const ActionCreateWorkflow = "create_workflow"

// ActionUpdateWorkflow proposes a new version of an existing workflow,
// written whole (a drafted workflow whose name is taken).
const ActionUpdateWorkflow = "update_workflow"

// proposalActions maps each action to its kind.
var proposalActions = map[string]string{
	"change_timeout":           ProposalWorkflowChange,
	"change_retry_policy":      ProposalWorkflowChange,
	ActionOptimizeDependencies: ProposalWorkflowChange,
	ActionCreateWorkflow:       ProposalWorkflowChange,
	ActionUpdateWorkflow:       ProposalWorkflowChange,
	"retry_step":               ProposalOperation,
	"reroute":                  ProposalOperation,
	"resolve_manually":         ProposalOperation,
	"cancel":                   ProposalOperation,
	"escalate":                 ProposalOperation,
}

// ProposalKind returns the kind of an action, false for an unknown one.
func ProposalKind(action string) (string, bool) {
	k, ok := proposalActions[action]
	return k, ok
}

// ProposalSources are who may file a proposal.
var ProposalSources = []string{"rules", "model", "optimizer", "healing", "user"}

// proposalTransitions are the legal state changes.
var proposalTransitions = map[string][]string{
	ProposalPending:  {ProposalApproved, ProposalRejected},
	ProposalApproved: {ProposalApplied, ProposalFailed},
	ProposalApplied:  {ProposalRolledBack},
}

// DefaultMaxProposals bounds the proposals kept: the oldest decided ones
// are dropped to make room.
const DefaultMaxProposals = 10000

// Size limits of a proposal's fields, so that a proposal cannot make the
// log or a snapshot balloon. A manifest is bounded by the payload limit
// the API enforces before the command is proposed.
const (
	maxProposalTitle    = 200
	maxProposalSummary  = 4 << 10
	maxProposalManifest = 1 << 20
	maxProposalDiff     = 1 << 20
	maxProposalEvidence = 64 << 10
	maxProposalParams   = 32
	maxProposalParamKey = 64
	maxProposalParamVal = 1 << 10
	maxProposalReason   = 1 << 10
	maxProposalBy       = 256
	maxProposalUndo     = 1 << 10
)

// Proposal is a stored proposal as readers see it: a copy, safe to keep.
type Proposal struct {
	ID          string
	Kind        string
	Action      string
	Title       string
	Summary     string
	Namespace   string
	Workflow    string
	BaseVersion string
	NewVersion  string
	Manifest    string
	Diff        string
	TaskID      string
	Step        string
	Params      map[string]string
	// EvidenceJSON is the finding and evidence the proposal rests on,
	// opaque to the state.
	EvidenceJSON string
	Source       string
	Confidence   float64
	State        string
	History      []Transition
	// Undo says, for a person, how to undo the proposal once applied.
	Undo      string
	Auto      bool
	CreatedAt time.Time
	CreatedBy string
}

// Transition is one change of a proposal's state.
type Transition struct {
	State  string
	By     string
	At     time.Time
	Reason string
}

func (p *Proposal) clone() *Proposal {
	c := *p
	c.Params = maps.Clone(p.Params)
	c.History = slices.Clone(p.History)
	return &c
}

// proposals is the state's store of proposals.
type proposals struct {
	byID  map[string]*Proposal
	order []*Proposal // apply order
	seq   uint64      // the n of the last id given
	max   int
}

func newProposals() proposals {
	return proposals{byID: map[string]*Proposal{}, max: DefaultMaxProposals}
}

// SetMaxProposals changes how many proposals are kept (tests); it must be
// the same on every server.
func (s *State) SetMaxProposals(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.props.max = n
}

func tooLong(field string, n, max int) error {
	return fmt.Errorf("%w: proposal %s is %d bytes, over the limit of %d; shorten it", ErrInvalid, field, n, max)
}

// checkProposalFields checks the size limits and the values every
// proposal must have.
func checkProposalFields(p *fsmv1.Proposal) error {
	for _, f := range []struct {
		name string
		v    string
		max  int
	}{
		{"title", p.GetTitle(), maxProposalTitle}, {"summary", p.GetSummary(), maxProposalSummary},
		{"manifest", p.GetManifest(), maxProposalManifest}, {"diff", p.GetDiff(), maxProposalDiff},
		{"evidence_json", p.GetEvidenceJson(), maxProposalEvidence}, {"created_by", p.GetCreatedBy(), maxProposalBy},
		{"undo", p.GetUndo(), maxProposalUndo},
	} {
		if len(f.v) > f.max {
			return tooLong(f.name, len(f.v), f.max)
		}
	}
	if n := len(p.GetParams()); n > maxProposalParams {
		return fmt.Errorf("%w: proposal has %d params, over the limit of %d", ErrInvalid, n, maxProposalParams)
	}
	for k, v := range p.GetParams() {
		if k == "" || len(k) > maxProposalParamKey {
			return fmt.Errorf("%w: proposal param name %q is empty or over %d bytes", ErrInvalid, k, maxProposalParamKey)
		}
		if len(v) > maxProposalParamVal {
			return tooLong("param "+k, len(v), maxProposalParamVal)
		}
	}
	if !slices.Contains(ProposalSources, p.GetSource()) {
		return fmt.Errorf("%w: proposal source %q is unknown: use one of %s", ErrInvalid, p.GetSource(), strings.Join(ProposalSources, ", "))
	}
	if c := p.GetConfidence(); math.IsNaN(c) || c < 0 || c > 1 {
		return fmt.Errorf("%w: proposal confidence %v is out of range: use 0 to 1", ErrInvalid, c)
	}
	return nil
}

// putProposal validates a proposal and stores it, pending, under the
// next id.
func (s *State) putProposal(in *fsmv1.Proposal, now time.Time) *Result {
	if in == nil {
		return &Result{Err: fmt.Errorf("%w: no proposal", ErrInvalid)}
	}
	if err := checkProposalFields(in); err != nil {
		return &Result{Err: err}
	}
	kind, ok := proposalActions[in.GetAction()]
	if !ok {
		known := slices.Sorted(maps.Keys(proposalActions))
		return &Result{Err: fmt.Errorf("%w: proposal action %q is unknown: use one of %s", ErrInvalid, in.GetAction(), strings.Join(known, ", "))}
	}
	if in.GetKind() != "" && in.GetKind() != kind {
		return &Result{Err: fmt.Errorf("%w: proposal kind %q does not match action %s, which is a %s", ErrInvalid, in.GetKind(), in.GetAction(), kind)}
	}
	p := &Proposal{
		Kind: kind, Action: in.GetAction(), Title: in.GetTitle(), Summary: in.GetSummary(), Namespace: nsOr(in.GetNamespace()),
		Workflow: in.GetWorkflow(), BaseVersion: in.GetBaseVersion(), NewVersion: in.GetNewVersion(), Manifest: in.GetManifest(),
		Diff: in.GetDiff(), TaskID: in.GetTaskId(), Step: in.GetStep(), Params: maps.Clone(in.GetParams()),
		EvidenceJSON: in.GetEvidenceJson(), Source: in.GetSource(), Confidence: in.GetConfidence(), Undo: in.GetUndo(),
		Auto: in.GetAuto(), CreatedAt: now, CreatedBy: in.GetCreatedBy(), State: ProposalPending,
	}
	var err error
	if kind == ProposalWorkflowChange {
		err = s.checkWorkflowChange(p)
	} else {
		err = s.checkOperation(p)
	}
	if err != nil {
		return &Result{Err: err}
	}
	if p.Undo == "" {
		p.Undo = undoText(p)
	}
	if err := s.makeRoomForProposal(); err != nil {
		return &Result{Err: err}
	}
	s.record(s.undoPutProposal())
	// A snapshot's sequence is trusted no further than the ids it holds.
	for {
		s.props.seq++
		p.ID = "p-" + strconv.FormatUint(s.props.seq, 10)
		if _, taken := s.props.byID[p.ID]; !taken {
			break
		}
	}
	p.History = []Transition{{State: ProposalPending, By: p.CreatedBy, At: now}}
	s.props.byID[p.ID] = p
	s.props.order = append(s.props.order, p)
	return &Result{Created: true, ProposalID: p.ID}
}

// checkWorkflowChange checks that the proposed manifest compiles, is a new
// version of the base workflow, and that the base exists.
func (s *State) checkWorkflowChange(p *Proposal) error {
	if p.Workflow == "" {
		return fmt.Errorf("%w: a workflow change names its workflow", ErrInvalid)
	}
	if p.Manifest == "" {
		return fmt.Errorf("%w: a workflow change carries the proposed manifest", ErrInvalid)
	}
	var base *versionRec
	if p.Action == ActionCreateWorkflow {
		if p.BaseVersion != "" {
			return fmt.Errorf("%w: a create_workflow proposal has no base version (it names %s): propose a change to an existing workflow instead", ErrInvalid, p.BaseVersion)
		}
		if wf := s.workflows[wfKey{p.Namespace, p.Workflow}]; wf != nil && len(wf.versions) > 0 {
			return fmt.Errorf("%w: workflow %s/%s exists: propose a new version of it, not create_workflow", ErrInvalid, p.Namespace, p.Workflow)
		}
	} else {
		var err error
		if base, err = s.version(p.Namespace, p.Workflow, p.BaseVersion); err != nil {
			return fmt.Errorf("base version: %w", err)
		}
		p.BaseVersion = base.version
	}
	plan, err := workflow.Load([]byte(p.Manifest), s.limits)
	if err != nil {
		return fmt.Errorf("%w: proposed manifest: %w", ErrInvalid, err)
	}
	if plan.Namespace != p.Namespace || plan.Name != p.Workflow {
		return fmt.Errorf("%w: the proposed manifest is workflow %s/%s, not %s/%s", ErrInvalid, plan.Namespace, plan.Name, p.Namespace, p.Workflow)
	}
	if p.NewVersion == "" {
		p.NewVersion = plan.Version
	}
	if plan.Version != p.NewVersion {
		return fmt.Errorf("%w: the proposed manifest has version %s, the proposal says %s", ErrInvalid, plan.Version, p.NewVersion)
	}
	if base == nil {
		return nil
	}
	for _, v := range base.wf.versions {
		if v.version == p.NewVersion {
			return fmt.Errorf("%w: %s/%s version %s exists; propose a version that does not", ErrInvalid, p.Namespace, p.Workflow, p.NewVersion)
		}
	}
	return nil
}

// checkOperation checks that the task (and step) an operation acts on
// exist, and fills in the task's workflow.
func (s *State) checkOperation(p *Proposal) error {
	if p.TaskID == "" {
		if p.Action == "escalate" {
			return nil // a matter for a person, not necessarily about one task
		}
		return fmt.Errorf("%w: a %s proposal names its task (task_id)", ErrInvalid, p.Action)
	}
	t := s.tasks[p.TaskID]
	if t == nil {
		return notFound("task %s", p.TaskID)
	}
	p.Namespace, p.Workflow, p.BaseVersion = t.ns, t.ver.wf.key.name, t.ver.version
	switch p.Action {
	case "retry_step", "reroute", "resolve_manually":
		if p.Step == "" {
			return fmt.Errorf("%w: a %s proposal names its step", ErrInvalid, p.Action)
		}
	}
	if p.Step != "" {
		if _, ok := t.ver.plan.StepIndex(p.Step); !ok {
			return notFound("step %q in task %s (workflow %s)", p.Step, p.TaskID, p.Workflow)
		}
	}
	return nil
}

// CreateWorkflowUndo is why an applied create_workflow cannot be rolled
// back, and what to do instead.
const CreateWorkflowUndo = "a first version has nothing to go back to: stop starting its tasks, or apply another version"

// undoText says how to undo an applied proposal.
func undoText(p *Proposal) string {
	switch p.Action {
	case "retry_step":
		return "a retried step cannot be un-run; cancel the task to stop it"
	case "reroute":
		return "a retried step cannot be un-run; cancel the task to stop it (the scheduler picks the agent: the failed one is not excluded)"
	case "resolve_manually":
		return "a step resolved by hand cannot be un-resolved; its dependants may already have run"
	case "cancel":
		return "a cancelled task cannot be resumed; start a new task with the same input"
	case "escalate":
		return "nothing to undo: escalating hands the matter to a person"
	case ActionCreateWorkflow:
		return CreateWorkflowUndo
	}
	return "re-activate version " + p.BaseVersion + " (roll the proposal back)"
}

// makeRoomForProposal drops the oldest decided proposals (rejected,
// applied, rolled back or failed) until one more fits. Pending and
// approved ones are never dropped: they still wait for someone.
func (s *State) makeRoomForProposal() error {
	ps := &s.props
	if len(ps.order) < ps.max {
		return nil
	}
	keep := ps.order[:0:0]
	drop := len(ps.order) - ps.max + 1
	for _, p := range ps.order {
		if drop > 0 && p.State != ProposalPending && p.State != ProposalApproved {
			drop--
			continue
		}
		keep = append(keep, p)
	}
	if drop > 0 {
		return fmt.Errorf("%w: %d proposals are kept and every one is pending; reject some ('tasker ai proposals reject')", ErrLimit, ps.max)
	}
	s.record(s.undoPutProposal())
	ps.order = keep
	ps.byID = make(map[string]*Proposal, len(keep))
	for _, p := range keep {
		ps.byID[p.ID] = p
	}
	return nil
}

// undoPutProposal returns a function restoring the store as it is now,
// nil when no batch is recording.
func (s *State) undoPutProposal() func() {
	if s.undo == nil {
		return nil
	}
	order, seq := slices.Clone(s.props.order), s.props.seq
	return func() {
		s.props.order, s.props.seq = order, seq
		s.props.byID = make(map[string]*Proposal, len(order))
		for _, p := range order {
			s.props.byID[p.ID] = p
		}
	}
}

// transitionProposal moves a proposal to state to, when legal and when to
// is one of allowed (what the command may do).
func (s *State) transitionProposal(id, to, by, reason string, allowed []string, now time.Time) *Result {
	if len(by) > maxProposalBy {
		return &Result{Err: tooLong("by", len(by), maxProposalBy)}
	}
	if len(reason) > maxProposalReason {
		return &Result{Err: tooLong("reason", len(reason), maxProposalReason)}
	}
	if !slices.Contains(allowed, to) {
		return &Result{Err: fmt.Errorf("%w: %q is not a state this command sets: use %s", ErrInvalid, to, strings.Join(allowed, " or "))}
	}
	p := s.props.byID[id]
	if p == nil {
		return &Result{Err: notFound("proposal %s", id)}
	}
	next := proposalTransitions[p.State]
	if !slices.Contains(next, to) {
		if len(next) == 0 {
			return &Result{Err: fmt.Errorf("%w: proposal %s is %s, which is final: it cannot become %s", ErrInvalid, id, p.State, to)}
		}
		return &Result{Err: fmt.Errorf("%w: proposal %s is %s: it can only become %s, not %s", ErrInvalid, id, p.State, strings.Join(next, " or "), to)}
	}
	if s.undo != nil {
		old := p.clone()
		s.record(func() { *p = *old })
	}
	p.State = to
	p.History = append(p.History, Transition{State: to, By: by, At: now, Reason: reason})
	return &Result{ProposalID: id}
}

// setActiveVersion pins the version tasks started without one get; ""
// removes the pin.
func (s *State) setActiveVersion(ns, name, version string) *Result {
	wf := s.workflows[wfKey{nsOr(ns), name}]
	if wf == nil || len(wf.versions) == 0 {
		return &Result{Err: notFound("workflow %s/%s", nsOr(ns), name)}
	}
	if version != "" && !slices.ContainsFunc(wf.versions, func(v *versionRec) bool { return v.version == version }) {
		return &Result{Err: notFound("workflow %s/%s version %s", nsOr(ns), name, version)}
	}
	if old := wf.active; s.undo != nil {
		s.record(func() { wf.active = old })
	}
	wf.active = version
	return &Result{}
}

// record adds fn to the undo log of the atomic batch being applied.
func (s *State) record(fn func()) {
	if s.undo != nil && fn != nil {
		*s.undo = append(*s.undo, fn)
	}
}

// undoable are the commands whose effects an atomic batch can undo.
func undoable(c *fsmv1.Command) bool {
	switch c.Kind.(type) {
	case *fsmv1.Command_PutWorkflow, *fsmv1.Command_SetActiveVersion, *fsmv1.Command_PutProposal,
		*fsmv1.Command_DecideProposal, *fsmv1.Command_MarkProposal:
		return true
	}
	return false
}

// applyAtomic applies a batch all or nothing (Batch.atomic). The commands
// that change only workflows and proposals record how to undo what they
// did; a task operation cannot be undone, so it may only be followed by
// MarkProposal, which cannot fail after the batch's own DecideProposal.
func (s *State) applyAtomic(cmds []*fsmv1.Command, now time.Time, fx *Effects, index uint64, log *slog.Logger) *Result {
	res := &Result{}
	other := -1
	for i, c := range cmds {
		if _, nested := c.Kind.(*fsmv1.Command_Batch); nested {
			res.Err = fmt.Errorf("%w: atomic batch: command %d is a batch", ErrInvalid, i+1)
			return res
		}
		if undoable(c) {
			if _, mark := c.Kind.(*fsmv1.Command_MarkProposal); !mark && other >= 0 {
				res.Err = fmt.Errorf("%w: atomic batch: command %d follows command %d, which cannot be undone; only MarkProposal may", ErrInvalid, i+1, other+1)
				return res
			}
			continue
		}
		if other >= 0 {
			res.Err = fmt.Errorf("%w: atomic batch: commands %d and %d both cannot be undone; an atomic batch holds at most one", ErrInvalid, other+1, i+1)
			return res
		}
		other = i
	}
	var undo []func()
	s.undo = &undo
	defer func() { s.undo = nil }()
	for i, c := range cmds {
		subNow := now
		if c.GetNow() != nil {
			subNow = c.GetNow().AsTime()
		}
		var r *Result
		if i == other {
			// What follows cannot be undone once this runs: the marks
			// after it are checked first, so that they cannot fail.
			if j, err := s.checkMarks(cmds[i+1:]); err != nil {
				i += 1 + j
				for range cmds[len(res.Batch):i] {
					res.Batch = append(res.Batch, &Result{Err: fmt.Errorf("%w: not applied: a later command of the atomic batch would be refused", ErrInvalid)})
				}
				r = &Result{Err: err}
			}
		}
		if r == nil {
			r = s.apply(c, subNow, fx, index, log)
		}
		res.Batch = append(res.Batch, r)
		if r.Err == nil {
			continue
		}
		for j := len(undo) - 1; j >= 0; j-- {
			undo[j]()
		}
		for range cmds[i+1:] {
			res.Batch = append(res.Batch, &Result{Err: fmt.Errorf("%w: not applied: an earlier command of the atomic batch was refused", ErrInvalid)})
		}
		res.Err = fmt.Errorf("command %d of %d: %w", i+1, len(cmds), r.Err)
		return res
	}
	return res
}

// checkMarks checks that the MarkProposal commands marks would each be
// accepted, in order, without changing anything; it returns the index of
// the first that would not.
func (s *State) checkMarks(marks []*fsmv1.Command) (int, error) {
	states := map[string]string{}
	for j, c := range marks {
		m := c.GetMarkProposal()
		p := s.props.byID[m.GetId()]
		if p == nil {
			return j, notFound("proposal %s", m.GetId())
		}
		cur, ok := states[p.ID]
		if !ok {
			cur = p.State
		}
		allowed := []string{ProposalApplied, ProposalFailed, ProposalRolledBack}
		if !slices.Contains(allowed, m.GetState()) || !slices.Contains(proposalTransitions[cur], m.GetState()) ||
			len(m.GetBy()) > maxProposalBy || len(m.GetReason()) > maxProposalReason {
			return j, fmt.Errorf("%w: proposal %s is %s: it cannot become %q by this command", ErrInvalid, p.ID, cur, m.GetState())
		}
		states[p.ID] = m.GetState()
	}
	return 0, nil
}

// --- reads ----------------------------------------------------------------

// ProposalByID returns a proposal.
func (s *State) ProposalByID(id string) (*Proposal, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.props.byID[id]
	if p == nil {
		return nil, notFound("proposal %s", id)
	}
	return p.clone(), nil
}

// ProposalFilter selects proposals; empty fields match all.
type ProposalFilter struct {
	State     string
	Namespace string
	Workflow  string
	Limit     int // 0: all
}

// Proposals returns the proposals f selects, newest first.
func (s *State) Proposals(f ProposalFilter) []*Proposal {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Proposal
	for i := len(s.props.order) - 1; i >= 0; i-- {
		p := s.props.order[i]
		if f.State != "" && p.State != f.State || f.Namespace != "" && p.Namespace != f.Namespace || f.Workflow != "" && p.Workflow != f.Workflow {
			continue
		}
		out = append(out, p.clone())
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out
}

// --- snapshots ------------------------------------------------------------

func (p *Proposal) encode() *fsmv1.Proposal {
	out := &fsmv1.Proposal{
		Id: p.ID, Kind: p.Kind, Action: p.Action, Title: p.Title, Summary: p.Summary, Namespace: p.Namespace, Workflow: p.Workflow,
		BaseVersion: p.BaseVersion, NewVersion: p.NewVersion, Manifest: p.Manifest, Diff: p.Diff, TaskId: p.TaskID, Step: p.Step,
		Params: maps.Clone(p.Params), EvidenceJson: p.EvidenceJSON, Source: p.Source, Confidence: p.Confidence, State: p.State,
		Undo: p.Undo, Auto: p.Auto, CreatedAt: ts(p.CreatedAt), CreatedBy: p.CreatedBy,
	}
	for _, h := range p.History {
		out.History = append(out.History, &fsmv1.ProposalTransition{State: h.State, By: h.By, At: timestamppb.New(h.At), Reason: h.Reason})
	}
	return out
}

// restoreProposal adds a proposal from a snapshot as it was: its id,
// state and history are kept, not assigned.
func (s *State) restoreProposal(in *fsmv1.Proposal) error {
	if _, dup := s.props.byID[in.GetId()]; dup || in.GetId() == "" {
		return fmt.Errorf("proposal id %q is empty or repeated", in.GetId())
	}
	if _, ok := proposalTransitions[in.GetState()]; !ok && !slices.Contains([]string{ProposalRejected, ProposalRolledBack, ProposalFailed}, in.GetState()) {
		return fmt.Errorf("proposal %s: unknown state %q", in.GetId(), in.GetState())
	}
	p := &Proposal{
		ID: in.GetId(), Kind: in.GetKind(), Action: in.GetAction(), Title: in.GetTitle(), Summary: in.GetSummary(), Namespace: in.GetNamespace(),
		Workflow: in.GetWorkflow(), BaseVersion: in.GetBaseVersion(), NewVersion: in.GetNewVersion(), Manifest: in.GetManifest(), Diff: in.GetDiff(),
		TaskID: in.GetTaskId(), Step: in.GetStep(), Params: maps.Clone(in.GetParams()), EvidenceJSON: in.GetEvidenceJson(), Source: in.GetSource(),
		Confidence: in.GetConfidence(), State: in.GetState(), Undo: in.GetUndo(), Auto: in.GetAuto(), CreatedAt: fromTS(in.GetCreatedAt()),
		CreatedBy: in.GetCreatedBy(),
	}
	for _, h := range in.GetHistory() {
		p.History = append(p.History, Transition{State: h.GetState(), By: h.GetBy(), At: fromTS(h.GetAt()), Reason: h.GetReason()})
	}
	s.props.byID[p.ID] = p
	s.props.order = append(s.props.order, p)
	return nil
}

// activeOf is the version a workflow's tasks get when started without
// one: the pinned version, else the highest.
func (wf *workflowRec) activeOf() *versionRec {
	if wf.active != "" {
		for _, v := range wf.versions {
			if v.version == wf.active {
				return v
			}
		}
	}
	return wf.latest()
}
