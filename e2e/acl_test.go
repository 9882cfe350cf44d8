package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestACL runs the real binary with ACLs on: without a token the CLI and
// a plain HTTP client are refused; the operator creates tokens with the
// configured management token; the example services (Go SDK, token from
// TASKER_TOKEN) serve their capabilities with an app token, and an order
// started with a writer token completes.
func TestACL(t *testing.T) {
	const mgmt = "e2e-management-secret-0123456789"
	a := startAgent(t, agentConfig{configFile: "acl_enabled: true\nacl_initial_management_token: " + mgmt +
		"\nacl_agent_token: e2e-agent-secret-01234567890123\n"})

	r := tasker(t, a.addr, "task", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "Authorization: Bearer") {
		t.Fatalf("task list without a token: exit %d, stderr %q", r.code, r.stderr)
	}
	req, _ := http.NewRequest(http.MethodPost, a.addr+"/tasker.v1.WorkflowService/ListWorkflows", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+mgmt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("curl-style call with the management token: HTTP %d", resp.StatusCode)
	}

	secretOf := func(r cliResult) string {
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "SecretID:" {
				return f[1]
			}
		}
		t.Fatalf("no secret in:\n%s", r.stdout)
		return ""
	}
	app := secretOf(tasker(t, a.addr, "acl", "token", "create", "-token", mgmt, "-policy", "app",
		"-capability", "orders.*", "-capability", "inventory.*", "-capability", "payments.*", "-capability", "shipping.*", "-capability", "notifications.*").
		must(t, "create an app token", 0, "AccessorID:"))
	writer := secretOf(tasker(t, a.addr, "acl", "token", "create", "-token", mgmt, "-policy", "writer").must(t, "create a writer token", 0))

	manifest := filepath.Join(repoRoot, "examples", "order-fulfilment.yaml")
	if r := tasker(t, a.addr, "workflow", "apply", "-f", manifest, "-token", app); r.code != 1 || !strings.Contains(r.stderr, "policy app") {
		t.Fatalf("workflow apply with an app token: exit %d, stderr %q", r.code, r.stderr)
	}
	tasker(t, a.addr, "workflow", "apply", "-f", manifest, "-token", writer).must(t, "workflow apply with a writer token", 0, "created")

	t.Setenv("TASKER_TOKEN", app)
	startServices(t, a.addr, nil)
	input := writeJSON(t, t.TempDir(), "order.json", orderInput("ord_acl1", "tok_visa", "BOOK-GO"))
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+input, "-watch", "-token", writer).
		must(t, "an order through services holding an app token", 0, "complete")
}
