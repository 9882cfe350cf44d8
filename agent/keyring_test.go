package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func newKey(t *testing.T) string {
	t.Helper()
	k, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyring runs one operation through ta's local API.
func keyring(ta *testAgent, op taskerv1.KeyringOp, key string) (*taskerv1.KeyringResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := ta.cl.Keyring(ctx, connect.NewRequest(&taskerv1.KeyringRequest{Op: op, Key: key}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// wantRefused checks err is code, and its message holds every part.
func wantRefused(t *testing.T, what string, err error, code connect.Code, parts ...string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(ce.Message(), p) {
			t.Errorf("%s: %q does not say %q", what, ce.Message(), p)
		}
	}
}

// keysOf summarizes a listing: key → "members/primary".
func keysOf(r *taskerv1.KeyringResponse) map[string][2]int32 {
	m := map[string][2]int32{}
	for _, k := range r.Keys {
		m[k.Key] = [2]int32{k.Members, k.Primary}
	}
	return m
}

func wantList(t *testing.T, ta *testAgent, members int32, want map[string][2]int32) {
	t.Helper()
	r, err := keyring(ta, taskerv1.KeyringOp_KEYRING_OP_LIST, "")
	if err != nil {
		t.Fatal(err)
	}
	got := keysOf(r)
	if r.Total != members || r.Failed != 0 || len(got) != len(want) {
		t.Fatalf("list: %d members, %d failed, keys %v; want %d members, keys %v", r.Total, r.Failed, got, members, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("list: key %s… held/primary %v, want %v", k[:6], got[k], w)
		}
	}
}

func wantAllOK(t *testing.T, what string, r *taskerv1.KeyringResponse, err error, members int32) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Total != members || r.Failed != 0 {
		t.Fatalf("%s: %d of %d failed: %v", what, r.Failed, r.Total, r.Nodes)
	}
}

// keyringFile reads an agent's persisted keyring.
func keyringFile(t *testing.T, dir string) (primary string, keys []string) {
	t.Helper()
	path := filepath.Join(dir, gossip.KeyringFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Primary string   `json:"primary"`
		Keys    []string `json:"keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.Primary, f.Keys
}

// TestKeyringRotation rotates the gossip key of a running cluster (a
// server and two clients): install B, use B, remove A, with the refusals
// on the way; then an agent with only B joins, one with only A cannot, and
// a restarted agent comes back with B from its data dir.
func TestKeyringRotation(t *testing.T) {
	a, b := newKey(t), newKey(t)
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName, c.Encrypt = "s1", a })
	c1 := startClientAgent(t, "c1", srv, func(c *Config) { c.Encrypt = a })
	c2 := startClientAgent(t, "c2", srv, func(c *Config) { c.Encrypt = a })
	waitFor(t, 10*time.Second, "every agent to see three alive members", func() bool {
		for _, ta := range []*testAgent{srv, c1, c2} {
			n := 0
			for _, m := range ta.gossip.Members() {
				if m.Status == gossip.StatusAlive {
					n++
				}
			}
			if n != 3 {
				return false
			}
		}
		return true
	})
	wantList(t, srv, 3, map[string][2]int32{a: {3, 3}})

	// Bad requests change nothing.
	_, err := keyring(srv, taskerv1.KeyringOp_KEYRING_OP_INSTALL, "not-a-key")
	wantRefused(t, "install of a bad key", err, connect.CodeInvalidArgument, "key:", "base64", "tasker keygen")
	_, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_INSTALL, "")
	wantRefused(t, "install without a key", err, connect.CodeInvalidArgument, "key: is required")
	_, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_UNSPECIFIED, "")
	wantRefused(t, "no op", err, connect.CodeInvalidArgument, "op:", "list, install, use or remove")
	_, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_USE, b)
	wantRefused(t, "use before install", err, connect.CodeFailedPrecondition,
		"not installed on 3 of 3 members: c1, c2, s1", "tasker keyring install", "no member changed")
	_, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_REMOVE, a)
	wantRefused(t, "remove of the primary", err, connect.CodeFailedPrecondition,
		"primary key of 3 of 3 members", "tasker keyring use")
	wantList(t, srv, 3, map[string][2]int32{a: {3, 3}})

	// A member that cannot save its keyring fails alone, and says why; a
	// retry once it can finishes the job.
	c2File := filepath.Join(c2.dir, gossip.KeyringFile)
	if err := os.Remove(c2File); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(c2File, "x"), 0o700); err != nil { // rename over a non-empty dir fails, even as root
		t.Fatal(err)
	}
	r, err := keyring(c1, taskerv1.KeyringOp_KEYRING_OP_INSTALL, b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 3 || r.Failed != 1 {
		t.Fatalf("install with c2 broken: %d of %d failed, want 1 of 3: %v", r.Failed, r.Total, r.Nodes)
	}
	for _, n := range r.Nodes {
		if n.Ok != (n.Node != "c2") || (n.Node == "c2" && !strings.Contains(n.Error, "save keyring")) {
			t.Errorf("node %s: ok %v, error %q", n.Node, n.Ok, n.Error)
		}
	}
	_, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_USE, b)
	wantRefused(t, "use while c2 lacks the key", err, connect.CodeFailedPrecondition, "not installed on 1 of 3 members: c2;")
	if err := os.RemoveAll(c2File); err != nil {
		t.Fatal(err)
	}
	r, err = keyring(c1, taskerv1.KeyringOp_KEYRING_OP_INSTALL, b)
	wantAllOK(t, "install again", r, err, 3)
	wantList(t, c2, 3, map[string][2]int32{a: {3, 3}, b: {3, 0}})

	r, err = keyring(c2, taskerv1.KeyringOp_KEYRING_OP_USE, b)
	wantAllOK(t, "use", r, err, 3)
	wantList(t, srv, 3, map[string][2]int32{a: {3, 0}, b: {3, 3}})
	r, err = keyring(srv, taskerv1.KeyringOp_KEYRING_OP_REMOVE, a)
	wantAllOK(t, "remove", r, err, 3)
	wantList(t, srv, 3, map[string][2]int32{b: {3, 3}})
	for _, ta := range []*testAgent{srv, c1, c2} {
		if p, keys := keyringFile(t, ta.dir); p != b || !slices.Equal(keys, []string{b}) {
			t.Errorf("%s's keyring file: primary %s…, keys %d, want B alone", ta.cfg.NodeName, p[:6], len(keys))
		}
	}

	// The cluster still works over the new key.
	if _, err := c2.wf.ListWorkflows(context.Background(), connect.NewRequest(&taskerv1.ListWorkflowsRequest{})); err != nil {
		t.Fatalf("a call through a client agent after the rotation: %v", err)
	}
	// An agent with only B joins.
	startClientAgent(t, "c3", srv, func(c *Config) { c.Encrypt = b })
	// An agent with only A is refused.
	cfg := Defaults()
	cfg.NodeName, cfg.DataDir, cfg.DevTiming, cfg.Encrypt = "stale", t.TempDir(), true, a
	cfg.HTTPPort, cfg.RPCPort, cfg.GossipPort = 0, 0, 0
	cfg.Join = []string{srv.GossipAddr()}
	stale, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := stale.Start(ctx); err == nil {
		_ = stale.Shutdown(context.Background())
		t.Fatal("an agent with only the removed key joined")
	} else if !strings.Contains(err.Error(), "join") {
		t.Fatalf("start error %q does not say the join failed", err)
	}

	// c1 restarted with its old -encrypt comes back with B, from its data
	// dir: otherwise it could not join.
	dir := c1.dir
	if err := c1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c1 = startClientAgent(t, "c1", srv, func(c *Config) { c.Encrypt, c.DataDir = a, dir })
	if p, keys := c1.keyring.Keys(); p != b || !slices.Equal(keys, []string{b}) {
		t.Fatalf("restarted c1: primary %s…, %d keys; want B alone", p[:6], len(keys))
	}
	waitFor(t, 10*time.Second, "four alive members", func() bool {
		r, err := keyring(srv, taskerv1.KeyringOp_KEYRING_OP_LIST, "")
		return err == nil && r.Total == 4 && r.Failed == 0
	})
	wantList(t, c1, 4, map[string][2]int32{b: {4, 4}})
}

// TestKeyringWithoutEncryption: keyring operations on a cluster without
// gossip encryption are refused with the fix, and no keyring file appears.
func TestKeyringWithoutEncryption(t *testing.T) {
	dir := t.TempDir()
	srv := startAgent(t, dir)
	for _, op := range []taskerv1.KeyringOp{taskerv1.KeyringOp_KEYRING_OP_LIST, taskerv1.KeyringOp_KEYRING_OP_INSTALL} {
		key := ""
		if op != taskerv1.KeyringOp_KEYRING_OP_LIST {
			key = newKey(t)
		}
		_, err := keyring(srv, op, key)
		wantRefused(t, op.String(), err, connect.CodeFailedPrecondition, "not enabled", "-encrypt")
	}
	if _, err := os.Stat(filepath.Join(dir, gossip.KeyringFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a keyring file without encryption: %v", err)
	}
}
