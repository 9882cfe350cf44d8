package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// batch is a set of order tasks started on an agent, by idempotency key.
type batch struct {
	c   *client.Client
	ids map[string]string // idempotency key (the order id) → task id
}

// startBatch starts n orders and returns once every StartTask has
// returned, that is, once every task is committed.
func startBatch(t *testing.T, c *client.Client, prefix string, n int) *batch {
	t.Helper()
	b := &batch{c: c, ids: map[string]string{}}
	for i := range n {
		key := fmt.Sprintf("ord_%s%03d", prefix, i)
		task, created, err := c.StartTask(callCtx(t), "order-fulfilment", orderInput(key, "tok_visa", "TEE-M"),
			client.Namespace("shop"), client.IdempotencyKey(key))
		if err != nil {
			t.Fatal(err)
		}
		if !created {
			t.Fatalf("%s: created = false for a new key", key)
		}
		b.ids[key] = task.GetId()
	}
	return b
}

// tasks returns every task of the batch as the agent reports it now.
func (b *batch) tasks(ctx context.Context) ([]*taskerv1.Task, error) {
	out := make([]*taskerv1.Task, 0, len(b.ids))
	for _, id := range b.ids {
		task, err := b.c.GetTask(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, task)
	}
	return out, nil
}

// count returns how many tasks are in state s, and how many steps of
// all of them are in step state ss.
func count(tasks []*taskerv1.Task, s taskerv1.TaskState, ss taskerv1.StepState) (int, int) {
	nt, ns := 0, 0
	for _, task := range tasks {
		if task.GetState() == s {
			nt++
		}
		for _, st := range task.GetSteps() {
			if st.GetState() == ss {
				ns++
			}
		}
	}
	return nt, ns
}

// waitAllComplete waits until every task of the batch is complete,
// failing at once if one is blocked in error, and returns them.
func (b *batch) waitAllComplete(t *testing.T, timeout time.Duration) []*taskerv1.Task {
	t.Helper()
	var tasks []*taskerv1.Task
	eventually(t, timeout, "every task is complete", func(ctx context.Context) (bool, error) {
		var err error
		if tasks, err = b.tasks(ctx); err != nil {
			return false, nil // the agent may still be electing itself
		}
		for _, task := range tasks {
			if task.GetState() == taskerv1.TaskState_TASK_STATE_ERROR {
				return false, fmt.Errorf("task %s is blocked in error: %v", task.GetId(), task)
			}
		}
		done, _ := count(tasks, taskerv1.TaskState_TASK_STATE_COMPLETE, 0)
		return done == len(tasks), nil
	})
	return tasks
}

// checkKeys checks that every idempotency key still names its task: a
// StartTask with it starts nothing and returns the task.
func (b *batch) checkKeys(t *testing.T) {
	t.Helper()
	for key, id := range b.ids {
		task, created, err := b.c.StartTask(callCtx(t), "order-fulfilment", orderInput(key, "tok_visa", "TEE-M"),
			client.Namespace("shop"), client.IdempotencyKey(key))
		if err != nil {
			t.Fatalf("StartTask with key %s: %v", key, err)
		}
		if created || task.GetId() != id {
			t.Errorf("StartTask with key %s: created %v, task %s; want false and %s", key, created, task.GetId(), id)
		}
	}
	res, err := b.c.Service().ListTasks(callCtx(t), connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: "shop", PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Msg.GetTasks()); got != len(b.ids) {
		t.Errorf("the agent lists %d tasks, want %d", got, len(b.ids))
	}
}

// TestAgentKilled kills the agent with SIGKILL in the middle of a batch,
// restarts it on the same data dir and ports, and checks that every task
// completes, no result is lost, no completed step runs again, and the
// idempotency keys still hold.
func TestAgentKilled(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{dataDir: filepath.Join(t.TempDir(), "data")})
	svc := startServices(t, a.addr, []string{"-delay", "50ms-150ms"}, "-flaky", "0.2", "-seed", "3")
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), fastWorkflow(t, "2s")); err != nil {
		t.Fatal(err)
	}
	const n = 30
	b := startBatch(t, c, "kill", n)

	// Kill the agent once some tasks, not all, have completed.
	var before []*taskerv1.Task
	eventually(t, 60*time.Second, "a quarter of the tasks complete", func(ctx context.Context) (bool, error) {
		res, err := c.Service().ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{
			Namespace: "shop", State: taskerv1.TaskState_TASK_STATE_COMPLETE, PageSize: 1000}))
		if err != nil {
			return false, err
		}
		return len(res.Msg.GetTasks()) >= n/4, nil
	})
	before, err := b.tasks(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	a.kill()
	done, _ := count(before, taskerv1.TaskState_TASK_STATE_COMPLETE, 0)
	_, running := count(before, 0, taskerv1.StepState_STEP_STATE_IN_PROGRESS)
	_, enqueued := count(before, 0, taskerv1.StepState_STEP_STATE_ENQUEUED)
	t.Logf("killed the agent with %d of %d tasks complete, %d steps in progress and %d enqueued", done, n, running, enqueued)
	if done == n {
		t.Fatal("every task completed before the kill: nothing was tested; slow the services down")
	}
	committed := map[stepKey]time.Time{}
	for _, task := range before {
		for _, st := range task.GetSteps() {
			if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE {
				committed[stepKey{task.GetId(), st.GetName()}] = killedAt
			}
		}
	}

	// The services keep running the steps they hold and retry their
	// reports while the agent is down.
	a.start()
	b.checkKeys(t)
	final := b.waitAllComplete(t, 90*time.Second)
	execs := svc.executions(t)
	checkRuns(t, final, execs, committed)
	for _, task := range final {
		checkOrderResults(t, task)
	}
	after := 0
	for _, es := range execs {
		for _, e := range es {
			if e.Time.After(killedAt) {
				after++
			}
		}
	}
	t.Logf("all %d tasks complete after the restart; %d executions began after the kill", n, after)
}

// TestAgentGracefulShutdown stops the agent with SIGTERM while steps run:
// it lets the apps finish the steps they hold, exits 0 within its
// shutdown timeout, and after a restart every task completes.
func TestAgentGracefulShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 10 * time.Second
	a := startAgent(t, agentConfig{
		dataDir:    filepath.Join(t.TempDir(), "data"),
		configFile: fmt.Sprintf("shutdown_timeout: %s\n", shutdownTimeout),
	})
	svc := startServices(t, a.addr, []string{"-delay", "300ms-700ms"})
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, c, "term", 12)

	var before []*taskerv1.Task
	eventually(t, 30*time.Second, "steps are running", func(ctx context.Context) (bool, error) {
		var err error
		if before, err = b.tasks(ctx); err != nil {
			return false, err
		}
		_, running := count(before, 0, taskerv1.StepState_STEP_STATE_IN_PROGRESS)
		return running > 0, nil
	})
	termAt := time.Now()
	a.proc.signal(t, syscall.SIGTERM)
	code := a.proc.wait(t, shutdownTimeout+10*time.Second)
	took := time.Since(termAt)
	if code != 0 {
		t.Errorf("the agent exited with %d after SIGTERM, want 0", code)
	}
	if took > shutdownTimeout+2*time.Second {
		t.Errorf("the agent took %s to stop, over its shutdown timeout of %s", took, shutdownTimeout)
	}
	if log := a.proc.tail(5); !strings.Contains(log, "agent stopped") {
		t.Errorf("the agent's log does not end with \"agent stopped\":\n%s", log)
	}
	t.Logf("the agent stopped %s after SIGTERM", took.Round(time.Millisecond))

	a.start()
	final := b.waitAllComplete(t, 60*time.Second)
	checkRuns(t, final, svc.executions(t), nil)

	// The steps running at SIGTERM were finished and reported during the
	// drain, not timed out and run again.
	attempts := map[stepKey]int32{}
	for _, task := range final {
		for _, st := range task.GetSteps() {
			attempts[stepKey{task.GetId(), st.GetName()}] = st.GetAttempts()
		}
	}
	for _, task := range before {
		for _, st := range task.GetSteps() {
			k := stepKey{task.GetId(), st.GetName()}
			if st.GetState() == taskerv1.StepState_STEP_STATE_IN_PROGRESS && attempts[k] != st.GetAttempts() {
				t.Errorf("%s was running attempt %d at SIGTERM but took %d attempts: it was not let finish", k, st.GetAttempts(), attempts[k])
			}
		}
	}
}

// TestServiceDrain stops the payments service with SIGTERM while it runs
// charges: it finishes and reports them, exits 0, and once a new payments
// process is up every task completes, no charge run twice.
func TestServiceDrain(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{})
	svc := startServices(t, a.addr, []string{"-delay", "400ms-800ms"})
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, c, "drain", 8)

	var before []*taskerv1.Task
	eventually(t, 30*time.Second, "charges are running", func(ctx context.Context) (bool, error) {
		var err error
		if before, err = b.tasks(ctx); err != nil {
			return false, err
		}
		for _, task := range before {
			if stepOf(t, task, "charge").GetState() == taskerv1.StepState_STEP_STATE_IN_PROGRESS {
				return true, nil
			}
		}
		return false, nil
	})
	payments := svc.procs[2]
	payments.signal(t, syscall.SIGTERM)
	if code := payments.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("the payments service exited with %d after SIGTERM, want 0", code)
	}
	if log := payments.tail(3); !strings.Contains(log, "drained") {
		t.Errorf("the payments service did not say it drained:\n%s", log)
	}
	// The charges it was running were reported before it exited.
	for _, task := range before {
		if st := stepOf(t, task, "charge"); st.GetState() == taskerv1.StepState_STEP_STATE_IN_PROGRESS {
			now, err := c.GetTask(callCtx(t), task.GetId())
			if err != nil {
				t.Fatal(err)
			}
			if got := stepOf(t, now, "charge"); got.GetState() != taskerv1.StepState_STEP_STATE_COMPLETE || got.GetAttempts() != st.GetAttempts() {
				t.Errorf("%s/charge was running attempt %d at SIGTERM; after the drain it is %s at attempt %d, want complete",
					task.GetId(), st.GetAttempts(), got.GetState(), got.GetAttempts())
			}
		}
	}
	startProcess(t, "service payments (2)", servicesBin, []string{"-addr", a.addr, "-only", "payments", "-log", svc.journal},
		filepath.Join(t.TempDir(), "payments-2.log"), nil)
	final := b.waitAllComplete(t, 60*time.Second)
	checkRuns(t, final, svc.executions(t), nil)
	for _, task := range final {
		if n := stepOf(t, task, "charge").GetAttempts(); n != 1 {
			t.Errorf("%s/charge took %d attempts, want 1: nothing failed", task.GetId(), n)
		}
	}
}
