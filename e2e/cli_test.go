package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// cliResult is what one run of the tasker binary did.
type cliResult struct {
	stdout, stderr string
	code           int
}

// tasker runs bin/tasker with args (and -addr addr after them, when addr
// is not empty) and returns its output and exit code.
func tasker(t *testing.T, addr string, args ...string) cliResult {
	t.Helper()
	if addr != "" {
		args = append(args, "-addr", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, taskerBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tasker %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	return r
}

// must fails the test unless the command exited with code and its
// standard output contains every one of want.
func (r cliResult) must(t *testing.T, what string, code int, want ...string) cliResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("%s: stdout does not contain %q\nstdout:\n%s\nstderr:\n%s", what, w, r.stdout, r.stderr)
		}
	}
	return r
}

// decode parses the command's -o json output into m.
func (r cliResult) decode(t *testing.T, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		t.Fatalf("decode %T from %q: %v", m, r.stdout, err)
	}
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func stepOf(t *testing.T, task *taskerv1.Task, name string) *taskerv1.Step {
	t.Helper()
	for _, s := range task.GetSteps() {
		if s.GetName() == name {
			return s
		}
	}
	t.Fatalf("task %s has no step %q", task.GetId(), name)
	return nil
}

// TestCLI drives an agent with the tasker binary, as an operator does:
// workflows, tasks, a step resolved by hand after a permanent failure,
// and a snapshot saved and restored.
func TestCLI(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{})
	svc := startServices(t, a.addr, nil)
	dir := t.TempDir()
	manifest := filepath.Join(repoRoot, "examples", "order-fulfilment.yaml")

	// Workflows.
	tasker(t, a.addr, "workflow", "apply", "-f", manifest).must(t, "workflow apply", 0, "shop/order-fulfilment 1.0.0: created, 5 steps")
	tasker(t, a.addr, "workflow", "apply", "-f", manifest).must(t, "workflow apply again", 0, "unchanged")
	tasker(t, a.addr, "workflow", "list").must(t, "workflow list", 0, "shop", "order-fulfilment", "1.0.0")
	var wfs taskerv1.ListWorkflowsResponse
	tasker(t, a.addr, "workflow", "list", "-o", "json").must(t, "workflow list -o json", 0).decode(t, &wfs)
	if len(wfs.GetWorkflows()) != 1 || wfs.GetWorkflows()[0].GetName() != "order-fulfilment" {
		t.Fatalf("workflow list -o json: %v", &wfs)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: a.b\n    depends_on: [nope]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := tasker(t, a.addr, "workflow", "apply", "-f", bad); r.code != 1 || !strings.Contains(r.stderr, "nope") {
		t.Fatalf("workflow apply of an invalid manifest: exit %d, stderr %q; want 1 and the problem", r.code, r.stderr)
	}

	// A task, started, watched to its end, shown and listed.
	input := writeJSON(t, dir, "order.json", orderInput("ord_cli1", "tok_visa", "BOOK-GO"))
	var started taskerv1.StartTaskResponse
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+input, "-idempotency-key", "ord_cli1", "-o", "json").
		must(t, "task start", 0).decode(t, &started)
	id := started.GetTask().GetId()
	if !started.GetCreated() || id == "" {
		t.Fatalf("task start: %v", &started)
	}
	// The task may have ended before the watch begins: then the watch
	// prints where it is and how it ended.
	tasker(t, a.addr, "task", "watch", id).must(t, "task watch", 0, "task "+id+" complete after")
	tasker(t, a.addr, "task", "get", id).must(t, "task get", 0, "State:", "complete", "5 of 5 done", "notify")
	var got taskerv1.GetTaskResponse
	tasker(t, a.addr, "task", "get", id, "-o", "json").must(t, "task get -o json", 0).decode(t, &got)
	if got.GetTask().GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
		t.Fatalf("task get -o json: state %s", got.GetTask().GetState())
	}
	tasker(t, a.addr, "task", "get", id, "-results").must(t, "task get -results", 0, "reservation_id", "tracking_number")
	tasker(t, a.addr, "task", "list", "-state", "complete").must(t, "task list", 0, id)
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+input, "-idempotency-key", "ord_cli1").
		must(t, "task start with the same key", 0, "task "+id+" already started")
	if r := tasker(t, a.addr, "task", "get", "tsk_nosuchtask"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("task get of an unknown task: exit %d, stderr %q", r.code, r.stderr)
	}

	// A declined card fails the charge for good: the task is blocked in
	// error until an operator resolves the step; then it ends resolved
	// manually.
	declined := writeJSON(t, dir, "declined.json", orderInput("ord_cli2", "tok_declined", "CAP-02"))
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+declined, "-watch").
		must(t, "task start -watch of a declined card", 1, "charge failed for good")
	var blocked taskerv1.ListTasksResponse
	tasker(t, a.addr, "task", "list", "-state", "error", "-o", "json").must(t, "task list -state error", 0).decode(t, &blocked)
	if len(blocked.GetTasks()) != 1 {
		t.Fatalf("task list -state error: %d tasks, want 1", len(blocked.GetTasks()))
	}
	failedID := blocked.GetTasks()[0].GetId()
	tasker(t, a.addr, "task", "get", failedID).must(t, "task get of the blocked task", 0, "error", "card_declined")
	if r := tasker(t, a.addr, "step", "resolve", failedID, "charge", "-result", `{"status":"captured"}`); r.code != 1 || !strings.Contains(r.stderr, "charge_id") {
		t.Fatalf("step resolve with a result that breaks the contract: exit %d, stderr %q; want 1 and the violation", r.code, r.stderr)
	}
	tasker(t, a.addr, "step", "resolve", failedID, "charge", "-result", `{"charge_id":"ch_by_phone","status":"captured"}`, "-reason", "paid by phone").
		must(t, "step resolve", 0, "step charge of task "+failedID+" resolved")
	tasker(t, a.addr, "task", "watch", failedID).must(t, "task watch after resolve", 0, "resolved_manually")
	tasker(t, a.addr, "task", "get", failedID, "-o", "json").must(t, "task get", 0).decode(t, &got)
	if s := got.GetTask().GetState(); s != taskerv1.TaskState_TASK_STATE_RESOLVED_MANUALLY {
		t.Fatalf("resolved task is %s, want resolved manually", s)
	}
	if st := stepOf(t, got.GetTask(), "charge"); st.GetState() != taskerv1.StepState_STEP_STATE_RESOLVED_MANUALLY || !strings.Contains(st.GetResultJson(), "ch_by_phone") {
		t.Fatalf("charge: %v", st)
	}
	if st := stepOf(t, got.GetTask(), "ship"); st.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE {
		t.Fatalf("ship did not run after the resolved charge: %v", st)
	}
	for _, e := range svc.executions(t)[stepKey{failedID, "charge"}] {
		if e.Outcome != "card_declined" {
			t.Errorf("declined charge executed with outcome %s", e.Outcome)
		}
	}

	// A snapshot round trip: save, change the state, restore, and the
	// change is gone while everything saved is back.
	snap := filepath.Join(dir, "state.snap")
	tasker(t, a.addr, "snapshot", "save", snap).must(t, "snapshot save", 0, "saved snapshot to "+snap)
	if fi, err := os.Stat(snap); err != nil || fi.Size() == 0 {
		t.Fatalf("snapshot file: %v", err)
	}
	later := writeJSON(t, dir, "later.json", orderInput("ord_cli3", "tok_visa", "MUG-01"))
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+later, "-idempotency-key", "ord_cli3", "-o", "json").
		must(t, "task start after the snapshot", 0).decode(t, &started)
	laterID := started.GetTask().GetId()
	tasker(t, a.addr, "task", "watch", laterID).must(t, "task watch", 0)
	tasker(t, a.addr, "snapshot", "restore", snap).must(t, "snapshot restore", 0, "restored "+snap, "2 tasks", "1 workflow version")
	if r := tasker(t, a.addr, "task", "get", laterID); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("task started after the snapshot, after the restore: exit %d, stdout %q, stderr %q; want it gone", r.code, r.stdout, r.stderr)
	}
	tasker(t, a.addr, "task", "get", id).must(t, "task get after restore", 0, "complete", "5 of 5 done")
	tasker(t, a.addr, "task", "get", failedID).must(t, "task get after restore", 0, "resolved_manually")
	tasker(t, a.addr, "workflow", "list").must(t, "workflow list after restore", 0, "order-fulfilment")
	// The idempotency keys came back with the tasks: the key of the task
	// that is gone starts a new one.
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+input, "-idempotency-key", "ord_cli1").
		must(t, "task start with a restored key", 0, "task "+id+" already started")
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+later, "-idempotency-key", "ord_cli3", "-watch").
		must(t, "task start with a key the restore dropped", 0, "complete after")

	// The cluster commands see the agent and the services.
	tasker(t, a.addr, "members").must(t, "members", 0, "e2e", "alive", "server")
	eventually(t, 10*time.Second, "the services' capabilities in the registry", func(context.Context) (bool, error) {
		r := tasker(t, a.addr, "capabilities")
		return r.code == 0 && strings.Contains(r.stdout, "payments.charge") && strings.Contains(r.stdout, "inventory.reserve"), nil
	})
	tasker(t, a.addr, "raft", "peers").must(t, "raft peers", 0, "e2e")
}
