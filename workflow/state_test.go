package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// TestStepTransitions walks every (state, event) pair against the legal
// transitions written out independently here, from the design: pending →
// enqueued → in_progress → complete; in progress → error (retried from
// error); pending|error → resolved_manually; any non-terminal → cancelled;
// in-flight steps can be released without spending an attempt.
func TestStepTransitions(t *testing.T) {
	legal := map[[2]string]string{
		{"pending", "dispatch"}:    "enqueued",
		{"pending", "resolve"}:     "resolved_manually",
		{"pending", "cancel"}:      "cancelled",
		{"enqueued", "start"}:      "in_progress",
		{"enqueued", "succeed"}:    "complete", // push mode: the result arrives without a start
		{"enqueued", "fail"}:       "error",
		{"enqueued", "release"}:    "pending",
		{"enqueued", "cancel"}:     "cancelled",
		{"in_progress", "succeed"}: "complete",
		{"in_progress", "fail"}:    "error",
		{"in_progress", "release"}: "pending",
		{"in_progress", "cancel"}:  "cancelled",
		{"error", "dispatch"}:      "enqueued",
		{"error", "retry"}:         "pending",
		{"error", "resolve"}:       "resolved_manually",
		{"error", "cancel"}:        "cancelled",
	}
	n := 0
	for s := StepState(0); s < numStepStates; s++ {
		for ev := StepEvent(0); ev < numStepEvents; ev++ {
			n++
			t.Run(fmt.Sprintf("%s/%s", s, ev), func(t *testing.T) {
				got, err := NextStep(s, ev)
				want, ok := legal[[2]string{s.String(), ev.String()}]
				if !ok {
					var te *TransitionError
					if !errors.As(err, &te) {
						t.Fatalf("NextStep(%s, %s) = %s, %v; want a TransitionError", s, ev, got, err)
					}
					if got != s {
						t.Fatalf("an illegal transition changed the state to %s", got)
					}
					return
				}
				if err != nil || got.String() != want {
					t.Fatalf("NextStep(%s, %s) = %s, %v; want %s", s, ev, got, err, want)
				}
			})
		}
	}
	if n != 7*8 {
		t.Fatalf("walked %d pairs; the design has 7 states and 8 events", n)
	}
	for s := StepState(0); s < numStepStates; s++ {
		if s.Terminal() {
			for ev := StepEvent(0); ev < numStepEvents; ev++ {
				if _, err := NextStep(s, ev); err == nil {
					t.Errorf("terminal state %s accepts %s", s, ev)
				}
			}
		}
	}
	if _, err := NextStep(numStepStates, EvCancel); err == nil {
		t.Error("an out-of-range state was accepted")
	}
	if _, err := NextStep(StepPending, numStepEvents); err == nil {
		t.Error("an out-of-range event was accepted")
	}
}

func TestTaskTransitions(t *testing.T) {
	legal := map[[2]string]string{
		{"pending", "start"}:                "in_progress",
		{"pending", "cancel"}:               "cancelled",
		{"in_progress", "succeed"}:          "complete",
		{"in_progress", "succeed_manually"}: "resolved_manually",
		{"in_progress", "block"}:            "error",
		{"in_progress", "cancel"}:           "cancelled",
		{"error", "succeed_manually"}:       "resolved_manually",
		{"error", "resume"}:                 "in_progress",
		{"error", "cancel"}:                 "cancelled",
	}
	for s := TaskState(0); s < numTaskStates; s++ {
		for ev := TaskEvent(0); ev < numTaskEvents; ev++ {
			t.Run(fmt.Sprintf("%s/%s", s, ev), func(t *testing.T) {
				got, err := NextTask(s, ev)
				want, ok := legal[[2]string{s.String(), ev.String()}]
				if !ok {
					var te *TransitionError
					if !errors.As(err, &te) || got != s {
						t.Fatalf("NextTask(%s, %s) = %s, %v; want a TransitionError and no change", s, ev, got, err)
					}
					return
				}
				if err != nil || got.String() != want {
					t.Fatalf("NextTask(%s, %s) = %s, %v; want %s", s, ev, got, err, want)
				}
			})
		}
	}
}

func TestStateNamesRoundTrip(t *testing.T) {
	for s := StepState(0); s < numStepStates; s++ {
		got, err := ParseStepState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseStepState(%q) = %v, %v", s.String(), got, err)
		}
	}
	for s := TaskState(0); s < numTaskStates; s++ {
		got, err := ParseTaskState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseTaskState(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseStepState("done"); err == nil {
		t.Error(`ParseStepState("done") succeeded`)
	}
	if _, err := ParseTaskState(""); err == nil {
		t.Error(`ParseTaskState("") succeeded`)
	}
}

func TestStatesMarshalAsNames(t *testing.T) {
	b, err := json.Marshal(struct {
		Step StepState
		Task TaskState
	}{StepInProgress, TaskResolvedManually})
	if err != nil || string(b) != `{"Step":"in_progress","Task":"resolved_manually"}` {
		t.Fatalf("got %s, %v", b, err)
	}
	var back struct {
		Step StepState
		Task TaskState
	}
	if err := json.Unmarshal(b, &back); err != nil || back.Step != StepInProgress || back.Task != TaskResolvedManually {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"Step":"finished"}`), &back); err == nil {
		t.Fatal("an unknown state name was accepted")
	}
}
