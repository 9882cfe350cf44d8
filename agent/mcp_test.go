package agent

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tasker-run/tasker/mcpserver"
)

// TestMCPSettings: -mcp (on by default) and -mcp-read-only come from
// flags, the environment and the config file, and read-only without MCP
// is refused naming the fix.
func TestMCPSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("mcp: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		args              []string
		env               map[string]string
		wantMCP, wantRead bool
		err               string
	}{
		{name: "default", args: []string{"-dev"}, wantMCP: true},
		{name: "flag off", args: []string{"-dev", "-mcp=false"}},
		{name: "env off", args: []string{"-dev"}, env: map[string]string{"TASKER_MCP": "false"}},
		{name: "config file off", args: []string{"-dev", "-config", file}},
		{name: "read-only", args: []string{"-dev", "-mcp-read-only"}, wantMCP: true, wantRead: true},
		{name: "read-only without mcp", args: []string{"-dev", "-mcp=false", "-mcp-read-only"}, err: "mcp-read-only: does nothing with -mcp=false"},
		{name: "not a bool", args: []string{"-dev"}, env: map[string]string{"TASKER_MCP": "sometimes"}, err: "not true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil || cfg.MCP != tt.wantMCP || cfg.MCPReadOnly != tt.wantRead {
				t.Fatalf("Load(%v) = mcp %v, read-only %v, %v; want %v, %v", tt.args, cfg.MCP, cfg.MCPReadOnly, err, tt.wantMCP, tt.wantRead)
			}
		})
	}
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}

// mcpSession connects an MCP client to the agent's /mcp with token.
func mcpSession(t *testing.T, ta *testAgent, token string) (*mcp.ClientSession, error) {
	t.Helper()
	tr := &mcp.StreamableClientTransport{Endpoint: ta.selfURL() + mcpPath, HTTPClient: &http.Client{Transport: bearerTransport{token, http.DefaultTransport}}, MaxRetries: -1}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(context.Background(), tr, nil)
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

// TestMCPEndpoint: /mcp is served on loopback; on another address only
// with ACLs, and then each call carries its own request's token;
// otherwise 403 saying why and how to fix it. -mcp=false removes it and
// -mcp-read-only offers only the read tools.
func TestMCPEndpoint(t *testing.T) {
	const mgmt = "mcp-agent-test-management-0123"
	acl := func(c *Config) {
		c.ACLEnabled, c.ACLInitialManagementToken, c.ACLAgentToken = true, mgmt, "mcp-agent-test-agent-secret-01234"
	}
	allAddrs := func(c *Config) { c.ClientAddr = "0.0.0.0" }

	t.Run("loopback", func(t *testing.T) {
		ta := startAgent(t, t.TempDir())
		cs, err := mcpSession(t, ta, "")
		if err != nil {
			t.Fatal(err)
		}
		tools, err := cs.ListTools(context.Background(), nil)
		if err != nil || len(tools.Tools) != len(mcpserver.ToolNames(false)) {
			t.Fatalf("tools: %v, %v", tools, err)
		}
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_workflows"})
		if err != nil || res.IsError {
			t.Fatalf("list_workflows: %v, %+v", err, res)
		}
	})
	t.Run("not loopback, no ACLs", func(t *testing.T) {
		ta := startAgent(t, t.TempDir(), allAddrs)
		resp, err := http.Post(ta.selfURL()+mcpPath, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "-acl") || !strings.Contains(string(body), "-client 127.0.0.1") {
			t.Fatalf("status %d, %q; want 403 naming -acl and -client", resp.StatusCode, body)
		}
	})
	t.Run("not loopback, ACLs", func(t *testing.T) {
		ta := startAgent(t, t.TempDir(), allAddrs, acl)
		anon, err := mcpSession(t, ta, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := anon.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_workflows"})
		if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "unauthenticated") {
			t.Fatalf("without a token: %v, %+v; want a tool error saying unauthenticated", err, res)
		}
		cs, err := mcpSession(t, ta, mgmt)
		if err != nil {
			t.Fatal(err)
		}
		res, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_workflows"})
		if err != nil || res.IsError {
			t.Fatalf("with the management token: %v, %+v", err, res)
		}
	})
	t.Run("off", func(t *testing.T) {
		ta := startAgent(t, t.TempDir(), func(c *Config) { c.MCP = false })
		resp, err := http.Post(ta.selfURL()+mcpPath, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		ta := startAgent(t, t.TempDir(), func(c *Config) { c.MCPReadOnly = true })
		cs, err := mcpSession(t, ta, "")
		if err != nil {
			t.Fatal(err)
		}
		tools, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range tools.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		want := slices.Sorted(slices.Values(mcpserver.ToolNames(true)))
		if !slices.Equal(names, want) {
			t.Fatalf("tools = %v, want %v", names, want)
		}
	})
}
