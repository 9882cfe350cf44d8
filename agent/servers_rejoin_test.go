package agent

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestLeftServerRejoinsOnItsDataDir is a Kubernetes rolling update of the
// servers (deploy/kubernetes, docs/deploy.md): each pod's preStop runs
// 'tasker leave', and the pod comes back with the same name, the same
// volume, its -bootstrap-expect, and new addresses (a new pod IP). The
// server must be a voter again, in the same cluster, which never
// bootstraps a second time. A follower first, then the leader.
func TestLeftServerRejoinsOnItsDataDir(t *testing.T) {
	f := newFleet(t)
	ss := f.startServers(3, 3, nil)
	leader := waitCluster(t, ss, "s1", "s2", "s3")
	waitFor(t, 10*time.Second, "the cluster to be named", func() bool { return leader.state.ClusterID() != "" })
	id := leader.state.ClusterID()
	for _, role := range []string{"follower", "leader"} {
		gone := leader
		if role == "follower" {
			gone = others(ss, leader)[0]
		}
		name, dir := gone.cfg.NodeName, gone.cfg.DataDir
		if _, err := gone.cl.Leave(context.Background(), connect.NewRequest(&taskerv1.LeaveRequest{})); err != nil {
			t.Fatal(err)
		}
		select {
		case <-gone.Left():
		case <-time.After(20 * time.Second):
			t.Fatalf("the leaving %s %s did not stop", role, name)
		}
		if !gone.logs.has("leave: removed from the Raft configuration") {
			t.Errorf("the leaving %s %s did not confirm its removal", role, name)
		}
		rest := others(ss, gone)
		waitCluster(t, rest, names(rest)...)

		back := f.start(name, 3, rest[0], nil, func(c *Config) { c.DataDir = dir })
		// It reopened its own Raft log, not an empty one.
		if got := back.node.LoggedClusterID(); got != id {
			t.Fatalf("%s restarted on its data dir: its log names cluster %q, want %q", name, got, id)
		}
		ss = append(rest, back)
		leader = waitCluster(t, ss, "s1", "s2", "s3")
		waitFor(t, 10*time.Second, name+" to apply its cluster's log", func() bool { return back.state.ClusterID() == id })
		if back.logs.has("bootstrap: formed a new cluster") {
			t.Errorf("%s bootstrapped on rejoining", name)
		}
		for _, s := range ss {
			if got := s.state.ClusterID(); got != id {
				t.Errorf("after %s %s came back: %s is in cluster %q, want %q", role, name, s.cfg.NodeName, got, id)
			}
		}
	}
}
