package consensus

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// failAndWait fails an attempt and, when it is retried, moves the clock
// to the retry so the next dispatch is allowed.
func (h *harness) failAndWait(id, step string, attempt int32, code string) {
	h.t.Helper()
	if r := h.ok(failCmd(id, step, attempt, code, true)); r.Retry {
		h.now = r.RetryAt
	}
}

func startCmd(id, step string, attempt int32) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_StartStep{StartStep: &fsmv1.StartStep{TaskId: id, Step: step, Attempt: attempt, Worker: "w1"}}}
}

func releaseCmd(id, step string, attempt int32) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_ReleaseStep{ReleaseStep: &fsmv1.ReleaseStep{TaskId: id, Step: step, Attempt: attempt, Reason: "drain"}}}
}

// historyHarness is a harness with the order workflow and task t1, its
// validate step completed.
func historyHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(dispatch("t1", "validate", 1))
	h.ok(complete("t1", "validate", 1, results["validate"]))
	return h
}

// rec is the part of a record the scenarios check.
type rec struct {
	step       string
	attempt    int
	outcome    string
	code       string
	resolution string
}

// records returns the history, oldest first, as recs.
func records(s *State) []rec {
	all := s.Attempts(HistoryFilter{Limit: MaxHistoryLimit})
	out := make([]rec, len(all))
	for i, r := range all {
		out[len(all)-1-i] = rec{r.Step, r.Attempt, r.Outcome, r.Code, r.Resolution}
	}
	return out
}

var validated = rec{"validate", 1, OutcomeCompleted, "", ""}

func TestHistoryOutcomesAndResolutions(t *testing.T) {
	tests := []struct {
		name string
		run  func(h *harness)
		want []rec
	}{
		{
			name: "fails twice, then succeeds",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
				h.ok(dispatch("t1", "charge", 2))
				h.failAndWait("t1", "charge", 2, workflow.CodeTimeout)
				h.ok(dispatch("t1", "charge", 3))
				h.ok(complete("t1", "charge", 3, results["charge"]))
			},
			want: []rec{validated,
				{"charge", 1, OutcomeFailed, "gateway_unavailable", ResolutionRetrySucceeded},
				{"charge", 2, OutcomeTimedOut, workflow.CodeTimeout, ResolutionRetrySucceeded},
				{"charge", 3, OutcomeCompleted, "", ""}},
		},
		{
			name: "a retry pending is unresolved",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
			},
			want: []rec{validated, {"charge", 1, OutcomeFailed, "gateway_unavailable", ""}},
		},
		{
			name: "permanent failure",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
				h.ok(dispatch("t1", "charge", 2))
				h.failAndWait("t1", "charge", 2, "card_declined")
			},
			want: []rec{validated,
				{"charge", 1, OutcomeFailed, "gateway_unavailable", ResolutionDeadLettered},
				{"charge", 2, OutcomeFailed, "card_declined", ResolutionDeadLettered}},
		},
		{
			name: "attempts exhausted",
			run: func(h *harness) {
				for a := int32(1); a <= 3; a++ {
					h.ok(dispatch("t1", "reserve", a))
					h.failAndWait("t1", "reserve", a, "warehouse_unavailable")
				}
			},
			want: []rec{validated,
				{"reserve", 1, OutcomeFailed, "warehouse_unavailable", ResolutionDeadLettered},
				{"reserve", 2, OutcomeFailed, "warehouse_unavailable", ResolutionDeadLettered},
				{"reserve", 3, OutcomeFailed, "warehouse_unavailable", ResolutionDeadLettered}},
		},
		{
			name: "resolved manually",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "card_declined")
				h.ok(resolveCmd("t1", "charge", results["charge"]))
			},
			want: []rec{validated, {"charge", 1, OutcomeFailed, "card_declined", ResolutionResolvedManually}},
		},
		{
			name: "resolved manually while a retry waits",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
				h.ok(resolveCmd("t1", "charge", results["charge"]))
			},
			want: []rec{validated, {"charge", 1, OutcomeFailed, "gateway_unavailable", ResolutionResolvedManually}},
		},
		{
			name: "retried manually, then the new round succeeds",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "card_declined")
				h.ok(retryCmd("t1", "charge", "card updated"))
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
				h.ok(dispatch("t1", "charge", 2))
				h.ok(complete("t1", "charge", 2, results["charge"]))
			},
			want: []rec{validated,
				{"charge", 1, OutcomeFailed, "card_declined", ResolutionRetriedManually},
				{"charge", 1, OutcomeFailed, "gateway_unavailable", ResolutionRetrySucceeded},
				{"charge", 2, OutcomeCompleted, "", ""}},
		},
		{
			name: "retried manually, then dead-lettered again",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "card_declined")
				h.ok(retryCmd("t1", "charge", "card updated"))
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "insufficient_funds")
			},
			want: []rec{validated,
				{"charge", 1, OutcomeFailed, "card_declined", ResolutionRetriedManually},
				{"charge", 1, OutcomeFailed, "insufficient_funds", ResolutionDeadLettered}},
		},
		{
			name: "cancelled: running attempts end, failures settle",
			run: func(h *harness) {
				h.ok(dispatch("t1", "reserve", 1))
				h.failAndWait("t1", "reserve", 1, "warehouse_unavailable")
				h.ok(dispatch("t1", "charge", 1))
				h.ok(startCmd("t1", "charge", 1))
				h.ok(cancelCmd("t1"))
			},
			want: []rec{validated,
				{"reserve", 1, OutcomeFailed, "warehouse_unavailable", ResolutionCancelled},
				{"charge", 1, OutcomeCancelled, "", ""}},
		},
		{
			name: "cancelled after a dead letter",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "card_declined")
				h.ok(cancelCmd("t1"))
			},
			want: []rec{validated, {"charge", 1, OutcomeFailed, "card_declined", ResolutionCancelled}},
		},
		{
			name: "cancelled with nothing in flight adds no record",
			run:  func(h *harness) { h.ok(cancelCmd("t1")) },
			want: []rec{validated},
		},
		{
			name: "released, dispatched again under the same number",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.ok(releaseCmd("t1", "charge", 1))
				h.ok(dispatch("t1", "charge", 1))
				h.ok(complete("t1", "charge", 1, results["charge"]))
			},
			want: []rec{validated,
				{"charge", 1, OutcomeReleased, "", ""},
				{"charge", 1, OutcomeCompleted, "", ""}},
		},
		{
			name: "refused and stale reports add nothing",
			run: func(h *harness) {
				h.ok(dispatch("t1", "charge", 1))
				h.failAndWait("t1", "charge", 1, "gateway_unavailable")
				h.ok(dispatch("t1", "charge", 2))
				if r := h.do(complete("t1", "charge", 1, results["charge"])); !errors.Is(r.Err, ErrStaleAttempt) {
					h.t.Fatalf("stale completion: %v", r.Err)
				}
				if r := h.do(complete("t1", "charge", 2, `{"charge_id":1}`)); !errors.Is(r.Err, ErrInvalid) {
					h.t.Fatalf("invalid result: %v", r.Err)
				}
			},
			want: []rec{validated, {"charge", 1, OutcomeFailed, "gateway_unavailable", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := historyHarness(t)
			tt.run(h)
			if got := records(h.fsm.State()); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("records\n got %v\nwant %v", got, tt.want)
			}
			// A restored copy holds the same and settles the same.
			r := restoreCopy(t, h.fsm)
			if got := records(r.State()); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("restored records\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestHistoryRecordFields: a record has the step's timings and holder as
// the attempt ended, the step's policy, and when it was settled.
func TestHistoryRecordFields(t *testing.T) {
	h := historyHarness(t)
	readyAt := h.now // validate's completion made charge ready
	h.ok(dispatch("t1", "charge", 1))
	dispatchedAt := h.now
	h.ok(startCmd("t1", "charge", 1))
	startedAt := h.now
	long := strings.Repeat("é", MaxHistoryText) // 2 bytes each
	f := failCmd("t1", "charge", 1, "gateway_unavailable", true)
	f.GetFailStep().Message = long
	f.GetFailStep().DetailsJson = `{"gateway":"` + strings.Repeat("x", 2*MaxHistoryText) + `"}`
	r := h.ok(f)
	failedAt := h.now
	h.now = r.RetryAt
	h.ok(dispatch("t1", "charge", 2))
	h.ok(complete("t1", "charge", 2, results["charge"]))
	completedAt := h.now

	got := h.fsm.State().Attempts(HistoryFilter{Step: "charge"})
	if len(got) != 2 {
		t.Fatalf("%d records, want 2", len(got))
	}
	failed := got[1]
	want := AttemptRecord{
		Seq: 2, TaskID: "t1", Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", Step: "charge",
		Capability: "payments.charge", Attempt: 1, ReadyAt: readyAt, DispatchedAt: dispatchedAt, StartedAt: startedAt, EndedAt: failedAt,
		Agent: "a1", Worker: "w1", Outcome: OutcomeFailed, Code: "gateway_unavailable", Message: failed.Message, Retryable: true,
		DetailsJSON: failed.DetailsJSON, Timeout: 20 * time.Second, MaxAttempts: 5,
		Resolution: ResolutionRetrySucceeded, ResolvedAt: completedAt,
	}
	if !reflect.DeepEqual(failed, want) {
		t.Fatalf("failed attempt\n got %+v\nwant %+v", failed, want)
	}
	if len(failed.Message) > MaxHistoryText || !utf8.ValidString(failed.Message) || !strings.HasPrefix(long, failed.Message) || len(failed.Message) < MaxHistoryText-1 {
		t.Fatalf("message of %d bytes (valid UTF-8: %v), want the first %d bytes at most", len(failed.Message), utf8.ValidString(failed.Message), MaxHistoryText)
	}
	if len(failed.DetailsJSON) != MaxHistoryText {
		t.Fatalf("details of %d bytes, want %d", len(failed.DetailsJSON), MaxHistoryText)
	}
	v, _ := h.fsm.State().Task("t1")
	if v.Steps[2].LastError.Message != long {
		t.Fatal("the step's last error lost its whole message")
	}
	done := got[0]
	if done.Seq != 3 || done.Attempt != 2 || done.Outcome != OutcomeCompleted || !done.EndedAt.Equal(completedAt) || !done.StartedAt.IsZero() || done.Resolution != "" {
		t.Fatalf("completed attempt %+v", done)
	}
}

// TestHistoryRetention: the oldest records go by count and by age, judged
// by the commands' times, and failures pruned while unsettled are no
// trouble when their step settles.
func TestHistoryRetention(t *testing.T) {
	tests := []struct {
		name      string
		retention HistoryRetention
		run       func(h *harness)
		wantSeqs  []uint64 // oldest first
		wantRecs  []rec
	}{
		{
			name:      "by count",
			retention: HistoryRetention{MaxRecords: 2},
			run:       func(h *harness) { h.runToCompletion("t1") },
			wantSeqs:  []uint64{4, 5},
			wantRecs:  []rec{{"ship", 1, OutcomeCompleted, "", ""}, {"notify", 1, OutcomeCompleted, "", ""}},
		},
		{
			name:      "by age",
			retention: HistoryRetention{MaxAge: time.Hour},
			run: func(h *harness) {
				h.ok(dispatch("t1", "validate", 1))
				h.ok(complete("t1", "validate", 1, results["validate"]))
				h.ok(dispatch("t1", "charge", 1))
				h.ok(complete("t1", "charge", 1, results["charge"]))
				h.now = h.now.Add(time.Hour - 15*time.Millisecond) // charge ended 5 ms inside the hour
				h.ok(dispatch("t1", "reserve", 1))
				h.ok(complete("t1", "reserve", 1, results["reserve"]))
				h.now = h.now.Add(time.Hour)
				h.ok(dispatch("t1", "ship", 1))
				h.ok(complete("t1", "ship", 1, results["ship"]))
			},
			wantSeqs: []uint64{4},
			wantRecs: []rec{{"ship", 1, OutcomeCompleted, "", ""}},
		},
		{
			name:      "by age, the edge",
			retention: HistoryRetention{MaxAge: time.Hour},
			run: func(h *harness) {
				h.ok(dispatch("t1", "validate", 1))
				h.ok(complete("t1", "validate", 1, results["validate"]))
				h.now = h.now.Add(time.Hour - 20*time.Millisecond) // the next completion is exactly an hour later
				h.ok(dispatch("t1", "charge", 1))
				h.ok(complete("t1", "charge", 1, results["charge"]))
			},
			wantSeqs: []uint64{1, 2},
			wantRecs: []rec{validated, {"charge", 1, OutcomeCompleted, "", ""}},
		},
		{
			name:      "unsettled failures pruned",
			retention: HistoryRetention{MaxRecords: 2},
			run: func(h *harness) {
				h.ok(dispatch("t1", "validate", 1))
				h.ok(complete("t1", "validate", 1, results["validate"]))
				for a := int32(1); a <= 3; a++ {
					h.ok(dispatch("t1", "charge", a))
					h.failAndWait("t1", "charge", a, "gateway_unavailable")
				}
				h.ok(dispatch("t1", "charge", 4))
				h.ok(complete("t1", "charge", 4, results["charge"]))
			},
			wantSeqs: []uint64{4, 5},
			wantRecs: []rec{{"charge", 3, OutcomeFailed, "gateway_unavailable", ResolutionRetrySucceeded}, {"charge", 4, OutcomeCompleted, "", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Two replicas with the same retention, given the same commands.
			var states []*State
			for range 2 {
				h := newHarness(t)
				h.fsm.State().SetHistoryRetention(tt.retention)
				h.ok(put(manifest(t)))
				h.ok(create("t1", "", orderInput))
				tt.run(h)
				states = append(states, h.fsm.State())
			}
			s := states[0]
			all := s.Attempts(HistoryFilter{})
			var seqs []uint64
			for i := len(all) - 1; i >= 0; i-- {
				seqs = append(seqs, all[i].Seq)
			}
			if !reflect.DeepEqual(seqs, tt.wantSeqs) || !reflect.DeepEqual(records(s), tt.wantRecs) {
				t.Fatalf("kept %v %v, want %v %v", seqs, records(s), tt.wantSeqs, tt.wantRecs)
			}
			n, oldest := s.HistoryStats()
			if n != len(all) || !oldest.Equal(all[len(all)-1].EndedAt) {
				t.Fatalf("HistoryStats = %d, %v; want %d, %v", n, oldest, len(all), all[len(all)-1].EndedAt)
			}
			if other := states[1].Attempts(HistoryFilter{}); !reflect.DeepEqual(all, other) {
				t.Fatal("two replicas hold different histories")
			}
			if len(s.history.open) > 1 {
				t.Fatalf("%d steps with unsettled failures indexed, want at most 1", len(s.history.open))
			}
		})
	}
}

// TestHistoryRetentionDefaults: zero fields take the defaults.
func TestHistoryRetentionDefaults(t *testing.T) {
	s := NewState(workflow.Limits{})
	if got := s.HistoryRetention(); got != DefaultHistoryRetention() || got != (HistoryRetention{100000, 7 * 24 * time.Hour}) {
		t.Fatalf("default retention %+v", got)
	}
	s.SetHistoryRetention(HistoryRetention{MaxAge: time.Minute})
	if got := s.HistoryRetention(); got != (HistoryRetention{DefaultHistoryMaxRecords, time.Minute}) {
		t.Fatalf("retention %+v", got)
	}
	if n, oldest := s.HistoryStats(); n != 0 || !oldest.IsZero() {
		t.Fatalf("empty history: %d, %v", n, oldest)
	}
}

func TestHistoryFilters(t *testing.T) {
	h := historyHarness(t)
	h.ok(dispatch("t1", "charge", 1))
	r := h.ok(failCmd("t1", "charge", 1, "gateway_unavailable", true))
	mid := h.now // when charge's first attempt failed
	h.now = r.RetryAt
	h.ok(dispatch("t1", "charge", 2))
	h.ok(complete("t1", "charge", 2, results["charge"]))
	h.ok(create("t2", "", orderInput))
	h.runToCompletion("t2")
	s := h.fsm.State()
	// t1: validate, charge (failed), charge; t2: its 5 steps. 8 records.
	tests := []struct {
		name string
		f    HistoryFilter
		want []uint64 // seqs, newest first
	}{
		{"all", HistoryFilter{}, []uint64{8, 7, 6, 5, 4, 3, 2, 1}},
		{"limit", HistoryFilter{Limit: 3}, []uint64{8, 7, 6}},
		{"task", HistoryFilter{TaskID: "t1"}, []uint64{3, 2, 1}},
		{"workflow", HistoryFilter{Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", Limit: 2}, []uint64{8, 7}},
		{"another workflow", HistoryFilter{Workflow: "returns"}, nil},
		{"another namespace", HistoryFilter{Namespace: "default"}, nil},
		{"another version", HistoryFilter{Version: "2.0.0"}, nil},
		{"step", HistoryFilter{Step: "charge"}, []uint64{6, 3, 2}},
		{"capability", HistoryFilter{Capability: "payments.charge", TaskID: "t1"}, []uint64{3, 2}},
		{"outcome", HistoryFilter{Outcome: OutcomeFailed}, []uint64{2}},
		{"unknown outcome", HistoryFilter{Outcome: "exploded"}, nil},
		{"since", HistoryFilter{Since: mid}, []uint64{8, 7, 6, 5, 4, 3, 2}},
		{"until", HistoryFilter{Until: mid}, []uint64{1}},
		{"window", HistoryFilter{Since: mid, Until: mid.Add(time.Nanosecond)}, []uint64{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			for _, r := range s.Attempts(tt.f) {
				got = append(got, r.Seq)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Attempts(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}

// TestHistoryLimitCap: at most MaxHistoryLimit records, whatever is asked.
func TestHistoryLimitCap(t *testing.T) {
	s := NewState(workflow.Limits{})
	h := &harness{t: t, now: t0}
	h.fsm = NewFSM(s, nil, nil)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	s.mu.Lock()
	tk := s.tasks["t1"]
	for range MaxHistoryLimit + 5 {
		s.recordAttempt(tk, 0, outCompleted, nil, h.now)
	}
	s.mu.Unlock()
	for _, tt := range []struct{ limit, want int }{{0, DefaultHistoryLimit}, {-1, DefaultHistoryLimit}, {20000, MaxHistoryLimit}, {7, 7}} {
		if got := len(s.Attempts(HistoryFilter{Limit: tt.limit})); got != tt.want {
			t.Errorf("Limit %d: %d records, want %d", tt.limit, got, tt.want)
		}
	}
}

// TestHistorySnapshot: records survive snapshot and restore, with their
// numbering and what is still to settle; a snapshot from before the
// history restores with none; the restoring server keeps its retention.
func TestHistorySnapshot(t *testing.T) {
	h := historyHarness(t)
	h.ok(dispatch("t1", "charge", 1))
	h.failAndWait("t1", "charge", 1, "gateway_unavailable")
	h.ok(dispatch("t1", "reserve", 1))
	h.ok(releaseCmd("t1", "reserve", 1))
	h.ok(create("t2", "", orderInput))
	h.ok(dispatch("t2", "validate", 1))
	h.failAndWait("t2", "validate", 1, "boom")
	h.ok(cancelCmd("t2"))

	data := mustEncode(t, h.fsm)
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	restored.State().SetHistoryRetention(HistoryRetention{MaxRecords: 50})
	if err := restored.Restore(nopCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	a, b := h.fsm.State(), restored.State()
	if got, want := b.Attempts(HistoryFilter{}), a.Attempts(HistoryFilter{}); !reflect.DeepEqual(got, want) || len(got) != 4 {
		t.Fatalf("restored records\n got %+v\nwant %+v", got, want)
	}
	if b.HistoryRetention().MaxRecords != 50 {
		t.Fatal("restoring took the retention from the snapshot")
	}
	// Both go on alike: charge's failure settles, numbering continues.
	for _, s := range []*State{a, b} {
		hh := &harness{t: t, now: h.now, fsm: NewFSM(s, nil, nil)}
		hh.ok(dispatch("t1", "charge", 2))
		hh.ok(complete("t1", "charge", 2, results["charge"]))
	}
	if got, want := b.Attempts(HistoryFilter{}), a.Attempts(HistoryFilter{}); !reflect.DeepEqual(got, want) || got[0].Seq != 5 || got[len(got)-2].Resolution != ResolutionRetrySucceeded {
		t.Fatalf("after restore\n got %+v\nwant %+v", got, want)
	}

	// A snapshot written before the history: no attempt records, no count.
	var old bytes.Buffer
	r := bufio.NewReader(bytes.NewReader(data))
	for i := 0; ; i++ {
		if i == 0 {
			hdr := &fsmv1.SnapshotHeader{}
			if err := protodelim.UnmarshalFrom(r, hdr); err != nil {
				t.Fatal(err)
			}
			hdr.Attempts = 0
			if _, err := protodelim.MarshalTo(&old, hdr); err != nil {
				t.Fatal(err)
			}
			continue
		}
		rec := &fsmv1.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(r, rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.GetAttempt() != nil {
			continue
		}
		if _, err := protodelim.MarshalTo(&old, rec); err != nil {
			t.Fatal(err)
		}
	}
	fromOld := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := fromOld.Restore(nopCloser{bytes.NewReader(old.Bytes())}); err != nil {
		t.Fatalf("a snapshot without history: %v", err)
	}
	if n, _ := fromOld.State().HistoryStats(); n != 0 {
		t.Fatalf("%d records from a snapshot without history", n)
	}
	if _, err := fromOld.State().Task("t1"); err != nil {
		t.Fatal(err)
	}
}

// TestHistorySnapshotRefusesBadRecords: a record count that disagrees
// with the header, a gap in the numbering or an unknown outcome is refused.
func TestHistorySnapshotRefusesBadRecords(t *testing.T) {
	h := historyHarness(t)
	h.ok(dispatch("t1", "charge", 1))
	h.ok(complete("t1", "charge", 1, results["charge"]))
	recs := snapshotRecords(t, mustEncode(t, h.fsm))
	tests := []struct {
		name   string
		change func(hdr *fsmv1.SnapshotHeader, atts []*fsmv1.AttemptRecord)
		err    string
	}{
		{"count", func(hdr *fsmv1.SnapshotHeader, _ []*fsmv1.AttemptRecord) { hdr.Attempts = 3 }, "2 attempt records, header says"},
		{"gap", func(_ *fsmv1.SnapshotHeader, atts []*fsmv1.AttemptRecord) { atts[1].Seq = 5 }, "sequence 5 out of order (expected 2)"},
		{"outcome", func(_ *fsmv1.SnapshotHeader, atts []*fsmv1.AttemptRecord) { atts[0].Outcome = "exploded" }, `unknown outcome "exploded"`},
		{"resolution", func(_ *fsmv1.SnapshotHeader, atts []*fsmv1.AttemptRecord) { atts[0].Resolution = "forgiven" }, `unknown resolution "forgiven"`},
		{"step", func(_ *fsmv1.SnapshotHeader, atts []*fsmv1.AttemptRecord) { atts[0].Step = "teleport" }, `step "teleport"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			var atts []*fsmv1.AttemptRecord
			var msgs []*fsmv1.SnapshotRecord
			hdr := proto.Clone(recs[0]).(*fsmv1.SnapshotHeader)
			for _, m := range recs[1:] {
				rec := proto.Clone(m).(*fsmv1.SnapshotRecord)
				if a := rec.GetAttempt(); a != nil {
					atts = append(atts, a)
				}
				msgs = append(msgs, rec)
			}
			tt.change(hdr, atts)
			if _, err := protodelim.MarshalTo(&buf, hdr); err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if _, err := protodelim.MarshalTo(&buf, m); err != nil {
					t.Fatal(err)
				}
			}
			err := NewFSM(NewState(workflow.Limits{}), nil, nil).Restore(nopCloser{bytes.NewReader(buf.Bytes())})
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Restore: %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

// historyState is a state with one task, to append records to directly.
func historyState(tb testing.TB, r HistoryRetention) (*State, *taskRec) {
	tb.Helper()
	s := NewState(workflow.Limits{})
	s.SetHistoryRetention(r)
	f := NewFSM(s, nil, nil)
	m, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range []*fsmv1.Command{put(string(m)), create("t1", "", orderInput)} {
		c.Now = ts(t0)
		if res := f.ApplyCommand(c); res.Err != nil {
			tb.Fatal(res.Err)
		}
	}
	return s, s.tasks["t1"]
}

// TestHistoryBytesPerRecord measures the heap a full history holds per
// record: failures that share their message with the command, as most do.
func TestHistoryBytesPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100,000 records")
	}
	perRecord := measureBytesPerRecord(t, 100_000)
	t.Logf("%.0f bytes per record", perRecord)
	if perRecord > 200 {
		t.Fatalf("%.0f bytes per record, want at most 200", perRecord)
	}
}

func measureBytesPerRecord(tb testing.TB, n int) float64 {
	s, tk := historyState(tb, HistoryRetention{MaxRecords: n})
	e := &StepError{Code: "gateway_unavailable", Message: "the gateway did not answer", Retryable: true, Attempt: 1}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		s.recordAttempt(tk, i%tk.ver.plan.Len(), outFailed, e, t0.Add(time.Duration(i)*time.Millisecond))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s.history.n != n {
		tb.Fatalf("%d records, want %d", s.history.n, n)
	}
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkHistoryAppend is one record appended to a full history of
// 100,000: pruning the oldest included.
func BenchmarkHistoryAppend(b *testing.B) {
	const n = 100_000
	s, tk := historyState(b, HistoryRetention{MaxRecords: n})
	e := &StepError{Code: "gateway_unavailable", Message: "the gateway did not answer", Retryable: true, Attempt: 1}
	now := t0
	for i := range n {
		s.recordAttempt(tk, i%5, outCompleted, nil, now)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		now = now.Add(time.Millisecond)
		if i%4 == 0 {
			s.recordAttempt(tk, i%5, outFailed, e, now)
			s.history.settle(tk.id, i%5, resRetrySucceeded, now)
		} else {
			s.recordAttempt(tk, i%5, outCompleted, nil, now)
		}
	}
	b.StopTimer()
	b.ReportMetric(measureBytesPerRecord(b, n), "B/record")
}
