package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/mtls"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// testPKI writes a CA and certificates to dir: name.pem and name-key.pem.
type testPKI struct {
	t             *testing.T
	dir           string
	caCert, caKey []byte
}

func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	cert, key, err := mtls.CreateCA(mtls.CAOptions{Days: 30, Now: time.Now().AddDate(0, 0, -10)})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: dir, caCert: cert, caKey: key}
	p.write("ca.pem", cert)
	return p
}

func (p *testPKI) write(name string, b []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes a certificate of role, valid from start for days.
func (p *testPKI) issue(name string, role mtls.Role, start time.Time, days int) {
	p.t.Helper()
	cert, key, err := mtls.CreateCert(mtls.CertOptions{CACert: p.caCert, CAKey: p.caKey, Role: role, Days: days, Now: start})
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(name+".pem", cert)
	p.write(name+"-key.pem", key)
}

// TestTLSSettings: the TLS settings are checked together at start, and a
// wrong one stops the agent with a message naming the setting and the
// fix: verify settings without the files, a file missing, a certificate
// of another CA, expired, or a client agent's certificate on a server.
func TestTLSSettings(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t, dir)
	p.issue("server", mtls.RoleServer, time.Time{}, 10)
	p.issue("client", mtls.RoleClient, time.Time{}, 10)
	p.issue("expired", mtls.RoleServer, time.Now().AddDate(0, 0, -9), 2)
	other := newTestPKI(t, t.TempDir())
	other.issue("foreign", mtls.RoleServer, time.Time{}, 10)
	f := func(name string) string { return filepath.Join(dir, name) }
	files := func(cert string) []string {
		return []string{"-tls-ca-file", f("ca.pem"), "-tls-cert-file", f(cert + ".pem"), "-tls-key-file", f(cert + "-key.pem")}
	}
	verify := []string{"-verify-incoming", "-verify-outgoing", "-verify-server-hostname"}
	server := []string{"-server", "-data-dir", dir}
	client := []string{"-data-dir", dir, "-join", "127.0.0.1:7422"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cfgFile := filepath.Join(dir, "agent.yaml")
	yaml := "tls_ca_file: " + f("ca.pem") + "\ntls_cert_file: " + f("server.pem") + "\ntls_key_file: " + f("server-key.pem") + "\nverify_outgoing: true\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		err  string // empty: loads
	}{
		{name: "a server with a server certificate", args: cat(server, files("server"), verify)},
		{name: "a client agent with a client certificate", args: cat(client, files("client"), verify)},
		{name: "config file keys", args: []string{"-server", "-data-dir", dir, "-config", cfgFile}},
		{name: "environment", args: cat(server, files("server")), env: map[string]string{"TASKER_VERIFY_INCOMING": "true"}},
		{name: "verify without the files", args: cat(server, []string{"-verify-incoming"}), err: "verify-incoming: needs tls-ca-file, tls-cert-file and tls-key-file: create them with 'tasker tls ca create'"},
		{name: "verify-server-hostname without verify-outgoing", args: cat(server, files("server"), []string{"-verify-server-hostname"}), err: "verify-server-hostname: checks the certificates of outgoing calls: set verify-outgoing too"},
		{name: "a file missing from the three", args: cat(server, []string{"-tls-ca-file", f("ca.pem"), "-tls-cert-file", f("server.pem")}), err: "tls-key-file: is required with tls-ca-file and tls-cert-file"},
		{name: "the certificate file does not exist", args: cat(server, []string{"-tls-ca-file", f("ca.pem"), "-tls-cert-file", f("nope.pem"), "-tls-key-file", f("server-key.pem")}), err: "tls-cert-file: " + f("nope.pem")},
		{name: "the CA file does not exist", args: cat(server, []string{"-tls-ca-file", f("nope.pem"), "-tls-cert-file", f("server.pem"), "-tls-key-file", f("server-key.pem")}), err: "tls-ca-file: " + f("nope.pem")},
		{name: "a certificate of another CA", args: cat(server, []string{"-tls-ca-file", f("ca.pem"), "-tls-cert-file", filepath.Join(other.dir, "foreign.pem"), "-tls-key-file", filepath.Join(other.dir, "foreign-key.pem")}), err: "is not signed by the CA in " + f("ca.pem")},
		{name: "an expired certificate", args: cat(server, files("expired")), err: "tls-cert-file: " + f("expired.pem") + ": expired on"},
		{name: "a client agent's certificate on a server", args: cat(server, files("client"), verify), err: "tls-cert-file: " + f("client.pem") + " is a client agent's certificate (client.tasker), but this agent is a server: Raft and calls to servers admit only server.tasker; create one with 'tasker tls cert create -server -domain tasker'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Load(%v): %v", tt.args, err)
				}
				if tc, err := cfg.loadTLS(time.Now()); err != nil || tc == nil {
					t.Fatalf("TLS not loaded: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.err)
			}
		})
	}
}

// TestTLSForwarding: over TLS with every verify setting on, a client
// agent with a certificate from the cluster's CA forwards to the server;
// a plaintext agent and an agent whose certificate comes from another CA
// are refused, and what they get back says why.
func TestTLSForwarding(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t, dir)
	p.issue("server", mtls.RoleServer, time.Time{}, 10)
	p.issue("client", mtls.RoleClient, time.Time{}, 10)
	other := newTestPKI(t, t.TempDir())
	other.issue("client", mtls.RoleClient, time.Time{}, 10)
	withTLS := func(p *testPKI, cert string) func(*Config) {
		return func(c *Config) {
			c.TLSCAFile = filepath.Join(p.dir, "ca.pem")
			c.TLSCertFile = filepath.Join(p.dir, cert+".pem")
			c.TLSKeyFile = filepath.Join(p.dir, cert+"-key.pem")
			c.VerifyIncoming, c.VerifyOutgoing, c.VerifyServerHostname = true, true, true
			c.RPCHoldTimeout = 1500 * time.Millisecond
		}
	}
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" }, withTLS(p, "server"))

	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string // in the error; empty: the call succeeds
	}{
		{"a client agent of the CA", withTLS(p, "client"), ""},
		{"a plaintext agent", func(c *Config) { c.RPCHoldTimeout = 1500 * time.Millisecond }, "unavailable"},
		{"an agent of another CA", withTLS(other, "client"), "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := startClientAgent(t, "c-"+strings.ReplaceAll(tc.name, " ", "-"), srv, tc.mutate)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := cli.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("a call forwarded over TLS: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("a call forwarded by %s = %v, want refused with %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestTLSMigration: an agent with the TLS files but neither verify
// setting (the first step of turning TLS on in a running cluster) answers
// both agents still calling in plaintext and agents already calling over
// TLS, so agents can be restarted one at a time.
func TestTLSMigration(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t, dir)
	p.issue("server", mtls.RoleServer, time.Time{}, 10)
	p.issue("client", mtls.RoleClient, time.Time{}, 10)
	files := func(cert string) func(*Config) {
		return func(c *Config) {
			c.TLSCAFile = filepath.Join(dir, "ca.pem")
			c.TLSCertFile = filepath.Join(dir, cert+".pem")
			c.TLSKeyFile = filepath.Join(dir, cert+"-key.pem")
		}
	}
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" }, files("server"))
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"plaintext", func(*Config) {}},
		{"TLS", func(c *Config) { files("client")(c); c.VerifyOutgoing, c.VerifyServerHostname = true, true }},
	} {
		cli := startClientAgent(t, "c-"+tc.name, srv, tc.mutate)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
		cancel()
		if err != nil {
			t.Errorf("a %s client agent calling a server in migration: %v", tc.name, err)
		}
	}
}

// TestTLSDeliverOnlyFromServers: over TLS, only a server's certificate
// may hand a step to an agent (Deliver): another client agent of the
// cluster is refused with permission_denied.
func TestTLSDeliverOnlyFromServers(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t, dir)
	p.issue("server", mtls.RoleServer, time.Time{}, 10)
	p.issue("client", mtls.RoleClient, time.Time{}, 10)
	withTLS := func(cert string) func(*Config) {
		return func(c *Config) {
			c.TLSCAFile = filepath.Join(dir, "ca.pem")
			c.TLSCertFile = filepath.Join(dir, cert+".pem")
			c.TLSKeyFile = filepath.Join(dir, cert+"-key.pem")
			c.VerifyIncoming, c.VerifyOutgoing, c.VerifyServerHostname = true, true, true
		}
	}
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" }, withTLS("server"))
	target := startClientAgent(t, "c1", srv, withTLS("client"))
	for _, tc := range []struct {
		caller *Agent
		want   connect.Code
	}{
		{srv.Agent, connect.CodeInvalidArgument}, // admitted: the empty assignment is what is wrong
		{startClientAgent(t, "c2", srv, withTLS("client")).Agent, connect.CodePermissionDenied},
	} {
		_, err := tc.caller.fwd.peerClient(tc.caller.rpcURL(target.RPCAddr())).Deliver(context.Background(), connect.NewRequest(&agentv1.DeliverRequest{}))
		if connect.CodeOf(err) != tc.want {
			t.Errorf("Deliver from %s: %v, want %v", tc.caller.cfg.NodeName, err, tc.want)
		}
	}
}
