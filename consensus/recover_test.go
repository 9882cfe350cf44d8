package consensus_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/consensus"
)

type peerEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

func writePeers(t *testing.T, dataDir string, peers ...peerEntry) string {
	t.Helper()
	b, err := json.Marshal(peers)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dataDir, consensus.PeersFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOutageRecoveryFromPeersFile loses two of three servers for good: the
// survivor alone has no quorum and can never elect itself, until the
// operator writes peers.json naming only it and restarts it. It must then
// lead with every committed entry, and the file must be gone.
func TestOutageRecoveryFromPeersFile(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), clusterTimeout)
	defer cancel()

	ids := []string{"r1", "r2", "r3"}
	cfgs := make([]consensus.Config, len(ids))
	nodes := make([]*consensus.Node, len(ids))
	servers := make([]consensus.Server, len(ids))
	for i, id := range ids {
		cfgs[i] = testConfig(t, log, id)
		nodes[i] = openNode(t, cfgs[i], newListFSM())
		servers[i] = consensus.Server{ID: id, Addr: nodes[i].Addr()}
	}
	bootstrapAll(ctx, t, nodes, servers)
	leader := nodes[waitLeader(t, nodes...)]
	want := cmds("w", 20)
	for _, c := range want {
		if _, err := leader.Apply(ctx, []byte(c)); err != nil {
			t.Fatalf("Apply(%s): %v", c, err)
		}
	}
	survivor := 2
	waitFor(t, 5*time.Second, "the survivor to apply every entry", func() bool {
		return nodes[survivor].AppliedIndex() == leader.LastIndex()
	})
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}

	cfg := cfgs[survivor]
	cfg.BindAddr = servers[survivor].Addr

	// Without the file the survivor stays a follower of nobody.
	fsm := newListFSM()
	alone := openNode(t, cfg, fsm)
	time.Sleep(10 * cfg.HeartbeatTimeout) // proving an absence: no condition to poll
	if alone.IsLeader() {
		t.Fatal("a lone survivor of three servers elected itself without peers.json")
	}
	if err := alone.Shutdown(); err != nil {
		t.Fatal(err)
	}

	path := writePeers(t, cfg.DataDir, peerEntry{ID: ids[survivor], Address: servers[survivor].Addr})
	fsm = newListFSM()
	n := openNode(t, cfg, fsm)
	waitLeader(t, n)
	if err := n.Barrier(ctx); err != nil {
		t.Fatalf("Barrier after recovery: %v", err)
	}
	if got := fsm.Items(); !slices.Equal(got, want) {
		t.Fatalf("after recovery the FSM holds %v, want %v", got, want)
	}
	if _, err := n.Apply(ctx, []byte("after")); err != nil {
		t.Fatalf("Apply after recovery: %v", err)
	}
	peers, err := n.Peers()
	if err != nil || len(peers) != 1 || peers[0].ID != ids[survivor] {
		t.Fatalf("Peers after recovery = %+v, %v; want only %s", peers, err, ids[survivor])
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists after recovery (stat: %v); it would redo the recovery at every start", path, err)
	}
}

// TestOutageRecoveryRefusesABadPeersFile: a file that cannot be what the
// operator meant stops the server with an error naming the fix, and is
// left in place to be corrected.
func TestOutageRecoveryRefusesABadPeersFile(t *testing.T) {
	tests := []struct {
		name    string
		content func(addr string) string
		wantErr string
	}{
		{"not json", func(string) string { return "[{" }, "fix the file"},
		{"without this server", func(string) string {
			return `[{"id":"other","address":"127.0.0.1:1","non_voter":false}]`
		}, `does not list this server (id "s1")`},
		{"this server as a non-voter", func(addr string) string {
			return `[{"id":"other","address":"127.0.0.1:1","non_voter":false},{"id":"s1","address":"` + addr + `","non_voter":true}]`
		}, "as a voter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log := testLogger(t)
			cfg := testConfig(t, log, "s1")
			cfg.Bootstrap = true
			n := openNode(t, cfg, newListFSM())
			waitLeader(t, n)
			if _, err := n.Apply(t.Context(), []byte("x")); err != nil {
				t.Fatal(err)
			}
			addr := n.Addr()
			if err := n.Shutdown(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(cfg.DataDir, consensus.PeersFile)
			if err := os.WriteFile(path, []byte(tc.content(addr)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.BindAddr = addr
			_, err := consensus.Open(cfg, newListFSM())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open with a bad %s: err = %v, want one naming the file and %q", consensus.PeersFile, err, tc.wantErr)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("the bad file was removed (%v); it should stay for the operator to fix", err)
			}
		})
	}

	t.Run("no state", func(t *testing.T) {
		log := testLogger(t)
		cfg := testConfig(t, log, "s1")
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		writePeers(t, cfg.DataDir, peerEntry{ID: "s1", Address: "127.0.0.1:1"})
		if _, err := consensus.Open(cfg, newListFSM()); err == nil || !strings.Contains(err.Error(), "no Raft state") {
			t.Fatalf("Open of an empty server with peers.json: err = %v, want one saying there is nothing to recover", err)
		}
	})
}
