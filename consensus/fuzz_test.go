package consensus

// Fuzz targets of the replicated state machine: the Raft log commands the
// FSM applies and the snapshots it restores. Every server applies the same
// log and must end in the same state, whatever the entries say, so the
// properties checked are about safety and determinism, not outcomes:
//
//   - FuzzFSMApply: a sequence of log entries (most of them real encoded
//     commands, mutated) never panics; a refused command changes nothing;
//     two FSMs applying the same entries agree on every result and every
//     snapshot byte; a snapshot restores to a state that writes the same
//     snapshot and goes on exactly like the original.
//   - FuzzSnapshotRestore: arbitrary bytes given to Restore never panic, a
//     refused snapshot leaves the prior state untouched, and an accepted
//     one restores to a usable state whose snapshot round-trips.
//
// `make fuzz` runs them longer; docs/testing.md lists every target.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// fuzzMini is the workflow the fuzzed commands are about: small (so that
// loading it costs the fuzzer little), with input and result contracts,
// an input mapping, a fan-out and a join, and fast, generous retries, so
// that short command sequences reach retries, dead letters and manual
// resolution. (examples/order-fulfilment.yaml takes ten times longer to
// load, and the manifest is FuzzLoad's business.)
const fuzzMini = `name: mini
version: 1.0.0
input_schema:
  type: object
  properties:
    n: {type: integer}
steps:
  - name: a
    capability: mini.a
    retry:
      max_attempts: 4
      retryable: [flaky]
      backoff: {initial: 10ms, max: 1s, multiplier: 2}
    result_schema:
      type: object
      properties:
        x: {type: integer}
  - name: b
    capability: mini.b
    depends_on: [a]
    input:
      x: $.steps.a.result.x
      n: $.input.n
  - name: c
    capability: mini.c
    depends_on: [a]
  - name: d
    capability: mini.d
    depends_on: [b, c]
`

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The sane window of a command's time: a leader's clock. Times outside it
// (unset, or centuries away) are replaced, since no leader writes them and
// their arithmetic overflows in ways that say nothing about the FSM.
var (
	fuzzMinTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzMaxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

const fuzzMaxCommands = 64

// fuzzPrelude returns an FSM that holds fuzzMini, so that the fuzzed
// entries can be about tasks.
func fuzzPrelude(tb testing.TB) *FSM {
	tb.Helper()
	f := NewFSM(NewState(workflow.Limits{}), discardLogger(), nil)
	c := put(fuzzMini)
	c.Now = timestamppb.New(t0)
	if r := f.ApplyCommand(c); r.Err != nil {
		tb.Fatalf("prelude: %v", r.Err)
	}
	return f
}

// encodeEntries frames commands as the fuzzers' input: each a uvarint
// length and the encoded command.
func encodeEntries(tb testing.TB, cmds ...*fsmv1.Command) []byte {
	tb.Helper()
	var out []byte
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			tb.Fatal(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// splitEntries is encodeEntries' inverse for any bytes: a length that
// overruns the input takes the rest.
func splitEntries(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 && len(out) < fuzzMaxCommands {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			out = append(out, data)
			break
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	return out
}

// normalize gives a decodable entry a leader's time (the i-th entry's
// clock unless it carries a sane one) and re-encodes it; an undecodable
// one is applied as it is.
func normalize(raw []byte, i int) []byte {
	var c fsmv1.Command
	if proto.Unmarshal(raw, &c) != nil {
		return raw
	}
	if !saneTime(c.GetNow()) {
		c.Now = timestamppb.New(t0.Add(time.Second + time.Duration(i)*10*time.Millisecond))
	}
	for _, sub := range c.GetBatch().GetCommands() {
		if sub.Now != nil && !saneTime(sub.Now) {
			sub.Now = nil // the batch's time
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&c)
	if err != nil {
		return raw
	}
	return b
}

func saneTime(ts *timestamppb.Timestamp) bool {
	if ts == nil || ts.CheckValid() != nil {
		return false
	}
	t := ts.AsTime()
	return !t.Before(fuzzMinTime) && t.Before(fuzzMaxTime)
}

// fuzzSeeds are real command sequences: a task run to completion, one
// with a retry, a dead letter resolved by hand, a cancel, a batch of
// dispatches and starts, a late report, cluster naming.
func fuzzSeeds() [][]*fsmv1.Command {
	mini := func(id, key, input string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{TaskId: id, Workflow: "mini", InputJson: input, IdempotencyKey: key}}}
	}
	start := func(id, step string, attempt int32, worker string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_StartStep{StartStep: &fsmv1.StartStep{TaskId: id, Step: step, Attempt: attempt, Worker: worker}}}
	}
	release := func(id, step string, attempt int32) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{TaskId: id, Step: step, Attempt: attempt, Reason: "drain"}}}
	}
	retry := func(id, step string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_RetryStep{RetryStep: &fsmv1.RetryStep{TaskId: id, Step: step, Reason: "again"}}}
	}
	resolve := func(id, step, result string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_ResolveStep{ResolveStep: &fsmv1.ResolveStep{TaskId: id, Step: step, ResultJson: result, Reason: "by hand"}}}
	}
	cancel := func(id string) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: id, Reason: "changed my mind"}}}
	}
	extend := func(id, step string, attempt int32) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_ExtendLease{ExtendLease: &fsmv1.ExtendLease{TaskId: id, Step: step, Attempt: attempt, Worker: "w1", Deadline: timestamppb.New(t0.Add(2 * time.Hour))}}}
	}
	batch := func(cs ...*fsmv1.Command) *fsmv1.Command {
		return &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: cs}}}
	}
	failAfter := func(id, step string, attempt int32, code string, ms int64) *fsmv1.Command {
		c := failCmd(id, step, attempt, code, true)
		c.GetFailStep().RetryAfterMs = ms
		c.GetFailStep().DetailsJson = `{"why":"busy"}`
		return c
	}
	capped := func(c *fsmv1.Command, max uint32) *fsmv1.Command {
		c.GetCreateTask().MaxTasksInFlight = max
		return c
	}
	later := func(c *fsmv1.Command) *fsmv1.Command {
		c.Now = timestamppb.New(t0.Add(time.Hour))
		return c
	}
	var run []*fsmv1.Command
	run = append(run, mini("m0", "k0", `{"n":3}`))
	for _, step := range []string{"a", "b", "c", "d"} {
		run = append(run, dispatch("m0", step, 1), complete("m0", step, 1, `{"x":1}`))
	}
	return [][]*fsmv1.Command{
		run,
		{
			mini("m1", "", `{"n":1}`), dispatch("m1", "a", 1), start("m1", "a", 1, "w1"), extend("m1", "a", 1),
			failAfter("m1", "a", 1, "flaky", 5), dispatch("m1", "a", 2), complete("m1", "a", 2, `{"x":7}`),
			batch(dispatch("m1", "b", 1), dispatch("m1", "c", 1), start("m1", "b", 1, "w1")),
			complete("m1", "b", 1, `{}`), release("m1", "c", 1), dispatch("m1", "c", 1), complete("m1", "c", 1, `{}`),
		},
		{
			mini("m2", "k2", `{}`), dispatch("m2", "a", 1), failCmd("m2", "a", 1, "fatal", false),
			retry("m2", "a"), dispatch("m2", "a", 1), failCmd("m2", "a", 1, "fatal", false),
			resolve("m2", "a", `{"x":1}`), dispatch("m2", "b", 1), cancel("m2"), cancel("m2"),
		},
		{
			mini("m4", "", ""), dispatch("m4", "a", 1), failCmd("m4", "a", 1, "flaky", true),
			failCmd("m4", "a", 1, "timeout", true), later(dispatch("m4", "a", 2)), later(complete("m4", "a", 1, `{"x":1}`)),
			complete("m4", "a", 2, `{"x":"no"}`), complete("m4", "a", 2, `{"x":2}`),
			batch(dispatch("m4", "b", 1), dispatch("m4", "c", 1), batch(), dispatch("nope", "x", 1)),
			failAfter("m4", "c", 1, "flaky", 3_600_000), complete("m4", "b", 1, ""), cancel("m4"),
		},
		{
			{Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: "c-1"}}},
			{Kind: &fsmv1.Command_BusCursor{BusCursor: &fsmv1.BusCursor{Index: 7}}},
			put(fuzzMini), put(strings.Replace(fuzzMini, "1.0.0", "1.1.0", 1)), mini("m3", "", `{"n":"x"}`), mini("m3", "", ""),
			mini("m3", "", `{"n":4}`), {Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: "c-2"}}},
		},
		{
			putToken("acc_1", 1, "app", "payments.*"), putToken("acc_1", 1, "app", "payments.*"), putToken("acc_1", 2, "app", "payments.*"),
			putToken("acc_2", 1, "reader"), putToken("acc_3", 3, "management"), putToken("acc_4", 4, "app"), putToken("acc_5", 5, "root"),
			deleteToken("acc_3"), deleteToken("acc_3"), putToken("acc_3", 3, "writer"),
			batch(putToken("acc_6", 6, "agent"), deleteToken("acc_2")),
			// The cap on tasks in flight: refused at it, a retry answered at
			// it, room again once a task is cancelled.
			capped(mini("m5", "k5", `{}`), 1), capped(mini("m6", "k6", `{}`), 1), capped(mini("m7", "k5", `{}`), 1),
			capped(mini("m5", "k5", `{}`), 1), cancel("m5"), capped(mini("m6", "k6", `{}`), 1),
		},
		{
			// Proposals: a workflow change approved and applied in one
			// atomic batch, rolled back; operations applied, refused, and
			// batches that break the atomic rules.
			mini("m8", "", `{}`), dispatch("m8", "a", 1), failCmd("m8", "a", 1, "fatal", false),
			putProposal(&fsmv1.Proposal{Action: "change_timeout", Workflow: "mini", NewVersion: "1.0.1-ai.1", Manifest: strings.Replace(fuzzMini, "1.0.0", "1.0.1-ai.1", 1), Source: "rules"}),
			allOrNothing(decide("p-1", ProposalApproved), put(strings.Replace(fuzzMini, "1.0.0", "1.0.1-ai.1", 1)),
				&fsmv1.Command{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Workflow: "mini", Version: "1.0.1-ai.1"}}}, mark("p-1", ProposalApplied)),
			mini("m9", "", `{}`),
			allOrNothing(&fsmv1.Command{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Workflow: "mini", Version: "1.0.0"}}}, mark("p-1", ProposalRolledBack)),
			putProposal(&fsmv1.Proposal{Action: "retry_step", TaskId: "m8", Step: "a", Source: "model", Params: map[string]string{"task": "m8"}}),
			allOrNothing(decide("p-2", ProposalApproved), retry("m8", "a"), mark("p-2", ProposalApplied)),
			putProposal(&fsmv1.Proposal{Action: "cancel", TaskId: "m9", Source: "user"}),
			allOrNothing(cancel("m9"), mark("p-3", ProposalApplied)),
			allOrNothing(cancel("m9"), cancel("m9")),
			allOrNothing(decide("p-3", ProposalApproved), cancel("m9"), mark("p-3", ProposalApplied)),
			decide("p-3", ProposalRejected), mark("p-9", ProposalFailed),
			put(strings.Replace(fuzzMini, "1.0.0", "1.2.0", 1)),
		},
	}
}

// putToken stores a token whose secret hash is 32 copies of b.
func putToken(id string, b byte, policy string, caps ...string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_PutAclToken{PutAclToken: &fsmv1.PutAclToken{Token: &fsmv1.AclToken{
		AccessorId: id, SecretHash: bytes.Repeat([]byte{b}, 32), Policy: policy, Capabilities: caps, CreatedAt: timestamppb.New(t0),
	}}}}
}

func deleteToken(id string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_DeleteAclToken{DeleteAclToken: &fsmv1.DeleteAclToken{AccessorId: id}}}
}

// FuzzFSMApply applies a sequence of log entries to three FSMs: A checks
// each command (and each command of a batch) for refusals that changed
// something, B applies them as Raft would, C is restored from A's
// snapshot halfway and applies the rest. All three must agree.
func FuzzFSMApply(f *testing.F) {
	for _, seq := range fuzzSeeds() {
		f.Add(encodeEntries(f, seq...))
	}
	f.Add([]byte{3, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		entries := splitEntries(data)
		a, b := fuzzPrelude(t), fuzzPrelude(t)
		var c *FSM
		mid := len(entries) / 2
		for i, raw := range entries {
			if i == mid {
				c = restoreCopy(t, a)
			}
			l := &raft.Log{Type: raft.LogCommand, Index: uint64(100 + i), Data: normalize(raw, i)}
			ra := applyChecked(t, a, l)
			rb := b.Apply(l).(*Result)
			if ka, kb := resultKey(ra), resultKey(rb); ka != kb {
				t.Fatalf("entry %d: results differ between two FSMs:\n%s\n%s", i, ka, kb)
			}
			if c != nil {
				if kc := resultKey(c.Apply(l).(*Result)); kc != resultKey(rb) {
					t.Fatalf("entry %d: a state restored from a snapshot answered differently:\n%s\nwant\n%s", i, kc, resultKey(rb))
				}
			}
		}
		sa, sb := mustEncode(t, a), mustEncode(t, b)
		if !bytes.Equal(sa, sb) {
			t.Fatal("two FSMs applying the same entries wrote different snapshots")
		}
		if c != nil && !bytes.Equal(sa, mustEncode(t, c)) {
			t.Fatal("a state restored from a snapshot halfway ended in another state")
		}
		r := restoreCopy(t, a)
		now := t0.Add(48 * time.Hour)
		if pa, pr := fmt.Sprint(a.State().ScanActive(now)), fmt.Sprint(r.State().ScanActive(now)); pa != pr {
			t.Fatalf("restored state schedules other work:\n%s\n%s", pa, pr)
		}
		checkReads(t, a.State())
	})
}

// applyChecked applies l to f: a batch command by command (as the FSM
// does, under one index and one Effects), anything else through Apply.
// Every refused command must leave the state as it was, but for the one
// step.late_report event a stale report may add.
func applyChecked(t *testing.T, f *FSM, l *raft.Log) *Result {
	t.Helper()
	var c fsmv1.Command
	// An atomic batch is checked whole: refused, it changes nothing.
	if err := proto.Unmarshal(l.Data, &c); err != nil || c.GetBatch() == nil || c.GetBatch().GetAtomic() {
		before := mustEncode(t, f)
		var fx *Effects
		f.notify = func(e *Effects) { fx = e }
		defer func() { f.notify = nil }()
		r := f.Apply(l).(*Result)
		if r.Err != nil {
			checkUnchanged(t, before, mustEncode(t, f), fx)
		}
		return r
	}
	now := c.GetNow().AsTime()
	fx := &Effects{index: l.Index}
	res := &Result{}
	for _, sub := range c.GetBatch().GetCommands() {
		subNow := now
		if sub.GetNow() != nil {
			subNow = sub.GetNow().AsTime()
		}
		if _, nested := sub.Kind.(*fsmv1.Command_Batch); nested {
			res.Batch = append(res.Batch, &Result{Err: fmt.Errorf("%w: nested batch", ErrInvalid)})
			continue
		}
		before := mustEncode(t, f)
		seen := len(fx.Events)
		f.state.mu.Lock()
		r := f.state.apply(sub, subNow, fx, l.Index, f.log)
		f.state.mu.Unlock()
		if r.Err != nil {
			checkUnchanged(t, before, mustEncode(t, f), &Effects{Events: fx.Events[seen:]})
		}
		res.Batch = append(res.Batch, r)
	}
	return res
}

// checkUnchanged fails unless after is before, or before plus late-report
// events (the only trace a refused command may leave).
func checkUnchanged(t *testing.T, before, after []byte, fx *Effects) {
	t.Helper()
	if bytes.Equal(before, after) {
		return
	}
	late := map[string]bool{}
	if fx != nil {
		for _, e := range fx.Events {
			if e.Type != EventStepLateReport {
				t.Fatalf("a refused command emitted %s", e.Type)
			}
			late[fmt.Sprint(e.TaskID, "/", e.Seq)] = true
		}
	}
	rb, ra := snapshotRecords(t, before), snapshotRecords(t, after)
	if len(rb) != len(ra) {
		t.Fatalf("a refused command changed the number of records from %d to %d", len(rb), len(ra))
	}
	for i := range ra {
		if rec, ok := ra[i].(*fsmv1.SnapshotRecord); ok && rec.GetTask() != nil {
			task := rec.GetTask()
			var keep []*fsmv1.Event
			for _, e := range task.GetEvents() {
				if !late[fmt.Sprint(task.GetId(), "/", e.GetSeq())] {
					keep = append(keep, e)
				}
			}
			task.Events = keep
		}
		if !proto.Equal(rb[i], ra[i]) {
			t.Fatalf("a refused command changed the state:\nbefore %v\nafter  %v", rb[i], ra[i])
		}
	}
}

// snapshotRecords decodes a snapshot: the header, then every record.
func snapshotRecords(t *testing.T, b []byte) []proto.Message {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	hdr := &fsmv1.SnapshotHeader{}
	if err := protodelim.UnmarshalFrom(r, hdr); err != nil {
		t.Fatalf("own snapshot: %v", err)
	}
	out := []proto.Message{hdr}
	for {
		rec := &fsmv1.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(r, rec)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("own snapshot: %v", err)
		}
		out = append(out, rec)
	}
}

func mustEncode(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return []byte(snap.(snapshot))
}

// restoreCopy restores f's snapshot into a fresh FSM and checks that it
// writes the same snapshot.
func restoreCopy(t *testing.T, f *FSM) *FSM {
	t.Helper()
	b := mustEncode(t, f)
	c := NewFSM(NewState(f.state.limits), discardLogger(), nil)
	if err := c.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("the FSM's own snapshot does not restore: %v", err)
	}
	if !bytes.Equal(b, mustEncode(t, c)) {
		t.Fatal("snapshot → restore → snapshot is not byte-identical")
	}
	return c
}

// resultKey is everything a Result says, as text.
func resultKey(r *Result) string {
	var sb strings.Builder
	var walk func(r *Result)
	walk = func(r *Result) {
		fmt.Fprintf(&sb, "{err=%v task=%q created=%v attempt=%d retry=%v at=%d proposal=%q", r.Err, r.TaskID, r.Created, r.Attempt, r.Retry, r.RetryAt.UnixNano(), r.ProposalID)
		for _, sub := range r.Batch {
			walk(sub)
		}
		sb.WriteString("}")
	}
	walk(r)
	return sb.String()
}

// checkReads runs every reader over the state: none may fail on what the
// commands left behind.
func checkReads(t *testing.T, s *State) {
	t.Helper()
	if len(s.tasks) != len(s.byNumber) {
		t.Fatalf("%d tasks by id, %d by number", len(s.tasks), len(s.byNumber))
	}
	list, _ := s.ListTasks(TaskFilter{Limit: 1000})
	for _, v := range list {
		if _, err := s.Task(v.ID); err != nil {
			t.Fatalf("listed task %s: %v", v.ID, err)
		}
		if _, err := s.Events(v.ID, 0); err != nil {
			t.Fatalf("events of listed task %s: %v", v.ID, err)
		}
		for i := range v.Steps {
			_, _ = s.Assignment(StepRef{TaskID: v.ID, Step: i})
			_, _ = s.StepInfo(StepRef{TaskID: v.ID, Step: i}, t0)
		}
	}
	dls, _, err := s.DeadLetters(DeadLetterFilter{Limit: 1000})
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	for _, d := range dls {
		if _, err := s.DeadLetter(d.ID); err != nil {
			t.Fatalf("listed dead letter %s: %v", d.ID, err)
		}
	}
	_ = s.Workflows("")
}

// FuzzSnapshotRestore gives Restore arbitrary bytes over a state that
// already holds tasks.
func FuzzSnapshotRestore(f *testing.F) {
	// Seeds: the snapshots of the FSM seeds' end states, one of the order
	// workflow with a task under way, a small one, and cut-off and empty
	// ones.
	for _, seq := range fuzzSeeds() {
		b := fuzzPrelude(f)
		for i, c := range seq {
			c.Now = timestamppb.New(t0.Add(time.Second + time.Duration(i)*10*time.Millisecond))
			b.ApplyCommand(c)
		}
		s := mustEncode(f, b)
		f.Add(s)
		f.Add(s[:len(s)*2/3])
	}
	small := NewFSM(NewState(workflow.Limits{}), discardLogger(), nil)
	for _, c := range []*fsmv1.Command{put(fuzzMini),
		{Kind: &fsmv1.Command_CreateTask{CreateTask: &fsmv1.CreateTask{TaskId: "m1", Workflow: "mini", InputJson: `{"n":1}`}}},
		{Kind: &fsmv1.Command_DispatchStep{DispatchStep: &fsmv1.DispatchStep{TaskId: "m1", Step: "a", Attempt: 1, Worker: "w"}}},
		{Kind: &fsmv1.Command_FailStep{FailStep: &fsmv1.FailStep{TaskId: "m1", Step: "a", Attempt: 1, Code: "flaky", Retryable: true}}},
		{Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: "c-9"}}},
	} {
		c.Now = timestamppb.New(t0)
		small.ApplyCommand(c)
	}
	f.Add(mustEncode(f, small))
	m, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		f.Fatal(err)
	}
	order := NewFSM(NewState(workflow.Limits{}), discardLogger(), nil)
	for _, c := range []*fsmv1.Command{put(string(m)), create("t1", "k1", orderInput), dispatch("t1", "validate", 1), complete("t1", "validate", 1, results["validate"])} {
		c.Now = timestamppb.New(t0)
		if r := order.ApplyCommand(c); r.Err != nil {
			f.Fatal(r.Err)
		}
	}
	f.Add(mustEncode(f, order))
	f.Add([]byte{})
	f.Add([]byte{2, 8, 1})

	f.Fuzz(func(t *testing.T, data []byte) {
		prior := fuzzPrelude(t)
		for i, c := range fuzzSeeds()[1] {
			c.Now = timestamppb.New(t0.Add(time.Duration(i+1) * time.Second))
			prior.ApplyCommand(c)
		}
		before := mustEncode(t, prior)
		id, cursor := prior.State().ClusterID(), prior.State().BusCursor()
		if err := prior.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			if !bytes.Equal(before, mustEncode(t, prior)) || prior.State().ClusterID() != id || prior.State().BusCursor() != cursor {
				t.Fatalf("a refused snapshot (%v) changed the state", err)
			}
			return
		}
		// Accepted: the state is usable, its snapshot round-trips, and two
		// fresh FSMs restoring the same bytes agree.
		checkReads(t, prior.State())
		_ = prior.State().ScanActive(t0.Add(time.Hour))
		fresh1, fresh2 := NewFSM(NewState(workflow.Limits{}), discardLogger(), nil), NewFSM(NewState(workflow.Limits{}), discardLogger(), nil)
		if err := fresh1.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("restored over a state, refused on an empty one: %v", err)
		}
		if err := fresh2.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("restore is not deterministic: %v", err)
		}
		s1 := mustEncode(t, fresh1)
		if !bytes.Equal(s1, mustEncode(t, fresh2)) {
			t.Fatal("two FSMs restoring the same snapshot wrote different snapshots")
		}
		restoreCopy(t, fresh1)
		// The restored state takes commands: cancel every active task.
		for _, tr := range fresh1.State().byNumber {
			if tr.active {
				c := &fsmv1.Command{Now: timestamppb.New(t0.Add(time.Hour)), Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: tr.id}}}
				fresh1.ApplyCommand(c)
			}
		}
		checkReads(t, fresh1.State())
	})
}

// TestRestoreRefusesCorruptHistories: snapshots no FSM writes are refused
// rather than restored into a state whose reads disagree: a history out of
// order (found by FuzzSnapshotRestore, testdata/fuzz/FuzzSnapshotRestore:
// a dead letter listed that GetDeadLetter cannot find), and a task id
// twice (what checkReads looks for: one task by id, two by number, both
// scheduled).
func TestRestoreRefusesCorruptHistories(t *testing.T) {
	f := fuzzPrelude(t)
	for i, c := range fuzzSeeds()[2] {
		c.Now = timestamppb.New(t0.Add(time.Duration(i+1) * time.Second))
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(10 + i), Data: b})
	}
	tests := []struct {
		name   string
		mutate func(hdr *fsmv1.SnapshotHeader, tasks []*fsmv1.Task) []*fsmv1.Task
		want   string
	}{
		{"task id twice", func(hdr *fsmv1.SnapshotHeader, tasks []*fsmv1.Task) []*fsmv1.Task {
			dup := proto.Clone(tasks[0]).(*fsmv1.Task)
			dup.Number = 2
			hdr.Tasks = 2
			return append(tasks, dup)
		}, "a second task with this id"},
		{"sequence gap", func(_ *fsmv1.SnapshotHeader, tasks []*fsmv1.Task) []*fsmv1.Task {
			tasks[0].Events[5].Seq = 1777629601
			return tasks
		}, "event 6 of"},
		{"index out of log order", func(_ *fsmv1.SnapshotHeader, tasks []*fsmv1.Task) []*fsmv1.Task {
			tasks[0].Events[2].Index = 99
			return tasks
		}, "event 4 of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := snapshotRecords(t, mustEncode(t, f))
			hdr := recs[0].(*fsmv1.SnapshotHeader)
			var versions []proto.Message
			var tasks []*fsmv1.Task
			for _, r := range recs[1:] {
				if task := r.(*fsmv1.SnapshotRecord).GetTask(); task != nil {
					tasks = append(tasks, task)
				} else {
					versions = append(versions, r)
				}
			}
			tasks = tt.mutate(hdr, tasks)
			var b bytes.Buffer
			for _, m := range append([]proto.Message{hdr}, versions...) {
				if _, err := protodelim.MarshalTo(&b, m); err != nil {
					t.Fatal(err)
				}
			}
			for _, task := range tasks {
				if _, err := protodelim.MarshalTo(&b, &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Task{Task: task}}); err != nil {
					t.Fatal(err)
				}
			}
			before := mustEncode(t, f)
			err := f.Restore(io.NopCloser(&b))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("restore = %v, want an error saying %q", err, tt.want)
			}
			if !bytes.Equal(before, mustEncode(t, f)) {
				t.Fatal("a refused snapshot changed the state")
			}
		})
	}
}
