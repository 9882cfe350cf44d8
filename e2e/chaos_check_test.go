package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
	"github.com/tasker-run/tasker/workflow"
)

// The invariants of a chaos run, checked once every task has settled.
const (
	invAccepted   = "accepted-kept"      // every accepted task exists, settled, once per key
	invOnce       = "completed-once"     // no step completed twice, by events and by the services' journal
	invDeadLetter = "dead-letters-match" // every dead letter is a real failure, every failure for good a dead letter
	invEvents     = "events-ordered"     // every task's history complete, in order, consistent with its state
)

// chaosInvariant is one invariant's outcome: how many things were checked
// and what broke it.
type chaosInvariant struct {
	Name       string   `json:"name"`
	Checked    int      `json:"checked"`
	Violations []string `json:"violations,omitempty"`
	// Notes are oddities that break nothing users rely on.
	Notes []string `json:"notes,omitempty"`
}

// chaosReport is what a chaos run found, saved as JSON when it fails (or
// always under $TASKER_ARTIFACTS).
type chaosReport struct {
	seed     uint64
	duration time.Duration
	faults   string
	faultLog []string

	accepted, completed, failed, deadLetters int
	invariants                               []*chaosInvariant

	journal     string
	keys        map[string]string
	tasks       map[string]*taskerv1.Task
	histories   map[string][]consensus.Event
	deadLetterL []*taskerv1.DeadLetter
}

func (r *chaosReport) inv(name string) *chaosInvariant {
	for _, i := range r.invariants {
		if i.Name == name {
			return i
		}
	}
	i := &chaosInvariant{Name: name}
	r.invariants = append(r.invariants, i)
	return i
}

func (i *chaosInvariant) violate(format string, args ...any) {
	i.Violations = append(i.Violations, fmt.Sprintf(format, args...))
}

// summary renders each invariant with its count: "name (n checked) ok".
func (r *chaosReport) summary() string {
	parts := make([]string, 0, len(r.invariants))
	for _, i := range r.invariants {
		verdict := "ok"
		if len(i.Violations) > 0 {
			verdict = fmt.Sprintf("BROKEN %d times", len(i.Violations))
		}
		if len(i.Notes) > 0 {
			verdict += fmt.Sprintf(" (%d notes)", len(i.Notes))
		}
		parts = append(parts, fmt.Sprintf("%s (%d checked) %s", i.Name, i.Checked, verdict))
	}
	return strings.Join(parts, ", ")
}

func (r *chaosReport) failedAny() bool {
	return slices.ContainsFunc(r.invariants, func(i *chaosInvariant) bool { return len(i.Violations) > 0 })
}

// checkChaos checks the invariants over the settled tasks, the replicated
// histories (read from a snapshot of the leader's state), the dead letters
// and the services' journal, logging every violation.
func checkChaos(t *testing.T, c *cluster, w *chaosWorkload, final map[string]*taskerv1.Task) *chaosReport {
	t.Helper()
	w.mu.Lock()
	orders := slices.Clone(w.orders)
	keys := make(map[string]string, len(w.ids))
	for k, id := range w.ids {
		keys[k] = id
	}
	others := w.others
	calls := w.calls
	notCreated := slices.Clone(w.notCreated)
	w.mu.Unlock()
	r := &chaosReport{journal: c.journal, keys: keys, tasks: final, histories: map[string][]consensus.Event{}}
	for _, name := range []string{invAccepted, invOnce, invDeadLetter, invEvents} {
		r.inv(name)
	}
	t.Logf("chaos: StartTask answers: %d ok (%d created), %d without an answer (%d of them: may still be applied)", calls.ok, calls.created, calls.unknown, calls.mayApply)
	if len(notCreated) > 0 {
		t.Logf("chaos: %d keys were answered created: false by their first and only call, which created the task (the known residual StartTask bug, docs/guarantees.md): %v",
			len(notCreated), notCreated)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	api := newClient(c.clients[0].api)
	checkAccepted(ctx, t, r, api, orders, others)

	li := c.waitLeader(t, 60*time.Second)
	var state *consensus.State
	waitFor(t, 60*time.Second, "a snapshot of the leader's state is read", func(ctx context.Context) (bool, string, error) {
		var err error
		state, err = readSnapshotState(ctx, c.servers[li])
		return err == nil, fmt.Sprint(err), nil
	})
	ids := slices.Sorted(func(yield func(string) bool) {
		for _, id := range keys {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		evs, err := state.Events(id, 0)
		if err != nil {
			r.inv(invEvents).violate("task %s: no history in the leader's snapshot: %v", id, err)
			continue
		}
		r.histories[id] = evs
	}
	for _, id := range ids {
		task := final[id]
		switch task.GetState() {
		case taskerv1.TaskState_TASK_STATE_COMPLETE:
			r.completed++
		case taskerv1.TaskState_TASK_STATE_ERROR:
			r.failed++
		}
		if view, err := state.Task(id); err == nil && view.State.String() != strings.ToLower(strings.TrimPrefix(task.GetState().String(), "TASK_STATE_")) {
			r.inv(invEvents).violate("task %s: the API says %s, the leader's snapshot %s", id, task.GetState(), view.State)
		}
		checkHistory(r.inv(invEvents), task, r.histories[id])
	}
	checkWatched(ctx, r.inv(invEvents), api, final, r.histories, 200)
	checkCompletedOnce(r, readJournal(t, c.journal))
	checkDeadLetters(ctx, r, api, orders)

	for _, i := range r.invariants {
		for n, note := range i.Notes {
			if n == 3 {
				t.Logf("%s: and %d more notes", i.Name, len(i.Notes)-n)
				break
			}
			t.Logf("%s: note: %s", i.Name, note)
		}
		for n, v := range i.Violations {
			if n == 20 {
				t.Errorf("%s: and %d more", i.Name, len(i.Violations)-n)
				break
			}
			t.Errorf("%s: %s", i.Name, v)
		}
	}
	return r
}

// checkAccepted checks that no accepted StartTask was lost: every key
// still names the task it was first answered with (StartTask again
// creates nothing), every such task reads back with a consistent read
// and has settled, and the cluster holds no other task of the workload.
func checkAccepted(ctx context.Context, t *testing.T, r *chaosReport, api *client.Client, orders []*chaosOrder, others map[string][]string) {
	t.Helper()
	inv := r.inv(invAccepted)
	for key, ids := range others {
		inv.violate("key %s was answered with task %s, then with %v: one key started two tasks", key, r.keys[key], ids)
	}
	for _, o := range orders {
		inv.Checked++
		id, ok := r.keys[o.key]
		if !ok {
			inv.violate("key %s: never answered", o.key)
			continue
		}
		task, created, err := api.StartTask(ctx, "order-fulfilment", orderInput(o.key, o.token, o.sku),
			client.Namespace("shop"), client.IdempotencyKey(o.key))
		switch {
		case err != nil:
			inv.violate("key %s: StartTask again: %v", o.key, err)
		case created || task.GetId() != id:
			inv.violate("key %s: StartTask again answered task %s (created %v), first answered %s", o.key, task.GetId(), created, id)
		}
		got, err := consistentGet(ctx, api, id)
		switch {
		case err != nil:
			inv.violate("task %s (key %s): consistent read: %v", id, o.key, err)
		case got.GetIdempotencyKey() != o.key:
			inv.violate("task %s: idempotency key %q, want %q", id, got.GetIdempotencyKey(), o.key)
		case !settled(got):
			inv.violate("task %s: not settled: %s", id, describeSteps(got))
		}
	}
	// Every task of the namespace belongs to an accepted key: a call that
	// was retried after a failover started no second task.
	want := map[string]bool{}
	for _, id := range r.keys {
		want[id] = true
	}
	listed := 0
	for token := ""; ; {
		res, err := api.Service().ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: "shop", PageSize: 1000, PageToken: token}))
		if err != nil {
			inv.violate("ListTasks: %v", err)
			break
		}
		for _, task := range res.Msg.GetTasks() {
			listed++
			if !want[task.GetId()] {
				inv.violate("task %s (key %q) is no task the workload was answered with", task.GetId(), task.GetIdempotencyKey())
			}
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if listed != len(want) {
		inv.violate("ListTasks lists %d tasks, the workload was answered with %d", listed, len(want))
	}
	r.accepted = len(want)
}

// readSnapshotState saves a snapshot of a's state (SnapshotSave, as
// `tasker snapshot save` does) and restores it into a State, whose task
// histories are the replicated ones, with their event ids.
func readSnapshotState(ctx context.Context, a *clusterAgent) (*consensus.State, error) {
	stream, err := a.cluster().SnapshotSave(ctx, connect.NewRequest(&taskerv1.SnapshotSaveRequest{}))
	if err != nil {
		return nil, fmt.Errorf("snapshot save on %s: %w", a.name, err)
	}
	var buf bytes.Buffer
	for stream.Receive() {
		buf.Write(stream.Msg().GetData())
	}
	if err := stream.Err(); err != nil {
		return nil, fmt.Errorf("snapshot save on %s: %w", a.name, err)
	}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		return nil, fmt.Errorf("snapshot archive: %w", err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("snapshot archive has no state.bin: %w", err)
		}
		if hdr.Name != "state.bin" {
			continue
		}
		state := consensus.NewState(workflow.Limits{})
		if err := consensus.NewFSM(state, slog.New(slog.DiscardHandler), nil).Restore(io.NopCloser(tr)); err != nil {
			return nil, fmt.Errorf("restore the snapshot: %w", err)
		}
		return state, nil
	}
}

// checkWatched checks that the history users read (WatchTask, through a
// client agent) is the replicated one: for up to n complete tasks, the
// events WatchTask resends after sequence 1 are the snapshot's, in order.
// WatchTask cannot resend event 1: after_sequence 0 means "only new
// events".
func checkWatched(ctx context.Context, inv *chaosInvariant, api *client.Client, tasks map[string]*taskerv1.Task, histories map[string][]consensus.Event, n int) {
	ids := slices.Sorted(func(yield func(string) bool) {
		for id, task := range tasks {
			if task.GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE && !yield(id) {
				return
			}
		}
	})
	for _, id := range ids[:min(n, len(ids))] {
		want := histories[id]
		if len(want) < 2 {
			continue
		}
		got, err := watchHistory(ctx, api, id)
		if err != nil {
			inv.violate("task %s: WatchTask: %v", id, err)
			continue
		}
		var diff []string
		for i := range max(len(got), len(want)-1) {
			var g, w string
			if i < len(got) {
				e := got[i]
				g = fmt.Sprintf("%d %s %s %d", e.GetSequence(), e.GetType(), e.GetStep(), e.GetAttempt())
			}
			if i+1 < len(want) {
				e := want[i+1]
				w = fmt.Sprintf("%d %s %s %d", e.Seq, e.Type, e.Step, e.Attempt)
			}
			if g != w {
				diff = append(diff, fmt.Sprintf("[%q, snapshot %q]", g, w))
			}
		}
		if len(diff) > 0 {
			inv.violate("task %s: WatchTask's history differs from the replicated one: %s", id, strings.Join(diff[:min(5, len(diff))], " "))
		}
	}
}

// watchHistory reads a complete task's events after the first with
// WatchTask; the stream ends after task.completed.
func watchHistory(ctx context.Context, api *client.Client, id string) ([]*taskerv1.TaskEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := api.Service().WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: id, AfterSequence: 1}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var out []*taskerv1.TaskEvent
	for stream.Receive() {
		if e := stream.Msg().GetEvent(); e != nil {
			out = append(out, e)
		}
	}
	return out, stream.Err()
}

// Step event types that belong to one attempt's life.
var attemptEvents = []string{
	consensus.EventStepDispatched, consensus.EventStepStarted, consensus.EventStepCompleted, consensus.EventStepFailed,
	consensus.EventStepRetryScheduled, consensus.EventStepDeadLettered, consensus.EventStepReleased,
}

// stepLife follows one step through its history.
type stepLife struct {
	attempt     int  // the attempt in flight or last ended
	dispatched  bool // attempt was dispatched and not released
	started     bool
	failed      bool // attempt failed
	completions int
	completedAt int // attempt that completed
	last        string
	deadLetters int
}

// checkHistory checks one task's replicated history: it starts with
// task.created, its sequences count from 1 and its ids increase in log
// order, each step's attempts go dispatched → (started) → completed or
// failed → retry or dead letter, in order, nothing happens to a step
// after it completed, exactly one event ends the task (task.completed
// last, or one task.failed), and the history agrees with the task's
// final state as the API reports it.
func checkHistory(inv *chaosInvariant, task *taskerv1.Task, evs []consensus.Event) {
	inv.Checked++
	id := task.GetId()
	if len(evs) == 0 {
		inv.violate("task %s: empty history", id)
		return
	}
	if evs[0].Type != consensus.EventTaskCreated {
		inv.violate("task %s: history begins with %s, want %s", id, evs[0].Type, consensus.EventTaskCreated)
	}
	lives := map[string]*stepLife{}
	ends := map[string]int{}
	var lastTaskEnd int
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			inv.violate("task %s: event %d has sequence %d", id, i+1, e.Seq)
		}
		if e.TaskID != id {
			inv.violate("task %s: event %s belongs to task %s", id, e.ID(), e.TaskID)
		}
		if i > 0 {
			p := evs[i-1]
			if e.Index < p.Index || e.Index == p.Index && e.Position <= p.Position {
				inv.violate("task %s: event %s (%s) follows %s (%s): ids out of log order", id, e.ID(), e.Type, p.ID(), p.Type)
			}
			// An entry's time is stamped when it is proposed, so two reports
			// proposed at once can commit in the other order: the history's
			// order is its ids', and times that go back are only noted.
			if e.At.Before(p.At) {
				inv.Notes = append(inv.Notes, fmt.Sprintf("task %s: event %s (%s) is stamped %s before %s (%s)", id, e.ID(), e.Type, p.At.Sub(e.At), p.ID(), p.Type))
			}
		}
		switch e.Type {
		case consensus.EventTaskCompleted, consensus.EventTaskFailed, consensus.EventTaskCancelled, consensus.EventTaskResolved:
			ends[e.Type]++
			lastTaskEnd = i
			continue
		}
		if e.Step == "" || !slices.Contains(attemptEvents, e.Type) {
			continue
		}
		l := lives[e.Step]
		if l == nil {
			l = &stepLife{}
			lives[e.Step] = l
		}
		where := fmt.Sprintf("task %s step %s: %s of attempt %d (event %s)", id, e.Step, e.Type, e.Attempt, e.ID())
		if l.completions > 0 {
			inv.violate("%s after the step completed (attempt %d)", where, l.completedAt)
		}
		switch e.Type {
		case consensus.EventStepDispatched:
			switch {
			case l.dispatched:
				inv.violate("%s while attempt %d is in flight", where, l.attempt)
			case e.Attempt < l.attempt || e.Attempt == l.attempt && l.last != consensus.EventStepReleased:
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			l.attempt, l.dispatched, l.started, l.failed = e.Attempt, true, false, false
		case consensus.EventStepStarted:
			if !l.dispatched || e.Attempt != l.attempt || l.started {
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			l.started = true
		case consensus.EventStepCompleted:
			if !l.dispatched || e.Attempt != l.attempt {
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			l.completions++
			l.completedAt = e.Attempt
			l.dispatched = false
		case consensus.EventStepFailed:
			if !l.dispatched || e.Attempt != l.attempt {
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			l.dispatched, l.failed = false, true
		case consensus.EventStepRetryScheduled, consensus.EventStepDeadLettered:
			if !l.failed || e.Attempt != l.attempt || l.last != consensus.EventStepFailed {
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			if e.Type == consensus.EventStepDeadLettered {
				l.deadLetters++
			}
		case consensus.EventStepReleased:
			if !l.dispatched || e.Attempt != l.attempt {
				inv.violate("%s after %s of attempt %d", where, l.last, l.attempt)
			}
			l.dispatched = false
		}
		l.last = e.Type
	}

	// Exactly one event ends the task, and it agrees with its state.
	total := 0
	for _, n := range ends {
		total += n
	}
	switch task.GetState() {
	case taskerv1.TaskState_TASK_STATE_COMPLETE:
		if total != 1 || ends[consensus.EventTaskCompleted] != 1 || lastTaskEnd != len(evs)-1 {
			inv.violate("task %s is complete; its history has task-ending events %v, the last at %d of %d events", id, ends, lastTaskEnd+1, len(evs))
		}
	case taskerv1.TaskState_TASK_STATE_ERROR:
		if total != 1 || ends[consensus.EventTaskFailed] != 1 {
			inv.violate("task %s is in error; its history has task-ending events %v", id, ends)
		}
	}

	// Each step's history agrees with its final state.
	for _, st := range task.GetSteps() {
		l := lives[st.GetName()]
		if l == nil {
			l = &stepLife{}
		}
		where := fmt.Sprintf("task %s step %s (%s, %d attempts)", id, st.GetName(), st.GetState(), st.GetAttempts())
		switch st.GetState() {
		case taskerv1.StepState_STEP_STATE_COMPLETE:
			if l.completions != 1 || l.completedAt != int(st.GetAttempts()) {
				inv.violate("%s: %d step.completed events, of attempt %d", where, l.completions, l.completedAt)
			}
		case taskerv1.StepState_STEP_STATE_ERROR:
			if l.last != consensus.EventStepDeadLettered || l.attempt != int(st.GetAttempts()) {
				inv.violate("%s: its last event is %s of attempt %d, want step.dead_lettered of its last attempt", where, l.last, l.attempt)
			}
		case taskerv1.StepState_STEP_STATE_PENDING:
			if l.dispatched {
				inv.violate("%s: attempt %d is dispatched in its history", where, l.attempt)
			}
		}
		if st.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE && l.completions > 0 {
			inv.violate("%s: its history has a step.completed", where)
		}
	}
}

// checkCompletedOnce checks that no step completed twice: at most one
// step.completed per step in its history (a completed step also has
// exactly one, checked with the history), and in the services' journal
// at most one successful execution per attempt, none of the completing
// attempt or a later one that began work after its step completed (an
// earlier, superseded attempt may, delivered late: a note), and the
// step's result is what the execution of its final attempt returned.
func checkCompletedOnce(r *chaosReport, execs map[stepKey][]execution) {
	inv := r.inv(invOnce)
	for id, evs := range r.histories {
		n := map[string]int{}
		for _, e := range evs {
			if e.Type == consensus.EventStepCompleted {
				n[e.Step]++
			}
		}
		for step, k := range n {
			if k > 1 {
				inv.violate("task %s step %s: %d step.completed events", id, step, k)
			}
		}
	}
	for id, task := range r.tasks {
		for _, st := range task.GetSteps() {
			inv.Checked++
			k := stepKey{id, st.GetName()}
			ok := map[int][]execution{}
			for _, e := range execs[k] {
				if e.Outcome == "ok" {
					ok[e.Attempt] = append(ok[e.Attempt], e)
				}
				if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE && e.didWork() && e.Time.After(st.GetEndedAt().AsTime()) {
					began, ended := e.Time.Format(time.RFC3339Nano), st.GetEndedAt().AsTime().Format(time.RFC3339Nano)
					if e.Attempt < int(st.GetAttempts()) {
						// At least once: a superseded attempt's delivery held up
						// in a partition may reach its app after a later attempt
						// completed the step; its report is refused as late.
						inv.Notes = append(inv.Notes, fmt.Sprintf("%s: superseded attempt %d, delivered late, began at %s, after attempt %d completed the step at %s",
							k, e.Attempt, began, st.GetAttempts(), ended))
						continue
					}
					inv.violate("%s: attempt %d began at %s, after the step completed at %s", k, e.Attempt, began, ended)
				}
			}
			for at, es := range ok {
				if len(es) > 1 {
					inv.violate("%s: attempt %d succeeded %d times: %s", k, at, len(es), describe(es))
				}
			}
			if st.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE {
				continue
			}
			final := ok[int(st.GetAttempts())]
			if len(final) == 0 || !sameJSON(final[0].Result, []byte(st.GetResultJson())) {
				inv.violate("%s: result %s (attempt %d) is not what an execution of that attempt returned: %s", k, st.GetResultJson(), st.GetAttempts(), describe(execs[k]))
			}
		}
	}
}

// checkDeadLetters checks the dead letters against the histories: each
// one listed is an open dead letter of a task in error whose step's last
// attempt failed (step.failed of that attempt, with the dead letter's
// code, then step.dead_lettered with its id) with no retry left (its
// attempts at the maximum, or its error not retryable); every
// step.dead_lettered of a history is listed; every task in error has one;
// and each order meant to fail for good failed on its step with its code,
// while the others failed only by running out of retries.
func checkDeadLetters(ctx context.Context, r *chaosReport, api *client.Client, orders []*chaosOrder) {
	inv := r.inv(invDeadLetter)
	for token := ""; ; {
		res, err := api.Service().ListDeadLetters(ctx, connect.NewRequest(&taskerv1.ListDeadLettersRequest{Namespace: "shop", PageSize: 1000, PageToken: token}))
		if err != nil {
			inv.violate("ListDeadLetters: %v", err)
			break
		}
		r.deadLetterL = append(r.deadLetterL, res.Msg.GetDeadLetters()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	r.deadLetters = len(r.deadLetterL)
	listed := map[string]*taskerv1.DeadLetter{}
	byTask := map[string][]*taskerv1.DeadLetter{}
	for _, dl := range r.deadLetterL {
		inv.Checked++
		listed[dl.GetId()] = dl
		byTask[dl.GetTaskId()] = append(byTask[dl.GetTaskId()], dl)
		what := fmt.Sprintf("dead letter %s (task %s step %s, attempt %d/%d, %s)", dl.GetId(), dl.GetTaskId(), dl.GetStep(), dl.GetAttempts(), dl.GetMaxAttempts(), dl.GetCode())
		task, ok := r.tasks[dl.GetTaskId()]
		if !ok {
			inv.violate("%s: not a task of the workload", what)
			continue
		}
		if dl.GetStatus() != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN || task.GetState() != taskerv1.TaskState_TASK_STATE_ERROR {
			inv.violate("%s: status %s, task %s; nobody replayed, resolved or cancelled it", what, dl.GetStatus(), task.GetState())
		}
		evs := r.histories[dl.GetTaskId()]
		i := slices.IndexFunc(evs, func(e consensus.Event) bool { return e.ID() == dl.GetId() })
		switch {
		case i < 0:
			inv.violate("%s: no event with its id in the task's history", what)
			continue
		case evs[i].Type != consensus.EventStepDeadLettered || evs[i].Step != dl.GetStep() || evs[i].Attempt != int(dl.GetAttempts()):
			inv.violate("%s: its event is %s of %s attempt %d", what, evs[i].Type, evs[i].Step, evs[i].Attempt)
			continue
		}
		j := slices.IndexFunc(evs[:i], func(e consensus.Event) bool {
			return e.Type == consensus.EventStepFailed && e.Step == dl.GetStep() && e.Attempt == int(dl.GetAttempts())
		})
		if j < 0 || evs[j].Code != dl.GetCode() {
			inv.violate("%s: no step.failed of that attempt with code %s before it", what, dl.GetCode())
		}
		st := stepOfTask(task, dl.GetStep())
		exhausted := dl.GetAttempts() >= dl.GetMaxAttempts()
		permanent := st != nil && st.GetLastError() != nil && st.GetLastError().GetAttempt() == dl.GetAttempts() && !st.GetLastError().GetRetryable()
		if !exhausted && !permanent {
			inv.violate("%s: retries were left and its error was retryable (%v)", what, st.GetLastError())
		}
	}
	for id, evs := range r.histories {
		for _, e := range evs {
			if e.Type == consensus.EventStepDeadLettered && listed[e.ID()] == nil {
				inv.violate("task %s step %s: step.dead_lettered %s is not listed by ListDeadLetters", id, e.Step, e.ID())
			}
		}
		if r.tasks[id].GetState() == taskerv1.TaskState_TASK_STATE_ERROR && len(byTask[id]) == 0 {
			inv.violate("task %s is in error without a dead letter", id)
		}
	}
	// What each order came to.
	for _, o := range orders {
		id := r.keys[o.key]
		task := r.tasks[id]
		if task == nil {
			continue
		}
		dls := byTask[id]
		if o.failStep != "" {
			if !slices.ContainsFunc(dls, func(dl *taskerv1.DeadLetter) bool { return dl.GetStep() == o.failStep && dl.GetCode() == o.failCode }) {
				inv.violate("order %s (task %s) should fail for good at %s with %s; it is %s with dead letters %s", o.key, id, o.failStep, o.failCode, task.GetState(), describeDeadLetters(dls))
			}
			continue
		}
		for _, dl := range dls {
			if dl.GetAttempts() < dl.GetMaxAttempts() {
				inv.violate("order %s (task %s) should fail only by running out of retries; dead letter %s", o.key, id, describeDeadLetters([]*taskerv1.DeadLetter{dl}))
			}
		}
	}
}

func stepOfTask(task *taskerv1.Task, name string) *taskerv1.Step {
	for _, st := range task.GetSteps() {
		if st.GetName() == name {
			return st
		}
	}
	return nil
}

func describeDeadLetters(dls []*taskerv1.DeadLetter) string {
	if len(dls) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(dls))
	for _, dl := range dls {
		parts = append(parts, fmt.Sprintf("{%s %s %d/%d %s}", dl.GetId(), dl.GetStep(), dl.GetAttempts(), dl.GetMaxAttempts(), dl.GetCode()))
	}
	return strings.Join(parts, " ")
}

// save writes the report, the tasks, their histories, the dead letters
// and the services' journal into a directory and returns it: under
// $TASKER_ARTIFACTS when set (always), else, for a failed run only, a
// new temporary directory.
func (r *chaosReport) save(t *testing.T) string {
	t.Helper()
	base := os.Getenv(artifactsEnv)
	if base == "" && !r.failedAny() {
		return ""
	}
	var dir string
	var err error
	if base != "" {
		dir = filepath.Join(base, fmt.Sprintf("TestChaos-%s-seed%d", time.Now().UTC().Format("20060102T150405"), r.seed))
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "tasker-chaos-")
	}
	if err != nil {
		t.Errorf("keep the chaos run's evidence: %v", err)
		return "(not saved)"
	}
	type event struct {
		ID      string    `json:"id"`
		Seq     uint64    `json:"seq"`
		Type    string    `json:"type"`
		Step    string    `json:"step,omitempty"`
		Attempt int       `json:"attempt,omitempty"`
		At      time.Time `json:"at"`
		Code    string    `json:"code,omitempty"`
		Message string    `json:"message,omitempty"`
	}
	type taskOut struct {
		Task    json.RawMessage `json:"task"`
		History []event         `json:"history"`
	}
	tasks := map[string]taskOut{}
	for id, task := range r.tasks {
		b, _ := protojson.Marshal(task)
		out := taskOut{Task: b}
		for _, e := range r.histories[id] {
			out.History = append(out.History, event{e.ID(), e.Seq, e.Type, e.Step, e.Attempt, e.At, e.Code, e.Message})
		}
		tasks[id] = out
	}
	var dls []json.RawMessage
	for _, dl := range r.deadLetterL {
		b, _ := protojson.Marshal(dl)
		dls = append(dls, b)
	}
	report := map[string]any{
		"seed": r.seed, "duration": r.duration.String(), "faults": r.faults, "fault_log": r.faultLog,
		"accepted": r.accepted, "completed": r.completed, "failed": r.failed, "dead_letters": r.deadLetters,
		"invariants": r.invariants, "keys": r.keys,
	}
	var errs []error
	for name, v := range map[string]any{"report.json": report, "tasks.json": tasks, "dead-letters.json": dls} {
		b, err := json.MarshalIndent(v, "", " ")
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
		errs = append(errs, err)
	}
	if b, err := os.ReadFile(r.journal); err == nil {
		errs = append(errs, os.WriteFile(filepath.Join(dir, "executions.jsonl"), b, 0o644))
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("write the chaos run's evidence: %v", err)
	}
	t.Logf("chaos: report, tasks with their histories, dead letters and the services' journal saved in %s", dir)
	return dir
}

// TestChaosChecks checks the chaos run's history check on small
// histories: a sound one passes, and each way a history can break what
// users rely on is caught, so a passing chaos run means something.
func TestChaosChecks(t *testing.T) {
	task := func(state taskerv1.TaskState, st taskerv1.StepState, attempts int32) *taskerv1.Task {
		return &taskerv1.Task{Id: "tsk_a", State: state, Steps: []*taskerv1.Step{{Name: "s", State: st, Attempts: attempts}}}
	}
	// history numbers events in log order, one log entry each.
	history := func(evs ...consensus.Event) []consensus.Event {
		at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
		for i := range evs {
			evs[i].Seq, evs[i].TaskID, evs[i].Index, evs[i].Position, evs[i].At = uint64(i+1), "tsk_a", uint64(10+i), 1, at.Add(time.Duration(i)*time.Millisecond)
		}
		return evs
	}
	ev := func(typ, step string, attempt int) consensus.Event {
		return consensus.Event{Type: typ, Step: step, Attempt: attempt}
	}
	created, done, failed := ev(consensus.EventTaskCreated, "", 0), ev(consensus.EventTaskCompleted, "", 0), ev(consensus.EventTaskFailed, "", 0)
	dispatched := func(a int) consensus.Event { return ev(consensus.EventStepDispatched, "s", a) }
	started := func(a int) consensus.Event { return ev(consensus.EventStepStarted, "s", a) }
	completed := func(a int) consensus.Event { return ev(consensus.EventStepCompleted, "s", a) }
	stepFailed := func(a int) consensus.Event { return ev(consensus.EventStepFailed, "s", a) }
	retry := func(a int) consensus.Event { return ev(consensus.EventStepRetryScheduled, "s", a) }
	dead := func(a int) consensus.Event { return ev(consensus.EventStepDeadLettered, "s", a) }
	complete := task(taskerv1.TaskState_TASK_STATE_COMPLETE, taskerv1.StepState_STEP_STATE_COMPLETE, 2)
	inError := task(taskerv1.TaskState_TASK_STATE_ERROR, taskerv1.StepState_STEP_STATE_ERROR, 1)
	swapped := history(created, dispatched(1), started(1), completed(1), done)
	swapped[2].Index, swapped[3].Index = swapped[3].Index, swapped[2].Index

	for _, tc := range []struct {
		name string
		task *taskerv1.Task
		evs  []consensus.Event
		ok   bool
	}{
		{"a retried step completes", complete, history(created, dispatched(1), started(1), stepFailed(1), retry(1), dispatched(2), started(2), completed(2), done), true},
		{"a released attempt is dispatched again", complete, history(created, dispatched(2), ev(consensus.EventStepReleased, "s", 2), dispatched(2), completed(2), done), true},
		{"a step fails for good", inError, history(created, dispatched(1), stepFailed(1), dead(1), failed), true},
		{"completed twice", complete, history(created, dispatched(1), completed(1), dispatched(2), completed(2), done), false},
		{"completed without a dispatch", complete, history(created, dispatched(1), stepFailed(1), retry(1), completed(2), done), false},
		{"ids out of log order", complete, swapped, false},
		{"no task.created first", complete, history(dispatched(1), stepFailed(1), retry(1), dispatched(2), completed(2), done), false},
		{"task.completed missing", complete, history(created, dispatched(1), stepFailed(1), retry(1), dispatched(2), completed(2)), false},
		{"an event after task.completed", complete, history(created, dispatched(1), stepFailed(1), retry(1), dispatched(2), completed(2), done, started(2)), false},
		{"a dead letter without the failure", inError, history(created, dispatched(1), dead(1), failed), false},
		{"in error, its failure not dead-lettered", inError, history(created, dispatched(1), stepFailed(1), failed), false},
		{"dispatched while in flight", complete, history(created, dispatched(1), dispatched(2), completed(2), done), false},
	} {
		inv := &chaosInvariant{}
		checkHistory(inv, tc.task, tc.evs)
		if ok := len(inv.Violations) == 0; ok != tc.ok {
			t.Errorf("%s: checkHistory found %q, want ok=%v", tc.name, inv.Violations, tc.ok)
		}
	}

	// The journal: an attempt that succeeded twice is caught.
	endedAt := time.Date(2026, 11, 30, 3, 9, 23, 0, time.UTC)
	tasks := map[string]*taskerv1.Task{
		"tsk_a": {Id: "tsk_a", State: taskerv1.TaskState_TASK_STATE_COMPLETE,
			Steps: []*taskerv1.Step{{Name: "s", State: taskerv1.StepState_STEP_STATE_COMPLETE, Attempts: 1, ResultJson: `{"x":1}`, EndedAt: timestamppb.New(endedAt)}}},
		"tsk_b": {Id: "tsk_b", State: taskerv1.TaskState_TASK_STATE_COMPLETE,
			Steps: []*taskerv1.Step{{Name: "s", State: taskerv1.StepState_STEP_STATE_COMPLETE, Attempts: 2, ResultJson: `{"x":1}`, EndedAt: timestamppb.New(endedAt)}}},
	}
	ok := execution{TaskID: "tsk_a", Step: "s", Attempt: 1, Outcome: "ok", Result: json.RawMessage(`{"x":1}`), Time: endedAt.Add(-time.Second)}
	// tsk_b: attempt 2 completed the step; late(n) is an attempt n that
	// began work after that.
	ok2 := execution{TaskID: "tsk_b", Step: "s", Attempt: 2, Outcome: "ok", Result: json.RawMessage(`{"x":1}`), Time: endedAt.Add(-time.Second)}
	late := func(attempt int) execution {
		return execution{TaskID: "tsk_b", Step: "s", Attempt: attempt, Outcome: "gateway_unavailable", Time: endedAt.Add(time.Second)}
	}
	for _, tc := range []struct {
		name  string
		execs []execution
		ok    bool
	}{
		{"one execution", []execution{ok}, true},
		{"the attempt succeeded twice", []execution{ok, ok}, false},
		{"a superseded attempt delivered late", []execution{ok2, late(1)}, true},
		{"the completing attempt began after completion", []execution{ok2, late(2)}, false},
		{"a new attempt after completion", []execution{ok2, late(3)}, false},
		{"another result", []execution{{TaskID: "tsk_a", Step: "s", Attempt: 1, Outcome: "ok", Result: json.RawMessage(`{"x":2}`)}}, false},
	} {
		id := tc.execs[0].TaskID
		r := &chaosReport{tasks: map[string]*taskerv1.Task{id: tasks[id]}}
		checkCompletedOnce(r, map[stepKey][]execution{{id, "s"}: tc.execs})
		if got := r.inv(invOnce).Violations; (len(got) == 0) != tc.ok {
			t.Errorf("%s: checkCompletedOnce found %q, want ok=%v", tc.name, got, tc.ok)
		}
	}
}
