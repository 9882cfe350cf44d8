package main

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// clusterEvents is a short story: a task's step fails and is retried, a
// breaker opens, an agent fails.
func clusterEvents() []*taskerv1.WatchEventsResponse {
	ev := func(id string, seq uint64, typ string, n int, task, payload string) *taskerv1.WatchEventsResponse {
		return &taskerv1.WatchEventsResponse{RingId: "r1", Event: &taskerv1.ClusterEvent{
			Id: id, Sequence: seq, Type: typ, Time: at(ms(n)), CorrelationId: task, PayloadJson: payload,
		}}
	}
	return []*taskerv1.WatchEventsResponse{
		ev("12-1", 1, "step.dispatched", 10, "tsk_01jc8q2zk3v7m9x4b6n1p0r5ta", `{"step":"charge","attempt":1,"message":"to warehouse-2","sequence":4}`),
		ev("14-1", 2, "step.failed", 83, "tsk_01jc8q2zk3v7m9x4b6n1p0r5ta", `{"step":"charge","attempt":1,"message":"unavailable: gateway down","code":"unavailable","sequence":5}`),
		ev("r1.3", 3, "breaker.opened", 90, "", `{"target":"warehouse-2/payments.charge","from":"closed","to":"open","message":"warehouse-2/payments.charge: closed -> open"}`),
		ev("r1.4", 4, "member.failed", 1500, "", `{"member":"warehouse-2","message":"warehouse-2 failed"}`),
	}
}

const clusterEventLines = "" +
	"14:00:00.010  step.dispatched         tsk_01jc8q2zk3v7m9x4b6n1p0r5ta  charge         1  to warehouse-2\n" +
	"14:00:00.083  step.failed             tsk_01jc8q2zk3v7m9x4b6n1p0r5ta  charge         1  unavailable: gateway down\n" +
	"14:00:00.090  breaker.opened          -                               -              -  warehouse-2/payments.charge: closed -> open\n" +
	"14:00:01.500  member.failed           -                               -              -  warehouse-2 failed\n"

func TestEvents(t *testing.T) {
	f := startFake(t)
	f.eventStreams = [][]*taskerv1.WatchEventsResponse{clusterEvents()}
	code, stdout, stderr := f.tasker(t, "events", "-type", "step.,breaker.opened", "--type", "member.failed", "-task", "tsk_1")
	if code != 0 || stdout != clusterEventLines || stderr != "" {
		t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, clusterEventLines, stderr)
	}
	want := &taskerv1.WatchEventsRequest{Types: []string{"step.", "breaker.opened", "member.failed"}, TaskId: "tsk_1", IncludeHistory: true}
	if len(f.eventReqs) != 1 || !proto.Equal(f.eventReqs[0], want) {
		t.Errorf("requests %v, want %v", f.eventReqs, want)
	}
}

func TestEventsJSON(t *testing.T) {
	f := startFake(t)
	f.eventStreams = [][]*taskerv1.WatchEventsResponse{clusterEvents()}
	code, stdout, _ := f.tasker(t, "events", "-o", "json")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	var first struct {
		ID            string `json:"id"`
		Type          string `json:"type"`
		CorrelationID string `json:"correlation_id"`
		PayloadJSON   string `json:"payload_json"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.ID != "12-1" || first.Type != "step.dispatched" || first.CorrelationID != "tsk_01jc8q2zk3v7m9x4b6n1p0r5ta" || !strings.Contains(first.PayloadJSON, `"step":"charge"`) {
		t.Errorf("first line %s", lines[0])
	}
}

// -follow reconnects after the stream breaks, resuming after the last
// event printed; a resume with a gap is said on stderr, and events
// printed before are not printed again.
func TestEventsFollowReconnects(t *testing.T) {
	f := startFake(t)
	evs := clusterEvents()
	gap := proto.Clone(evs[1]).(*taskerv1.WatchEventsResponse)
	gap.Gap = true
	f.eventStreams = [][]*taskerv1.WatchEventsResponse{evs[:2], {gap, evs[2], evs[3]}}
	f.eventErrs = []error{connect.NewError(connect.CodeUnavailable, errors.New("leader changed"))}
	code, stdout, stderr := f.tasker(t, "events", "-follow")
	if code != 0 || stdout != clusterEventLines {
		t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, clusterEventLines, stderr)
	}
	if !strings.Contains(stderr, "events may be missing after 14-1") {
		t.Errorf("stderr %q, want the gap said", stderr)
	}
	if len(f.eventReqs) != 2 {
		t.Fatalf("%d requests, want 2", len(f.eventReqs))
	}
	if r := f.eventReqs[0]; !r.Follow || !r.IncludeHistory || r.AfterId != "" {
		t.Errorf("first request %v", r)
	}
	if r := f.eventReqs[1]; !r.Follow || r.IncludeHistory || r.AfterId != "14-1" {
		t.Errorf("second request %v, want follow after 14-1", r)
	}
}

func TestEventsErrors(t *testing.T) {
	f := startFake(t)
	f.fail = map[string]error{taskerv1connect.WorkflowServiceWatchEventsProcedure: connect.NewError(connect.CodeInvalidArgument, errors.New(`types: "step.complete" is no event type nor a prefix of one`))}
	code, stdout, stderr := f.tasker(t, "events", "-type", "step.complete")
	if code != 1 || stdout != "" || !strings.Contains(stderr, `tasker events: `) || !strings.Contains(stderr, "step.complete") {
		t.Errorf("refused: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = f.tasker(t, "events", "tsk_1")
	if code != 2 || !strings.Contains(stderr, "-task") {
		t.Errorf("an argument: exit %d, stderr %q", code, stderr)
	}
	if !reflect.DeepEqual(f.eventReqs[0].Types, []string{"step.complete"}) {
		t.Errorf("request %v", f.eventReqs[0])
	}
}
