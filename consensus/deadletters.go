package consensus

// Dead letters: a step that failed for good (out of attempts, an error
// its policy does not retry, or a result that broke its contract) is a
// dead letter until an operator replays it (a new round of attempts,
// RetryStep), resolves it by hand (ResolveStep) or cancels its task.
//
// They are not stored on their own: each is derived from its task's
// history, which the state keeps, replicates and snapshots with the task.
// The step.dead_lettered event is the record (its id is the dead letter's
// id, the same on every server and on the bus); the events after it say
// what became of it. So dead letters need no command, no snapshot record
// and no clean-up: they live and go with their task. The step's last
// error adds the error's details while the dead letter is open.
//
// Reading them scans the history of the tasks that ever had a failed
// attempt (a step with a last error); tasks whose steps never failed are
// skipped without reading their history.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// DeadLetterStatus is what became of a dead letter.
type DeadLetterStatus uint8

// Dead letter statuses.
const (
	// DeadLetterOpen: the step waits for an operator.
	DeadLetterOpen DeadLetterStatus = iota
	// DeadLetterReplayed: an operator gave the step a new round of
	// attempts (ReplayDeadLetter or RetryStep).
	DeadLetterReplayed
	// DeadLetterResolved: an operator completed the step by hand.
	DeadLetterResolved
	// DeadLetterCancelled: the task was cancelled while it was open.
	DeadLetterCancelled
	numDeadLetterStatuses
)

var deadLetterStatusNames = [numDeadLetterStatuses]string{"open", "replayed", "resolved", "cancelled"}

func (s DeadLetterStatus) String() string {
	if s < numDeadLetterStatuses {
		return deadLetterStatusNames[s]
	}
	return fmt.Sprintf("DeadLetterStatus(%d)", s)
}

// ParseDeadLetterStatus parses a status name: open, replayed, resolved or
// cancelled.
func ParseDeadLetterStatus(s string) (DeadLetterStatus, error) {
	for i, n := range deadLetterStatusNames {
		if n == s {
			return DeadLetterStatus(i), nil
		}
	}
	return 0, fmt.Errorf("unknown dead letter status %q; want one of %s", s, strings.Join(deadLetterStatusNames[:], ", "))
}

// DeadLetter is a step that failed for good, as readers see it: a copy.
type DeadLetter struct {
	// ID is the id of the step.dead_lettered event ("<raft index>-<position>").
	ID        string
	TaskID    string
	Namespace string
	Workflow  string
	Version   string
	Step      string
	// Capability is the step's capability, as its workflow version has it.
	Capability string
	// Attempts is the number of the attempt that failed for good: the
	// attempts made in its round. MaxAttempts is what the policy allows;
	// fewer attempts than that mean the error was not retryable.
	Attempts    int
	MaxAttempts int
	// Code, Message and DetailsJSON are the last attempt's error.
	// DetailsJSON is kept only while the step's last error is this one:
	// once a replayed step fails again, only the code and message remain
	// (from the event).
	Code        string
	Message     string
	DetailsJSON string
	// At is when the step failed for good.
	At time.Time
	// Seq is the event's position in the task's history.
	Seq    uint64
	Status DeadLetterStatus
	// ClosedBy is the id of the event that ended the dead letter
	// (step.retry_requested, step.resolved_manually or task.cancelled),
	// ClosedAt its time and ClosedReason its message (the operator's
	// reason); empty while open.
	ClosedBy     string
	ClosedAt     time.Time
	ClosedReason string
	// ReplayAttempt is the attempt the new round began with, for a
	// replayed dead letter once it was ready (1: a new round counts from 1).
	ReplayAttempt int
	// NextID is the dead letter the new round ended in, when a replayed
	// step failed for good again.
	NextID string
	// TaskState and StepState are the task and the step now.
	TaskState workflow.TaskState
	StepState workflow.StepState
	// InputJSON is the step's input, built from the task input and the
	// upstream results as an attempt receives it; set by DeadLetter only.
	InputJSON string

	key dlKey
}

// dlKey orders dead letters: by the Raft index and position of their
// event, then (for events restored from snapshots older than event ids)
// time, task number and sequence. Newest first is descending order.
type dlKey struct {
	index  uint64
	at     int64
	pos    int
	number uint64
	seq    uint64
}

func (k dlKey) compare(o dlKey) int {
	switch {
	case k.index != o.index:
		return cmpU(k.index, o.index)
	case k.at != o.at:
		if k.at < o.at {
			return -1
		}
		return 1
	case k.pos != o.pos:
		return cmpU(uint64(k.pos), uint64(o.pos))
	case k.number != o.number:
		return cmpU(k.number, o.number)
	}
	return cmpU(k.seq, o.seq)
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// token is the key as a page token.
func (k dlKey) token() string {
	return fmt.Sprintf("%d.%d.%d.%d.%d", k.index, k.at, k.pos, k.number, k.seq)
}

func parseDLToken(s string) (dlKey, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 5 {
		return dlKey{}, fmt.Errorf("%w: page_token %q is not a token from a previous response", ErrInvalid, s)
	}
	var k dlKey
	var errs [5]error
	k.index, errs[0] = strconv.ParseUint(parts[0], 10, 64)
	k.at, errs[1] = strconv.ParseInt(parts[1], 10, 64)
	pos, err := strconv.ParseUint(parts[2], 10, 31)
	k.pos, errs[2] = int(pos), err
	k.number, errs[3] = strconv.ParseUint(parts[3], 10, 64)
	k.seq, errs[4] = strconv.ParseUint(parts[4], 10, 64)
	for _, err := range errs {
		if err != nil {
			return dlKey{}, fmt.Errorf("%w: page_token %q is not a token from a previous response", ErrInvalid, s)
		}
	}
	return k, nil
}

// DeadLetterFilter selects dead letters.
type DeadLetterFilter struct {
	Namespace string
	Workflow  string
	TaskID    string
	// Status keeps one status; nil keeps all.
	Status *DeadLetterStatus
	// PageToken continues a listing: the next token DeadLetters returned.
	PageToken string
	// Limit is the page size; 100 when 0 or less.
	Limit int
}

// DeadLetters returns dead letters newest first and the token of the next
// page ("" on the last page). A malformed page token is ErrInvalid.
func (s *State) DeadLetters(f DeadLetterFilter) ([]DeadLetter, string, error) {
	var after *dlKey
	if f.PageToken != "" {
		k, err := parseDLToken(f.PageToken)
		if err != nil {
			return nil, "", err
		}
		after = &k
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	s.mu.RLock()
	var all []DeadLetter
	scan := func(t *taskRec) {
		if f.Namespace != "" && t.ns != f.Namespace || f.Workflow != "" && t.ver.wf.key.name != f.Workflow || !t.everFailed() {
			return
		}
		start := len(all)
		all = t.deadLetters(all)
		kept := all[:start]
		for _, d := range all[start:] {
			if (f.Status == nil || d.Status == *f.Status) && (after == nil || d.key.compare(*after) < 0) {
				kept = append(kept, d)
			}
		}
		all = kept
	}
	if f.TaskID != "" {
		if t := s.tasks[f.TaskID]; t != nil {
			scan(t)
		}
	} else {
		for _, t := range s.byNumber {
			scan(t)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b DeadLetter) int { return b.key.compare(a.key) })
	if len(all) > f.Limit {
		return all[:f.Limit], all[f.Limit-1].key.token(), nil
	}
	return all, "", nil
}

// DeadLetter returns one dead letter by id, with the step's input. An id
// that is no event id is ErrInvalid; an unknown one ErrNotFound.
func (s *State) DeadLetter(id string) (*DeadLetter, error) {
	cut := strings.LastIndexByte(id, '-')
	if cut <= 0 || cut == len(id)-1 {
		return nil, fmt.Errorf("%w: dead letter id %q is not an event id like 1234-2 (the id 'tasker dlq list' shows)", ErrInvalid, id)
	}
	n, err := strconv.ParseUint(id[cut+1:], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: dead letter id %q is not an event id like 1234-2 (the id 'tasker dlq list' shows)", ErrInvalid, id)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var found *taskRec
	if index, err := strconv.ParseUint(id[:cut], 10, 64); err == nil && index > 0 {
		found = s.taskWithEvent(index, int(n))
	}
	if found == nil {
		// An event restored from a snapshot older than event ids is
		// "<task id>-<sequence>".
		if t := s.tasks[id[:cut]]; t != nil && n >= 1 && n <= uint64(len(t.events)) && t.events[n-1].Index == 0 {
			found = t
		}
	}
	if found != nil {
		for _, d := range found.deadLetters(nil) {
			if d.ID == id {
				d.InputJSON = found.stepInput(d.Step)
				return &d, nil
			}
		}
	}
	return nil, notFound("dead letter %s: no step failed for good with this id (tasks that were removed take theirs with them)", id)
}

// taskWithEvent finds the task that has the event of a Raft index and
// position, among the tasks that ever had a failed attempt. A task's
// events are in log order, so each is searched by halves.
func (s *State) taskWithEvent(index uint64, pos int) *taskRec {
	for _, t := range s.byNumber {
		if !t.everFailed() {
			continue
		}
		i, _ := slices.BinarySearchFunc(t.events, index, func(e Event, idx uint64) int { return cmpU(e.Index, idx) })
		for ; i < len(t.events) && t.events[i].Index == index; i++ {
			if t.events[i].Position == pos && t.events[i].Type == EventStepDeadLettered {
				return t
			}
		}
	}
	return nil
}

// everFailed reports whether an attempt of the task ever failed: only
// then can it have dead letters. It relies on the state never clearing a
// step's last error (a retry, a resolve or a completion keep it).
func (t *taskRec) everFailed() bool {
	for i := range t.steps {
		if t.steps[i].lastErr != nil {
			return true
		}
	}
	return false
}

// deadLetters appends the task's dead letters to out, oldest first, each
// with what became of it, in one pass over its history.
func (t *taskRec) deadLetters(out []DeadLetter) []DeadLetter {
	start := len(out)
	// find returns the index in out of the step's dead letter in a status.
	find := func(step string, st DeadLetterStatus) int {
		for j := len(out) - 1; j >= start; j-- {
			if out[j].Step == step && out[j].Status == st {
				return j
			}
		}
		return -1
	}
	closeAs := func(j int, st DeadLetterStatus, e Event) {
		out[j].Status, out[j].ClosedBy, out[j].ClosedAt, out[j].ClosedReason = st, e.ID(), e.At, e.Message
	}
	for _, e := range t.events {
		switch e.Type {
		case EventStepDeadLettered:
			d, ok := t.deadLetter(e)
			if !ok {
				continue
			}
			if j := find(e.Step, DeadLetterReplayed); j >= 0 && out[j].NextID == "" {
				out[j].NextID = d.ID
			}
			out = append(out, d)
		case EventStepRetryRequested:
			if j := find(e.Step, DeadLetterOpen); j >= 0 {
				closeAs(j, DeadLetterReplayed, e)
			}
		case EventStepReady, EventStepDispatched:
			if j := find(e.Step, DeadLetterReplayed); j >= 0 && out[j].ReplayAttempt == 0 && out[j].NextID == "" {
				out[j].ReplayAttempt = e.Attempt
			}
		case EventStepResolvedManually:
			if j := find(e.Step, DeadLetterOpen); j >= 0 {
				closeAs(j, DeadLetterResolved, e)
			}
		case EventTaskCancelled:
			for j := start; j < len(out); j++ {
				if out[j].Status == DeadLetterOpen {
					closeAs(j, DeadLetterCancelled, e)
				}
			}
		}
	}
	return out
}

// deadLetter is the record of a step.dead_lettered event.
func (t *taskRec) deadLetter(e Event) (DeadLetter, bool) {
	i, ok := t.ver.plan.StepIndex(e.Step)
	if !ok {
		return DeadLetter{}, false
	}
	ps, st := &t.ver.plan.Steps[i], &t.steps[i]
	d := DeadLetter{
		ID: e.ID(), TaskID: t.id, Namespace: t.ns, Workflow: t.ver.wf.key.name, Version: t.ver.version,
		Step: e.Step, Capability: ps.Capability, Attempts: e.Attempt, MaxAttempts: ps.Retry.MaxAttempts,
		Code: e.Code, Message: e.Message, At: e.At, Seq: e.Seq, Status: DeadLetterOpen,
		TaskState: t.state, StepState: st.state,
		key: dlKey{index: e.Index, at: e.At.UnixNano(), pos: e.Position, number: t.number, seq: e.Seq},
	}
	// The event's message is "code: message".
	if rest, ok := strings.CutPrefix(d.Message, d.Code+": "); ok && d.Code != "" {
		d.Message = rest
	} else if d.Message == d.Code {
		d.Message = ""
	}
	// The step's last error is this failure until the step fails again:
	// it has the message as the app sent it, and the details.
	if le := st.lastErr; le != nil && le.Attempt == e.Attempt && le.At.Equal(e.At) && (e.Code == "" || le.Code == e.Code) {
		d.Code, d.Message, d.DetailsJSON = le.Code, le.Message, le.DetailsJSON
	}
	return d, true
}

// stepInput builds a step's input from the task input and upstream
// results, as Assignment does but without caching; "" if it cannot be
// built.
func (t *taskRec) stepInput(step string) string {
	i, ok := t.ver.plan.StepIndex(step)
	if !ok {
		return ""
	}
	in, err := workflow.DecodeJSON([]byte(t.input))
	if err != nil {
		return ""
	}
	v, err := t.ver.plan.Steps[i].Input.Resolve(in, func(j int) any {
		r, err := workflow.DecodeJSON([]byte(orEmpty(t.steps[j].result)))
		if err != nil {
			return nil
		}
		return r
	})
	if err != nil {
		return ""
	}
	raw, err := marshalJSON(v)
	if err != nil {
		return ""
	}
	return raw
}
