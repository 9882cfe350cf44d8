package consensus

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// FSM applies Raft log entries (encoded fsmv1.Command messages) to a State.
// It implements raft.FSM.
type FSM struct {
	state  *State
	log    *slog.Logger
	notify func(*Effects)
	// beforeSnapshot runs on Raft's apply goroutine before a snapshot is
	// taken (SetBeforeSnapshot).
	beforeSnapshot func() error
}

// SetBeforeSnapshot sets fn to run before every snapshot, on Raft's apply
// goroutine, so nothing is applied meanwhile. Whatever notify handed off
// asynchronously must be made durable by fn: once the snapshot is taken
// the log entries it covers may be compacted away and are never applied
// again after a restart. An error skips this snapshot. Set it before Raft
// starts.
func (f *FSM) SetBeforeSnapshot(fn func() error) { f.beforeSnapshot = fn }

// NewFSM returns an FSM over state. notify, if not nil, receives the
// effects of every applied command after the state lock is released; it
// runs on Raft's apply goroutine and must not block.
func NewFSM(state *State, log *slog.Logger, notify func(*Effects)) *FSM {
	if log == nil {
		log = slog.Default()
	}
	return &FSM{state: state, log: log, notify: notify}
}

// State returns the state the FSM applies to.
func (f *FSM) State() *State { return f.state }

// Encode marshals a command for Raft.
func Encode(c *fsmv1.Command) ([]byte, error) {
	b, err := proto.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return b, nil
}

// Apply implements raft.FSM. It returns a *Result.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return &Result{}
	}
	var c fsmv1.Command
	if err := proto.Unmarshal(l.Data, &c); err != nil {
		f.log.Error("undecodable raft log entry; this server may be older than the leader and must be upgraded", "index", l.Index, "err", err)
		return &Result{Err: fmt.Errorf("%w at index %d: %w", ErrUnknownCommand, l.Index, err)}
	}
	fx := &Effects{index: l.Index}
	f.state.mu.Lock()
	res := f.state.apply(&c, c.GetNow().AsTime(), fx, l.Index, f.log)
	f.state.mu.Unlock()
	if f.notify != nil && !fx.empty() {
		f.notify(fx)
	}
	return res
}

// ApplyCommand applies a command directly, without Raft: for tests and
// tools that replay state. It takes the same path as Apply.
func (f *FSM) ApplyCommand(c *fsmv1.Command) *Result {
	b, err := Encode(c)
	if err != nil {
		return &Result{Err: err}
	}
	return f.Apply(&raft.Log{Type: raft.LogCommand, Data: b}).(*Result)
}

func (s *State) apply(c *fsmv1.Command, now time.Time, fx *Effects, index uint64, log *slog.Logger) *Result {
	switch k := c.Kind.(type) {
	case *fsmv1.Command_PutWorkflow:
		return s.putWorkflow(k.PutWorkflow.GetManifest(), now, fx)
	case *fsmv1.Command_CreateTask:
		x := k.CreateTask
		res := s.createTask(x.GetTaskId(), x.GetNamespace(), x.GetWorkflow(), x.GetVersion(), x.GetInputJson(), x.GetIdempotencyKey(), int(x.GetMaxTasksInFlight()), now, fx)
		if res.Created && x.GetTraceParent() != "" {
			s.tasks[res.TaskID].traceParent = x.GetTraceParent()
		}
		return res
	case *fsmv1.Command_DispatchStep:
		x := k.DispatchStep
		return s.dispatch(x.GetTaskId(), x.GetStep(), int(x.GetAttempt()), x.GetAgent(), x.GetWorker(), x.GetDeadline().AsTime(), now, fx)
	case *fsmv1.Command_StartStep:
		x := k.StartStep
		return s.start(x.GetTaskId(), x.GetStep(), int(x.GetAttempt()), x.GetWorker(), now, fx)
	case *fsmv1.Command_CompleteStep:
		x := k.CompleteStep
		return s.complete(x.GetTaskId(), x.GetStep(), int(x.GetAttempt()), x.GetResultJson(), x.GetWorker(), now, fx)
	case *fsmv1.Command_FailStep:
		x := k.FailStep
		return s.fail(failure{
			worker: x.GetWorker(), taskID: x.GetTaskId(), step: x.GetStep(), attempt: int(x.GetAttempt()), code: x.GetCode(), message: x.GetMessage(),
			retryable: x.GetRetryable(), retryAfter: time.Duration(x.GetRetryAfterMs()) * time.Millisecond, rand: x.GetRand(), details: x.GetDetailsJson(),
		}, now, fx)
	case *fsmv1.Command_ReleaseStep:
		x := k.ReleaseStep
		return s.release(x.GetTaskId(), x.GetStep(), int(x.GetAttempt()), x.GetReason(), now, fx)
	case *fsmv1.Command_RetryStep:
		return s.retry(k.RetryStep.GetTaskId(), k.RetryStep.GetStep(), k.RetryStep.GetReason(), now, fx)
	case *fsmv1.Command_ResolveStep:
		x := k.ResolveStep
		return s.resolve(x.GetTaskId(), x.GetStep(), x.GetResultJson(), x.GetReason(), now, fx)
	case *fsmv1.Command_CancelTask:
		return s.cancel(k.CancelTask.GetTaskId(), k.CancelTask.GetReason(), now, fx)
	case *fsmv1.Command_ExtendLease:
		x := k.ExtendLease
		return s.extend(x.GetTaskId(), x.GetStep(), int(x.GetAttempt()), x.GetWorker(), x.GetDeadline().AsTime(), now, fx)
	case *fsmv1.Command_InitCluster:
		return s.initCluster(k.InitCluster.GetClusterId())
	case *fsmv1.Command_BusCursor:
		return s.advanceBusCursor(k.BusCursor.GetIndex(), fx)
	case *fsmv1.Command_PutAclToken:
		return s.putACLToken(k.PutAclToken.GetToken())
	case *fsmv1.Command_DeleteAclToken:
		return s.deleteACLToken(k.DeleteAclToken.GetAccessorId())
	case *fsmv1.Command_PutProposal:
		return s.putProposal(k.PutProposal.GetProposal(), now)
	case *fsmv1.Command_DecideProposal:
		x := k.DecideProposal
		return s.transitionProposal(x.GetId(), x.GetDecision(), x.GetBy(), x.GetReason(), []string{ProposalApproved, ProposalRejected}, now)
	case *fsmv1.Command_MarkProposal:
		x := k.MarkProposal
		return s.transitionProposal(x.GetId(), x.GetState(), x.GetBy(), x.GetReason(), []string{ProposalApplied, ProposalFailed, ProposalRolledBack}, now)
	case *fsmv1.Command_SetActiveVersion:
		x := k.SetActiveVersion
		return s.setActiveVersion(x.GetNamespace(), x.GetWorkflow(), x.GetVersion())
	case *fsmv1.Command_Batch:
		if k.Batch.GetAtomic() {
			if s.undo != nil {
				return &Result{Err: fmt.Errorf("%w: nested batch", ErrInvalid)}
			}
			return s.applyAtomic(k.Batch.GetCommands(), now, fx, index, log)
		}
		res := &Result{}
		for _, sub := range k.Batch.GetCommands() {
			subNow := now
			if sub.GetNow() != nil {
				subNow = sub.GetNow().AsTime()
			}
			if _, nested := sub.Kind.(*fsmv1.Command_Batch); nested {
				res.Batch = append(res.Batch, &Result{Err: fmt.Errorf("%w: nested batch", ErrInvalid)})
				continue
			}
			res.Batch = append(res.Batch, s.apply(sub, subNow, fx, index, log))
		}
		return res
	}
	log.Error("unknown command kind in raft log; this server is older than the leader and must be upgraded", "index", index)
	return &Result{Err: fmt.Errorf("%w at index %d", ErrUnknownCommand, index)}
}

// Snapshot implements raft.FSM. The state is encoded while Apply is
// paused (raft guarantees it), so Persist can write it concurrently.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.beforeSnapshot != nil {
		if err := f.beforeSnapshot(); err != nil {
			return nil, fmt.Errorf("before snapshot: %w", err)
		}
	}
	f.state.mu.RLock()
	defer f.state.mu.RUnlock()
	b, err := f.state.encode()
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (snapshot) Release() {}

// Restore implements raft.FSM: it replaces the state with a snapshot.
func (f *FSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	fresh := NewState(f.state.limits)
	if err := fresh.decode(bufio.NewReader(r)); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.state.mu.Lock()
	s := f.state
	s.workflows, s.tasks, s.byNumber, s.idem, s.runs, s.plans = fresh.workflows, fresh.tasks, fresh.byNumber, fresh.idem, fresh.runs, fresh.plans
	if fresh.clusterID != "" {
		// A snapshot from before the cluster was named keeps the name.
		s.clusterID = fresh.clusterID
	}
	s.busCursor = max(s.busCursor, fresh.busCursor)
	s.acl = fresh.acl
	// The records come from the snapshot; the retention is this server's.
	fresh.history.retention = s.history.retention
	s.history = fresh.history
	fresh.props.max = s.props.max
	s.props = fresh.props
	f.state.mu.Unlock()
	return nil
}

const snapshotFormat = 1

// encode writes the whole state: a header, every workflow version in
// apply order, every task in creation order.
func (s *State) encode() ([]byte, error) {
	var out []byte
	w := bytesWriter{&out}
	var versions []*versionRec
	for _, wf := range s.workflows {
		versions = append(versions, wf.versions...)
	}
	// Apply order across workflows is not kept; creation time then name
	// gives a stable order, and versions of one workflow keep theirs.
	sortVersions(versions)
	hdr := &fsmv1.SnapshotHeader{Format: snapshotFormat, WorkflowVersions: uint64(len(versions)), Tasks: uint64(len(s.byNumber)), ClusterId: s.clusterID, BusCursor: s.busCursor}
	tokens := s.sortedACLTokens()
	hdr.AclTokens = uint64(len(tokens))
	hdr.Attempts = uint64(s.history.n)
	hdr.Proposals, hdr.ProposalSeq = uint64(len(s.props.order)), s.props.seq
	if _, err := protodelim.MarshalTo(w, hdr); err != nil {
		return nil, err
	}
	for _, t := range tokens {
		if _, err := protodelim.MarshalTo(w, &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_AclToken{AclToken: t}}); err != nil {
			return nil, err
		}
	}
	for _, v := range versions {
		rec := &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_WorkflowVersion{WorkflowVersion: &fsmv1.WorkflowVersion{
			Manifest: v.manifest, CreatedAt: timestamppb.New(v.createdAt), Active: v.wf.active == v.version,
		}}}
		if _, err := protodelim.MarshalTo(w, rec); err != nil {
			return nil, err
		}
	}
	for _, t := range s.byNumber {
		if _, err := protodelim.MarshalTo(w, &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Task{Task: t.encode()}}); err != nil {
			return nil, err
		}
	}
	// Proposals, in apply order: a snapshot written before they existed
	// simply has none.
	for _, p := range s.props.order {
		if _, err := protodelim.MarshalTo(w, &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Proposal{Proposal: p.encode()}}); err != nil {
			return nil, err
		}
	}
	// Attempt records come last: restoring them finds their workflow
	// versions and tasks already there.
	for k := range s.history.n {
		if _, err := protodelim.MarshalTo(w, &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Attempt{Attempt: s.history.encode(k)}}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type bytesWriter struct{ b *[]byte }

func (w bytesWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func (t *taskRec) encode() *fsmv1.Task {
	out := &fsmv1.Task{
		Id: t.id, Namespace: t.ns, Workflow: t.ver.wf.key.name, Version: t.ver.version, InputJson: t.input,
		IdempotencyKey: t.idem, CreatedAt: ts(t.created), EndedAt: ts(t.ended), State: int32(t.state), Number: t.number,
		TraceParent: t.traceParent,
	}
	for i := range t.steps {
		st := &t.steps[i]
		ps := &fsmv1.Step{
			State: int32(st.state), Attempts: int32(st.attempts), RetryAt: ts(st.retryAt), Blocked: st.blocked,
			ResultJson: st.result, ReadyAt: ts(st.readyAt), DispatchedAt: ts(st.dispatchedAt), StartedAt: ts(st.startedAt),
			EndedAt: ts(st.endedAt), Deadline: ts(st.deadline), Agent: st.agent, Worker: st.worker,
		}
		if e := st.lastErr; e != nil {
			ps.LastError = &fsmv1.StepError{Code: e.Code, Message: e.Message, Retryable: e.Retryable, Attempt: int32(e.Attempt), At: ts(e.At), DetailsJson: e.DetailsJSON}
		}
		out.Steps = append(out.Steps, ps)
	}
	for _, e := range t.events {
		out.Events = append(out.Events, &fsmv1.Event{
			Seq: e.Seq, Type: e.Type, Step: e.Step, Attempt: int32(e.Attempt), At: ts(e.At), Message: e.Message,
			Index: e.Index, Position: uint32(e.Position), Code: e.Code,
		})
	}
	return out
}

// decode rebuilds a state from a snapshot, recompiling every workflow
// version and re-indexing every active task.
func (s *State) decode(r *bufio.Reader) error {
	var hdr fsmv1.SnapshotHeader
	if err := protodelim.UnmarshalFrom(r, &hdr); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if hdr.GetFormat() != snapshotFormat {
		return fmt.Errorf("snapshot format %d is not supported (this server reads %d)", hdr.GetFormat(), snapshotFormat)
	}
	s.clusterID = hdr.GetClusterId()
	s.busCursor = hdr.GetBusCursor()
	s.props.seq = hdr.GetProposalSeq()
	var nv, nt, na, np, nh uint64
	// Pins are set once every version is stored: storing a version
	// removes its workflow's pin.
	var pins []*versionRec
	for {
		var rec fsmv1.SnapshotRecord
		err := protodelim.UnmarshalFrom(r, &rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", nv+nt+na+np+nh+1, err)
		}
		switch x := rec.Record.(type) {
		case *fsmv1.SnapshotRecord_WorkflowVersion:
			v, res := s.storeWorkflow(x.WorkflowVersion.GetManifest(), fromTS(x.WorkflowVersion.GetCreatedAt()))
			if res.Err != nil {
				return fmt.Errorf("workflow version %d: %w", nv+1, res.Err)
			}
			if x.WorkflowVersion.GetActive() {
				pins = append(pins, v)
			}
			nv++
		case *fsmv1.SnapshotRecord_Task:
			if err := s.restoreTask(x.Task); err != nil {
				return fmt.Errorf("task %s: %w", x.Task.GetId(), err)
			}
			nt++
		case *fsmv1.SnapshotRecord_AclToken:
			if res := s.putACLToken(x.AclToken); res.Err != nil {
				return fmt.Errorf("acl token %d: %w", na+1, res.Err)
			}
			na++
		case *fsmv1.SnapshotRecord_Proposal:
			if err := s.restoreProposal(x.Proposal); err != nil {
				return fmt.Errorf("record %d: %w", nv+nt+na+np+nh+1, err)
			}
			np++
		case *fsmv1.SnapshotRecord_Attempt:
			if err := s.restoreAttempt(x.Attempt); err != nil {
				return fmt.Errorf("attempt record %d: %w", nh+1, err)
			}
			nh++
		default:
			return fmt.Errorf("record %d: unknown record kind; this server is older than the one that wrote the snapshot", nv+nt+na+np+nh+1)
		}
	}
	if nv != hdr.GetWorkflowVersions() || nt != hdr.GetTasks() || na != hdr.GetAclTokens() || np != hdr.GetProposals() || nh != hdr.GetAttempts() {
		return fmt.Errorf("snapshot is incomplete: %d workflow versions, %d tasks, %d acl tokens, %d proposals and %d attempt records, header says %d, %d, %d, %d and %d",
			nv, nt, na, np, nh, hdr.GetWorkflowVersions(), hdr.GetTasks(), hdr.GetAclTokens(), hdr.GetProposals(), hdr.GetAttempts())
	}
	for _, v := range pins {
		v.wf.active = v.version
	}
	return nil
}

func (s *State) restoreTask(pt *fsmv1.Task) error {
	v, err := s.version(pt.GetNamespace(), pt.GetWorkflow(), pt.GetVersion())
	if err != nil {
		return err
	}
	if _, dup := s.tasks[pt.GetId()]; dup {
		return fmt.Errorf("a second task with this id")
	}
	if len(pt.GetSteps()) != v.plan.Len() {
		return fmt.Errorf("%d steps recorded for a workflow of %d", len(pt.GetSteps()), v.plan.Len())
	}
	t := &taskRec{
		id: pt.GetId(), ns: pt.GetNamespace(), ver: v, input: pt.GetInputJson(), idem: pt.GetIdempotencyKey(),
		created: fromTS(pt.GetCreatedAt()), ended: fromTS(pt.GetEndedAt()), number: pt.GetNumber(),
		traceParent: pt.GetTraceParent(),
		state:       workflow.TaskState(pt.GetState()), steps: make([]stepRec, len(pt.GetSteps())),
	}
	recs := make([]workflow.StepRecord, len(t.steps))
	for i, ps := range pt.GetSteps() {
		st := &t.steps[i]
		st.state, st.attempts, st.retryAt, st.blocked = workflow.StepState(ps.GetState()), int(ps.GetAttempts()), fromTS(ps.GetRetryAt()), ps.GetBlocked()
		st.result, st.readyAt, st.dispatchedAt, st.startedAt = ps.GetResultJson(), fromTS(ps.GetReadyAt()), fromTS(ps.GetDispatchedAt()), fromTS(ps.GetStartedAt())
		st.endedAt, st.deadline, st.agent, st.worker = fromTS(ps.GetEndedAt()), fromTS(ps.GetDeadline()), ps.GetAgent(), ps.GetWorker()
		if e := ps.GetLastError(); e != nil {
			st.lastErr = &StepError{Code: e.GetCode(), Message: e.GetMessage(), Retryable: e.GetRetryable(), Attempt: int(e.GetAttempt()), At: fromTS(e.GetAt()), DetailsJSON: e.GetDetailsJson()}
		}
		recs[i] = workflow.StepRecord{State: st.state, Attempts: st.attempts, RetryAt: st.retryAt, Blocked: st.blocked}
	}
	for i, e := range pt.GetEvents() {
		// Dead letters are looked up by an event's sequence number and, by
		// halves, by its log index (deadletters.go): a history that is not
		// gap-free and in log order was not written by this FSM.
		if e.GetSeq() != uint64(i+1) || i > 0 && e.GetIndex() < pt.GetEvents()[i-1].GetIndex() {
			return fmt.Errorf("event %d of %d is out of order (sequence %d, index %d)", i+1, len(pt.GetEvents()), e.GetSeq(), e.GetIndex())
		}
		t.events = append(t.events, Event{
			Seq: e.GetSeq(), Type: e.GetType(), TaskID: t.id, Step: e.GetStep(), Attempt: int(e.GetAttempt()), At: fromTS(e.GetAt()), Message: e.GetMessage(),
			Index: e.GetIndex(), Position: int(e.GetPosition()), Code: e.GetCode(),
		})
	}
	if !t.state.Terminal() {
		manual := false
		for _, r := range recs {
			manual = manual || r.State == workflow.StepResolvedManually
		}
		ref, _, err := s.runs.Restore(s.planRef(v.plan), t.created, t.state, manual, recs, t.created, nil)
		if err != nil {
			return err
		}
		t.ref, t.active = ref, true
	}
	if t.number != uint64(len(s.byNumber)+1) {
		return fmt.Errorf("task number %d out of order (expected %d)", t.number, len(s.byNumber)+1)
	}
	s.tasks[t.id] = t
	s.byNumber = append(s.byNumber, t)
	if t.idem != "" {
		s.idem[idemKey{t.ns, t.idem}] = t
	}
	return nil
}
