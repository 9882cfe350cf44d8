package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/agent"
)

const aclMgmt = "cli-test-management-secret-0123"

// aclAgent starts a real one-server agent with ACLs on.
func aclAgent(t *testing.T) string {
	t.Helper()
	cfg := agent.Defaults()
	cfg.NodeName, cfg.DataDir, cfg.Server, cfg.BootstrapExpect, cfg.Dev = "s1", t.TempDir(), true, 1, true
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort, cfg.RaftPort, cfg.Bus = 0, 0, 0, 0, "off"
	cfg.ACLEnabled, cfg.ACLInitialManagementToken, cfg.ACLAgentToken = true, aclMgmt, "cli-test-agent-secret-0123456789"
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, _ := runBounded(t, nil, "task", "list", "-addr", a.Addr(), "-token", aclMgmt)
		if code == exitOK {
			return a.Addr()
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not answer within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestACLCommands: an operator creates an app token with -token, the app
// uses it from $TASKER_TOKEN, a call without one is refused naming the
// header and the flag, and a deleted token stops working.
func TestACLCommands(t *testing.T) {
	addr := aclAgent(t)

	code, stdout, stderr := runBounded(t, nil, "acl", "token", "create", "-addr", addr, "-token", aclMgmt,
		"-policy", "app", "-capability", "payments.*", "-workflow", "shop/*", "-description", "payments service")
	if code != exitOK || !strings.Contains(stderr, "shown only now") {
		t.Fatalf("create: exit %d\n%s%s", code, stdout, stderr)
	}
	fields := map[string]string{}
	for _, r := range cells(stdout) {
		if len(r) == 2 {
			fields[r[0]] = r[1]
		}
	}
	secret, accessor := fields["SecretID:"], fields["AccessorID:"]
	if !strings.HasPrefix(secret, "tasker_") || !strings.HasPrefix(accessor, "acc_") || fields["Capabilities:"] != "payments.*" {
		t.Fatalf("create printed:\n%s", stdout)
	}

	code, stdout, _ = runBounded(t, nil, "acl", "token", "list", "-addr", addr, "-token", aclMgmt)
	if code != exitOK || !strings.Contains(stdout, accessor) || !strings.Contains(stdout, "capabilities payments.*; start shop/*") || strings.Contains(stdout, secret) {
		t.Fatalf("list: exit %d\n%s", code, stdout)
	}

	t.Setenv(tokenEnv, secret)
	code, stdout, stderr = runBounded(t, nil, "acl", "whoami", "-addr", addr)
	if code != exitOK || !strings.Contains(stdout, accessor) || !strings.Contains(stdout, "app") {
		t.Fatalf("whoami from $TASKER_TOKEN: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runBounded(t, nil, "acl", "token", "list", "-addr", addr)
	if code != exitFail || !strings.Contains(stderr, "policy app") || !strings.Contains(stderr, "management") {
		t.Fatalf("list with an app token: exit %d, stderr %q", code, stderr)
	}

	t.Setenv(tokenEnv, "")
	code, _, stderr = runBounded(t, nil, "task", "list", "-addr", addr)
	if code != exitFail || !strings.Contains(stderr, "Authorization: Bearer") || !strings.Contains(stderr, "-token") {
		t.Fatalf("no token: exit %d, stderr %q", code, stderr)
	}

	code, stdout, _ = runBounded(t, nil, "acl", "token", "delete", accessor, "-addr", addr, "-token", aclMgmt)
	if code != exitOK || !strings.Contains(stdout, "deleted") {
		t.Fatalf("delete: exit %d\n%s", code, stdout)
	}
	code, _, stderr = runBounded(t, nil, "acl", "whoami", "-addr", addr, "-token", secret)
	if code != exitFail || !strings.Contains(stderr, "not known") {
		t.Fatalf("a deleted token: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runBounded(t, nil, "acl", "token", "create", "-addr", addr, "-token", aclMgmt)
	if code != exitUsage || !strings.Contains(stderr, "-policy is required") {
		t.Fatalf("create without -policy: exit %d, stderr %q", code, stderr)
	}
}
