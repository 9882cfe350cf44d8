package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/mtls"
)

// TLS of agent-to-agent traffic (docs/security.md). The RPC port and the
// Raft port serve TLS once the three files are set; verify_incoming
// refuses plaintext and callers without a certificate from the CA;
// verify_outgoing makes this agent call others over TLS, checking their
// certificates; verify_server_hostname makes a call meant for a server
// accept only server.<domain>. Raft always requires server.<domain> of
// both ends. Gossip has its own encryption (-encrypt); the local API stays
// plaintext on loopback.

// tlsSettings names the file settings, for messages.
var tlsFileSettings = map[string]string{"ca": "tls-ca-file", "cert": "tls-cert-file", "key": "tls-key-file"}

// validateTLS checks the TLS settings together, and loads the files so
// that a wrong one stops the agent at start, named.
func (c *Config) validateTLS(bad func(setting, format string, args ...any)) {
	files := []struct{ name, v string }{{"tls-ca-file", c.TLSCAFile}, {"tls-cert-file", c.TLSCertFile}, {"tls-key-file", c.TLSKeyFile}}
	var set, missing []string
	for _, f := range files {
		if f.v != "" {
			set = append(set, f.name)
		} else {
			missing = append(missing, f.name)
		}
	}
	if len(set) == 0 {
		for _, v := range []struct {
			name string
			on   bool
		}{{"verify-incoming", c.VerifyIncoming}, {"verify-outgoing", c.VerifyOutgoing}, {"verify-server-hostname", c.VerifyServerHostname}} {
			if v.on {
				bad(v.name, "needs tls-ca-file, tls-cert-file and tls-key-file: create them with 'tasker tls ca create' and 'tasker tls cert create' (docs/security.md)")
			}
		}
		return
	}
	if len(missing) > 0 {
		for _, m := range missing {
			bad(m, "is required with %s: TLS needs the CA, this agent's certificate and its key", strings.Join(set, " and "))
		}
		return
	}
	if c.VerifyServerHostname && !c.VerifyOutgoing {
		bad("verify-server-hostname", "checks the certificates of outgoing calls: set verify-outgoing too")
	}
	t, err := c.loadTLS(time.Now())
	if err != nil {
		setting := "tls-cert-file"
		var fe *mtls.FileError
		if errors.As(err, &fe) {
			setting = tlsFileSettings[fe.Which]
		}
		bad(setting, "%v", err)
		return
	}
	if c.Server && t.Role != mtls.RoleServer {
		bad("tls-cert-file", "%s is a client agent's certificate (%s), but this agent is a server: Raft and calls to servers admit only %s; create one with 'tasker tls cert create -server -domain %s'",
			c.TLSCertFile, mtls.RoleClient.Name(t.Domain), t.ServerName(), t.Domain)
	}
}

// loadTLS reads the TLS files: nil when none is set.
func (c *Config) loadTLS(now time.Time) (*mtls.Config, error) {
	if c.TLSCAFile == "" && c.TLSCertFile == "" && c.TLSKeyFile == "" {
		return nil, nil
	}
	return mtls.Load(mtls.Files{CA: c.TLSCAFile, Cert: c.TLSCertFile, Key: c.TLSKeyFile}, now, c.VerifyIncoming, c.VerifyServerHostname)
}

// tlsOutgoing reports whether calls to other agents use TLS.
func (a *Agent) tlsOutgoing() bool { return a.tls != nil && a.cfg.VerifyOutgoing }

// rpcListener serves TLS on the RPC port when it is configured; without
// verify_incoming, plaintext callers are let in too.
func (a *Agent) rpcListener(ln net.Listener) net.Listener {
	if a.tls == nil {
		return ln
	}
	log := a.log.With("component", "rpc-tls")
	log.Info("agent-to-agent TLS on", "role", a.tls.Role, "domain", a.tls.Domain, "verify_incoming", a.cfg.VerifyIncoming,
		"verify_outgoing", a.cfg.VerifyOutgoing, "verify_server_hostname", a.cfg.VerifyServerHostname, "cert_expires", a.tls.NotAfter.UTC().Format(time.RFC3339))
	if left := time.Until(a.tls.NotAfter); left < 30*24*time.Hour {
		log.Warn("this agent's certificate expires soon: create a new one and restart the agent", "tls_cert_file", a.cfg.TLSCertFile, "expires_in", left.Round(time.Hour).String())
	}
	return mtls.NewListener(ln, a.tls.IncomingRPC(), !a.cfg.VerifyIncoming, log)
}

// raftTLS is the Raft transport's TLS: nil without TLS.
func (a *Agent) raftTLS() *consensus.TLS {
	if a.tls == nil {
		return nil
	}
	t := &consensus.TLS{Incoming: a.tls.IncomingRaft(), AllowPlaintext: !a.cfg.VerifyIncoming}
	if a.cfg.VerifyOutgoing {
		t.Outgoing = a.tls.OutgoingRaft()
	}
	return t
}

// rpcURL is the base URL of the RPC port at addr (host:port).
func (a *Agent) rpcURL(addr string) string {
	if a.tlsOutgoing() {
		return "https://" + addr
	}
	return "http://" + addr
}

// rpcTransport carries calls to other agents' RPC ports over HTTP/2: TLS
// with verify_outgoing, else h2c. Calls meant for a server (toServer)
// check for server.<domain> with verify_server_hostname; the others
// (dispatch, keyring) accept any agent of the CA.
func (a *Agent) rpcTransport(toServer bool) *http.Transport {
	var p http.Protocols
	tr := &http.Transport{Protocols: &p, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	if a.tlsOutgoing() {
		p.SetHTTP2(true)
		tr.TLSClientConfig = a.tls.OutgoingRPC(toServer)
		tr.TLSHandshakeTimeout = 10 * time.Second
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return tr
}

// peerRoleKey is the context key of the role of an RPC caller's
// certificate.
type peerRoleKey struct{}

// withPeerRole puts the role of the caller's certificate, when it showed
// one over TLS, in the request's context.
func withPeerRole(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if role, _, ok := mtls.RoleOf(r.TLS.PeerCertificates[0]); ok {
				r = r.WithContext(context.WithValue(r.Context(), peerRoleKey{}, role))
			}
		}
		h.ServeHTTP(w, r)
	})
}

// fromServer refuses a call only the leader makes when the caller showed
// a certificate that is not a server's: a client agent of the cluster
// cannot hand steps to another. A caller without a certificate got here
// only while verify_incoming is off (plaintext, moving to TLS).
func fromServer(ctx context.Context, call string) error {
	role, ok := ctx.Value(peerRoleKey{}).(mtls.Role)
	if !ok || role == mtls.RoleServer {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s: only servers call it, and the caller's certificate is a %s's", call, role))
}
