package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a CA and the files of certificates it signed, in a test's dir.
type pki struct {
	t              *testing.T
	dir            string
	caCert, caKey  []byte
	caFile, domain string
}

func newPKI(t *testing.T, domain string) *pki {
	t.Helper()
	return newPKIAt(t, domain, time.Now())
}

// newPKIAt makes a CA valid from start, for 30 days.
func newPKIAt(t *testing.T, domain string, start time.Time) *pki {
	t.Helper()
	cert, key, err := CreateCA(CAOptions{Domain: domain, Days: 30, Now: start})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), caCert: cert, caKey: key, domain: domain}
	p.caFile = p.write("ca.pem", cert)
	return p
}

func (p *pki) write(name string, b []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue creates a certificate for role and returns its files.
func (p *pki) issue(name string, role Role, now time.Time, days int) Files {
	p.t.Helper()
	cert, key, err := CreateCert(CertOptions{CACert: p.caCert, CAKey: p.caKey, Role: role, Domain: p.domain, Days: days, Now: now})
	if err != nil {
		p.t.Fatal(err)
	}
	return Files{CA: p.caFile, Cert: p.write(name+".pem", cert), Key: p.write(name+"-key.pem", key)}
}

// load loads files, as an agent with every verify setting on.
func (p *pki) load(f Files) *Config {
	p.t.Helper()
	c, err := Load(f, time.Now(), true, true)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func TestCreateCertNamesTheRole(t *testing.T) {
	for _, tc := range []struct {
		domain string
		role   Role
		want   string
	}{
		{"", RoleServer, "server.tasker"},
		{"", RoleClient, "client.tasker"},
		{"dc1.tasker", RoleServer, "server.dc1.tasker"},
	} {
		p := newPKI(t, tc.domain)
		c := p.load(p.issue("agent", tc.role, time.Time{}, 10))
		if c.Role != tc.role || tc.role.Name(c.Domain) != tc.want {
			t.Errorf("domain %q role %s: loaded as %s of %q, want %s", tc.domain, tc.role, c.Role, c.Domain, tc.want)
		}
		leaf := c.cert.Leaf
		for _, name := range []string{tc.want, "localhost", "127.0.0.1"} {
			if err := leaf.VerifyHostname(name); err != nil {
				t.Errorf("%s: %v", tc.want, err)
			}
		}
	}
}

func TestCreateRefusesBadOptions(t *testing.T) {
	p := newPKI(t, "")
	other := newPKI(t, "")
	for _, tc := range []struct {
		name string
		opts CertOptions
		want string
	}{
		{"no role", CertOptions{CACert: p.caCert, CAKey: p.caKey, Days: 1}, "want server or client"},
		{"key of another CA", CertOptions{CACert: p.caCert, CAKey: other.caKey, Role: RoleServer, Days: 1}, "does not belong to the CA"},
		{"outlives the CA", CertOptions{CACert: p.caCert, CAKey: p.caKey, Role: RoleServer, Days: 365}, "would outlive the CA"},
		{"bad domain", CertOptions{CACert: p.caCert, CAKey: p.caKey, Role: RoleServer, Days: 1, Domain: "*.x"}, "want a DNS name"},
		{"no CA", CertOptions{CAKey: p.caKey, Role: RoleServer, Days: 1}, "CA certificate"},
	} {
		_, _, err := CreateCert(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestLoadNamesTheFileAtFault(t *testing.T) {
	p := newPKI(t, "")
	good := p.issue("server", RoleServer, time.Time{}, 10)
	other := newPKI(t, "")
	foreign := other.issue("foreign", RoleServer, time.Time{}, 10)
	expired := p.issue("expired", RoleServer, time.Now().AddDate(0, 0, -20), 10)
	client := p.issue("client", RoleClient, time.Time{}, 10)
	missing := filepath.Join(p.dir, "nope.pem")
	for _, tc := range []struct {
		name  string
		files Files
		which string
		want  string
	}{
		{"missing CA", Files{missing, good.Cert, good.Key}, "ca", "nope.pem"},
		{"CA file is not PEM", Files{good.Key, good.Cert, good.Key}, "ca", "holds no PEM certificate"},
		{"missing cert", Files{good.CA, missing, good.Key}, "cert", "nope.pem"},
		{"missing key", Files{good.CA, good.Cert, missing}, "key", "nope.pem"},
		{"key of another cert", Files{good.CA, good.Cert, client.Key}, "key", "does not go with the certificate"},
		{"cert of another CA", Files{good.CA, foreign.Cert, foreign.Key}, "cert", "is not signed by the CA"},
		{"expired cert", Files{good.CA, expired.Cert, expired.Key}, "cert", "expired on"},
	} {
		_, err := Load(tc.files, time.Now(), true, true)
		var fe *FileError
		if !errors.As(err, &fe) || fe.Which != tc.which || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a %s file error saying %q", tc.name, err, tc.which, tc.want)
		}
	}
}

// handshake connects a client config to a server config over loopback,
// through a Listener, and returns the client's and the server's errors.
// With TLS 1.3 the server's refusal of the client's certificate reaches
// the client on its first read, so the client reads a byte the server
// writes once the handshake passed.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuilder{}
	l := NewListener(ln, server, false, slog.New(slog.NewTextHandler(logs, nil)))
	defer l.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		_, err = c.Write([]byte{1})
		c.Close()
		accepted <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: client}).DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	// Refused, the Listener logs it and Accept never returns.
	deadline := time.Now().Add(2 * time.Second)
	for {
		select {
		case serverErr = <-accepted:
			return err, serverErr
		case <-time.After(10 * time.Millisecond):
		}
		if strings.Contains(logs.String(), "refused") || time.Now().After(deadline) {
			return err, errors.New(logs.String())
		}
	}
}

func TestWhoMayConnect(t *testing.T) {
	p := newPKIAt(t, "", time.Now().AddDate(0, 0, -5))
	server := p.load(p.issue("server", RoleServer, time.Time{}, 10))
	server2 := p.load(p.issue("server2", RoleServer, time.Time{}, 10))
	client := p.load(p.issue("client", RoleClient, time.Time{}, 10))
	other := newPKI(t, "")
	foreignServer := other.load(other.issue("foreign", RoleServer, time.Time{}, 10))
	// A certificate that was valid, loaded before it expired.
	expiring := p.issue("expiring", RoleServer, time.Now().AddDate(0, 0, -2), 1)
	expired, err := Load(expiring, time.Now().AddDate(0, 0, -2), true, true)
	if err != nil {
		t.Fatal(err)
	}
	noHostname, err := Load(p.issue("client-lax", RoleClient, time.Time{}, 10), time.Now(), true, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
		want           string // in the refusal, client's or server's
	}{
		{"RPC: a client agent calls a server", server.IncomingRPC(), client.OutgoingRPC(true), true, ""},
		{"RPC: the leader dispatches to a client agent", client.IncomingRPC(), server.OutgoingRPC(false), true, ""},
		{"RPC: a client agent's certificate answering as a server", client.IncomingRPC(), server.OutgoingRPC(true), false, "server.tasker"},
		{"RPC: without verify_server_hostname, any agent may answer", client.IncomingRPC(), noHostname.OutgoingRPC(true), true, ""},
		{"RPC: a server of another CA", foreignServer.IncomingRPC(), client.OutgoingRPC(true), false, "unknown authority"},
		{"RPC: a caller of another CA", server.IncomingRPC(), foreignServer.OutgoingRPC(false), false, "unknown authority"},
		{"RPC: a caller without a certificate", server.IncomingRPC(), &tls.Config{InsecureSkipVerify: true}, false, "certificate"},
		{"RPC: an expired server certificate", expired.IncomingRPC(), client.OutgoingRPC(true), false, "expired"},
		{"Raft: server to server", server.IncomingRaft(), server2.OutgoingRaft(), true, ""},
		{"Raft: a client agent's certificate dials a server", server.IncomingRaft(), client.OutgoingRaft(), false, "not a server's"},
		{"Raft: a server of another CA dials", server.IncomingRaft(), foreignServer.OutgoingRaft(), false, "unknown authority"},
		{"Raft: a client agent's certificate answers", client.IncomingRaft(), server.OutgoingRaft(), false, "server.tasker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cerr, serr := handshake(t, tc.server, tc.client)
			if tc.ok {
				if cerr != nil || serr != nil {
					t.Fatalf("refused: client %v; server %v", cerr, serr)
				}
				return
			}
			if cerr == nil {
				t.Fatalf("the connection passed; want it refused (%s)", tc.want)
			}
			if both := cerr.Error() + " " + serr.Error(); !strings.Contains(both, tc.want) {
				t.Errorf("refused, but neither side says %q: client %v; server %v", tc.want, cerr, serr)
			}
		})
	}
}

func TestListenerPlaintext(t *testing.T) {
	p := newPKI(t, "")
	server := p.load(p.issue("server", RoleServer, time.Time{}, 10))
	for _, allow := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuilder{}
		l := NewListener(ln, server.IncomingRPC(), allow, slog.New(slog.NewTextHandler(logs, nil)))
		got := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b := make([]byte, 5)
			_, _ = io.ReadFull(c, b)
			got <- string(b)
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("PRI *"))
		select {
		case s := <-got:
			if !allow || s != "PRI *" {
				t.Errorf("allow plaintext %v: accepted and read %q", allow, s)
			}
		case <-time.After(2 * time.Second):
			if allow {
				t.Errorf("plaintext allowed, but the connection was not accepted")
			} else if !strings.Contains(logs.String(), "does not look like a TLS handshake") || !strings.Contains(logs.String(), "speaks plaintext") {
				t.Errorf("plaintext refused without a log line that says so: %q", logs.String())
			}
		}
		c.Close()
		l.Close()
	}
}
