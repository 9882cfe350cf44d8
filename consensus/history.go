package consensus

// Execution history: one record per step attempt that ended (completed,
// failed, timed out, handed back or cancelled), for analysis of how
// workflows run. A step record keeps only its current attempt; the
// history keeps them all, within a retention.
//
// Records are written at apply time from the command alone, and pruned
// at append time against the command's timestamp, never the wall clock:
// every server holds the same records with the same sequence numbers,
// and snapshots carry them. That holds only if every server has the same
// retention (history_max_records, history_max_age): a server with a
// smaller one drops records the others keep, and the first snapshot it
// sends a follower hands its shorter history on.
//
// A record of a failed attempt is settled later, when its step is: a
// later attempt completes, an operator resolves or retries the step, the
// task is cancelled, or the step runs out of attempts (dead_lettered,
// which an operator's later retry, resolve or the task's cancellation
// still overrides, as they close the dead letter).
//
// The history is kept apart from the scheduling index (workflow.Runs)
// and from the tasks: it costs nothing per active task, and a record
// points at the task's and the workflow version's strings instead of
// copying them.

import (
	"fmt"
	"strings"
	"time"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// Outcomes of an attempt.
const (
	// OutcomeCompleted: the attempt reported a result.
	OutcomeCompleted = "completed"
	// OutcomeFailed: the attempt reported an error (or the leader failed
	// it, for a reason other than its timeout).
	OutcomeFailed = "failed"
	// OutcomeTimedOut: the attempt failed with workflow.CodeTimeout.
	OutcomeTimedOut = "timed_out"
	// OutcomeReleased: the attempt was handed back without spending it
	// (ReleaseStep); the step is dispatched again under the same number.
	OutcomeReleased = "released"
	// OutcomeCancelled: the task was cancelled while the attempt was
	// dispatched or running.
	OutcomeCancelled = "cancelled"
)

// Resolutions of a failed or timed-out attempt: what became of its step.
const (
	// ResolutionRetrySucceeded: a later attempt of the step completed.
	ResolutionRetrySucceeded = "retry_succeeded"
	// ResolutionResolvedManually: an operator resolved the step (ResolveStep).
	ResolutionResolvedManually = "resolved_manually"
	// ResolutionRetriedManually: an operator gave the step a new round of
	// attempts (RetryStep). The new round's attempts are records of their
	// own and are settled by how that round ends.
	ResolutionRetriedManually = "retried_manually"
	// ResolutionCancelled: the task was cancelled.
	ResolutionCancelled = "cancelled"
	// ResolutionDeadLettered: the step ran out of attempts or failed with
	// an error its policy does not retry. An operator's retry or resolve,
	// or the task's cancellation, replaces it.
	ResolutionDeadLettered = "dead_lettered"
)

// MaxHistoryText bounds the bytes of a record's Message and DetailsJSON:
// longer ones are cut (at a UTF-8 boundary), so that the history's
// memory follows its record count. The step's last error keeps them whole.
const MaxHistoryText = 1024

// Retention defaults and bounds.
const (
	DefaultHistoryMaxRecords = 100_000
	DefaultHistoryMaxAge     = 7 * 24 * time.Hour
	// MaxHistoryRecords is the most records a retention may keep: about
	// 1.5 GB of records, before their messages.
	MaxHistoryRecords = 10_000_000
)

// HistoryRetention bounds the execution history. A record is dropped,
// oldest first, when a new one would make more than MaxRecords, or when
// it ended more than MaxAge before the command that appends the new one.
// Zero fields take the defaults. Every server must have the same
// retention, or their histories differ.
type HistoryRetention struct {
	MaxRecords int
	MaxAge     time.Duration
}

// DefaultHistoryRetention keeps 100,000 records for up to 7 days.
func DefaultHistoryRetention() HistoryRetention {
	return HistoryRetention{MaxRecords: DefaultHistoryMaxRecords, MaxAge: DefaultHistoryMaxAge}
}

func (r HistoryRetention) withDefaults() HistoryRetention {
	if r.MaxRecords <= 0 {
		r.MaxRecords = DefaultHistoryMaxRecords
	}
	r.MaxRecords = min(r.MaxRecords, MaxHistoryRecords)
	if r.MaxAge <= 0 {
		r.MaxAge = DefaultHistoryMaxAge
	}
	return r
}

// AttemptRecord is one ended attempt, as readers see it: a copy.
type AttemptRecord struct {
	// Seq numbers records from 1 in the order they were written, the same
	// on every server; pruning leaves no gap behind the oldest kept.
	Seq        uint64
	TaskID     string
	Namespace  string
	Workflow   string
	Version    string
	Step       string
	Capability string
	// Attempt is the attempt's number in its round (an operator's retry
	// starts a new round at 1).
	Attempt int
	// The step's timings when the attempt ended. ReadyAt is when the step
	// last became ready by its dependencies; a retry waiting for its
	// backoff does not move it.
	ReadyAt      time.Time
	DispatchedAt time.Time
	StartedAt    time.Time
	EndedAt      time.Time
	Agent        string
	Worker       string
	// Outcome is one of the Outcome constants.
	Outcome string
	// Code, Message, Retryable and DetailsJSON are the error of a failed
	// or timed-out attempt. Message and DetailsJSON are cut to
	// MaxHistoryText bytes.
	Code        string
	Message     string
	Retryable   bool
	DetailsJSON string
	// Timeout and MaxAttempts are the step's policy in its workflow version.
	Timeout     time.Duration
	MaxAttempts int
	// Resolution is one of the Resolution constants, for failed and
	// timed-out attempts once their step settled; "" until then and for
	// other outcomes. ResolvedAt is when it was set (last).
	Resolution string
	ResolvedAt time.Time
}

// HistoryFilter selects records. Empty fields match everything.
type HistoryFilter struct {
	Namespace  string
	Workflow   string
	Version    string
	Step       string
	Capability string
	TaskID     string
	// Since and Until bound EndedAt: Since <= EndedAt < Until.
	Since time.Time
	Until time.Time
	// Outcome keeps one outcome.
	Outcome string
	// Limit is the most records returned: 1000 when 0 or less, at most 10000.
	Limit int
}

// Limits of HistoryFilter.Limit.
const (
	DefaultHistoryLimit = 1000
	MaxHistoryLimit     = 10000
)

// Outcomes and resolutions are kept as small numbers; these name them.
var (
	outcomeNames    = [...]string{OutcomeCompleted, OutcomeFailed, OutcomeTimedOut, OutcomeReleased, OutcomeCancelled}
	resolutionNames = [...]string{"", ResolutionRetrySucceeded, ResolutionResolvedManually, ResolutionRetriedManually, ResolutionCancelled, ResolutionDeadLettered}
)

const (
	outCompleted uint8 = iota
	outFailed
	outTimedOut
	outReleased
	outCancelled
)

const (
	resNone uint8 = iota
	resRetrySucceeded
	resResolvedManually
	resRetriedManually
	resCancelled
	resDeadLettered
)

func nameIndex(names []string, s string) (uint8, bool) {
	for i, n := range names {
		if n == s {
			return uint8(i), true
		}
	}
	return 0, false
}

// histSite is what records of one step of one workflow version share.
type histSite struct {
	ns, workflow, version, step, capability string
	timeout                                 time.Duration
	maxAttempts                             int
	index                                   int32 // the step's, in its plan
}

// site returns the shared description of step i, made once per version.
func (v *versionRec) site(i int) *histSite {
	if v.sites == nil {
		v.sites = make([]*histSite, v.plan.Len())
	}
	if v.sites[i] == nil {
		ps := &v.plan.Steps[i]
		v.sites[i] = &histSite{
			ns: v.wf.key.ns, workflow: v.wf.key.name, version: v.version, step: ps.Name, capability: ps.Capability,
			timeout: ps.Timeout, maxAttempts: ps.Retry.MaxAttempts, index: int32(i),
		}
	}
	return v.sites[i]
}

// histRec is a record as stored: times as Unix nanoseconds (0 for none),
// outcome and resolution as numbers, strings shared with the task, the
// step and the command.
type histRec struct {
	site                                             *histSite
	taskID, agent, worker                            string
	code, message, details                           string
	readyAt, dispatchedAt, startedAt, endedAt, resAt int64
	attempt                                          int32
	outcome, resolution                              uint8
	retryable                                        bool
}

// settleable: a failed attempt whose resolution a later event may still set.
func (r *histRec) settleable() bool {
	return (r.outcome == outFailed || r.outcome == outTimedOut) && (r.resolution == resNone || r.resolution == resDeadLettered)
}

type histKey struct {
	task string
	step int32
}

// history is a ring of records, oldest at head, and the index of the
// failed attempts not yet settled for good, by task and step.
type history struct {
	retention HistoryRetention
	buf       []histRec
	head, n   int
	first     uint64 // Seq of the oldest record; of the next one when empty
	open      map[histKey][]uint64
}

func newHistory(r HistoryRetention) history {
	return history{retention: r.withDefaults(), first: 1, open: map[histKey][]uint64{}}
}

func (h *history) at(k int) *histRec { return &h.buf[(h.head+k)%len(h.buf)] }

// bySeq returns the record with a sequence number, nil if pruned.
func (h *history) bySeq(seq uint64) *histRec {
	if seq < h.first || seq >= h.first+uint64(h.n) {
		return nil
	}
	return h.at(int(seq - h.first))
}

// prune drops the oldest records until one more fits the retention at now.
func (h *history) prune(now time.Time) {
	cutoff := now.Add(-h.retention.MaxAge).UnixNano()
	for h.n > 0 && (h.n >= h.retention.MaxRecords || h.at(0).endedAt < cutoff) {
		r := h.at(0)
		if r.settleable() {
			h.forget(histKey{r.taskID, r.stepIndex()}, h.first)
		}
		*r = histRec{} // let go of its strings
		h.head = (h.head + 1) % len(h.buf)
		h.n--
		h.first++
	}
	// A buffer that grew for a burst is given back once mostly empty.
	if len(h.buf) > 1024 && h.n < len(h.buf)/4 {
		h.resize(max(2*h.n, 1024))
	}
}

// stepIndex is found again from the site: records do not keep it.
func (r *histRec) stepIndex() int32 { return r.site.index }

// forget removes seq from the open failures of a step.
func (h *history) forget(k histKey, seq uint64) {
	seqs := h.open[k]
	for j, s := range seqs {
		if s == seq {
			seqs = append(seqs[:j], seqs[j+1:]...)
			break
		}
	}
	if len(seqs) == 0 {
		delete(h.open, k)
	} else {
		h.open[k] = seqs
	}
}

func (h *history) resize(capacity int) {
	buf := make([]histRec, capacity)
	for k := range h.n {
		buf[k] = *h.at(k)
	}
	h.buf, h.head = buf, 0
}

// push appends r after pruning for it, and returns its sequence number.
func (h *history) push(r histRec, now time.Time) uint64 {
	h.prune(now)
	if h.n == len(h.buf) {
		h.resize(min(max(2*len(h.buf), 64), max(h.retention.MaxRecords, h.n+1)))
	}
	*h.at(h.n) = r
	h.n++
	seq := h.first + uint64(h.n) - 1
	if r.settleable() {
		k := histKey{r.taskID, r.stepIndex()}
		h.open[k] = append(h.open[k], seq)
	}
	return seq
}

// settle sets the resolution of the step's failed attempts that are not
// settled for good. Every resolution but dead_lettered is final.
func (h *history) settle(task string, step int, res uint8, now time.Time) {
	k := histKey{task, int32(step)}
	seqs, ok := h.open[k]
	if !ok {
		return
	}
	for _, seq := range seqs {
		if r := h.bySeq(seq); r != nil && r.settleable() {
			r.resolution, r.resAt = res, now.UnixNano()
		}
	}
	if res != resDeadLettered {
		delete(h.open, k)
	}
}

// cut bounds a text at MaxHistoryText bytes on a rune boundary, copying
// a cut one so that the record does not hold the whole original.
func cut(s string) string {
	if len(s) <= MaxHistoryText {
		return s
	}
	n := MaxHistoryText
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n])
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// recordAttempt appends the record of step i's current attempt, ending
// at now with outcome out; e is its error, for failures.
func (s *State) recordAttempt(t *taskRec, i int, out uint8, e *StepError, now time.Time) {
	st := &t.steps[i]
	r := histRec{
		site: t.ver.site(i), taskID: t.id, agent: st.agent, worker: st.worker,
		readyAt: nanos(st.readyAt), dispatchedAt: nanos(st.dispatchedAt), startedAt: nanos(st.startedAt), endedAt: nanos(now),
		attempt: int32(st.attempts), outcome: out,
	}
	if e != nil {
		r.code, r.message, r.details, r.retryable = e.Code, cut(e.Message), cut(e.DetailsJSON), e.Retryable
		r.attempt = int32(e.Attempt)
	}
	s.history.push(r, now)
}

// SetHistoryRetention sets how much execution history the state keeps;
// zero fields take the defaults. It takes effect at the next record. Set
// it before the state applies anything, the same on every server.
func (s *State) SetHistoryRetention(r HistoryRetention) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history.retention = r.withDefaults()
}

// HistoryRetention is the retention in effect, defaults filled in.
func (s *State) HistoryRetention() HistoryRetention {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.history.retention
}

// HistoryStats returns the number of records kept and when the oldest
// ended (zero when there are none).
func (s *State) HistoryStats() (records int, oldest time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.history.n == 0 {
		return 0, time.Time{}
	}
	return s.history.n, fromNanos(s.history.at(0).endedAt)
}

// Attempts returns the records f selects, newest first.
func (s *State) Attempts(f HistoryFilter) []AttemptRecord {
	if f.Limit <= 0 {
		f.Limit = DefaultHistoryLimit
	}
	f.Limit = min(f.Limit, MaxHistoryLimit)
	out, outOK := nameIndex(outcomeNames[:], f.Outcome)
	if f.Outcome != "" && !outOK {
		return nil
	}
	since, until := nanos(f.Since), nanos(f.Until)
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := &s.history
	var res []AttemptRecord
	for k := h.n - 1; k >= 0 && len(res) < f.Limit; k-- {
		r := h.at(k)
		site := r.site
		switch {
		case f.TaskID != "" && r.taskID != f.TaskID,
			f.Namespace != "" && site.ns != f.Namespace,
			f.Workflow != "" && site.workflow != f.Workflow,
			f.Version != "" && site.version != f.Version,
			f.Step != "" && site.step != f.Step,
			f.Capability != "" && site.capability != f.Capability,
			f.Outcome != "" && r.outcome != out,
			since != 0 && r.endedAt < since,
			until != 0 && r.endedAt >= until:
			continue
		}
		res = append(res, r.view(h.first+uint64(k)))
	}
	return res
}

func (r *histRec) view(seq uint64) AttemptRecord {
	return AttemptRecord{
		Seq: seq, TaskID: r.taskID, Namespace: r.site.ns, Workflow: r.site.workflow, Version: r.site.version,
		Step: r.site.step, Capability: r.site.capability, Attempt: int(r.attempt),
		ReadyAt: fromNanos(r.readyAt), DispatchedAt: fromNanos(r.dispatchedAt), StartedAt: fromNanos(r.startedAt), EndedAt: fromNanos(r.endedAt),
		Agent: r.agent, Worker: r.worker, Outcome: outcomeNames[r.outcome],
		Code: r.code, Message: r.message, Retryable: r.retryable, DetailsJSON: r.details,
		Timeout: r.site.timeout, MaxAttempts: r.site.maxAttempts,
		Resolution: resolutionNames[r.resolution], ResolvedAt: fromNanos(r.resAt),
	}
}

// --- snapshots --------------------------------------------------------------

func (h *history) encode(k int) *fsmv1.AttemptRecord {
	r := h.at(k)
	return &fsmv1.AttemptRecord{
		Seq: h.first + uint64(k), TaskId: r.taskID, Namespace: r.site.ns, Workflow: r.site.workflow, Version: r.site.version,
		Step: r.site.step, Attempt: r.attempt,
		ReadyAt: ts(fromNanos(r.readyAt)), DispatchedAt: ts(fromNanos(r.dispatchedAt)), StartedAt: ts(fromNanos(r.startedAt)), EndedAt: ts(fromNanos(r.endedAt)),
		Agent: r.agent, Worker: r.worker, Outcome: outcomeNames[r.outcome],
		Code: r.code, Message: r.message, Retryable: r.retryable, DetailsJson: r.details,
		Resolution: resolutionNames[r.resolution], ResolvedAt: ts(fromNanos(r.resAt)),
	}
}

// restoreAttempt appends a snapshot's record, as it was: no pruning
// (the retention applies from the next record on) and no renumbering.
func (s *State) restoreAttempt(p *fsmv1.AttemptRecord) error {
	h := &s.history
	if want := h.first + uint64(h.n); h.n > 0 && p.GetSeq() != want || p.GetSeq() == 0 {
		return fmt.Errorf("sequence %d out of order (expected %d)", p.GetSeq(), want)
	}
	out, ok := nameIndex(outcomeNames[:], p.GetOutcome())
	if !ok {
		return fmt.Errorf("unknown outcome %q", p.GetOutcome())
	}
	res, ok := nameIndex(resolutionNames[:], p.GetResolution())
	if !ok {
		return fmt.Errorf("unknown resolution %q", p.GetResolution())
	}
	site, err := s.siteOf(p.GetNamespace(), p.GetWorkflow(), p.GetVersion(), p.GetStep())
	if err != nil {
		return err
	}
	if h.n == 0 {
		h.first = p.GetSeq()
	}
	r := histRec{
		site: site, taskID: p.GetTaskId(), agent: p.GetAgent(), worker: p.GetWorker(),
		code: p.GetCode(), message: p.GetMessage(), details: p.GetDetailsJson(),
		readyAt: nanos(fromTS(p.GetReadyAt())), dispatchedAt: nanos(fromTS(p.GetDispatchedAt())), startedAt: nanos(fromTS(p.GetStartedAt())),
		endedAt: nanos(fromTS(p.GetEndedAt())), resAt: nanos(fromTS(p.GetResolvedAt())),
		attempt: p.GetAttempt(), outcome: out, resolution: res, retryable: p.GetRetryable(),
	}
	if t := s.tasks[r.taskID]; t != nil {
		// Share the task's copy of its id rather than the snapshot's.
		r.taskID = t.id
	}
	if h.n == len(h.buf) {
		h.resize(max(2*len(h.buf), 64))
	}
	*h.at(h.n) = r
	h.n++
	if r.settleable() {
		k := histKey{r.taskID, site.index}
		h.open[k] = append(h.open[k], p.GetSeq())
	}
	return nil
}

// siteOf finds the shared description of a step by names.
func (s *State) siteOf(ns, name, version, step string) (*histSite, error) {
	v, err := s.version(ns, name, version)
	if err != nil {
		return nil, err
	}
	i, ok := v.plan.StepIndex(step)
	if !ok {
		return nil, notFound("step %q in workflow %s/%s %s", step, ns, name, version)
	}
	return v.site(i), nil
}

// failOutcome is the outcome of a failure with code.
func failOutcome(code string) uint8 {
	if code == workflow.CodeTimeout {
		return outTimedOut
	}
	return outFailed
}
