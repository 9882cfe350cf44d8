package e2e

// Process faults on a real cluster: a leader paused with SIGSTOP, a
// server restarted after the log it missed was compacted away, a new
// server that can only catch up from a snapshot, and a full disk under a
// follower's and then the leader's data dir.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// startResult is the outcome of one StartTask call.
type startResult struct {
	key     string
	id      string
	created bool
	err     error
	took    time.Duration
}

// startOne starts the order key with its key as idempotency key.
func startOne(ctx context.Context, cl *client.Client, key string) startResult {
	began := time.Now()
	task, created, err := cl.StartTask(ctx, "order-fulfilment", orderInput(key, "tok_visa", "TEE-M"),
		client.Namespace("shop"), client.IdempotencyKey(key))
	return startResult{key: key, id: task.GetId(), created: created, err: err, took: time.Since(began)}
}

// clearFailure reports whether a failed call says what happened in a way
// a caller can act on: a Connect code that means "try again" or "not
// known", and a message.
func clearFailure(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted:
		return strings.TrimSpace(err.Error()) != ""
	}
	return false
}

// settle sends every key of results again through cl: a key whose call
// succeeded must name the same task and start nothing; a key whose call
// failed may or may not have a task (its outcome was unknown). It returns
// the batch of the keys that have a task.
func settle(t *testing.T, cl *client.Client, results []startResult) *batch {
	t.Helper()
	b := &batch{c: cl, ids: map[string]string{}}
	for _, r := range results {
		again := startOne(callCtx(t), cl, r.key)
		if again.err != nil {
			t.Fatalf("StartTask %s again: %v", r.key, again.err)
		}
		switch {
		case r.err == nil && (again.created || again.id != r.id):
			t.Errorf("%s: the call succeeded with task %s, but sending the key again gives %s (created %v): the call did not take effect once",
				r.key, r.id, again.id, again.created)
		case r.err != nil && !again.created:
			t.Logf("%s: the call failed (%v) but had taken effect: task %s", r.key, r.err, again.id)
		}
		// A failed call that started nothing leaves this one to start the
		// task: an accepted task like any other.
		b.ids[r.key] = again.id
	}
	return b
}

// checkTaskCount checks that the namespace holds exactly the tasks of the
// batches: no call started a second task for a key.
func checkTaskCount(t *testing.T, cl *client.Client, bs ...*batch) {
	t.Helper()
	res, err := cl.Service().ListTasks(callCtx(t), connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: "shop", PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(res.Msg.GetTasks()), len(batchIDs(bs...)); got != want {
		t.Errorf("the cluster lists %d tasks, want %d: a key started a second task, or a task was lost", got, want)
	}
}

// checkAll runs the checks every fault test ends with on the tasks of
// the batches, all complete: each step's result is what its service
// returned, no attempt ran twice, no completed step ran again, each step
// completed once in the task's history, and every key names its task.
func checkAll(t *testing.T, c *cluster, cl *client.Client, bs ...*batch) []*taskerv1.Task {
	t.Helper()
	var final []*taskerv1.Task
	for _, b := range bs {
		final = append(final, b.waitComplete(t, 90*time.Second)...)
	}
	execs := readJournal(t, c.journal)
	checkRuns(t, final, execs, nil)
	checkNoDoubleWork(t, execs)
	checkOneCompletion(t, cl, final)
	for _, task := range final {
		checkOrderResults(t, task)
	}
	checkTaskCount(t, cl, bs...)
	return final
}

// TestFaultsPausedLeader pauses the leader with SIGSTOP for longer than
// the election timeout: the others elect a leader and go on accepting and
// completing tasks; on SIGCONT the old leader steps down (at no moment do
// two servers lead in one term), the calls sent to it while it was paused
// either took effect once or failed with a clear error, every accepted
// task completes, and no step completes twice.
func TestFaultsPausedLeader(t *testing.T) {
	c := startClusterWith(t, clusterOptions{servers: 3, clients: []clientSpec{
		{name: "client-all", only: allServices, flags: []string{"-delay", "50ms-150ms"}},
	}})
	ag := c.client("client-all")
	cl := newClient(ag.api)
	if _, err := cl.ApplyWorkflow(callCtx(t), fastWorkflow(t, "5s")); err != nil {
		t.Fatal(err)
	}
	const n = 20
	before := startBatch(t, cl, "pa", n)
	waitFor(t, 60*time.Second, "a fifth of the tasks complete", func(ctx context.Context) (bool, string, error) {
		tasks, err := before.tasks(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		done, _ := count(tasks, taskerv1.TaskState_TASK_STATE_COMPLETE, 0)
		return done >= n/5, fmt.Sprintf("%d complete", done), nil
	})

	old := c.servers[c.leaderIndex(t)]
	old.proc.signal(t, syscall.SIGSTOP)
	pausedAt := time.Now()
	t.Cleanup(func() { _ = old.proc.cmd.Process.Signal(syscall.SIGCONT) }) // a failed test must not leave it stopped

	// Calls sent to the paused leader itself: they wait in its socket
	// until it resumes.
	const direct = 3
	directResults := make([]startResult, direct)
	var wg sync.WaitGroup
	for i := range direct {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			directResults[i] = startOne(ctx, newClient(old.api), fmt.Sprintf("ord_paused%03d", i))
		}()
	}

	survivors := c.others(old)
	next, took := c.waitLeaderAmong(t, 15*time.Second, survivors)
	t.Logf("paused the leader %s; %s leads %s later", old.name, next.name, took.Round(time.Millisecond))
	// A sidecar forwards to a server gossip says is alive: once the paused
	// one is declared failed, calls through it reach the new leader.
	gone := waitFor(t, 15*time.Second, ag.name+" sees "+old.name+" failed", func(ctx context.Context) (bool, string, error) {
		res, err := ag.cluster().Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{}))
		if err != nil {
			return false, err.Error(), nil
		}
		for _, m := range res.Msg.GetMembers() {
			if m.GetName() == old.name {
				return m.GetStatus() != "alive", m.GetStatus(), nil
			}
		}
		return false, "not listed", nil
	})
	t.Logf("%s saw %s failed %s after the pause", ag.name, old.name, (took + gone).Round(time.Millisecond))

	during := startBatch(t, cl, "pd", 5)
	during.waitComplete(t, 60*time.Second)
	if old.proc.exited() {
		t.Fatalf("%s exited while paused: %v", old.name, old.proc.err)
	}
	t.Logf("5 tasks started and completed while %s was paused (paused %s so far)", old.name, time.Since(pausedAt).Round(time.Millisecond))
	// Paused well past gossip's failure detection and autopilot's grace
	// for a dead server (1s with -dev-timing): the new leader may take it
	// out of the Raft configuration, and it has to find its way back.
	waitFor(t, 10*time.Second, "the pause has lasted 3s", func(context.Context) (bool, string, error) {
		return time.Since(pausedAt) >= 3*time.Second, "", nil
	})
	if views := c.raftViews(callCtx(t), survivors); len(views) > 0 {
		t.Logf("before SIGCONT: %s", describeViews(views))
	}

	old.proc.signal(t, syscall.SIGCONT)
	resumedAt := time.Now()
	// No split brain: at no poll do two servers say they lead in the same
	// term, and the old leader, once it answers, follows the new one.
	var stepDown time.Duration
	waitFor(t, 20*time.Second, old.name+" follows another leader after SIGCONT", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, c.servers)
		terms := map[uint64][]string{}
		for _, name := range selfLeaders(views) {
			terms[views[name].GetTerm()] = append(terms[views[name].GetTerm()], name)
		}
		for term, leaders := range terms {
			if len(leaders) > 1 {
				return false, "", fmt.Errorf("split brain: %v all lead in term %d: %s", leaders, term, describeViews(views))
			}
		}
		v, ok := views[old.name]
		if !ok || v.GetLeader() == "" || v.GetLeader() == old.name {
			return false, describeViews(views), nil
		}
		stepDown = time.Since(resumedAt)
		return true, "", nil
	})
	t.Logf("%s resumed after %s paused and follows another leader %s later", old.name, time.Since(pausedAt).Round(time.Millisecond)-time.Since(resumedAt).Round(time.Millisecond), stepDown.Round(time.Millisecond))

	wg.Wait()
	for _, r := range directResults {
		switch {
		case r.err == nil:
			t.Logf("StartTask %s sent to the paused leader: task %s (created %v) after %s", r.key, r.id, r.created, r.took.Round(time.Millisecond))
		case clearFailure(r.err):
			t.Logf("StartTask %s sent to the paused leader failed after %s: %v", r.key, r.took.Round(time.Millisecond), r.err)
		default:
			t.Errorf("StartTask %s sent to the paused leader failed after %s with %v (code %s): want success or unavailable/deadline_exceeded/aborted with a message",
				r.key, r.took.Round(time.Millisecond), r.err, connect.CodeOf(r.err))
		}
	}
	sent := settle(t, cl, directResults)

	final := checkAll(t, c, cl, before, during, sent)
	before.checkKeysOnly(t)
	during.checkKeysOnly(t)

	// The old leader is back in the group (autopilot may have removed it
	// while it was failed), and its state is the leader's.
	waitFor(t, 30*time.Second, "three voters again", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, c.servers)
		leader := agreedLeader(views)
		if leader == "" {
			return false, describeViews(views), nil
		}
		voters := 0
		for _, p := range views[leader].GetPeers() {
			if p.GetVoter() {
				voters++
			}
		}
		return voters == 3, describeViews(views), nil
	})
	waitFor(t, 30*time.Second, old.name+" reads what the leader reads", func(ctx context.Context) (bool, string, error) {
		ok, diff := sameAsLeader(ctx, cl, old, batchIDs(before, during, sent))
		return ok, diff, nil
	})
	t.Logf("%d tasks complete, each step once", len(final))
}

// checkKeysOnly checks that every key of the batch still names its task.
func (b *batch) checkKeysOnly(t *testing.T) {
	t.Helper()
	for key, id := range b.ids {
		r := startOne(callCtx(t), b.c, key)
		if r.err != nil {
			t.Fatalf("StartTask with key %s: %v", key, r.err)
		}
		if r.created || r.id != id {
			t.Errorf("StartTask with key %s: created %v, task %s; want false and %s", key, r.created, r.id, id)
		}
	}
}

// waitCompacted waits until server s has compacted its Raft log past
// index (its "compacting logs" line says up to where) and returns that
// index.
func waitCompacted(t *testing.T, s *clusterAgent, index uint64) uint64 {
	t.Helper()
	var to uint64
	waitFor(t, 30*time.Second, fmt.Sprintf("%s compacts its log past index %d", s.name, index), func(context.Context) (bool, string, error) {
		for _, l := range s.logLines(t, "compacting logs") {
			if v, ok := l["to"].(float64); ok && uint64(v) > to {
				to = uint64(v)
			}
		}
		return to > index, fmt.Sprintf("compacted up to %d", to), nil
	})
	return to
}

// snapshotSent returns the size of the last snapshot the leader logged
// sending to peer, or -1.
func snapshotSent(t *testing.T, leader *clusterAgent, peer string) int64 {
	t.Helper()
	size := int64(-1)
	for _, l := range leader.logLines(t, "installing snapshot on") {
		if l.str("peer") == peer {
			if v, ok := l["size"].(float64); ok {
				size = int64(v)
			}
		}
	}
	return size
}

// lastIndex is the last Raft log index server s holds, by its own view.
func lastIndex(t *testing.T, s *clusterAgent) uint64 {
	t.Helper()
	res, err := s.cluster().RaftPeers(callCtx(t), connect.NewRequest(&taskerv1.RaftPeersRequest{}))
	if err != nil {
		t.Fatalf("RaftPeers on %s: %v", s.name, err)
	}
	last := res.Msg.GetAppliedIndex()
	for _, p := range res.Msg.GetPeers() {
		if p.GetId() == s.name {
			last = max(last, p.GetLastIndex())
		}
	}
	return last
}

// TestFaultsLaggingFollowerRestart kills a follower, runs enough tasks
// that the leader compacts its log past the follower's last entry, and
// restarts the follower: it catches up by installing a snapshot, and its
// stale reads equal the leader's.
func TestFaultsLaggingFollowerRestart(t *testing.T) {
	c := startClusterWith(t, clusterOptions{servers: 3, serverArgs: compactingServerArgs, clients: []clientSpec{
		{name: "client-all", only: allServices, flags: []string{"-delay", "5ms-20ms"}},
	}})
	cl := newClient(c.client("client-all").api)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	first := startBatch(t, cl, "lg", 5)
	first.waitComplete(t, 60*time.Second)

	leader := c.servers[c.leaderIndex(t)]
	follower := c.others(leader)[0]
	last := lastIndex(t, follower)
	follower.kill()
	t.Logf("killed the follower %s at log index %d", follower.name, last)

	missed := startBatch(t, cl, "lm", 20)
	missed.waitComplete(t, 90*time.Second)
	leader = c.servers[c.waitLeader(t, 15*time.Second)]
	compacted := waitCompacted(t, leader, last)
	t.Logf("%s compacted its log up to index %d, past %s's %d", leader.name, compacted, follower.name, last)
	installedBefore := len(follower.logLines(t, "Installed remote snapshot"))

	restartedAt := time.Now()
	follower.start()
	ids := batchIDs(first, missed)
	waitFor(t, 60*time.Second, follower.name+" reads what the leader reads", func(ctx context.Context) (bool, string, error) {
		ok, diff := sameAsLeader(ctx, cl, follower, ids)
		return ok, diff, nil
	})
	catchUp := time.Since(restartedAt)
	if got := len(follower.logLines(t, "Installed remote snapshot")); got <= installedBefore {
		t.Errorf("%s caught up without installing a snapshot (its log has %d \"Installed remote snapshot\" lines, %d before the restart): the log it missed was not compacted away",
			follower.name, got, installedBefore)
	}
	leader = c.servers[c.waitLeader(t, 15*time.Second)]
	t.Logf("%s restarted and caught up (its stale reads equal the leader's) %s after its start, by a snapshot of %d bytes",
		follower.name, catchUp.Round(time.Millisecond), snapshotSent(t, leader, follower.name))

	// It is a voter again and takes part: new tasks complete and it reads
	// them too.
	waitFor(t, 30*time.Second, follower.name+" is a voter", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, c.servers)
		l := agreedLeader(views)
		for _, p := range views[l].GetPeers() {
			if p.GetId() == follower.name && p.GetVoter() {
				return true, "", nil
			}
		}
		return false, describeViews(views), nil
	})
	after := startBatch(t, cl, "la", 3)
	checkAll(t, c, cl, first, missed, after)
	waitFor(t, 30*time.Second, follower.name+" reads the new tasks", func(ctx context.Context) (bool, string, error) {
		ok, diff := sameAsLeader(ctx, cl, follower, batchIDs(first, missed, after))
		return ok, diff, nil
	})
}

// TestFaultsSnapshotInstallNewServer adds a fourth server to a cluster
// whose log has been compacted: it receives the state as a snapshot,
// serves every existing task with stale reads, becomes a voter, and the
// cluster keeps working when the old leader is then killed.
func TestFaultsSnapshotInstallNewServer(t *testing.T) {
	c := startClusterWith(t, clusterOptions{servers: 3, serverArgs: compactingServerArgs, clients: []clientSpec{
		{name: "client-all", only: allServices, flags: []string{"-delay", "5ms-20ms"}},
	}})
	cl := newClient(c.client("client-all").api)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	existing := startBatch(t, cl, "si", 25)
	existing.waitComplete(t, 90*time.Second)
	leader := c.servers[c.leaderIndex(t)]
	compacted := waitCompacted(t, leader, 1)
	t.Logf("%s compacted its log up to index %d", leader.name, compacted)

	fourth := c.addServer("server-3")
	startedAt := time.Now()
	voter := waitFor(t, 60*time.Second, "the leader lists server-3 as a voter", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, c.servers[:3])
		l := agreedLeader(views)
		for _, p := range views[l].GetPeers() {
			if p.GetId() == fourth.name && p.GetVoter() {
				return true, "", nil
			}
		}
		return false, describeViews(views), nil
	})
	ids := batchIDs(existing)
	waitFor(t, 30*time.Second, fourth.name+" reads every task as the leader does", func(ctx context.Context) (bool, string, error) {
		ok, diff := sameAsLeader(ctx, cl, fourth, ids)
		return ok, diff, nil
	})
	if len(fourth.logLines(t, "Installed remote snapshot")) == 0 {
		t.Errorf("%s caught up without installing a snapshot: the leader's log was not compacted", fourth.name)
	}
	leader = c.servers[c.waitLeader(t, 15*time.Second)]
	t.Logf("%s is a voter %s after it started, with a snapshot of %d bytes; it reads all %d tasks %s after it started",
		fourth.name, voter.Round(time.Millisecond), snapshotSent(t, leader, fourth.name), len(ids), time.Since(startedAt).Round(time.Millisecond))

	// Losing an old server now leaves three of four voters: a quorum.
	leader.kill()
	var alive []*clusterAgent
	for _, s := range c.servers {
		if s != leader {
			alive = append(alive, s)
		}
	}
	next, took := c.waitLeaderAmong(t, 30*time.Second, alive)
	t.Logf("killed the leader %s; %s leads %s later", leader.name, next.name, took.Round(time.Millisecond))
	after := startBatch(t, cl, "sa", 5)
	checkAll(t, c, cl, existing, after)
	waitFor(t, 30*time.Second, fourth.name+" reads the new tasks", func(ctx context.Context) (bool, string, error) {
		ok, diff := sameAsLeader(ctx, cl, fourth, batchIDs(existing, after))
		return ok, diff, nil
	})
}

// noSpace is how the kernel's ENOSPC reads in an error.
const noSpace = "no space left on device"

// TestFaultsDiskFull fills the file system of a follower's data dir, then
// the leader's. With the follower full the others go on; the full one
// logs why it cannot write, corrupts nothing, and catches up once space
// is freed. With the leader full, writes go to another leader or fail
// with a clear error, nothing accepted is lost, and the full server comes
// back once space is freed (restarted if it exited, which it must explain).
func TestFaultsDiskFull(t *testing.T) {
	const size = 32 << 20
	c := startClusterWith(t, clusterOptions{servers: 3, clients: []clientSpec{
		{name: "client-all", only: allServices, flags: []string{"-delay", "5ms-20ms"}},
	}, prepareServer: func(dir string) { mountTmpfs(t, dir, size) }})
	cl := newClient(c.client("client-all").api)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	first := startBatch(t, cl, "df", 5)
	first.waitComplete(t, 60*time.Second)
	batches := []*batch{first}

	// A follower's disk fills up.
	leader := c.servers[c.leaderIndex(t)]
	full := c.others(leader)[0]
	filler, filled := fillDisk(t, full.dataDir)
	t.Logf("filled %s's data dir with %d bytes; %d bytes free", full.name, filled, freeSpace(t, full.dataDir))
	round := 0
	waitFor(t, 60*time.Second, full.name+" logs that it cannot write", func(context.Context) (bool, string, error) {
		if full.proc.exited() {
			return true, "", nil
		}
		if len(full.logMentions(t, noSpace)) > 0 {
			return true, "", nil
		}
		round++
		b := startBatch(t, cl, fmt.Sprintf("dff%02dx", round), 5)
		batches = append(batches, b)
		b.waitComplete(t, 60*time.Second)
		return false, fmt.Sprintf("%d batches of 5 tasks completed, no error logged", round), nil
	})
	t.Logf("with %s's disk full, %d batches of 5 tasks completed", full.name, round)
	if full.proc.exited() {
		t.Fatalf("%s exited with its disk full (code %d):\n%s", full.name, full.proc.exitCode(), full.proc.tail(30))
	}
	t.Logf("%s is running, %s; it logs: %s", full.name, healthOf(full), full.logMentions(t, noSpace)[0])
	more := startBatch(t, cl, "dfm", 5)
	batches = append(batches, more)
	more.waitComplete(t, 60*time.Second)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	ids := batchIDs(batches...)
	catchUp := waitFor(t, 60*time.Second, full.name+" reads what the leader reads once space is freed", func(ctx context.Context) (bool, string, error) {
		if full.proc.exited() {
			return false, "", fmt.Errorf("%s exited: %v\n%s", full.name, full.proc.err, full.proc.tail(30))
		}
		ok, diff := sameAsLeader(ctx, cl, full, ids)
		return ok, diff, nil
	})
	t.Logf("%s caught up %s after space was freed", full.name, catchUp.Round(time.Millisecond))

	// The leader's disk fills up. Calls keep coming, through the sidecar
	// and to the full leader itself.
	leader = c.servers[c.leaderIndex(t)]
	direct := newClient(leader.api)
	filler, filled = fillDisk(t, leader.dataDir)
	filledAt := time.Now()
	t.Logf("filled the leader %s's data dir with %d bytes", leader.name, filled)
	var results []startResult
	call := func(ctx context.Context) {
		via := cl
		if len(results)%2 == 1 {
			via = direct
		}
		results = append(results, startOne(ctx, via, fmt.Sprintf("ord_dfl%03d", len(results))))
	}
	waitFor(t, 60*time.Second, leader.name+" stops leading", func(ctx context.Context) (bool, string, error) {
		call(ctx)
		views := c.raftViews(ctx, c.others(leader))
		if l := agreedLeader(views); l != "" && l != leader.name {
			return true, "", nil
		}
		return leader.proc.exited(), fmt.Sprintf("%d calls; %s", len(results), describeViews(views)), nil
	})
	next, _ := c.waitLeaderAmong(t, 30*time.Second, c.others(leader))
	t.Logf("%s leads %s after %s's disk filled", next.name, time.Since(filledAt).Round(time.Millisecond), leader.name)
	for range 6 { // more calls while it is still full
		call(callCtx(t))
	}
	failed := 0
	for _, r := range results {
		if r.err == nil {
			continue
		}
		failed++
		t.Logf("StartTask %s with the leader's disk full failed after %s: %v", r.key, r.took.Round(time.Millisecond), r.err)
		if !clearFailure(r.err) {
			t.Errorf("StartTask %s failed with %v (code %s): want success (at the next leader) or unavailable/deadline_exceeded/aborted with a message",
				r.key, r.err, connect.CodeOf(r.err))
		}
	}
	t.Logf("%d of %d StartTask calls (half of them sent to the full leader itself) failed while its disk was full", failed, len(results))
	if leader.proc.exited() {
		t.Logf("%s exited with code %d; its last lines:\n%s", leader.name, leader.proc.exitCode(), leader.proc.tail(15))
		if len(leader.logMentions(t, noSpace)) == 0 {
			t.Errorf("%s exited with its disk full without saying so (no %q in its log)", leader.name, noSpace)
		}
	} else {
		said := leader.logMentions(t, noSpace)
		if len(said) == 0 {
			t.Errorf("%s stopped leading with its disk full without saying why (no %q in its log)", leader.name, noSpace)
		}
		t.Logf("%s is still running, %s; it logged %d lines naming the full disk, the first: %s", leader.name, healthOf(leader), len(said), said[0])
	}
	if panics := leader.logMentions(t, "panic"); len(panics) > 0 {
		t.Errorf("%s panicked with its disk full: %v", leader.name, panics)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if leader.proc.exited() {
		leader.start()
	}
	sent := settle(t, cl, results)
	batches = append(batches, sent)
	checkAll(t, c, cl, batches...)
	waitFor(t, 60*time.Second, leader.name+" reads what the leader reads once space is freed", func(ctx context.Context) (bool, string, error) {
		if leader.proc.exited() {
			return false, "", fmt.Errorf("%s exited: %v\n%s", leader.name, leader.proc.err, leader.proc.tail(30))
		}
		ok, diff := sameAsLeader(ctx, cl, leader, batchIDs(batches...))
		return ok, diff, nil
	})
	// Nothing on the full disks was damaged: each server, killed and
	// started again on its data dir, opens its Raft log and reads what the
	// leader reads.
	for _, s := range []*clusterAgent{full, leader} {
		s.kill()
		s.start()
		s.waitServing(30 * time.Second)
		waitFor(t, 30*time.Second, s.name+" reads what the leader reads after a restart", func(ctx context.Context) (bool, string, error) {
			ok, diff := sameAsLeader(ctx, cl, s, batchIDs(batches...))
			return ok, diff, nil
		})
	}
}

// healthOf renders the agent's gRPC health status.
func healthOf(a *clusterAgent) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := grpchealth.NewClient(h2cClient(), a.api).Check(ctx, &grpchealth.CheckRequest{})
	if err != nil {
		return fmt.Sprintf("health check: %v", err)
	}
	return "health " + res.Status.String()
}
