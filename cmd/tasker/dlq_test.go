package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// dlqFake serves the dead letter calls of WorkflowService with two dead
// letters: 31-2 open, 12-4 replayed (newest first), and records the
// requests.
type dlqFake struct {
	taskerv1connect.UnimplementedWorkflowServiceHandler
	addr string

	mu          sync.Mutex
	letters     []*taskerv1.DeadLetter
	lists       []*taskerv1.ListDeadLettersRequest
	consistency []string
	replays     []*taskerv1.ReplayDeadLetterRequest
	pageSize    int
}

func dlqLetters() []*taskerv1.DeadLetter {
	return []*taskerv1.DeadLetter{
		{
			Id: "31-2", TaskId: "t_err", Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", Step: "charge",
			Capability: "payments.charge", Attempts: 5, MaxAttempts: 5, Code: "gateway_unavailable", Message: "upstream returned 503",
			DetailsJson: `{"status":503}`, At: at(ms(2500)), Status: taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN,
			TaskState: taskerv1.TaskState_TASK_STATE_ERROR, StepState: taskerv1.StepState_STEP_STATE_ERROR, Sequence: 17,
		},
		{
			Id: "12-4", TaskId: "t_done", Namespace: "shop", Workflow: "order-fulfilment", Version: "1.0.0", Step: "ship",
			Capability: "shipping.book", Attempts: 1, MaxAttempts: 3, Code: "contract_violation", Message: "/tracking_number: is required",
			At: at(ms(1000)), Status: taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED,
			ClosedBy: "14-1", ClosedAt: at(ms(2000)), ClosedReason: "replay of dead letter 12-4: carrier fixed", ReplayAttempt: 1,
			TaskState: taskerv1.TaskState_TASK_STATE_COMPLETE, StepState: taskerv1.StepState_STEP_STATE_COMPLETE, Sequence: 9,
		},
	}
}

func startDLQFake(t *testing.T) *dlqFake {
	t.Helper()
	f := &dlqFake{letters: dlqLetters(), pageSize: 100}
	mux := http.NewServeMux()
	mux.Handle(taskerv1connect.NewWorkflowServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	f.addr = srv.URL
	return f
}

func (f *dlqFake) tasker(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runBounded(t, nil, append(args, "-addr", f.addr)...)
}

func (f *dlqFake) find(id string) (*taskerv1.DeadLetter, error) {
	for _, d := range f.letters {
		if d.Id == id {
			return d, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, errors.New("not found: dead letter "+id+": no step failed for good with this id"))
}

func (f *dlqFake) ListDeadLetters(_ context.Context, req *connect.Request[taskerv1.ListDeadLettersRequest]) (*connect.Response[taskerv1.ListDeadLettersResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, proto.Clone(req.Msg).(*taskerv1.ListDeadLettersRequest))
	f.consistency = append(f.consistency, req.Header().Get("Tasker-Consistency"))
	var match []*taskerv1.DeadLetter
	for _, d := range f.letters {
		if (req.Msg.Status == 0 || d.Status == req.Msg.Status) && (req.Msg.Workflow == "" || d.Workflow == req.Msg.Workflow) {
			match = append(match, d)
		}
	}
	start := 0
	if req.Msg.PageToken != "" {
		for i, d := range match {
			if d.Id == req.Msg.PageToken {
				start = i + 1
			}
		}
	}
	n := min(int(req.Msg.PageSize), f.pageSize)
	out := &taskerv1.ListDeadLettersResponse{}
	for _, d := range match[start:] {
		if len(out.DeadLetters) == n {
			out.NextPageToken = out.DeadLetters[n-1].Id
			break
		}
		out.DeadLetters = append(out.DeadLetters, d)
	}
	return connect.NewResponse(out), nil
}

func (f *dlqFake) GetDeadLetter(_ context.Context, req *connect.Request[taskerv1.GetDeadLetterRequest]) (*connect.Response[taskerv1.GetDeadLetterResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.find(req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&taskerv1.GetDeadLetterResponse{DeadLetter: d, InputJson: `{"order_id":"ord_7","amount_cents":1999}`}), nil
}

func (f *dlqFake) ReplayDeadLetter(_ context.Context, req *connect.Request[taskerv1.ReplayDeadLetterRequest]) (*connect.Response[taskerv1.ReplayDeadLetterResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replays = append(f.replays, req.Msg)
	d, err := f.find(req.Msg.Id)
	if err != nil {
		return nil, err
	}
	if d.Status != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("dead letter "+d.Id+" is replayed: step ship of task t_done got a new round of attempts at 2026-10-20T14:00:02Z (event 14-1); only an open dead letter can be replayed"))
	}
	d.Status, d.ClosedBy, d.ReplayAttempt = taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_REPLAYED, "40-1", 1
	d.TaskState, d.StepState = taskerv1.TaskState_TASK_STATE_IN_PROGRESS, taskerv1.StepState_STEP_STATE_PENDING
	return connect.NewResponse(&taskerv1.ReplayDeadLetterResponse{DeadLetter: d, Task: &taskerv1.Task{Id: d.TaskId, State: d.TaskState}}), nil
}

func TestDLQList(t *testing.T) {
	f := startDLQFake(t)
	code, stdout, stderr := f.tasker(t, "dlq", "list")
	want := "" +
		"ID    STATUS  TASK   WORKFLOW                     STEP    ATTEMPTS  FAILED                ERROR\n" +
		"31-2  open    t_err  shop/order-fulfilment 1.0.0  charge  5/5       2026-10-20T14:00:02Z  gateway_unavailable: upstream returned 503\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}
	if f.lists[0].Status != taskerv1.DeadLetterStatus_DEAD_LETTER_STATUS_OPEN || f.consistency[0] != "" {
		t.Errorf("request %v, consistency %q: want open dead letters from the leader", f.lists[0], f.consistency[0])
	}

	// Every status, of a workflow with its namespace, a page at a time, stale.
	f.pageSize = 1
	code, stdout, _ = f.tasker(t, "dlq", "list", "-status", "all", "-workflow", "shop/order-fulfilment", "-stale", "-o", "json")
	var resp struct {
		DeadLetters []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"dead_letters"`
		NextPageToken string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(stdout), &resp); err != nil || code != 0 {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	if len(resp.DeadLetters) != 2 || resp.DeadLetters[0].ID != "31-2" || resp.DeadLetters[1].Status != "DEAD_LETTER_STATUS_REPLAYED" || resp.NextPageToken != "" {
		t.Fatalf("json %+v", resp)
	}
	last := f.lists[len(f.lists)-1]
	if len(f.lists) != 3 || last.Status != 0 || last.Namespace != "shop" || last.Workflow != "order-fulfilment" || last.PageToken != "31-2" || last.PageSize != 99 || f.consistency[2] != "stale" {
		t.Fatalf("requests %v, consistency %v", f.lists, f.consistency)
	}

	// -limit stops early and says more remain.
	code, stdout, stderr = f.tasker(t, "dlq", "list", "-status", "all", "-limit", "1")
	if code != 0 || strings.Count(stdout, "\n") != 2 || !strings.Contains(stderr, "more dead letters remain") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}

	code, stdout, stderr = f.tasker(t, "dlq", "list", "-status", "cancelled")
	if code != 0 || stdout != "" || stderr != "no cancelled dead letters\n" {
		t.Fatalf("none: exit %d %q %q", code, stdout, stderr)
	}
}

func TestDLQShow(t *testing.T) {
	f := startDLQFake(t)
	code, stdout, stderr := f.tasker(t, "dlq", "show", "31-2")
	want := `Dead letter:  31-2
Status:       open
Task:         t_err (now error)
Workflow:     shop/order-fulfilment 1.0.0
Step:         charge (capability payments.charge, now error)
Failed:       2026-10-20T14:00:02Z
Attempts:     5 of 5: out of attempts
Error:        gateway_unavailable: upstream returned 503
Details:      {"status":503}

Input:
  {"order_id":"ord_7","amount_cents":1999}

Next:
  tasker dlq replay 31-2 -reason R               a new round of attempts, once the cause is fixed
  tasker step resolve t_err charge -result JSON  complete the step by hand
  tasker task cancel t_err                       give the task up
`
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}
	code, stdout, _ = f.tasker(t, "dlq", "show", "12-4")
	for _, line := range []string{
		"Attempts:     1 of 3: error \"contract_violation\" is not retried by the step's policy\n",
		"Replayed:     2026-10-20T14:00:02Z (event 14-1): replay of dead letter 12-4: carrier fixed\n",
		"New round:    from attempt 1\n",
		"Next:\n  nothing: the task is complete\n",
	} {
		if code != 0 || !strings.Contains(stdout, line) {
			t.Errorf("show 12-4 lacks %q:\n%s", line, stdout)
		}
	}
	code, _, stderr = f.tasker(t, "dlq", "show", "99-9")
	if code != 1 || stderr != "tasker dlq show: not found: dead letter 99-9: no step failed for good with this id\n" {
		t.Errorf("unknown id: exit %d %q", code, stderr)
	}
}

func TestDLQReplay(t *testing.T) {
	f := startDLQFake(t)
	code, stdout, stderr := f.tasker(t, "dlq", "replay", "31-2", "-reason", "gateway back")
	if code != 0 || stdout != "dead letter 31-2 replayed: step charge of task t_err has a new round of attempts; task in_progress\n" || stderr != "" {
		t.Fatalf("exit %d %q %q", code, stdout, stderr)
	}
	if len(f.replays) != 1 || f.replays[0].Id != "31-2" || f.replays[0].Reason != "gateway back" {
		t.Fatalf("requests %v", f.replays)
	}
	code, stdout, stderr = f.tasker(t, "dlq", "replay", "12-4")
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "tasker dlq replay: refused: dead letter 12-4 is replayed: ") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("replay of a replayed one: exit %d %q %q", code, stdout, stderr)
	}
}

func TestDLQUsage(t *testing.T) {
	f := startDLQFake(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"dlq", "list", "-status", "closed"}, `tasker dlq list: unknown status "closed"; want open, replayed, resolved, cancelled or all`},
		{[]string{"dlq", "list", "31-2"}, `unexpected argument "31-2"`},
		{[]string{"dlq", "show"}, "want one dead letter ID (from 'tasker dlq list'), got 0 arguments"},
		{[]string{"dlq", "replay", "1-1", "2-2"}, "want one dead letter ID (from 'tasker dlq list'), got 2 arguments"},
		{[]string{"dlq", "list", "-stale", "-consistent"}, "-stale and -consistent do not combine"},
		{[]string{"dlq", "frob"}, `tasker dlq: unknown subcommand "frob"`},
	} {
		code, _, stderr := f.tasker(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.msg)
		}
	}
	if len(f.lists)+len(f.replays) != 0 {
		t.Error("a usage error called the agent")
	}
}
