package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// Files are where an agent's CA, certificate and key are.
type Files struct {
	CA, Cert, Key string
}

// Config is an agent's loaded TLS identity and trust, and what it
// verifies. It hands out the *tls.Config of each kind of connection.
type Config struct {
	roots *x509.CertPool
	cert  tls.Certificate
	// Role and Domain are read from the agent's own certificate: the
	// domain of server.<domain> that servers must present is the one this
	// agent's CA signed it for.
	Role   Role
	Domain string
	// NotAfter is when the agent's certificate expires.
	NotAfter time.Time

	verifyIncoming, verifyServerHostname bool
}

// FileError is a problem with one of the files; Which is "ca", "cert" or
// "key", so that a caller can name its own setting.
type FileError struct {
	Which string
	Path  string
	Err   error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Load reads the CA, the agent's certificate and key, and checks that
// they make sense together: the certificate is signed by the CA, is not
// expired, and carries a role name. now is the time to check expiry at.
func Load(f Files, now time.Time, verifyIncoming, verifyServerHostname bool) (*Config, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, &FileError{"ca", f.CA, err}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, &FileError{"ca", f.CA, errors.New("holds no PEM certificate; create a CA with 'tasker tls ca create'")}
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, &FileError{"cert", f.Cert, err}
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, &FileError{"key", f.Key, err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{"key", f.Key, fmt.Errorf("does not go with the certificate %s: %w", f.Cert, err)}
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &FileError{"cert", f.Cert, err}
		}
	}
	if now.After(leaf.NotAfter) {
		return nil, &FileError{"cert", f.Cert, fmt.Errorf("expired on %s; create a new one with 'tasker tls cert create'", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, &FileError{"cert", f.Cert, fmt.Errorf("is not signed by the CA in %s (%w); create it with that CA's key, or use the CA it came from", f.CA, err)}
	}
	role, domain, ok := RoleOf(leaf)
	if !ok {
		return nil, &FileError{"cert", f.Cert, fmt.Errorf("names no role (its DNS names are %v, none is server.<domain> or client.<domain>); create one with 'tasker tls cert create -server' or '-client'", leaf.DNSNames)}
	}
	return &Config{
		roots: roots, cert: cert, Role: role, Domain: domain, NotAfter: leaf.NotAfter,
		verifyIncoming: verifyIncoming, verifyServerHostname: verifyServerHostname,
	}, nil
}

// ServerName is the name a server's certificate must carry.
func (c *Config) ServerName() string { return RoleServer.Name(c.Domain) }

func (c *Config) base() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12, // TLS 1.3 is negotiated when both ends have it, which Go always does
		Certificates: []tls.Certificate{c.cert},
	}
}

// IncomingRPC is the RPC port's side: HTTP/2 (or HTTP/1.1) by ALPN; with
// verify_incoming a certificate from the CA is required of every caller,
// without it one is checked if given (so a caller's bad certificate is
// never accepted).
func (c *Config) IncomingRPC() *tls.Config {
	t := c.base()
	t.NextProtos = []string{"h2", "http/1.1"}
	t.ClientCAs = c.roots
	t.ClientAuth = tls.VerifyClientCertIfGiven
	if c.verifyIncoming {
		t.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return t
}

// OutgoingRPC is the calling side of RPC. The answering agent must show
// a certificate from the CA; when toServer and verify_server_hostname,
// it must be a server's (server.<domain>): forwarding to the leader
// never hands a call to a client agent posing as a server.
func (c *Config) OutgoingRPC(toServer bool) *tls.Config {
	t := c.base()
	t.RootCAs = c.roots
	if toServer && c.verifyServerHostname {
		t.ServerName = c.ServerName()
		return t
	}
	// Agents are dialled by IP, which their certificates do not name: the
	// chain is checked here, and no name (any agent of the CA may answer).
	t.InsecureSkipVerify = true
	t.VerifyConnection = func(cs tls.ConnectionState) error { return c.verifyChain(cs, x509.ExtKeyUsageServerAuth, "") }
	return t
}

// IncomingRaft is the listening side of Raft: the caller must show a
// server's certificate (server.<domain>) from the CA.
func (c *Config) IncomingRaft() *tls.Config {
	t := c.base()
	t.ClientCAs = c.roots
	t.ClientAuth = tls.RequireAndVerifyClientCert
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		return c.verifyChain(cs, x509.ExtKeyUsageClientAuth, c.ServerName())
	}
	return t
}

// OutgoingRaft is the dialling side of Raft: the answering end must show
// a server's certificate from the CA.
func (c *Config) OutgoingRaft() *tls.Config {
	t := c.base()
	t.RootCAs = c.roots
	t.ServerName = c.ServerName()
	return t
}

// verifyChain checks the peer's certificate against the CA and, when
// name is set, that it carries that name.
func (c *Config) verifyChain(cs tls.ConnectionState, usage x509.ExtKeyUsage, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("the peer's certificate is not from this cluster's CA: %w", err)
	}
	if name != "" {
		if err := leaf.VerifyHostname(name); err != nil {
			return fmt.Errorf("the peer's certificate is not a server's (it names %v, want %s): %w", leaf.DNSNames, name, err)
		}
	}
	return nil
}
