package e2e

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLeaveThenStopSignal runs a leader's shutdown the way Kubernetes does
// with `tasker leave` in a preStop hook (and systemd with ExecStop): the
// hook returns once the leave has begun and SIGTERM follows at once. The
// leave must still finish: leadership handed over, the server out of the
// Raft configuration, a clean exit.
func TestLeaveThenStopSignal(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.servers[c.waitLeader(t, 30*time.Second)]
	tasker(t, leader.api, "leave").must(t, "tasker leave", 0, "is leaving the cluster")
	leader.proc.signal(t, syscall.SIGTERM)
	if code := leader.proc.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the leaving leader exited %d, want 0:\n%s", code, leader.proc.tail(20))
	}
	log, err := os.ReadFile(leader.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"finishing the leave first", "leave: handed leadership over"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the leader's log lacks %q:\n%s", want, leader.proc.tail(30))
		}
	}
	rest := c.liveServers()
	waitFor(t, 15*time.Second, "the other two servers are the whole Raft configuration, with a leader", func(ctx context.Context) (bool, string, error) {
		views := c.raftViews(ctx, rest)
		if len(views) != len(rest) || agreedLeader(views) == "" {
			return false, describeViews(views), nil
		}
		for _, v := range views {
			if len(v.GetPeers()) != 2 {
				return false, describeViews(views), nil
			}
			for _, p := range v.GetPeers() {
				if p.GetId() == leader.name || !p.GetVoter() {
					return false, describeViews(views), nil
				}
			}
		}
		return true, "", nil
	})
}
