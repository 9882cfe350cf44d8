package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestClusterOutageRecovery follows docs/guarantees.md's outage recovery
// with real processes: two of three servers are lost for good, so the
// survivor can never again win an election on its own. The operator
// writes raft/peers.json naming only the survivor and restarts it: it
// leads with every task it had, the file is gone, and new orders run.
func TestClusterOutageRecovery(t *testing.T) {
	c := startCluster(t, 3, []clientSpec{{name: "client-all", only: "orders,inventory,payments,shipping,notifications"}})
	ag := c.client("client-all")
	cl := newClient(ag.api)
	if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	b := startBatch(t, cl, "out", 10)
	before := b.waitComplete(t, 60*time.Second)

	survivor := c.servers[0]
	for _, s := range c.servers {
		s.kill()
	}
	t.Logf("all three servers killed; %s survives, the others are lost", survivor.name)

	peers, err := json.Marshal([]map[string]any{{"id": survivor.name, "address": survivor.raft, "non_voter": false}})
	if err != nil {
		t.Fatal(err)
	}
	peersFile := filepath.Join(survivor.dataDir, "raft", "peers.json")
	if err := os.WriteFile(peersFile, peers, 0o600); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	survivor.start()
	survivor.waitServing(30 * time.Second)
	t.Logf("%s serves %s after its restart with peers.json", survivor.name, time.Since(began).Round(time.Millisecond))

	if _, err := os.Stat(peersFile); !os.IsNotExist(err) {
		t.Errorf("%s still exists after the recovery (stat: %v): the next start would recover again", peersFile, err)
	}
	view, err := survivor.cluster().RaftPeers(callCtx(t), connect.NewRequest(&taskerv1.RaftPeersRequest{}))
	if err != nil {
		t.Fatalf("RaftPeers on %s: %v", survivor.name, err)
	}
	if ps := view.Msg.GetPeers(); len(ps) != 1 || ps[0].GetId() != survivor.name || !ps[0].GetLeader() {
		t.Fatalf("raft peers after the recovery = %v, want %s alone, leading", ps, survivor.name)
	}

	sc := newClient(survivor.api)
	for _, old := range before {
		now, err := sc.GetTask(callCtx(t), old.GetId())
		if err != nil {
			t.Errorf("GetTask %s after the recovery: %v", old.GetId(), err)
			continue
		}
		if now.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
			t.Errorf("task %s is %s after the recovery, was complete", old.GetId(), now.GetState())
		}
	}
	ag.waitServing(30 * time.Second)
	b.checkKeys(t)
	nb := startBatch(t, cl, "out2", 5)
	for _, task := range nb.waitComplete(t, 60*time.Second) {
		checkOrderResults(t, task)
	}
}
