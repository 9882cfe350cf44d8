package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// Keys as 'tasker keygen' prints them (32 bytes, base64).
const (
	keyA = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
	keyB = "HDFfOKh+kVwMmsTa2oLQcyMj5yqrVNwIWzbBc4f3JOE="
)

// fakeKeyring serves ClusterService.Keyring with a scripted answer, like
// an agent's local API.
type fakeKeyring struct {
	taskerv1connect.UnimplementedClusterServiceHandler
	mu   sync.Mutex
	reqs []*taskerv1.KeyringRequest
	resp *taskerv1.KeyringResponse
	err  error
	addr string
}

func (f *fakeKeyring) Keyring(_ context.Context, req *connect.Request[taskerv1.KeyringRequest]) (*connect.Response[taskerv1.KeyringResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req.Msg)
	if f.err != nil {
		return nil, f.err
	}
	r := proto.Clone(f.resp).(*taskerv1.KeyringResponse)
	r.Op = req.Msg.Op
	return connect.NewResponse(r), nil
}

func newFakeKeyring(t *testing.T) *fakeKeyring {
	f := &fakeKeyring{}
	mux := http.NewServeMux()
	mux.Handle(taskerv1connect.NewClusterServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	f.addr = srv.URL
	return f
}

func (f *fakeKeyring) tasker(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runBounded(t, nil, append(args, "-addr", f.addr)...)
}

func okNode(name, primary string, keys ...string) *taskerv1.KeyringNode {
	return &taskerv1.KeyringNode{Node: name, Ok: true, Primary: primary, Keys: keys}
}

func TestKeyringCommands(t *testing.T) {
	f := newFakeKeyring(t)

	// list: every key, how many members hold it and use it.
	f.resp = &taskerv1.KeyringResponse{Agent: "s1", Total: 3,
		Nodes: []*taskerv1.KeyringNode{okNode("c1", keyA, keyA, keyB), okNode("s1", keyA, keyA, keyB), okNode("s2", keyB, keyB, keyA)},
		Keys:  []*taskerv1.KeyringKey{{Key: keyB, Members: 3, Primary: 1}, {Key: keyA, Members: 3, Primary: 2}},
	}
	code, stdout, stderr := f.tasker(t, "keyring", "list")
	if code != 0 || stderr != "" {
		t.Fatalf("list: exit %d, stderr %q", code, stderr)
	}
	want := [][]string{
		{"==> Gathering installed encryption keys (asked by s1, 3 alive members)..."},
		{"KEY", "MEMBERS", "PRIMARY"},
		{keyB, "3/3", "1/3"},
		{keyA, "3/3", "2/3"},
	}
	if got := cells(stdout); !equalCells(got, want) {
		t.Errorf("list:\n%s\nwant %v", stdout, want)
	}
	if r := f.reqs[len(f.reqs)-1]; r.Op != taskerv1.KeyringOp_KEYRING_OP_LIST || r.Key != "" {
		t.Errorf("list sent %v", r)
	}

	// install, all well: one row per member and the totals.
	f.resp = &taskerv1.KeyringResponse{Agent: "s1", Total: 2,
		Nodes: []*taskerv1.KeyringNode{okNode("c1", keyA, keyA, keyB), okNode("s1", keyA, keyA, keyB)}}
	code, stdout, stderr = f.tasker(t, "keyring", "install", keyB)
	if code != 0 || stderr != "" {
		t.Fatalf("install: exit %d, stderr %q", code, stderr)
	}
	want = [][]string{
		{"==> Installing new gossip encryption key (asked by s1, 2 alive members)..."},
		{"NODE", "RESULT"},
		{"c1", "ok"},
		{"s1", "ok"},
		{"==> Done: 2 of 2 members"},
	}
	if got := cells(stdout); !equalCells(got, want) {
		t.Errorf("install:\n%s\nwant %v", stdout, want)
	}
	if r := f.reqs[len(f.reqs)-1]; r.Op != taskerv1.KeyringOp_KEYRING_OP_INSTALL || r.Key != keyB {
		t.Errorf("install sent %v", r)
	}

	// use, one member failed after the check: it is named with its error,
	// the state the cluster is in is said, and the exit status is 1.
	f.resp = &taskerv1.KeyringResponse{Agent: "s1", Total: 3, Failed: 1, NotAsked: []string{"c9 (dead)"},
		Nodes: []*taskerv1.KeyringNode{okNode("c1", keyB, keyA, keyB), {Node: "c2", Error: "keyring use: gossip: save keyring: disk full"}, okNode("s1", keyB, keyA, keyB)}}
	code, stdout, stderr = f.tasker(t, "keyring", "use", keyB)
	if code != 1 {
		t.Errorf("use with a failure: exit %d, want 1", code)
	}
	if r := rows(stdout); strings.Join(r["c2"], " ") != "error: keyring use: gossip: save keyring: disk full" || r["c1"][0] != "ok" {
		t.Errorf("use rows:\n%s", stdout)
	}
	for _, s := range []string{
		"tasker keyring use: 1 of 3 members failed (c2); the others encrypt with the key now", "Do not remove the old key", "run use again",
		"not asked, not alive: c9 (dead)",
	} {
		if !strings.Contains(stderr, s) {
			t.Errorf("use stderr %q does not say %q", stderr, s)
		}
	}

	// -o json: the agent's answer, and still exit 1 on a failure.
	code, stdout, _ = f.tasker(t, "keyring", "use", keyB, "-o", "json")
	v := decode(t, stdout)
	if code != 1 || dig(v, "failed") != 1.0 || dig(v, "nodes", 1, "error") == nil || dig(v, "op") != "KEYRING_OP_USE" {
		t.Errorf("use json: exit %d\n%s", code, stdout)
	}

	// The agent's refusals: one line, naming the fix.
	f.err = connect.NewError(connect.CodeFailedPrecondition, errors.New("the key is not installed on 1 of 3 members: c2; install it everywhere first: tasker keyring install KEY; no member changed"))
	code, stdout, stderr = f.tasker(t, "keyring", "use", keyB)
	if code != 1 || stdout != "" || stderr != "tasker keyring use: refused: the key is not installed on 1 of 3 members: c2; install it everywhere first: tasker keyring install KEY; no member changed\n" {
		t.Errorf("refused use: exit %d, %q, %q", code, stdout, stderr)
	}
	f.err = nil

	// Bad command lines never reach the agent.
	before := len(f.reqs)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keyring", "install"}, "tasker keyring install: want one KEY (base64, as 'tasker keygen' prints it), got 0 arguments"},
		{[]string{"keyring", "use", keyA, keyB}, "got 2 arguments"},
		{[]string{"keyring", "remove", "%%%"}, "tasker keyring remove: KEY: encryption key is not base64"},
		{[]string{"keyring", "install", "c2hvcnQ="}, "KEY: encryption key is 5 bytes, it must be 16, 24 or 32; generate one with 'tasker keygen'"},
		{[]string{"keyring", "list", keyA}, "tasker keyring list: unexpected argument"},
	} {
		code, _, stderr := f.tasker(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	if len(f.reqs) != before {
		t.Errorf("a bad command line reached the agent: %v", f.reqs[before:])
	}
}

func equalCells(got, want [][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			return false
		}
	}
	return true
}
