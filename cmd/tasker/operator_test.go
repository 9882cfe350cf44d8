package main

// Tests of the operator commands against fakeAgent (fakeagent_test.go),
// which stands in for the agent until the e2e tests run the real binary.

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// validInput satisfies order-fulfilment's input contract.
const validInput = `{"order_id":"ord_7","customer":{"id":"c_1","email":"bo@example.com"},` +
	`"items":[{"sku":"sku_1","quantity":1}],"payment":{"token":"tok_1","amount_cents":500,"currency":"GBP"}}`

// fixClock makes running steps' durations measured at base+4.574s.
func fixClock(t *testing.T) {
	t.Helper()
	old := now
	now = func() time.Time { return base.Add(ms(4574)) }
	t.Cleanup(func() { now = old })
}

// feed makes standard input read s.
func feed(t *testing.T, s string) {
	t.Helper()
	old := stdin
	stdin = strings.NewReader(s)
	t.Cleanup(func() { stdin = old })
}

var cellGap = regexp.MustCompile(` {2,}`)

// rows reads a table: each line's cells, keyed by its first cell without
// the tree's branches.
func rows(out string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		cells := cellGap.Split(strings.TrimSpace(line), -1)
		key := strings.TrimLeft(cells[0], "├└│─ ")
		if key != "" {
			m[key] = cells[1:]
		}
	}
	return m
}

// cells reads a whole table: each line's cells, in order.
func cells(out string) [][]string {
	var t [][]string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		t = append(t, cellGap.Split(strings.TrimSpace(line), -1))
	}
	return t
}

// decode parses JSON output.
func decode(t *testing.T, out string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, out)
	}
	return v
}

// dig follows keys and indexes into decoded JSON.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[p]
		case int:
			a, _ := v.([]any)
			if p >= len(a) {
				return nil
			}
			v = a[p]
		}
	}
	return v
}

func TestOperatorCommands(t *testing.T) {
	typos := manifest(t, "typos.yaml", typos)
	orderSrc, err := os.ReadFile(order)
	if err != nil {
		t.Fatal(err)
	}
	changed := manifest(t, "changed.yaml", strings.Replace(string(orderSrc), "timeout: 5s", "timeout: 6s", 1))
	inputFile := manifest(t, "input.json", validInput)
	tests := []struct {
		name       string
		setup      func(*fakeAgent)
		args       []string
		code       int
		stdout     []string            // substrings of stdout
		stderr     []string            // substrings of stderr
		rows       map[string][]string // table rows by first cell
		json       func(t *testing.T, v map[string]any)
		check      func(t *testing.T, f *fakeAgent, stdout string)
		stdoutNone bool
	}{
		// workflow
		{
			name: "workflow list",
			args: []string{"workflow", "list"},
			rows: map[string][]string{
				"NAMESPACE": {"NAME", "VERSION", "ACTIVE", "STEPS", "CREATED"},
				"shop":      {"order-fulfilment", "1.0.0", "1.0.0", "5", "2026-10-20T14:00:00Z"},
			},
		},
		{
			name: "workflow list json",
			args: []string{"workflow", "list", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				w := dig(v, "workflows", 0)
				if dig(w, "namespace") != "shop" || dig(w, "name") != "order-fulfilment" || dig(w, "version") != "1.0.0" ||
					dig(w, "created_at") != "2026-10-20T14:00:00Z" || len(dig(w, "steps").([]any)) != 5 {
					t.Errorf("workflow %v", w)
				}
			},
		},
		{
			name:       "workflow list in an empty namespace",
			args:       []string{"workflow", "list", "-namespace", "growth"},
			stderr:     []string{"no workflows\n"},
			stdoutNone: true,
		},
		{
			name: "workflow get",
			args: []string{"workflow", "get", "shop/order-fulfilment"},
			stdout: []string{
				"Workflow:     shop/order-fulfilment\n", "Version:      1.0.0\n", "Versions:     1.0.0\n", "Active:       1.0.0\n",
				"Description:  Reserve stock and charge the card in parallel",
			},
			rows: map[string][]string{
				"STEP":     {"CAPABILITY", "DEPENDS ON", "TIMEOUT", "MAX ATTEMPTS"},
				"validate": {"orders.validate", "-", "5s", "3"},
				"ship":     {"shipping.book", "reserve, charge", "1m", "3"},
				"notify":   {"notifications.email", "ship", "30s", "10"},
			},
		},
		{
			name:   "workflow get with -namespace and -version",
			args:   []string{"workflow", "get", "order-fulfilment", "-namespace", "shop", "-version", "1.0.0"},
			stdout: []string{"Workflow:     shop/order-fulfilment\n"},
		},
		{
			name: "workflow get json",
			args: []string{"workflow", "get", "shop/order-fulfilment", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				s := dig(v, "workflow", "steps", 3)
				if dig(s, "name") != "ship" || dig(s, "timeout") != "60s" || dig(s, "max_attempts") != 3.0 || dig(s, "depends_on", 1) != "charge" {
					t.Errorf("step %v", s)
				}
				if dig(v, "workflow", "versions", 0) != "1.0.0" || !strings.HasPrefix(dig(v, "workflow", "manifest").(string), "# ") {
					t.Errorf("workflow %v", dig(v, "workflow"))
				}
			},
		},
		{
			name: "workflow get -manifest prints it as applied",
			args: []string{"workflow", "get", "shop/order-fulfilment", "-manifest"},
			check: func(t *testing.T, _ *fakeAgent, stdout string) {
				if stdout != string(orderSrc) {
					t.Errorf("stdout is not the manifest:\n%s", stdout)
				}
			},
		},
		{
			name:   "workflow get an unknown workflow",
			args:   []string{"workflow", "get", "shop/nope"},
			code:   1,
			stderr: []string{"tasker workflow get: not found: workflow shop/nope does not exist\n"},
		},
		{
			name:   "workflow get -manifest is not JSON",
			args:   []string{"workflow", "get", "shop/order-fulfilment", "-manifest", "-o", "json"},
			code:   2,
			stderr: []string{"does not combine with -o json"},
		},
		{
			name:   "workflow get with two namespaces",
			args:   []string{"workflow", "get", "shop/order-fulfilment", "-namespace", "growth"},
			code:   2,
			stderr: []string{`workflow "shop/order-fulfilment" is in namespace "shop", but --namespace says "growth"`},
		},
		{
			name:   "workflow apply a new workflow",
			args:   []string{"workflow", "apply", "-f", "../../examples/user-onboarding.yaml"},
			stdout: []string{"growth/user-onboarding 2.1.0: created, 5 steps\n"},
		},
		{
			name:   "workflow apply the same version again",
			args:   []string{"workflow", "apply", "-f", order},
			stdout: []string{"shop/order-fulfilment 1.0.0: unchanged, already stored with this content\n"},
		},
		{
			name: "workflow apply json",
			args: []string{"workflow", "apply", "-f", "../../examples/user-onboarding.yaml", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "created") != true || dig(v, "workflow", "name") != "user-onboarding" || dig(v, "workflow", "version") != "2.1.0" {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name: "workflow apply prints every problem of a refused manifest",
			args: []string{"workflow", "apply", "-f", typos},
			code: 1,
			stderr: []string{
				"tasker workflow apply: " + typos + ": the agent refused it, 4 problems\n",
				typos + `: name (line 1): "Bad Name" is not a valid workflow name: use 1-63 lowercase letters`,
				typos + `: version (line 2): "one" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)`,
				typos + `: steps[0].timout (line 6): unknown field "timout"; did you mean "timeout"?` + "\n",
				typos + `: steps[0].input.n (line 7): $.steps.nope.result reads step "nope", which does not exist` + "\n",
			},
			stdoutNone: true,
		},
		{
			name:   "workflow apply other content under the same version",
			args:   []string{"workflow", "apply", "-f", changed},
			code:   1,
			stderr: []string{"tasker workflow apply: refused: shop/order-fulfilment 1.0.0 is already stored with other content; give the manifest a new version\n"},
		},
		{
			name:   "workflow apply needs -f",
			args:   []string{"workflow", "apply", order},
			code:   2,
			stderr: []string{`unexpected argument "../../examples/order-fulfilment.yaml"; the manifest goes after -f`},
		},
		{
			name:   "workflow apply names a missing file",
			args:   []string{"workflow", "apply", "-f", "missing.yaml"},
			code:   1,
			stderr: []string{"tasker workflow apply: missing.yaml: cannot read: no such file or directory\n"},
		},
		{
			name: "an agent without a leader",
			setup: func(f *fakeAgent) {
				f.fail[taskerv1connect.WorkflowServiceListWorkflowsProcedure] = connect.NewError(connect.CodeUnavailable, errors.New("no leader elected yet"))
			},
			args:   []string{"workflow", "list"},
			code:   1,
			stderr: []string{" is unavailable: no leader elected yet\n"},
		},

		// task
		{
			name: "task get draws the steps as a tree",
			args: []string{"task", "get", "t_run"},
			stdout: []string{
				"Task:             t_run\n", "Workflow:         shop/order-fulfilment 1.0.0\n", "State:            in_progress\n",
				"Steps:            3 of 5 done\n", "Created:          2026-10-20T14:00:00Z\n", "Ended:            -\n",
				"Idempotency key:  order-t_run\n",
				"\nvalidate ", "\n├─ reserve ", "\n└─ charge ", "\n   └─ ship (also after reserve) ", "\n      └─ notify ",
			},
			rows: map[string][]string{
				"STEP":                      {"STATE", "ATTEMPTS", "DURATION", "AGENT", "LAST ERROR"},
				"validate":                  {"complete", "1/3", "928ms", "shop-api-7f9", "-"},
				"charge":                    {"complete", "2/5", "528ms", "shop-api-7f9", "gateway_unavailable: upstream returned 503 (attempt 1)"},
				"ship (also after reserve)": {"in_progress", "1/3", "2s", "warehouse-2", "-"},
				"notify":                    {"pending", "0/10", "-", "-", "-"},
			},
		},
		{
			name: "task get says why a ready step waits",
			setup: func(f *fakeAgent) {
				for _, t := range f.tasks {
					if t.Id == "t_run" {
						t.Steps[3].State, t.Steps[3].Agent = taskerv1.StepState_STEP_STATE_PENDING, ""
						t.Steps[3].Waiting = "circuit breaker open for warehouse-2/shipping.book until 14:00:09; no other agent offers shipping.book"
					}
				}
			},
			args:   []string{"task", "get", "t_run"},
			stdout: []string{"\nWaiting:\n  ship: circuit breaker open for warehouse-2/shipping.book until 14:00:09; no other agent offers shipping.book\n"},
		},
		{
			name: "task get a blocked task",
			args: []string{"task", "get", "t_err"},
			rows: map[string][]string{
				"State:":                    {"error"},
				"ship (also after reserve)": {"error", "1/3", "509ms", "warehouse-2", "contract_violation: /tracking_number: is required (attempt 1)"},
			},
		},
		{
			name:   "task get -results",
			args:   []string{"task", "get", "t_done", "-results"},
			stdout: []string{"\nInput:\n  {\"order_id\":\"ord_7\"}\n\nResults:\n"},
			rows: map[string][]string{
				"Ended:": {"2026-10-20T14:00:03Z"},
				"ship":   {`{"carrier":"dhl","tracking_number":"JD0001"}`},
				"notify": {`{"message_id":"m_1"}`},
			},
		},
		{
			name: "task get json",
			args: []string{"task", "get", "t_run", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				task := dig(v, "task")
				if dig(task, "state") != "TASK_STATE_IN_PROGRESS" || dig(task, "idempotency_key") != "order-t_run" || dig(task, "ended_at") != nil {
					t.Errorf("task %v", task)
				}
				charge := dig(task, "steps", 2)
				if dig(charge, "state") != "STEP_STATE_COMPLETE" || dig(charge, "attempts") != 2.0 || dig(charge, "result_json") != `{"charge_id":"ch_1"}` ||
					dig(charge, "last_error", "code") != "gateway_unavailable" {
					t.Errorf("charge %v", charge)
				}
			},
		},
		{
			name:       "task get an unknown task",
			args:       []string{"task", "get", "t_nope"},
			code:       1,
			stderr:     []string{"tasker task get: not found: task t_nope does not exist\n"},
			stdoutNone: true,
		},
		{
			name:   "task get wants one ID",
			args:   []string{"task", "get"},
			code:   2,
			stderr: []string{"tasker task get: want one task ID, got 0; run 'tasker help task get' for usage\n"},
		},
		{
			name: "task list",
			args: []string{"task", "list"},
			rows: map[string][]string{
				"ID":     {"WORKFLOW", "VERSION", "STATE", "STEPS", "CREATED"},
				"t_run":  {"shop/order-fulfilment", "1.0.0", "in_progress", "3/5", "2026-10-20T14:00:00Z"},
				"t_err":  {"shop/order-fulfilment", "1.0.0", "error", "3/5", "2026-10-20T14:00:00Z"},
				"t_done": {"shop/order-fulfilment", "1.0.0", "complete", "5/5", "2026-10-20T14:00:00Z"},
			},
		},
		{
			name: "task list filters",
			args: []string{"task", "list", "-state", "complete", "-workflow", "shop/order-fulfilment"},
			check: func(t *testing.T, f *fakeAgent, stdout string) {
				r := f.lists[0]
				if r.State != taskerv1.TaskState_TASK_STATE_COMPLETE || r.Namespace != "shop" || r.Workflow != "order-fulfilment" || r.PageSize != 100 {
					t.Errorf("request %v", r)
				}
				if got := rows(stdout); len(got) != 2 || got["t_done"] == nil {
					t.Errorf("rows %v", got)
				}
			},
		},
		{
			name:   "task list refuses an unknown state",
			args:   []string{"task", "list", "-state", "done"},
			code:   2,
			stderr: []string{`unknown task state "done"; want one of pending, in_progress, complete, error, cancelled, resolved_manually`},
		},
		{
			name: "task list json",
			args: []string{"task", "list", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "tasks", 2, "id") != "t_done" || dig(v, "tasks", 2, "state") != "TASK_STATE_COMPLETE" || dig(v, "next_page_token") != "" {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name:   "task start",
			args:   []string{"task", "start", "shop/order-fulfilment", "-input", validInput},
			stdout: []string{"task t_new1 started: shop/order-fulfilment 1.0.0\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if r := f.starts[0]; r.Namespace != "shop" || r.Workflow != "order-fulfilment" || r.InputJson != validInput || r.IdempotencyKey != "" {
					t.Errorf("request %v", r)
				}
			},
		},
		{
			name:   "task start --input @file",
			args:   []string{"task", "start", "order-fulfilment", "--namespace", "shop", "--version", "1.0.0", "--input", "@" + inputFile},
			stdout: []string{"task t_new1 started"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if r := f.starts[0]; r.InputJson != validInput || r.Version != "1.0.0" {
					t.Errorf("request %v", r)
				}
			},
		},
		{
			name: "task start json",
			args: []string{"task", "start", "shop/order-fulfilment", "-input", validInput, "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "created") != true || dig(v, "task", "id") != "t_new1" || dig(v, "task", "state") != "TASK_STATE_PENDING" {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name: "task start prints every contract violation",
			args: []string{"task", "start", "shop/order-fulfilment", "-input", "{}"},
			code: 1,
			stderr: []string{
				"tasker task start: input violates its contract, 4 violations\n",
				"input: /customer: is required\n", "input: /items: is required\n", "input: /order_id: is required\n", "input: /payment: is required\n",
			},
			stdoutNone: true,
		},
		{
			name:   "task start refuses input that is not JSON",
			args:   []string{"task", "start", "shop/order-fulfilment", "-input", "{order: 1}"},
			code:   2,
			stderr: []string{"tasker task start: -input is not JSON: invalid character 'o' looking for beginning of object key string"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if len(f.starts) != 0 {
					t.Error("the agent was called")
				}
			},
		},
		{
			name:   "task start names a missing input file",
			args:   []string{"task", "start", "shop/order-fulfilment", "-input", "@nope.json"},
			code:   1,
			stderr: []string{"tasker task start: nope.json: cannot read: no such file or directory\n"},
		},
		{
			name:   "task start an unknown workflow",
			args:   []string{"task", "start", "nope"},
			code:   1,
			stderr: []string{"tasker task start: not found: workflow default/nope does not exist\n"},
		},
		{
			name:   "task cancel",
			args:   []string{"task", "cancel", "t_run", "-reason", "customer called"},
			stdout: []string{"task t_run cancelled: 3 steps of 5 done\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if r := f.cancels[0]; r.Id != "t_run" || r.Reason != "customer called" {
					t.Errorf("request %v", r)
				}
			},
		},
		{
			name: "task cancel json",
			args: []string{"task", "cancel", "t_run", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "task", "state") != "TASK_STATE_CANCELLED" || dig(v, "task", "steps", 4, "state") != "STEP_STATE_CANCELLED" {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name:   "task cancel an ended task",
			args:   []string{"task", "cancel", "t_done"},
			code:   1,
			stderr: []string{"tasker task cancel: refused: task t_done has ended (complete); only an unfinished task can be cancelled\n"},
		},

		// step
		{
			name:   "step retry",
			args:   []string{"step", "retry", "t_err", "ship"},
			stdout: []string{"step ship of task t_err retried: now pending, 0/3 attempts; task in_progress\n"},
		},
		{
			name: "step retry json",
			args: []string{"step", "retry", "t_err", "ship", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "task", "steps", 3, "state") != "STEP_STATE_PENDING" || dig(v, "task", "state") != "TASK_STATE_IN_PROGRESS" {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name:   "step retry a step that did not fail",
			args:   []string{"step", "retry", "t_run", "ship"},
			code:   1,
			stderr: []string{"tasker step retry: refused: step ship is in_progress; only a step that failed for good can be retried\n"},
		},
		{
			name:   "step retry wants a task and a step",
			args:   []string{"step", "retry", "t_err"},
			code:   2,
			stderr: []string{"want a task ID and a step name, got 1 arguments"},
		},
		{
			name:   "step resolve",
			args:   []string{"step", "resolve", "t_err", "ship", "-result", `{"carrier":"dhl","tracking_number":"JD0002"}`, "-reason", "booked by phone"},
			stdout: []string{"step ship of task t_err resolved: now resolved_manually, 1/3 attempts; task in_progress\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if r := f.resolves[0]; r.TaskId != "t_err" || r.Step != "ship" || r.Reason != "booked by phone" || r.ResultJson != `{"carrier":"dhl","tracking_number":"JD0002"}` {
					t.Errorf("request %v", r)
				}
			},
		},
		{
			name: "step resolve prints every contract violation",
			args: []string{"step", "resolve", "t_err", "ship", "-result", `{"carrier":"dhl"}`},
			code: 1,
			stderr: []string{
				"tasker step resolve: result of step ship violates its contract, 1 violation\n",
				"result of step ship: /tracking_number: is required\n",
			},
		},
		{
			name:   "step resolve needs a result",
			args:   []string{"step", "resolve", "t_err", "ship"},
			code:   2,
			stderr: []string{"no result given: use -result JSON or -result @FILE"},
		},
		{
			name:   "step resolve an unknown step",
			args:   []string{"step", "resolve", "t_err", "shipp", "-result", "{}"},
			code:   1,
			stderr: []string{"tasker step resolve: not found: task t_err has no step shipp\n"},
		},

		// cluster
		{
			name: "members",
			args: []string{"members"},
			rows: map[string][]string{
				"NAME":         {"ADDRESS", "STATUS", "ROLE", "SYSTEM", "CAPABILITIES", "VERSION"},
				"s1":           {"10.0.0.1:7422", "alive", "server", "-", "0", "0.1.0"},
				"shop-api-7f9": {"10.0.1.7:7422", "alive", "client", "shop", "2", "0.1.0"},
				"warehouse-2":  {"10.0.2.3:7421", "suspect", "client", "-", "3", "0.0.9"}, // no gossip address: its agent-to-agent one
				"s4":           {"10.0.0.4:7422", "left", "server", "-", "0", "-"},
			},
		},
		{
			name: "members json",
			args: []string{"members", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				m := dig(v, "members", 2)
				if dig(m, "name") != "warehouse-2" || dig(m, "status") != "suspect" || dig(m, "capabilities", 2) != "shipping.track" ||
					dig(m, "address") != "10.0.2.3:7421" || dig(m, "gossip_address") != "" {
					t.Errorf("member %v", m)
				}
				if g := dig(v, "members", 0, "gossip_address"); g != "10.0.0.1:7422" {
					t.Errorf("s1 gossip_address %v", g)
				}
				if s := dig(v, "members", 1, "system"); s != "shop" {
					t.Errorf("shop-api-7f9 system %v, want shop", s)
				}
			},
		},
		{
			name:   "raft peers",
			args:   []string{"raft", "peers"},
			stdout: []string{"\nleader s1, term 4, commit index 1207, applied index 1207\n"},
			rows: map[string][]string{
				"ID": {"ADDRESS", "VOTER", "LEADER", "LAST INDEX"},
				"s1": {"10.0.0.1:7423", "true", "*", "1207"},
				"s2": {"10.0.0.2:7423", "true", "-", "1205"},
				"s3": {"10.0.0.3:7423", "false", "-", "-"}, // unreachable: no index
			},
		},
		{
			name: "raft peers without a leader",
			setup: func(f *fakeAgent) {
				f.peers = &taskerv1.RaftPeersResponse{Peers: []*taskerv1.RaftPeer{{Id: "s1", Address: "10.0.0.1:7423", Voter: true, LastIndex: 88}}, Term: 5}
			},
			args:   []string{"raft", "peers"},
			stdout: []string{"leader -, term 5"},
			stderr: []string{"no leader: the cluster cannot accept writes until one is elected\n"},
			rows:   map[string][]string{"s1": {"10.0.0.1:7423", "true", "-", "88"}},
		},
		{
			name: "raft peers json",
			args: []string{"raft", "peers", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "leader") != "s1" || dig(v, "commit_index") != "1207" || dig(v, "peers", 0, "leader") != true || dig(v, "peers", 1, "leader") != false {
					t.Errorf("response %v", v)
				}
				if dig(v, "peers", 1, "last_index") != "1205" || dig(v, "peers", 2, "last_index") != "0" || dig(v, "peers", 2, "voter") != false {
					t.Errorf("peers %v", dig(v, "peers"))
				}
			},
		},
		{
			name:   "raft remove-peer",
			args:   []string{"raft", "remove-peer", "s3"},
			stdout: []string{"removed s3 from the Raft configuration\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if !slices.Equal(f.removedPeers, []string{"s3"}) {
					t.Errorf("the agent removed %q, want s3", f.removedPeers)
				}
			},
		},
		{
			name: "raft remove-peer json",
			args: []string{"raft", "remove-peer", "s3", "-o", "json"},
			check: func(t *testing.T, f *fakeAgent, stdout string) {
				if stdout != "{}\n" || !slices.Equal(f.removedPeers, []string{"s3"}) {
					t.Errorf("stdout %q, removed %q; want the empty response as JSON and s3 removed", stdout, f.removedPeers)
				}
			},
		},
		{
			name:       "raft remove-peer wants an ID",
			args:       []string{"raft", "remove-peer"},
			code:       2,
			stderr:     []string{"tasker raft remove-peer: want the ID of one Raft server (as 'tasker raft peers' lists them), got 0 arguments; run 'tasker help raft remove-peer' for usage\n"},
			stdoutNone: true,
		},
		{
			name:   "raft remove-peer removes one server at a time",
			args:   []string{"raft", "remove-peer", "s2", "s3"},
			code:   2,
			stderr: []string{"want the ID of one Raft server (as 'tasker raft peers' lists them), got 2 arguments"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if len(f.removedPeers) != 0 {
					t.Errorf("the agent removed %q", f.removedPeers)
				}
			},
		},
		{
			name:       "raft remove-peer an unknown server",
			args:       []string{"raft", "remove-peer", "s9"},
			code:       1,
			stderr:     []string{"tasker raft remove-peer: not found: server s9 is not in the Raft configuration\n"},
			stdoutNone: true,
		},
		{
			name: "leave",
			args: []string{"leave"},
			check: func(t *testing.T, f *fakeAgent, stdout string) {
				if want := "the agent at " + f.addr + " is leaving the cluster; it exits once it has left\n"; stdout != want || f.leaves != 1 {
					t.Errorf("stdout %q, %d calls; want %q and one call", stdout, f.leaves, want)
				}
			},
		},
		{
			name: "leave json",
			args: []string{"leave", "-o", "json"},
			check: func(t *testing.T, f *fakeAgent, stdout string) {
				if stdout != "{}\n" || f.leaves != 1 {
					t.Errorf("stdout %q, %d calls", stdout, f.leaves)
				}
			},
		},
		{
			name:   "leave acts only on the agent at -addr",
			args:   []string{"leave", "warehouse-2"},
			code:   2,
			stderr: []string{`tasker leave: unexpected argument "warehouse-2"; leave acts on the agent at -addr (use force-leave to remove another)`},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if f.leaves != 0 {
					t.Error("the agent was told to leave")
				}
			},
		},
		{
			name: "leave refused",
			setup: func(f *fakeAgent) {
				f.fail[taskerv1connect.ClusterServiceLeaveProcedure] = connect.NewError(connect.CodeFailedPrecondition, errors.New("s1 is the only server; leaving would lose all state"))
			},
			args:       []string{"leave"},
			code:       1,
			stderr:     []string{"tasker leave: refused: s1 is the only server; leaving would lose all state\n"},
			stdoutNone: true,
		},
		{
			name:   "force-leave a server",
			args:   []string{"force-leave", "s3"},
			stdout: []string{"s3 left by force: removed from the Raft configuration and from dispatch\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if !slices.Equal(f.forceLeaves, []string{"s3"}) {
					t.Errorf("the agent removed %q, want s3", f.forceLeaves)
				}
			},
		},
		{
			name:   "force-leave a client",
			args:   []string{"force-leave", "warehouse-2"},
			stdout: []string{"warehouse-2 left by force: removed from dispatch; it was not in the Raft configuration\n"},
		},
		{
			name: "force-leave json",
			args: []string{"force-leave", "s3", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if dig(v, "removed_from_raft") != true {
					t.Errorf("response %v", v)
				}
			},
		},
		{
			name: "force-leave json of a client",
			args: []string{"force-leave", "warehouse-2", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				if r, ok := v["removed_from_raft"]; !ok || r != false {
					t.Errorf("response %v; want removed_from_raft false, present", v)
				}
			},
		},
		{
			name:   "force-leave wants a node",
			args:   []string{"force-leave"},
			code:   2,
			stderr: []string{"tasker force-leave: want the name of one agent (as 'tasker members' lists them), got 0 arguments; run 'tasker help force-leave' for usage\n"},
			check: func(t *testing.T, f *fakeAgent, _ string) {
				if len(f.forceLeaves) != 0 {
					t.Errorf("the agent removed %q", f.forceLeaves)
				}
			},
		},
		{
			name:   "force-leave an unknown node",
			args:   []string{"force-leave", "nope"},
			code:   1,
			stderr: []string{"tasker force-leave: not found: no agent named nope\n"},
		},
		{
			name:   "capabilities",
			args:   []string{"capabilities"},
			stderr: []string{"providers advertise different contracts (schema digests) for inventory.reserve\n"},
			check: func(t *testing.T, _ *fakeAgent, stdout string) {
				want := [][]string{
					{"CAPABILITY", "AGENT", "VERSION", "CONCURRENCY", "SCHEMA"},
					{"inventory.reserve", "warehouse-1", "2.0.0", "8", "9f2c41ab07d3"},
					{"inventory.reserve", "warehouse-2", "2.1.0", "8", "4e7d0c13a5b1"},
					{"payments.charge", "shop-api-7f9", "1.4.2", "16", "c0ffee12d9e4"},
					{"shipping.book", "warehouse-2", "-", "-", "51ab7730fe02"}, // no version, no declared limit
				}
				if got := cells(stdout); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("table %q\nwant %q", got, want)
				}
			},
		},
		{
			name: "capabilities with one contract each",
			setup: func(f *fakeAgent) {
				f.capabilities = f.capabilities[1:]
			},
			args: []string{"capabilities"},
			rows: map[string][]string{"payments.charge": {"shop-api-7f9", "1.4.2", "16", "c0ffee12d9e4"}},
		},
		{
			name: "capabilities json",
			args: []string{"capabilities", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				p := dig(v, "capabilities", 0, "providers", 1)
				if dig(v, "capabilities", 0, "name") != "inventory.reserve" || dig(p, "agent") != "warehouse-2" || dig(p, "rpc_address") != "10.0.2.3:7421" ||
					dig(p, "version") != "2.1.0" || dig(p, "max_concurrency") != 8.0 || dig(p, "schema_digest") != "4e7d0c13a5b1" {
					t.Errorf("provider %v", p)
				}
			},
		},
		{
			name:       "capabilities of an empty cluster",
			setup:      func(f *fakeAgent) { f.capabilities = nil },
			args:       []string{"capabilities"},
			stderr:     []string{"no capabilities: no app has registered with an agent of the cluster\n"},
			stdoutNone: true,
		},
		{
			name: "breakers",
			args: []string{"breakers"},
			check: func(t *testing.T, _ *fakeAgent, stdout string) {
				if !strings.HasPrefix(stdout, "leader s1: 3 breakers, 1 open, 1 half-open\n\n") {
					t.Errorf("first line %q", firstLine(stdout))
				}
			},
			rows: map[string][]string{
				"TARGET":                        {"STATE", "IN FLIGHT", "REQUESTS", "FAILURES", "CONSECUTIVE", "SINCE", "OPEN UNTIL"},
				"shop-api-7f9/payments.charge":  {"closed", "6", "412", "3", "0", "1h ago", "-"},
				"warehouse-2/shipping.book":     {"open", "0", "20", "5", "5", "2m5s ago", "in 25s"},
				"warehouse-3/inventory.reserve": {"half_open", "1", "1", "0", "0", "now", "-"},
			},
		},
		{
			name: "breakers all closed",
			setup: func(f *fakeAgent) {
				f.breakers.Breakers = f.breakers.Breakers[:1]
			},
			args:   []string{"breakers"},
			stdout: []string{"leader s1: 1 breaker, all closed\n"},
		},
		{
			name:  "breakers of a leader that has dispatched nothing",
			setup: func(f *fakeAgent) { f.breakers = &taskerv1.BreakersResponse{Leader: "s2"} },
			args:  []string{"breakers"},
			check: func(t *testing.T, _ *fakeAgent, stdout string) {
				if stdout != "leader s2: 0 breakers: it has dispatched to no agent yet\n" {
					t.Errorf("stdout %q", stdout)
				}
			},
		},
		{
			name: "breakers json",
			args: []string{"breakers", "-o", "json"},
			json: func(t *testing.T, v map[string]any) {
				b := dig(v, "breakers", 1)
				if dig(v, "leader") != "s1" || dig(b, "target") != "warehouse-2/shipping.book" || dig(b, "state") != "open" ||
					dig(b, "successes") != 15.0 || dig(b, "consecutive_failures") != 5.0 || dig(b, "in_flight") != 0.0 ||
					dig(b, "since") != "2026-10-20T13:58:00Z" || dig(b, "open_until") != "2026-10-20T14:00:30Z" {
					t.Errorf("breaker %v", b)
				}
				if dig(v, "breakers", 0, "open_until") != nil {
					t.Errorf("a closed breaker has open_until %v", dig(v, "breakers", 0, "open_until"))
				}
			},
		},
		{
			name: "breakers without a leader",
			setup: func(f *fakeAgent) {
				f.fail[taskerv1connect.ClusterServiceBreakersProcedure] = connect.NewError(connect.CodeUnavailable, errors.New("no leader elected yet"))
			},
			args:   []string{"breakers"},
			code:   1,
			stderr: []string{" is unavailable: no leader elected yet\n"},
		},
		{
			name: "an agent that lacks a call",
			setup: func(f *fakeAgent) {
				f.fail[taskerv1connect.ClusterServiceMembersProcedure] = connect.NewError(connect.CodeUnimplemented, errors.New("tasker.v1.ClusterService.Members is not implemented"))
			},
			args:   []string{"members"},
			code:   1,
			stderr: []string{" does not offer this call; is it an older version? (tasker.v1.ClusterService.Members is not implemented)\n"},
		},

		// flags shared by every operator command
		{
			name:   "-o takes table or json",
			args:   []string{"members", "-o", "yaml"},
			code:   2,
			stderr: []string{`invalid value "yaml" for flag -o: want table or json`, "run 'tasker help members' for usage"},
		},
		{
			name:   "-o table is the default",
			args:   []string{"members", "-o", "table"},
			stdout: []string{"NAME "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fixClock(t)
			f := startFake(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			code, stdout, stderr := f.tasker(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tt.code == 0 && tt.stderr == nil && stderr != "" {
				t.Errorf("stderr should be empty:\n%s", stderr)
			}
			if tt.stdoutNone && stdout != "" {
				t.Errorf("stdout should be empty:\n%s", stdout)
			}
			got := rows(stdout)
			for key, want := range tt.rows {
				if !slices.Equal(got[key], want) {
					t.Errorf("row %q: got %q, want %q\n%s", key, got[key], want, stdout)
				}
			}
			if tt.json != nil {
				tt.json(t, decode(t, stdout))
			}
			if tt.check != nil {
				tt.check(t, f, stdout)
			}
		})
	}
}

// An agent that is not running is named, with what to do about it,
// wherever its address came from.
func TestCannotReachAgent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name string
		env  string
		args []string
	}{
		{"-addr", "", []string{"task", "get", "t_1", "-addr", "http://" + closed}},
		{"--addr host:port", "", []string{"task", "get", "t_1", "--addr", closed}},
		{"TASKER_ADDR", "http://" + closed, []string{"task", "get", "t_1"}},
		{"a stream", "http://" + closed, []string{"task", "watch", "t_1"}},
		{"a client stream", "http://" + closed, []string{"snapshot", "restore", order}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(addrEnv, tt.env)
			code, stdout, stderr := runBounded(t, nil, tt.args...)
			want := "tasker " + tt.args[0] + " " + tt.args[1] + ": cannot reach the agent at http://" + closed + ": is `tasker agent` running?\n"
			if code != 1 || stderr != want || stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit 1, stderr %q", code, stderr, stdout, want)
			}
		})
	}
}

func TestAgentAddress(t *testing.T) {
	tests := []struct {
		flag, env, want, err string
	}{
		{want: defaultAddr},
		{env: "http://10.0.0.5:7420/", want: "http://10.0.0.5:7420"},
		{flag: "localhost:9000", env: "http://10.0.0.5:7420", want: "http://localhost:9000"},
		{flag: "https://agent:7420", err: "only http:// is supported"},
		{flag: "http://", err: "has no host"},
	}
	for _, tt := range tests {
		t.Setenv(addrEnv, tt.env)
		got, err := agentAddr(tt.flag)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("agentAddr(%q) with $%s=%q = %q, %v; want %q, %q", tt.flag, addrEnv, tt.env, got, err, tt.want, tt.err)
		}
	}
	code, _, stderr := runBounded(t, nil, "members", "-addr", "https://agent:7420")
	if code != 2 || !strings.Contains(stderr, "only http:// is supported") {
		t.Errorf("https: exit %d, %q", code, stderr)
	}
}

// watchScript is a watch of t_run: the task as it is, then ship
// completes, notify runs, and the task ends as the last event says.
func watchScript(end taskerv1.TaskState, last string) []*taskerv1.WatchTaskResponse {
	task := runningTask()
	first := &taskerv1.WatchTaskResponse{Task: task}
	shipped := doneTask()
	shipped.Id, shipped.IdempotencyKey, shipped.State, shipped.EndedAt = "t_run", "order-t_run", taskerv1.TaskState_TASK_STATE_IN_PROGRESS, nil
	notify := shipped.Steps[4]
	notify.State, notify.StartedAt, notify.EndedAt, notify.ResultJson = taskerv1.StepState_STEP_STATE_ENQUEUED, nil, nil, ""
	ended := doneTask()
	ended.Id, ended.IdempotencyKey, ended.State = "t_run", "order-t_run", end
	ev := func(seq uint64, typ, step string, attempt int32, d time.Duration, msg string) *taskerv1.TaskEvent {
		return &taskerv1.TaskEvent{Sequence: seq, Type: typ, TaskId: "t_run", Step: step, Attempt: attempt, At: at(d), Message: msg}
	}
	return []*taskerv1.WatchTaskResponse{
		first,
		{Event: ev(9, "step.completed", "ship", 1, ms(3083), "completed on warehouse-2"), Task: shipped},
		{Event: ev(10, "step.dispatched", "notify", 1, ms(3083), "dispatched to shop-api-7f9"), Task: shipped},
		{Event: ev(11, last, "", 0, ms(3985), "task ended"), Task: ended},
	}
}

// watchFailed is a watch of t_run in which ship breaks its contract.
func watchFailed() []*taskerv1.WatchTaskResponse {
	failed := blockedTask()
	failed.Id = "t_run"
	return []*taskerv1.WatchTaskResponse{
		{Task: runningTask()},
		{Event: &taskerv1.TaskEvent{Sequence: 9, Type: "step.failed", TaskId: "t_run", Step: "ship", Attempt: 1, At: at(ms(3083)), Message: "contract_violation: /tracking_number: is required"}, Task: failed},
		{Event: &taskerv1.TaskEvent{Sequence: 10, Type: "task.failed", TaskId: "t_run", At: at(ms(3083)), Message: "step ship failed for good"}, Task: failed},
	}
}

func TestTaskWatch(t *testing.T) {
	tests := []struct {
		name   string
		script []*taskerv1.WatchTaskResponse
		end    error
		code   int
		stdout []string
		stderr string
	}{
		{
			name:   "complete",
			script: watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed"),
			code:   0,
			stdout: []string{
				"task t_run: shop/order-fulfilment 1.0.0, in_progress, 3 of 5 steps done\n",
				"14:00:03.083  step.completed          ship       1  completed on warehouse-2\n",
				"14:00:03.083  step.dispatched         notify     1  dispatched to shop-api-7f9\n",
				"14:00:03.985  task.completed          -          -  task ended\n",
				"task t_run complete after 3.99s\n",
			},
		},
		{
			name:   "resolved manually",
			script: watchScript(taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY, "task.resolved_manually"),
			code:   0,
			stdout: []string{"task t_run resolved_manually after 3.99s\n"},
		},
		{
			name:   "error",
			script: watchFailed(),
			code:   1,
			stdout: []string{
				"14:00:03.083  step.failed             ship       1  contract_violation: /tracking_number: is required\n",
				"14:00:03.083  task.failed             -          -  step ship failed for good\n",
				"task t_run error: ship failed for good; 'tasker step retry t_run ship' retries it, 'tasker step resolve t_run ship -result JSON' resolves it\n",
			},
		},
		{
			name:   "cancelled",
			script: watchScript(taskerv1.TaskState_TASK_STATE_CANCELLED, "task.cancelled"),
			code:   1,
			stdout: []string{"task t_run cancelled after 3.99s\n"},
		},
		{
			name:   "a task that has already ended",
			script: append([]*taskerv1.WatchTaskResponse{{Task: doneTask()}}, watchScript(taskerv1.TaskState_TASK_STATE_CANCELLED, "task.cancelled")...),
			code:   0,
			stdout: []string{"task t_done: shop/order-fulfilment 1.0.0, complete, 5 of 5 steps done\ntask t_done complete after 3.99s\n"},
		},
		{
			name:   "a watch that ends before the task",
			script: watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed")[:2],
			code:   1,
			stderr: "tasker task watch: the agent ended the watch before the task ended (state in_progress)\n",
		},
		{
			name:   "a watch that breaks",
			script: watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed")[:2],
			end:    connect.NewError(connect.CodeUnavailable, errors.New("leadership lost")),
			code:   1,
			stderr: " is unavailable: leadership lost\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			f.watch, f.watchErr = tt.script, tt.end
			code, stdout, stderr := f.tasker(t, "task", "watch", "t_run")
			if tt.code == 0 && strings.Count(stdout, "\n") != len(tt.script)+1 && tt.name != "a task that has already ended" {
				t.Errorf("%d lines; want one per message and the outcome:\n%s", strings.Count(stdout, "\n"), stdout)
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if !strings.HasSuffix(stderr, tt.stderr) || (tt.stderr == "" && stderr != "") {
				t.Errorf("stderr %q, want it to end with %q", stderr, tt.stderr)
			}
		})
	}
}

func TestTaskWatchUnknownTask(t *testing.T) {
	f := startFake(t)
	code, stdout, stderr := f.tasker(t, "task", "watch", "t_nope")
	if code != 1 || stdout != "" || stderr != "tasker task watch: not found: task t_nope does not exist\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// Each event is printed when it arrives, not when the watch ends: the
// agent sends the next one only once the previous one is on stdout.
func TestTaskWatchPrintsAsEventsArrive(t *testing.T) {
	f := startFake(t)
	f.watch = watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed")
	var stdout syncBuffer
	f.beforeSend = func(i int) {
		if i == 0 {
			return
		}
		if prev := f.watch[i-1]; prev.Event != nil && !stdout.waitFor(prev.Event.Type+" ") {
			t.Errorf("event %d (%s) was not printed before event %d was sent", i-1, prev.Event.Type, i)
		}
	}
	code, out, _ := runBounded(t, &stdout, "task", "watch", "t_run", "-addr", f.addr)
	if code != 0 || strings.Count(out, "\n") != 5 {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestTaskWatchJSON(t *testing.T) {
	f := startFake(t)
	f.watch = watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed")
	code, stdout, _ := f.tasker(t, "task", "watch", "t_run", "-o", "json")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("exit %d, %d lines:\n%s", code, len(lines), stdout)
	}
	first, last := decode(t, lines[0]), decode(t, lines[3])
	if dig(first, "event") != nil || dig(first, "task", "state") != "TASK_STATE_IN_PROGRESS" {
		t.Errorf("first message %v", first)
	}
	if dig(last, "event", "type") != "task.completed" || dig(last, "event", "sequence") != "11" || dig(last, "task", "state") != "TASK_STATE_COMPLETE" {
		t.Errorf("last message %v", last)
	}
}

// start -watch starts the task, then exits as its watch does.
func TestTaskStartWatch(t *testing.T) {
	for _, tt := range []struct {
		end  taskerv1.TaskState
		code int
	}{{taskerv1.TaskState_TASK_STATE_COMPLETE, 0}, {taskerv1.TaskState_TASK_STATE_CANCELLED, 1}} {
		f := startFake(t)
		f.watch = watchScript(tt.end, "task.ended")
		code, stdout, stderr := f.tasker(t, "task", "start", "shop/order-fulfilment", "-input", validInput, "-watch")
		if code != tt.code || !strings.HasPrefix(stdout, "task t_new1 started: shop/order-fulfilment 1.0.0\ntask t_run: ") {
			t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tt.end, code, tt.code, stdout, stderr)
		}
	}
}

// The idempotency key reaches the agent, and a second start with it says
// the task was already started.
func TestTaskStartIdempotencyKey(t *testing.T) {
	f := startFake(t)
	args := []string{"task", "start", "shop/order-fulfilment", "-input", validInput, "-idempotency-key", "ord_7"}
	code, first, _ := f.tasker(t, args...)
	if code != 0 || first != "task t_new1 started: shop/order-fulfilment 1.0.0\n" {
		t.Errorf("first start: exit %d, %q", code, first)
	}
	code, second, _ := f.tasker(t, args...)
	if code != 0 || second != "task t_new1 already started with idempotency key \"ord_7\"; now pending: shop/order-fulfilment 1.0.0\n" {
		t.Errorf("second start: exit %d, %q", code, second)
	}
	code, third, _ := f.tasker(t, append(args, "-o", "json")...)
	if v := decode(t, third); code != 0 || dig(v, "created") != false || dig(v, "task", "id") != "t_new1" {
		t.Errorf("third start: exit %d, %v", code, v)
	}
	if len(f.starts) != 3 {
		t.Fatalf("%d starts reached the agent, want 3", len(f.starts))
	}
	for _, r := range f.starts {
		if r.IdempotencyKey != "ord_7" {
			t.Errorf("request with key %q, want ord_7", r.IdempotencyKey)
		}
	}
	if len(f.tasks) != 4 {
		t.Errorf("the agent holds %d tasks, want one more than its 3", len(f.tasks))
	}
}

// `-f -` and `@-` read standard input.
func TestStandardInput(t *testing.T) {
	f := startFake(t)
	src, err := os.ReadFile("../../examples/user-onboarding.yaml")
	if err != nil {
		t.Fatal(err)
	}
	feed(t, string(src))
	if code, stdout, stderr := f.tasker(t, "workflow", "apply", "-f", "-"); code != 0 || stdout != "growth/user-onboarding 2.1.0: created, 5 steps\n" {
		t.Errorf("apply -f -: exit %d, %q, %q", code, stdout, stderr)
	}
	feed(t, "name: Bad Name\n")
	if code, _, stderr := f.tasker(t, "workflow", "apply", "-f", "-"); code != 1 || !strings.Contains(stderr, "<stdin>: name (line 1): \"Bad Name\" is not a valid workflow name") {
		t.Errorf("apply -f - of a bad manifest: exit %d, %q", code, stderr)
	}
	feed(t, "  "+validInput+"\n")
	if code, _, stderr := f.tasker(t, "task", "start", "shop/order-fulfilment", "-input", "@-"); code != 0 || f.starts[0].InputJson != validInput {
		t.Errorf("start -input @-: exit %d, %q, input %q", code, stderr, f.starts[0].InputJson)
	}
	feed(t, "not json")
	if code, _, stderr := f.tasker(t, "step", "resolve", "t_err", "ship", "-result", "@-"); code != 1 || !strings.Contains(stderr, "-result standard input: not JSON") {
		t.Errorf("resolve -result @- of bad JSON: exit %d, %q", code, stderr)
	}
}

// task list follows next_page_token until it has -limit tasks or there
// are no more.
func TestTaskListPagination(t *testing.T) {
	seven := func(f *fakeAgent) {
		f.pageSize = 2
		for i := range 4 {
			task := doneTask()
			task.Id = "t_old" + strconv.Itoa(i)
			f.tasks = append(f.tasks, task)
		}
	}
	tests := []struct {
		name   string
		args   []string
		tokens []string // page_token of each request
		sizes  []int32  // page_size of each request
		ids    int
		more   bool
	}{
		{"every page", []string{"-limit", "0"}, []string{"", "2", "4", "6"}, []int32{1000, 1000, 1000, 1000}, 7, false},
		{"default limit", nil, []string{"", "2", "4", "6"}, []int32{100, 98, 96, 94}, 7, false},
		{"limit", []string{"-limit", "3"}, []string{"", "2"}, []int32{3, 1}, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			seven(f)
			code, stdout, stderr := f.tasker(t, append([]string{"task", "list"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var tokens []string
			var sizes []int32
			for _, r := range f.lists {
				tokens, sizes = append(tokens, r.PageToken), append(sizes, r.PageSize)
			}
			if !slices.Equal(tokens, tt.tokens) || !slices.Equal(sizes, tt.sizes) {
				t.Errorf("requests: tokens %q sizes %v, want %q %v", tokens, sizes, tt.tokens, tt.sizes)
			}
			if n := strings.Count(stdout, "\nt_"); n != tt.ids {
				t.Errorf("%d tasks printed, want %d:\n%s", n, tt.ids, stdout)
			}
			if more := strings.Contains(stderr, "more tasks remain"); more != tt.more {
				t.Errorf("stderr %q; want a note that more remain: %v", stderr, tt.more)
			}
		})
	}
	f := startFake(t)
	seven(f)
	code, stdout, _ := f.tasker(t, "task", "list", "-limit", "3", "-o", "json")
	v := decode(t, stdout)
	if code != 0 || len(dig(v, "tasks").([]any)) != 3 || dig(v, "next_page_token") != "3" {
		t.Errorf("json: exit %d, %d tasks, next_page_token %v", code, len(dig(v, "tasks").([]any)), dig(v, "next_page_token"))
	}
}

// snapshot bytes, larger than one chunk of the fake's stream.
func snapshotBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestSnapshotSave(t *testing.T) {
	tests := []struct {
		name      string
		failAfter int    // chunks sent before the agent fails; 0 never
		existing  string // FILE's content before the save; "" none
		code      int
		stderr    string
	}{
		{name: "saved"},
		{name: "saved over an older snapshot", existing: "old snapshot"},
		{name: "a stream that fails leaves no file", failAfter: 3, code: 1, stderr: "tasker snapshot save: snapshot store: disk full (internal)\n"},
		{name: "a stream that fails leaves the old file", failAfter: 3, existing: "old snapshot", code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			f.snapshot, f.snapshotFailAfter = snapshotBytes(4500), tt.failAfter
			dir := t.TempDir()
			file := filepath.Join(dir, "tasker.snap")
			if tt.existing != "" {
				if err := os.WriteFile(file, []byte(tt.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			code, stdout, stderr := f.tasker(t, "snapshot", "save", file)
			if code != tt.code || !strings.HasSuffix(stderr, tt.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "tasker.snap") {
				t.Errorf("the directory holds %v; want FILE alone, no temporary file", entries)
			}
			got, err := os.ReadFile(file)
			switch {
			case code == 0:
				if !bytes.Equal(got, f.snapshot) || stdout != "saved snapshot to "+file+" (4500 bytes)\n" {
					t.Errorf("saved %d bytes, stdout %q", len(got), stdout)
				}
				if info, err := os.Stat(file); err != nil || info.Mode().Perm() != 0o600 {
					t.Errorf("mode %v, %v; want 0600", info.Mode(), err)
				}
			case tt.existing != "":
				if string(got) != tt.existing {
					t.Errorf("FILE now holds %d bytes, want the old snapshot untouched", len(got))
				}
			default:
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("FILE exists after a failed save (%d bytes)", len(got))
				}
			}
		})
	}
	f := startFake(t)
	f.snapshot = snapshotBytes(10)
	file := filepath.Join(t.TempDir(), "s.snap")
	code, stdout, _ := f.tasker(t, "snapshot", "save", file, "-o", "json")
	if v := decode(t, stdout); code != 0 || dig(v, "file") != file || dig(v, "bytes") != 10.0 {
		t.Errorf("json: exit %d, %v", code, v)
	}
	f.snapshot = nil
	code, _, stderr := f.tasker(t, "snapshot", "save", file+".empty")
	if _, err := os.Stat(file + ".empty"); code != 1 || !strings.Contains(stderr, "the agent sent an empty snapshot") || err == nil {
		t.Errorf("empty snapshot: exit %d, %q, file %v", code, stderr, err)
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := startFake(t)
	snap := snapshotBytes(2*restoreChunk + 100)
	file := filepath.Join(t.TempDir(), "tasker.snap")
	if err := os.WriteFile(file, snap, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := f.tasker(t, "snapshot", "restore", file)
	if code != 0 || stdout != "restored "+file+" (131172 bytes): 3 tasks, 1 workflow version\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var sizes []int
	for _, c := range f.restored {
		sizes = append(sizes, len(c))
	}
	if !slices.Equal(sizes, []int{65536, 65536, 100}) || !bytes.Equal(bytes.Join(f.restored, nil), snap) {
		t.Errorf("chunks of %v bytes; want 64 KiB, 64 KiB, 100 and the file's bytes", sizes)
	}
	code, stdout, _ = f.tasker(t, "snapshot", "restore", file, "-o", "json")
	if v := decode(t, stdout); code != 0 || dig(v, "tasks") != "3" || dig(v, "workflows") != "1" {
		t.Errorf("json: exit %d, %v", code, v)
	}

	f = startFake(t)
	empty := filepath.Join(t.TempDir(), "empty.snap")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = f.tasker(t, "snapshot", "restore", empty)
	if code != 1 || stderr != "tasker snapshot restore: "+empty+" is empty\n" || f.restored != nil {
		t.Errorf("empty file: exit %d, %q; the agent got %d chunks", code, stderr, len(f.restored))
	}
	code, _, stderr = f.tasker(t, "snapshot", "restore", "missing.snap")
	if code != 1 || stderr != "tasker snapshot restore: missing.snap: cannot read: no such file or directory\n" {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
}

// Every subcommand answers -h with its own usage, as `tasker help GROUP
// SUB` does; a group lists its subcommands.
func TestSubcommandHelp(t *testing.T) {
	for _, g := range commands() {
		for _, s := range g.subcommands {
			code, stdout, _ := runBounded(t, nil, strings.Fields("help "+s.name)...)
			if code != 0 || !strings.HasPrefix(stdout, "Usage: tasker "+s.name+" ") || s.synopsis == "" {
				t.Errorf("help %s: exit %d, %q", s.name, code, firstLine(stdout))
			}
			code, direct, _ := runBounded(t, nil, append(strings.Fields(s.name), "-h")...)
			if code != 0 || direct != stdout {
				t.Errorf("%s -h: exit %d, differs from help", s.name, code)
			}
			if !strings.Contains(g.usage, "\n  "+strings.TrimPrefix(s.name, g.name+" ")+" ") {
				t.Errorf("tasker help %s does not list %s", g.name, s.name)
			}
		}
	}
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"task"}, 2, "", "Usage: tasker task SUBCOMMAND [ARGS]\n"},
		{[]string{"task", "-h"}, 0, "Subcommands:\n  start   start a task of a workflow\n", ""},
		{[]string{"help", "raft"}, 0, "  peers        list the Raft servers and the leader\n  remove-peer  remove a server from the Raft configuration\n", ""},
		{[]string{"task", "frob"}, 2, "", "tasker task: unknown subcommand \"frob\"; run 'tasker help task' for the list\n"},
		{[]string{"help", "docs", "x"}, 2, "", "tasker help: docs has no subcommands"},
		{[]string{"help", "task", "get", "x"}, 2, "", "tasker help: task get has no subcommands"},
		{[]string{"help", "tls", "ca", "create", "x"}, 2, "", "expected at most a command and two subcommands, got 4 names"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runBounded(t, nil, tt.args...)
		if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("tasker %s: exit %d, stdout %q, stderr %q", strings.Join(tt.args, " "), code, stdout, stderr)
		}
	}
}

// -stale and -consistent reach the agent as the Tasker-Consistency header
// of every call a read command makes (each page of a list, the watch
// stream); without them there is no header, and the leader answers.
func TestReadConsistency(t *testing.T) {
	reads := []struct {
		args      []string
		procedure string
		calls     int
	}{
		{[]string{"task", "get", "t_run"}, taskerv1connect.WorkflowServiceGetTaskProcedure, 1},
		{[]string{"task", "list"}, taskerv1connect.WorkflowServiceListTasksProcedure, 2}, // two pages
		{[]string{"task", "watch", "t_run"}, taskerv1connect.WorkflowServiceWatchTaskProcedure, 1},
		{[]string{"workflow", "get", "shop/order-fulfilment"}, taskerv1connect.WorkflowServiceGetWorkflowProcedure, 1},
		{[]string{"workflow", "list"}, taskerv1connect.WorkflowServiceListWorkflowsProcedure, 1},
	}
	modes := []struct {
		flags []string
		want  string
	}{
		{nil, ""},
		{[]string{"-stale"}, "stale"},
		{[]string{"--consistent"}, "consistent"},
	}
	for _, r := range reads {
		for _, fl := range modes {
			t.Run(strings.Join(append(r.args[:2:2], fl.flags...), " "), func(t *testing.T) {
				f := startFake(t)
				f.pageSize = 2
				f.watch = watchScript(taskerv1.TaskState_TASK_STATE_COMPLETE, "task.completed")
				code, _, stderr := f.tasker(t, append(slices.Clone(r.args), fl.flags...)...)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				want := slices.Repeat([]string{fl.want}, r.calls)
				if got := f.consistency[r.procedure]; !slices.Equal(got, want) {
					t.Errorf("Tasker-Consistency of each call: %q, want %q", got, want)
				}
			})
		}
		t.Run(strings.Join(r.args[:2], " ")+" -stale -consistent", func(t *testing.T) {
			f := startFake(t)
			code, stdout, stderr := f.tasker(t, append(slices.Clone(r.args), "-stale", "-consistent")...)
			name := strings.Join(r.args[:2], " ")
			want := "tasker " + name + ": -stale and -consistent do not combine: pick one; run 'tasker help " + name + "' for usage\n"
			if code != 2 || stderr != want || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, stdout, stderr, want)
			}
			if calls := f.consistency[r.procedure]; len(calls) != 0 {
				t.Errorf("the agent was called %d times", len(calls))
			}
		})
	}
	// Writes always go to the leader: they take neither flag.
	f := startFake(t)
	code, _, stderr := f.tasker(t, "task", "cancel", "t_run", "-stale")
	if code != 2 || !strings.Contains(stderr, "flag provided but not defined: -stale") || len(f.cancels) != 0 {
		t.Errorf("task cancel -stale: exit %d, %q, %d cancels", code, stderr, len(f.cancels))
	}
}

func TestRelative(t *testing.T) {
	at := base
	tests := []struct {
		d    time.Duration // the time is at+d
		want string
	}{
		{-ms(125000), "2m5s ago"},
		{ms(25426), "in 25s"},
		{-ms(499), "now"},
		{ms(499), "now"},
		{-time.Hour - 29*time.Second, "1h ago"},
		{-26*time.Hour - 10*time.Minute - 40*time.Second, "26h11m ago"},
		{90 * time.Minute, "in 1h30m"},
	}
	for _, tt := range tests {
		if got := relative(timestamppb.New(at.Add(tt.d)), at); got != tt.want {
			t.Errorf("relative(at%+v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := relative(nil, at); got != "-" {
		t.Errorf("relative(nil) = %q, want -", got)
	}
}
