package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestEncryptedGossip: agents sharing the -encrypt key form a cluster; an
// agent with another key cannot join it, and says so at start.
func TestEncryptedGossip(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName, c.Encrypt = "s1", key })
	cli := startClientAgent(t, "c1", srv, func(c *Config) { c.Encrypt = key })
	if _, err := cli.wf.ListWorkflows(context.Background(), connect.NewRequest(&taskerv1.ListWorkflowsRequest{})); err != nil {
		t.Fatalf("a call through a client agent with the cluster's key: %v", err)
	}

	other, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.DevTiming, cfg.Encrypt = "intruder", t.TempDir(), true, other
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort = 0, 0, 0
	cfg.Join = []string{srv.GossipAddr()}
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = a.Start(ctx)
	if err == nil {
		_ = a.Shutdown(context.Background())
		t.Fatal("an agent with another gossip key joined the cluster")
	}
	if !strings.Contains(err.Error(), "join") {
		t.Fatalf("start error %q does not say the join failed", err)
	}
	for _, m := range srv.gossip.Members() {
		if m.Name == "intruder" && m.Status == gossip.StatusAlive {
			t.Fatal("the server lists the agent with the wrong key as alive")
		}
	}
}

// TestClientAgentConfig: a client agent must be told where the servers
// are, and only servers bootstrap; each message names the setting.
func TestClientAgentConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"client without join", []string{"-node", "c", "-data-dir", "/tmp/x"}, "join: a client agent needs servers"},
		{"client with bootstrap-expect", []string{"-node", "c", "-data-dir", "/tmp/x", "-join", "127.0.0.1:7422", "-bootstrap-expect", "3"}, "bootstrap-expect: only servers"},
		{"join without a port", []string{"-node", "c", "-data-dir", "/tmp/x", "-join", "127.0.0.1"}, `join: "127.0.0.1" is not host:port`},
		{"bad key", []string{"-node", "s", "-server", "-data-dir", "/tmp/x", "-encrypt", "nope"}, "encrypt:"},
		{"expect out of range", []string{"-node", "s", "-server", "-data-dir", "/tmp/x", "-bootstrap-expect", "12"}, "bootstrap-expect: 12 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%v) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
	cfg, err := Load([]string{"-node", "c", "-data-dir", "/tmp/x", "-join", "10.0.0.1:7422,10.0.0.2:7422", "-join", "10.0.0.3:7422"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Join, " "); got != "10.0.0.1:7422 10.0.0.2:7422 10.0.0.3:7422" {
		t.Fatalf("-join repeated and comma-separated = %q", got)
	}
}
