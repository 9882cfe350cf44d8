package agent

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestApplyValidateOnly checks the dry run the web UI calls as one edits:
// the problems come back as data, a valid manifest is accepted, and
// nothing is ever stored.
func TestApplyValidateOnly(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	tests := []struct {
		name     string
		manifest string
		paths    []string
	}{
		{"valid", readExample(t), nil},
		{"cycle", "name: x\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a, depends_on: [b]}\n- {name: b, capability: x.b, depends_on: [a]}\n", []string{"steps[0].depends_on"}},
		{"bad retry", "name: y\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a, retry: {max_attempts: -1}}\n", []string{"steps[0].retry.max_attempts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: tt.manifest, ValidateOnly: true}))
			if err != nil {
				t.Fatalf("validate_only: %v", err)
			}
			got := res.Msg.GetProblems()
			if len(tt.paths) == 0 && len(got) != 0 {
				t.Fatalf("problems on a valid manifest: %v", got)
			}
			for _, want := range tt.paths {
				found := false
				for _, p := range got {
					found = found || p.GetPath() == want || len(p.GetPath()) > len(want) && p.GetPath()[:len(want)] == want
				}
				if !found {
					t.Errorf("no problem at %s in %v", want, got)
				}
			}
			if res.Msg.GetWorkflow() != nil || res.Msg.GetCreated() {
				t.Fatalf("a dry run reported a stored workflow: %v", res.Msg)
			}
		})
	}
	list, err := ta.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.GetWorkflows()); n != 0 {
		t.Fatalf("validate_only stored %d workflows", n)
	}
	// A version stored with other content is a problem at "version"; the
	// very same content is not (an apply would accept it, created false).
	if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: tests[0].manifest})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		manifest string
		problem  bool
	}{{tests[0].manifest, false}, {tests[0].manifest + "\n# changed\n", true}} {
		res, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: tc.manifest, ValidateOnly: true}))
		if err != nil {
			t.Fatal(err)
		}
		ps := res.Msg.GetProblems()
		if got := len(ps) == 1 && ps[0].GetPath() == "version"; got != tc.problem {
			t.Errorf("stored version, changed %v: problems %v", tc.problem, ps)
		}
	}
	// Without the flag the same invalid manifest is still an error.
	_, err = ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: tests[1].manifest}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("apply of an invalid manifest: %v, want InvalidArgument", err)
	}
}

// TestWebUIServed checks that the local API port serves the web UI next
// to the API, index.html for the app's own routes too (ui/embed_test.go
// covers the handler in detail).
func TestWebUIServed(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	for _, path := range []string{"/ui/", "/ui/watch"} {
		res, err := http.Get(ta.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), `id="root"`) {
			t.Fatalf("GET %s: %d %q", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
}
