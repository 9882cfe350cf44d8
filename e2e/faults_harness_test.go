package e2e

// Helpers of the process-fault tests (faults_test.go): leaders among some
// servers only (a paused server answers nothing), the servers' own log
// lines, comparing a server's stale reads with the leader's, step
// completion events, and a size-limited data dir (tmpfs) to fill.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// allServices is an order-services -only list offering every capability
// of the order workflow.
const allServices = "orders,inventory,payments,shipping,notifications"

// compactingServerArgs make every server snapshot and compact its Raft log
// after a few dozen entries (an order takes about fifteen), so that a
// server that misses a few tasks, or a new one, needs a snapshot to catch
// up: the log it would need is gone.
var compactingServerArgs = []string{
	"-raft-snapshot-threshold", "32",
	"-raft-trailing-logs", "16",
	"-raft-snapshot-interval", "200ms",
}

// leaderAmong asks only the given servers for their view of the Raft group
// and returns the leader they agree on, or "" and what they said.
func (c *cluster) leaderAmong(ctx context.Context, servers []*clusterAgent) (string, string) {
	views, errs := c.raftViewsErr(ctx, servers)
	if len(views) < len(servers) {
		return "", describeViews(views) + " " + errs
	}
	return agreedLeader(views), describeViews(views) + " " + errs
}

// waitLeaderAmong waits until the given servers agree on a leader, and
// returns it and how long that took.
func (c *cluster) waitLeaderAmong(t *testing.T, timeout time.Duration, servers []*clusterAgent) (*clusterAgent, time.Duration) {
	t.Helper()
	var leader string
	took := waitFor(t, timeout, fmt.Sprintf("%s agree on a leader", names(servers)), func(ctx context.Context) (bool, string, error) {
		l, state := c.leaderAmong(ctx, servers)
		leader = l
		return l != "", state, nil
	})
	return c.server(t, leader), took
}

// server returns the server named name.
func (c *cluster) server(t *testing.T, name string) *clusterAgent {
	t.Helper()
	for _, s := range c.servers {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no server %q", name)
	return nil
}

// others lists the servers but not.
func (c *cluster) others(not *clusterAgent) []*clusterAgent {
	var out []*clusterAgent
	for _, s := range c.servers {
		if s != not {
			out = append(out, s)
		}
	}
	return out
}

func names(as []*clusterAgent) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.name)
	}
	return out
}

// logLine is one JSON line of an agent's log, as a map.
type logLine map[string]any

func (l logLine) str(key string) string { s, _ := l[key].(string); return s }

// logLines returns the agent's JSON log lines (every start) whose message
// contains msg.
func (a *clusterAgent) logLines(t *testing.T, msg string) []logLine {
	t.Helper()
	f, err := os.Open(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && strings.Contains(l.str("msg"), msg) {
			out = append(out, l)
		}
	}
	return out
}

// logMentions returns the agent's log lines (JSON or not: a panic's are
// not) that contain s.
func (a *clusterAgent) logMentions(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// taskView is what a user reads of a task, without what only the leader
// knows (why a step waits: breakers, registry).
type taskView struct {
	State string
	Steps []string
}

func viewOf(task *taskerv1.Task) taskView {
	v := taskView{State: task.GetState().String()}
	for _, st := range task.GetSteps() {
		v.Steps = append(v.Steps, fmt.Sprintf("%s=%s attempts %d agent %s result %s error %v",
			st.GetName(), st.GetState(), st.GetAttempts(), st.GetAgent(), st.GetResultJson(), st.GetLastError()))
	}
	return v
}

// sameAsLeader reports whether a stale read of every task on server s
// equals what the leader (through lc) says, and lists the first
// differences.
func sameAsLeader(ctx context.Context, lc *client.Client, s *clusterAgent, ids []string) (bool, string) {
	stale := s.staleWorkflows()
	var diffs []string
	for _, id := range ids {
		want, err := lc.GetTask(ctx, id)
		if err != nil {
			return false, fmt.Sprintf("leader: GetTask %s: %v", id, err)
		}
		got, err := stale.GetTask(ctx, connect.NewRequest(&taskerv1.GetTaskRequest{Id: id}))
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", id, err))
		} else if a, b := viewOf(got.Msg.GetTask()), viewOf(want); fmt.Sprint(a) != fmt.Sprint(b) {
			diffs = append(diffs, fmt.Sprintf("%s: %s reads %v, the leader %v", id, s.name, a, b))
		}
		if len(diffs) >= 3 {
			break
		}
	}
	list, err := stale.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{Namespace: "shop", PageSize: 1000}))
	switch {
	case err != nil:
		diffs = append(diffs, fmt.Sprintf("ListTasks: %v", err))
	case len(list.Msg.GetTasks()) != len(ids):
		diffs = append(diffs, fmt.Sprintf("%s lists %d tasks, want %d", s.name, len(list.Msg.GetTasks()), len(ids)))
	}
	return len(diffs) == 0, strings.Join(diffs, "; ")
}

// batchIDs lists the task ids of batches.
func batchIDs(bs ...*batch) []string {
	var out []string
	for _, b := range bs {
		for _, id := range b.ids {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// checkOneCompletion reads each task's history (WatchTask from its second
// event) and checks that every step has exactly one step.completed event:
// a step never completes twice, whatever happened to the leader.
func checkOneCompletion(t *testing.T, cl *client.Client, tasks []*taskerv1.Task) {
	t.Helper()
	for _, task := range tasks {
		completed := map[string]int{}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		stream, err := cl.Service().WatchTask(ctx, connect.NewRequest(&taskerv1.WatchTaskRequest{Id: task.GetId(), AfterSequence: 1}))
		if err != nil {
			cancel()
			t.Fatalf("WatchTask %s: %v", task.GetId(), err)
		}
		for stream.Receive() {
			if e := stream.Msg().GetEvent(); e.GetType() == "step.completed" {
				completed[e.GetStep()]++
			}
		}
		err = stream.Err()
		stream.Close()
		cancel()
		if err != nil {
			t.Fatalf("WatchTask %s: %v", task.GetId(), err)
		}
		for _, st := range task.GetSteps() {
			if n := completed[st.GetName()]; n != 1 {
				t.Errorf("%s/%s: %d step.completed events in its history, want 1", task.GetId(), st.GetName(), n)
			}
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir (created), so that the
// test can fill it, and unmounts it when the test ends (after the
// processes using it are killed: cleanups run last-registered first). It
// skips the test where mounting is not allowed.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a size-limited tmpfs for a full disk needs root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dk,mode=0700", size>>10), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs on %s for a full disk (%v): %s", dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// fillDisk writes a file into dir until the file system is full and
// returns its path and size.
func fillDisk(t *testing.T, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	var n int64
	for {
		m, err := f.Write(chunk)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return path, n
		}
		if err != nil {
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
}

// freeSpace is how many bytes are free on dir's file system.
func freeSpace(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}
