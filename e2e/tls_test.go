package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/mtls"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestClusterTLS: a cluster whose agents talk mutual TLS (every verify
// setting on, certificates made with 'tasker tls') and require ACL tokens
// runs tasks end to end:
// servers bootstrap and replicate over TLS, a client agent forwards to the
// leader and the leader dispatches to it. An agent speaking plaintext, and
// one whose certificate comes from another CA, cannot use the cluster; a
// server of another CA never joins Raft; a client agent's certificate is
// refused on a server, at start and on the Raft port. Each refusal is
// logged, saying why.
func TestClusterTLS(t *testing.T) {
	dir := t.TempDir()
	pki, otherPKI := filepath.Join(dir, "pki"), filepath.Join(dir, "other-pki")
	for _, d := range []string{pki, otherPKI} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		tasker(t, "", "tls", "ca", "create", "-dir", d).must(t, "tls ca create", 0, "tasker-agent-ca.pem")
	}
	cert := func(d, role string) {
		tasker(t, "", "tls", "cert", "create", "-"+role, "-dir", d,
			"-ca", filepath.Join(d, "tasker-agent-ca.pem"), "-key", filepath.Join(d, "tasker-agent-ca-key.pem")).must(t, "tls cert create -"+role, 0, "Valid for "+role+".tasker")
	}
	for range 3 {
		cert(pki, "server")
	}
	cert(pki, "client")
	cert(otherPKI, "server")
	cert(otherPKI, "client")
	tlsArgs := func(d, name string) []string {
		return []string{"-tls-ca-file", filepath.Join(d, "tasker-agent-ca.pem"),
			"-tls-cert-file", filepath.Join(d, name+".pem"), "-tls-key-file", filepath.Join(d, name+"-key.pem"),
			"-verify-incoming", "-verify-outgoing", "-verify-server-hostname"}
	}
	// A short hold: the refused agents' calls fail in a second, not seven.
	short := filepath.Join(dir, "short-hold.yaml")
	if err := os.WriteFile(short, []byte("rpc_hold_timeout: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// ACLs are on too, as in production: every agent-to-agent call then
	// carries the agent token over the TLS connection, and the CLI, the
	// services and the harness send the management token.
	const mgmt, agentToken = "e2e-tls-management-0123456789", "e2e-tls-agent-token-0123456789"
	t.Setenv("TASKER_TOKEN", mgmt)
	aclArgs := []string{"-acl", "-acl-agent-token", agentToken}

	spec := clientSpec{name: "client-tls", only: "orders,inventory,payments,shipping,notifications"}
	c := newCluster(t, clusterOptions{servers: 3, clients: []clientSpec{spec}})
	for i := range 3 {
		args := slices.Concat([]string{"-bootstrap-expect", "3", "-acl-initial-management-token", mgmt}, aclArgs, tlsArgs(pki, fmt.Sprintf("tasker-server-%d", i)))
		c.addServer(fmt.Sprintf("server-%d", i), args...)
	}
	c.waitLeader(t, 30*time.Second)
	var joins []string
	for _, s := range c.servers {
		s.waitServing(30 * time.Second)
		joins = append(joins, s.gossip)
	}
	join := strings.Join(joins, ",")
	client := c.newAgent(spec.name, false, slices.Concat([]string{"-join", join}, aclArgs, tlsArgs(pki, "tasker-client-0"))...)
	client.start()
	client.waitServing(30 * time.Second)
	c.clients = append(c.clients, client)
	c.startService(client, spec.only)
	c.waitCapabilities(t, 30*time.Second, c.expectedProviders())

	manifest := filepath.Join(repoRoot, "examples", "order-fulfilment.yaml")
	tasker(t, client.api, "workflow", "apply", "-f", manifest).must(t, "workflow apply through the TLS client agent", 0, "created")
	b := startBatch(t, newClient(client.api), "tls", 3)
	for _, task := range b.waitComplete(t, 60*time.Second) {
		checkOrderResults(t, task)
		for _, st := range task.GetSteps() {
			if st.GetAgent() != spec.name {
				t.Errorf("%s/%s ran on %q, want %s (dispatched over TLS)", task.GetId(), st.GetName(), st.GetAgent(), spec.name)
			}
		}
	}

	t.Run("a plaintext agent cannot use the cluster", func(t *testing.T) {
		plain := c.newAgent("plain", false, "-join", join, "-config", short)
		plain.start()
		r := tasker(t, plain.api, "workflow", "list")
		if r.code == 0 || !strings.Contains(r.stderr, "unavailable") {
			t.Fatalf("workflow list through a plaintext agent: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		waitLog(t, c.servers, "refused a connection: TLS handshake failed", "the peer speaks plaintext")
	})

	t.Run("an agent of another CA cannot use the cluster", func(t *testing.T) {
		alien := c.newAgent("alien", false, append([]string{"-join", join, "-config", short}, tlsArgs(otherPKI, "tasker-client-0")...)...)
		alien.start()
		r := tasker(t, alien.api, "workflow", "list")
		if r.code == 0 || !strings.Contains(r.stderr, "certificate signed by unknown authority") {
			t.Fatalf("workflow list through an agent of another CA: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		waitLog(t, c.servers, "refused a connection: TLS handshake failed", "remote error: tls: bad certificate")
	})

	t.Run("a server of another CA never joins Raft", func(t *testing.T) {
		alien := c.newAgent("alien-server", true, append([]string{"-join", join}, tlsArgs(otherPKI, "tasker-server-0")...)...)
		alien.start()
		waitLog(t, []*clusterAgent{alien}, "refused a connection: TLS handshake failed")
		res, err := c.servers[0].cluster().RaftPeers(callCtx(t), connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.Msg.GetPeers() {
			if p.GetId() == "alien-server" {
				t.Fatalf("a server of another CA is in the Raft configuration: %v", res.Msg.GetPeers())
			}
		}
	})

	t.Run("a client agent's certificate is refused on a server", func(t *testing.T) {
		fake := c.newAgent("fake-server", true, append([]string{"-join", join, "-http-port", "0", "-rpc-port", "0", "-gossip-port", "0", "-raft-port", "0"}, tlsArgs(pki, "tasker-client-0")...)...)
		r := tasker(t, "", fake.args...)
		if r.code != 2 || !strings.Contains(r.stderr, "is a client agent's certificate (client.tasker), but this agent is a server") {
			t.Fatalf("a server started with a client certificate: exit %d\n%s", r.code, r.stderr)
		}
		// And the Raft port itself refuses a client certificate that dials it.
		cfg, err := mtls.Load(mtls.Files{CA: filepath.Join(pki, "tasker-agent-ca.pem"), Cert: filepath.Join(pki, "tasker-client-0.pem"), Key: filepath.Join(pki, "tasker-client-0-key.pem")}, time.Now(), true, true)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", c.servers[0].raft, cfg.OutgoingRaft())
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("a client certificate dialling Raft: %v, want refused", err)
		}
		waitLog(t, c.servers[:1], "not a server's", "only server certificates")
	})
}

// waitLog waits until one of the agents' logs has a line with every part.
func waitLog(t *testing.T, agents []*clusterAgent, parts ...string) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("a log line with %q", parts), func(context.Context) (bool, string, error) {
		for _, a := range agents {
			b, err := os.ReadFile(a.logPath)
			if err != nil {
				return false, "", err
			}
			for _, line := range strings.Split(string(b), "\n") {
				if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
					return true, "", nil
				}
			}
		}
		return false, "no such line yet", nil
	})
}
