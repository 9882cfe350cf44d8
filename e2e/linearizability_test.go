package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// artifactsEnv names a directory where a failing history is saved; a new
// temporary directory when unset.
const artifactsEnv = "TASKER_ARTIFACTS"

// linWorkflow has one step, done by the test's own worker: nobody else
// offers lin.work, and its lease outlives the test, so the attempts the
// worker receives stay current until a client completes them or the task
// is cancelled, or the client agent is cut off from the servers: the
// leader then fails the attempts it holds as lost and runs them again once
// it is back. Many attempts, soon retried, so that no task ends in error
// (which the model has no place for) however often that happens.
const linWorkflow = `name: lin
namespace: lin
version: 1.0.0
steps:
  - name: work
    capability: lin.work
    timeout: 10m
    retry: {max_attempts: 50, backoff: {initial: 100ms, max: 1s}}
`

const (
	linWorker   = "lin-worker"
	linStepName = "work"
	// linResult is every CompleteStep's result: a result sent again for the
	// same attempt is the same, as an app's retry would be.
	linResult = `{"done":true}`
)

// TestClusterLinearizability records a concurrent history of StartTask
// (with idempotency keys), GetTask (consistent reads), CancelTask and
// CompleteStep against a 3-server cluster and a client agent while a
// nemesis kills the leader with SIGKILL every few seconds and restarts it
// on its data dir and ports, and, where network namespaces are available,
// runs every agent on its own host of a network lab and also cuts the
// network (linNemesis), then checks the history with porcupine against
// the model in linmodel_test.go. Calls whose outcome is unknown (timed
// out, unavailable, connection lost) may have taken effect at any time
// after they were made. A history the model rejects is saved, with
// porcupine's visualization, under $TASKER_ARTIFACTS (or a new temporary
// directory) and the test fails naming it.
func TestClusterLinearizability(t *testing.T) {
	const (
		clients  = 6
		runFor   = 18 * time.Second
		callTime = 8 * time.Second // over the agents' 7 s hold while there is no leader
	)
	// Without namespaces the test still checks what leader kills do.
	lab, whyNot := tryNetLab(t)
	if lab == nil {
		t.Logf("partitions skipped, leader kills only: %s (%s=1 makes this a failure)", whyNot, requireNetnsEnv)
	}
	c := startClusterWith(t, clusterOptions{servers: 3, lab: lab, clients: []clientSpec{{name: "client-0"}}})
	client := c.client("client-0")
	wf := taskerv1connect.NewWorkflowServiceClient(h2cClient(), client.api)
	if _, err := wf.ApplyWorkflow(callCtx(t), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: linWorkflow})); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Stop the goroutines before the processes are killed (cleanups run
	// last added first), also when the test fails early.
	t.Cleanup(func() { stop(); wg.Wait() })

	// The worker, on the client agent (never killed): every assignment it
	// receives becomes a step the clients may complete.
	r := &linRecorder{began: time.Now(), tasks: map[string]string{}, assigned: map[string]int32{}}
	regCtx, cancelReg := context.WithTimeout(ctx, 15*time.Second)
	defer cancelReg()
	worker := taskerv1connect.NewWorkerServiceClient(h2cClient(), client.api)
	if _, err := worker.RegisterCapabilities(regCtx, connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId:     linWorker,
		Capabilities: []*taskerv1.Capability{{Name: "lin.work", MaxConcurrency: 10000}},
	})); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.poll(ctx, worker)
	}()
	c.waitCapabilities(t, 30*time.Second, map[string][]string{"lin.work": {"client-0"}})

	// The agents the clients call: every server (but one the nemesis has
	// killed) and the client agent.
	agents := append(slices.Clone(c.servers), client)
	down := make([]atomic.Bool, len(agents))
	apis := make([]linAgent, len(agents))
	for i, a := range agents {
		apis[i] = linAgent{a.name, taskerv1connect.NewWorkflowServiceClient(h2cClient(), a.api), taskerv1connect.NewWorkerServiceClient(h2cClient(), a.api)}
	}
	pick := func(rnd *rand.Rand) linAgent {
		for {
			if i := rnd.IntN(len(agents)); !down[i].Load() {
				return apis[i]
			}
		}
	}

	// The nemesis ends the run (after runFor, or once it made the faults
	// every run must have).
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	var clientsWG sync.WaitGroup
	for g := range clients {
		wg.Add(1)
		clientsWG.Add(1)
		go func() {
			defer wg.Done()
			defer clientsWG.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for n := 0; runCtx.Err() == nil; n++ {
				a := pick(rnd)
				callCtx, cancel := context.WithTimeout(ctx, callTime)
				r.randomCall(callCtx, rnd, a, fmt.Sprintf("k%d-%d", g, n))
				cancel()
			}
		}()
	}

	// The nemesis, on the test's goroutine (the harness fails the test from
	// it), until the run ends.
	nem := &linNemesis{c: c, lab: lab, client: client, began: r.began, down: down, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	nem.run(ctx, t, runFor)
	endRun()
	kills := nem.kills
	t.Logf("nemesis done after %s: %s; waiting for the calls in flight", time.Since(r.began).Round(time.Millisecond), nem)
	clientsDone := make(chan struct{})
	go func() { clientsWG.Wait(); close(clientsDone) }()
	select {
	case <-clientsDone:
	case <-time.After(callTime + 5*time.Second):
		t.Fatal("the clients did not stop within their call timeout")
	}

	// The cluster is whole again: ask every key for its task (revealing
	// what calls of unknown outcome did) and read every task, consistently,
	// so that the history ends with what is committed.
	nem.waitWhole(t)
	finalCtx, cancelFinal := context.WithTimeout(ctx, 60*time.Second)
	defer cancelFinal()
	r.finalReads(finalCtx, apis[len(apis)-1])
	stop()

	history := r.history()
	st := r.stats()
	t.Logf("history: %d operations on %d keys in %s, %s; %s", len(history), r.keyCount(), time.Since(r.began).Round(time.Millisecond), nem, st)

	checkedAt := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, history, 30*time.Second)
	t.Logf("porcupine: %s in %s", res, time.Since(checkedAt).Round(time.Millisecond))
	if res != porcupine.Ok {
		dir := saveLinHistory(t, linModel, history, info)
		logIllegalKeys(t, linModel, history, 3)
		known, _ := porcupine.CheckOperationsVerbose(linModelKnownBugs, history, 30*time.Second)
		t.Fatalf("the history is not linearizable (porcupine: %s; with the bugs fixed before allowed: %s); the visualization and the history are in %s", res, known, dir)
	}

	// The history must have exercised the model: enough calls, leader
	// kills, and each kind of call succeeding.
	if kills < 2 {
		t.Errorf("%d leader kills, want at least 2", kills)
	}
	if lab != nil {
		cutCalls := nem.cutCalls(r.calls())
		for _, k := range linPartitionKinds {
			t.Logf("calls to the cut-off side during partitions %s: %s", k, cutCalls[k])
			if nem.cuts[k] < 1 {
				t.Errorf("no partition %s, want at least one of each kind (%s)", k, nem)
			}
			if cutCalls[k].calls < 1 {
				t.Errorf("no call reached the cut-off side of a partition %s, want some", k)
			}
		}
	}
	if len(history) < 300 {
		t.Errorf("%d operations, want at least 300", len(history))
	}
	for _, want := range []struct {
		what string
		n    int
	}{
		{"StartTask created", st.created}, {"StartTask of a known key", st.existing}, {"GetTask complete", st.readComplete},
		{"GetTask cancelled", st.readCancelled}, {"GetTask running", st.readRunning}, {"CancelTask ok", st.cancelled},
		{"CancelTask refused", st.cancelRefused}, {"CompleteStep ok", st.completed},
	} {
		if want.n < 5 {
			t.Errorf("%s: %d, want at least 5 (%s)", want.what, want.n, st)
		}
	}
}

// linAgent is an agent the clients call, by its local API.
type linAgent struct {
	name string
	wf   taskerv1connect.WorkflowServiceClient
	wk   taskerv1connect.WorkerServiceClient
}

// linRecorder records the history and what the clients know: the task of
// each key and the attempts the worker received.
type linRecorder struct {
	began    time.Time
	inFlight atomic.Int64

	mu       sync.Mutex
	ops      []porcupine.Operation
	keys     []string          // every key a StartTask was sent with, in order
	tasks    map[string]string // key → task id, from StartTask answers
	taskKey  []struct{ key, task string }
	assigned map[string]int32 // task id → the attempt the worker last received
}

// now is the time since the recorder began, in nanoseconds.
func (r *linRecorder) now() int64 { return int64(time.Since(r.began)) }

// record adds a call and its result to the history.
func (r *linRecorder) record(in linInput, out linOutput, call, ret int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{Input: in, Output: out, Call: call, Return: ret})
}

// history returns the operations, the unknown ones returning after all.
func (r *linRecorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last int64
	for _, op := range r.ops {
		last = max(last, op.Return)
	}
	out := slices.Clone(r.ops)
	for i := range out {
		if out[i].Output.(linOutput).Outcome == outUnknown {
			out[i].Return = last + 1
		}
	}
	// Compact client ids for the visualization: one lane per call would be
	// unreadable, so calls that do not overlap share a lane.
	slices.SortFunc(out, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var laneEnds []int64
	for i := range out {
		lane := slices.IndexFunc(laneEnds, func(end int64) bool { return end < out[i].Call })
		if lane < 0 {
			lane = len(laneEnds)
			laneEnds = append(laneEnds, 0)
		}
		laneEnds[lane] = out[i].Return
		out[i].ClientId = lane
	}
	return out
}

// calls returns the calls as recorded, each returning when it did.
func (r *linRecorder) calls() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// keyCount is how many keys StartTask was called with.
func (r *linRecorder) keyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

// linStats counts the calls of each kind by outcome.
type linStats struct {
	created, existing, startUnknown                       int
	readRunning, readComplete, readCancelled, readUnknown int
	cancelled, cancelRefused, cancelUnknown               int
	completed, completeRefused, completeUnknown           int
}

func (s linStats) String() string {
	return fmt.Sprintf("StartTask %d created, %d existing, %d unknown; GetTask %d running, %d complete, %d cancelled, %d unknown; "+
		"CancelTask %d ok, %d refused, %d unknown; CompleteStep %d ok, %d refused, %d unknown",
		s.created, s.existing, s.startUnknown, s.readRunning, s.readComplete, s.readCancelled, s.readUnknown,
		s.cancelled, s.cancelRefused, s.cancelUnknown, s.completed, s.completeRefused, s.completeUnknown)
}

func (r *linRecorder) stats() linStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s linStats
	for _, op := range r.ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		unknown, ok, refused := out.Outcome == outUnknown, out.Outcome == outOK, out.Outcome == outRefused
		switch in.Op {
		case opStart:
			s.created += b2i(ok && out.Created)
			s.existing += b2i(ok && !out.Created)
			s.startUnknown += b2i(unknown)
		case opGet:
			s.readRunning += b2i(ok && out.Phase == phaseRunning)
			s.readComplete += b2i(ok && out.Phase == phaseComplete)
			s.readCancelled += b2i(ok && out.Phase == phaseCancelled)
			s.readUnknown += b2i(unknown)
		case opCancel:
			s.cancelled += b2i(ok)
			s.cancelRefused += b2i(refused)
			s.cancelUnknown += b2i(unknown)
		case opComplete:
			s.completed += b2i(ok)
			s.completeRefused += b2i(refused)
			s.completeUnknown += b2i(unknown)
		}
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// poll receives the worker's assignments until ctx ends, opening the
// stream again if it breaks.
func (r *linRecorder) poll(ctx context.Context, worker taskerv1connect.WorkerServiceClient) {
	for ctx.Err() == nil {
		stream, err := worker.PollSteps(ctx, connect.NewRequest(&taskerv1.PollStepsRequest{WorkerId: linWorker}))
		if err == nil {
			for stream.Receive() {
				if asg := stream.Msg().GetAssignment(); asg != nil {
					r.mu.Lock()
					r.assigned[asg.GetTaskId()] = asg.GetAttempt()
					r.mu.Unlock()
				}
			}
			_ = stream.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// randomCall makes one call: a StartTask with a new key or a recent one,
// or a GetTask, CancelTask or CompleteStep of a recent task.
func (r *linRecorder) randomCall(ctx context.Context, rnd *rand.Rand, a linAgent, newKey string) {
	r.mu.Lock()
	// Recent keys and tasks, so that calls on one key overlap.
	recentKeys := r.keys[max(0, len(r.keys)-8):]
	recentTasks := r.taskKey[max(0, len(r.taskKey)-8):]
	var key, task string
	var attempt int32
	p := rnd.IntN(100)
	switch {
	case p < 15 || len(recentTasks) == 0:
		key = newKey
		r.keys = append(r.keys, key)
	case p < 25:
		key = recentKeys[rnd.IntN(len(recentKeys))]
	default:
		kt := recentTasks[rnd.IntN(len(recentTasks))]
		key, task = kt.key, kt.task
		attempt = r.assigned[task]
	}
	r.mu.Unlock()
	switch {
	case task == "":
		r.start(ctx, a, key)
	case p < 50:
		r.get(ctx, a, key, task)
	case p < 65:
		r.cancel(ctx, a, key, task)
	case attempt > 0:
		r.complete(ctx, a, key, task, attempt)
	default:
		r.get(ctx, a, key, task)
	}
}

// finalReads sends, once the cluster is whole and the clients are done, a
// StartTask with every key and a GetTask of every task.
func (r *linRecorder) finalReads(ctx context.Context, a linAgent) {
	r.mu.Lock()
	keys := slices.Clone(r.keys)
	r.mu.Unlock()
	for _, k := range keys {
		r.start(ctx, a, k)
	}
	r.mu.Lock()
	tasks := slices.Clone(r.taskKey)
	r.mu.Unlock()
	for _, kt := range tasks {
		r.get(ctx, a, kt.key, kt.task)
	}
}

// call runs fn, recording it with in and the output out makes of its
// error; the outcome is unknown unless the agent answered.
func (r *linRecorder) call(in linInput, fn func() (linOutput, error)) linOutput {
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	began := r.now()
	out, err := fn()
	ended := r.now()
	if err != nil {
		out = linOutput{Err: err.Error()}
		switch connect.CodeOf(err) {
		case connect.CodeFailedPrecondition:
			out.Outcome = outRefused
		case connect.CodeNotFound:
			out.Outcome = outNotFound
		default:
			out.Outcome = outUnknown
		}
	}
	r.record(in, out, began, ended)
	return out
}

func (r *linRecorder) start(ctx context.Context, a linAgent, key string) {
	out := r.call(linInput{Op: opStart, Key: key, Agent: a.name}, func() (linOutput, error) {
		res, err := a.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Namespace: "lin", Workflow: "lin", IdempotencyKey: key}))
		if err != nil {
			return linOutput{}, err
		}
		return linOutput{Task: res.Msg.GetTask().GetId(), Created: res.Msg.GetCreated()}, nil
	})
	if out.Outcome != outOK {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, known := r.tasks[key]; !known {
		r.tasks[key] = out.Task
		r.taskKey = append(r.taskKey, struct{ key, task string }{key, out.Task})
	}
}

func (r *linRecorder) get(ctx context.Context, a linAgent, key, task string) {
	r.call(linInput{Op: opGet, Key: key, Task: task, Agent: a.name}, func() (linOutput, error) {
		req := connect.NewRequest(&taskerv1.GetTaskRequest{Id: task})
		req.Header().Set("Tasker-Consistency", "consistent")
		res, err := a.wf.GetTask(ctx, req)
		if err != nil {
			return linOutput{}, err
		}
		return linOutput{Phase: phaseOf(res.Msg.GetTask().GetState())}, nil
	})
}

func (r *linRecorder) cancel(ctx context.Context, a linAgent, key, task string) {
	r.call(linInput{Op: opCancel, Key: key, Task: task, Agent: a.name}, func() (linOutput, error) {
		_, err := a.wf.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: task, Reason: "linearizability test"}))
		return linOutput{}, err
	})
}

func (r *linRecorder) complete(ctx context.Context, a linAgent, key, task string, attempt int32) {
	r.call(linInput{Op: opComplete, Key: key, Task: task, Attempt: attempt, Agent: a.name}, func() (linOutput, error) {
		_, err := a.wk.CompleteStep(ctx, connect.NewRequest(&taskerv1.CompleteStepRequest{
			TaskId: task, Step: linStepName, Attempt: attempt, ResultJson: linResult, WorkerId: linWorker,
		}))
		return linOutput{}, err
	})
}

// phaseOf maps a task state to the model's phase.
func phaseOf(s taskerv1.TaskState) linPhase {
	switch s {
	case taskerv1.TaskState_TASK_STATE_PENDING, taskerv1.TaskState_TASK_STATE_IN_PROGRESS:
		return phaseRunning
	case taskerv1.TaskState_TASK_STATE_COMPLETE:
		return phaseComplete
	case taskerv1.TaskState_TASK_STATE_CANCELLED:
		return phaseCancelled
	}
	return phaseOther
}

// saveLinHistory writes porcupine's visualization of a failed check of
// model and the history as JSON into a directory that outlives the test,
// and returns it.
func saveLinHistory(t *testing.T, model porcupine.Model, history []porcupine.Operation, info porcupine.LinearizationInfo) string {
	t.Helper()
	base := os.Getenv(artifactsEnv)
	var dir string
	var err error
	if base != "" {
		dir = filepath.Join(base, strings.NewReplacer("/", "_").Replace(t.Name())+"-"+time.Now().UTC().Format("20060102T150405"))
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "tasker-linearizability-")
	}
	if err != nil {
		t.Errorf("keep the failing history: %v", err)
		return "(not saved)"
	}
	if err := porcupine.VisualizePath(model, info, filepath.Join(dir, "visualization.html")); err != nil {
		t.Errorf("write the visualization: %v", err)
	}
	type entry struct {
		Client int       `json:"client"`
		Call   int64     `json:"call_ns"`
		Return int64     `json:"return_ns"`
		Input  linInput  `json:"input"`
		Output linOutput `json:"output"`
	}
	var entries []entry
	for _, op := range history {
		entries = append(entries, entry{op.ClientId, op.Call, op.Return, op.Input.(linInput), op.Output.(linOutput)})
	}
	b, err := json.MarshalIndent(entries, "", " ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644)
	}
	if err != nil {
		t.Errorf("write the history: %v", err)
	}
	return dir
}

// logIllegalKeys logs, for the keys whose history alone model rejects,
// how many each of the known bugs explains, and the calls of the first n
// keys of each kind, in call order.
func logIllegalKeys(t *testing.T, model porcupine.Model, history []porcupine.Operation, n int) {
	t.Helper()
	byBugs := map[linBugs]int{}
	var kinds []linBugs
	for _, part := range model.Partition(history) {
		if porcupine.CheckOperationsTimeout(model, part, 5*time.Second) != porcupine.Illegal {
			continue
		}
		// The smallest set of known bugs that explains the key; -1: none.
		kind := linBugs(-1)
		for _, bugs := range []linBugs{bugStartNotCreated, bugCancelRefused, bugCompleteRefused,
			bugStartNotCreated | bugCancelRefused, bugStartNotCreated | bugCompleteRefused, bugCancelRefused | bugCompleteRefused, allLinBugs} {
			if porcupine.CheckOperationsTimeout(newLinModel(bugs), part, 5*time.Second) == porcupine.Ok {
				kind = bugs
				break
			}
		}
		if byBugs[kind]++; byBugs[kind] == 1 {
			kinds = append(kinds, kind)
		}
		if byBugs[kind] > n {
			continue
		}
		var b strings.Builder
		for _, op := range part {
			ret := fmt.Sprintf("%.3fs", float64(op.Return)/1e9)
			if op.Output.(linOutput).Outcome == outUnknown {
				ret = "never"
			}
			fmt.Fprintf(&b, "\n  [%.3fs, %s] %s", float64(op.Call)/1e9, ret, model.DescribeOperation(op.Input, op.Output))
		}
		t.Logf("key %s (%s):%s", part[0].Input.(linInput).Key, describeBugs(kind), b.String())
	}
	for _, kind := range kinds {
		t.Logf("%d keys: %s", byBugs[kind], describeBugs(kind))
	}
}

func describeBugs(b linBugs) string {
	if b < 0 {
		return "not linearizable, and no known bug explains it"
	}
	return "known bug: " + b.String()
}

// linPartition is a kind of network fault the nemesis makes in the lab.
type linPartition string

const (
	// cutLeader cuts the leader off from the other servers, and in one
	// partition in two from the client agent too. When the client agent
	// still reaches both sides, a call it forwards may go to the deposed
	// leader until it learns better (gossip's indirect probes through the
	// client agent may even keep it alive in the servers' view): the
	// deposed leader must not answer a write or a consistent read it
	// cannot confirm with a quorum.
	cutLeader linPartition = "leader"
	// cutFollower cuts a follower off from every other host.
	cutFollower linPartition = "follower"
	// cutClient cuts the client agent off from the servers: calls to it
	// cannot be forwarded, and the leader fails the attempts its worker
	// holds as lost once gossip declares it dead.
	cutClient linPartition = "client"
)

var linPartitionKinds = []linPartition{cutLeader, cutFollower, cutClient}

// linNemesis makes one fault at a time, each followed by a pause while the
// clients run on a whole cluster: a leader killed with SIGKILL and
// restarted on its data dir and ports, and, in the lab, a partition healed
// after 1–3 s. Every agent keeps serving the clients during a partition,
// so calls reach the minority side and must be answered as the model
// says; the test process, on the lab's bridge, reaches every host.
type linNemesis struct {
	c      *cluster
	lab    *netLab // nil: leader kills only
	client *clusterAgent
	began  time.Time
	// down marks the agents (indexed as the clients pick them) that are
	// not running: clients do not call them.
	down []atomic.Bool
	rnd  *rand.Rand

	kills int
	cuts  map[linPartition]int
	// windows are the partitions made, for counting the calls that the
	// cut-off side had in hand.
	windows []linWindow
}

// linWindow is a partition: its kind, the agents it cut off from the
// quorum (or, for cutClient, from every server), and when it began and
// was healed, as the recorder counts time.
type linWindow struct {
	kind     linPartition
	agents   []string
	from, to int64
}

func (n *linNemesis) String() string {
	if n.lab == nil {
		return fmt.Sprintf("%d leader kills (no partitions: no network lab)", n.kills)
	}
	return fmt.Sprintf("%d leader kills, partitions: %d %s, %d %s, %d %s", n.kills,
		n.cuts[cutLeader], cutLeader, n.cuts[cutFollower], cutFollower, n.cuts[cutClient], cutClient)
}

// run makes faults for runFor, or until ctx ends. The first five are two
// kills and each kind of partition in a random order, so that a short run
// has them all, made even if that takes longer than runFor (a loaded
// machine); after them a kill or a partition at random.
func (n *linNemesis) run(ctx context.Context, t *testing.T, runFor time.Duration) {
	t.Helper()
	n.cuts = map[linPartition]int{}
	var plan []linPartition // "": a leader kill
	if n.lab != nil {
		kinds := slices.Clone(linPartitionKinds)
		n.rnd.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		plan = []linPartition{"", kinds[0], kinds[1], "", kinds[2]}
	}
	start := time.Now()
	for i := 0; ; i++ {
		pause := 1500 * time.Millisecond
		if i >= len(plan) {
			pause = min(pause, runFor-time.Since(start))
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		if ctx.Err() != nil || (i >= len(plan) && time.Since(start) >= runFor) {
			return
		}
		var kind linPartition
		switch {
		case i < len(plan):
			kind = plan[i]
		case n.lab != nil && n.rnd.IntN(2) == 0:
			kind = linPartitionKinds[n.rnd.IntN(len(linPartitionKinds))]
		}
		if kind == "" {
			n.killLeader(t)
		} else {
			n.partition(t, kind)
		}
		n.waitWhole(t)
	}
}

// killLeader kills the leader, waits for another, and restarts it.
func (n *linNemesis) killLeader(t *testing.T) {
	t.Helper()
	c := n.c
	li := c.leaderIndex(t)
	old := c.servers[li]
	n.down[li].Store(true)
	killedAt := time.Now()
	old.kill()
	n.kills++
	next := c.servers[c.waitLeaderOther(t, 15*time.Second, old.name)]
	t.Logf("kill %d: %s killed at %s, %s leads %s later", n.kills, old.name,
		killedAt.Sub(n.began).Round(time.Millisecond), next.name, time.Since(killedAt).Round(time.Millisecond))
	old.start()
	old.waitServing(30 * time.Second)
	n.down[li].Store(false)
}

// partition makes a partition of kind and heals it 1–3 s later.
func (n *linNemesis) partition(t *testing.T, kind linPartition) {
	t.Helper()
	c := n.c
	leader := c.servers[c.leaderIndex(t)]
	var what string
	var cut *clusterAgent
	cutAt := time.Now()
	switch kind {
	case cutLeader:
		cut = leader
		if n.rnd.IntN(2) == 0 {
			n.lab.partition([]*netHost{leader.host}, hostsOf(c.others(leader)))
			what = leader.name + " (leader) from the other servers, not from " + n.client.name
		} else {
			n.lab.isolate(leader.host)
			what = leader.name + " (leader) from every host"
		}
	case cutFollower:
		cut = c.others(leader)[n.rnd.IntN(len(c.servers)-1)]
		n.lab.isolate(cut.host)
		what = cut.name + " (follower) from every host"
	case cutClient:
		cut = n.client
		n.lab.partition([]*netHost{n.client.host}, hostsOf(c.servers))
		what = n.client.name + " from the servers"
	}
	n.cuts[kind]++
	hold := time.Second + time.Duration(n.rnd.Int64N(int64(2*time.Second)))
	time.Sleep(hold)
	n.lab.heal()
	n.windows = append(n.windows, linWindow{kind, []string{cut.name}, int64(cutAt.Sub(n.began)), int64(time.Since(n.began))})
	t.Logf("partition %d (%s): cut %s at %s, healed %s later", n.cuts[kind], kind, what,
		cutAt.Sub(n.began).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
}

// waitWhole waits until the cluster has recovered from the last fault, so
// that the next one is the only one: the servers agree on a leader and
// each counts every server as a voter (the autopilot removes a server
// silent for a second and adds it back once it answers: killing the
// leader of two voters would leave no quorum), and every server lists the
// client agent's worker again.
func (n *linNemesis) waitWhole(t *testing.T) {
	t.Helper()
	c := n.c
	began := time.Now()
	c.waitVoters(t, 30*time.Second)
	n.client.waitServing(30 * time.Second)
	c.waitCapabilities(t, 30*time.Second, map[string][]string{"lin.work": {n.client.name}})
	if took := time.Since(began); took > time.Second {
		t.Logf("whole again %s after the fault ended", took.Round(time.Millisecond))
	}
}

// linCutCalls counts the calls that an agent on the cut-off side of a
// partition had in hand while it lasted, by outcome.
type linCutCalls struct {
	calls, ok, refused, unknown int
	// mayStill counts the unknown outcomes whose error says that a
	// forwarded call got no answer and may still be applied.
	mayStill int
	// errs are the first errors of unknown outcome, for reading.
	errs []string
}

func (n linCutCalls) String() string {
	s := fmt.Sprintf("%d calls (%d ok, %d refused, %d unknown, %d of them \"may still be applied\")", n.calls, n.ok, n.refused, n.unknown, n.mayStill)
	for _, e := range n.errs {
		s += "\n  unknown: " + e
	}
	return s
}

// cutCalls counts, for each kind of partition, the calls sent to an agent
// it cut off, in flight at some time while it lasted. ops are the calls
// as recorded (linRecorder.calls): in the history, a call of unknown
// outcome returns after every other, so it would seem to overlap every
// later partition.
func (n *linNemesis) cutCalls(ops []porcupine.Operation) map[linPartition]linCutCalls {
	out := map[linPartition]linCutCalls{}
	for _, op := range ops {
		in, res := op.Input.(linInput), op.Output.(linOutput)
		for _, w := range n.windows {
			if op.Call >= w.to || op.Return <= w.from || !slices.Contains(w.agents, in.Agent) {
				continue
			}
			k := out[w.kind]
			k.calls++
			k.ok += b2i(res.Outcome == outOK)
			k.refused += b2i(res.Outcome == outRefused)
			k.unknown += b2i(res.Outcome == outUnknown)
			k.mayStill += b2i(strings.Contains(res.Err, "may still be applied"))
			if res.Outcome == outUnknown && len(k.errs) < 3 {
				k.errs = append(k.errs, fmt.Sprintf("%s via %s: %s", in.Op, in.Agent, res.Err))
			}
			out[w.kind] = k
			break
		}
	}
	return out
}

func hostsOf(agents []*clusterAgent) []*netHost {
	out := make([]*netHost, len(agents))
	for i, a := range agents {
		out[i] = a.host
	}
	return out
}
