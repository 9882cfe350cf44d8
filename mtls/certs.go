// Package mtls is the mutual TLS of agent-to-agent traffic: the agents'
// certificate authority and certificates (what 'tasker tls' writes), and
// the *tls.Config of each side of the RPC port and of Raft.
//
// Roles are names, as in Consul: a server's certificate carries the DNS
// name server.<domain>, a client agent's client.<domain> (domain
// "tasker" by default). Any agent with a certificate from the CA may call
// another's RPC port; only server.<domain> may join Raft, and with
// verify_server_hostname only server.<domain> may answer a call meant for
// a server (forwarding to the leader), so a client agent's certificate
// cannot pose as a server.
package mtls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// DefaultDomain is the domain of the role names when none is given.
const DefaultDomain = "tasker"

// Role is what an agent's certificate lets it be.
type Role string

// The roles.
const (
	RoleServer Role = "server"
	RoleClient Role = "client"
)

// Name is the DNS name that marks the role in a certificate of domain.
func (r Role) Name(domain string) string { return string(r) + "." + domain }

// CAOptions says what CA to create.
type CAOptions struct {
	// Domain of the role names the CA signs (kept in its subject, for
	// people reading it).
	Domain string
	// Days the CA is valid.
	Days int
	// Now is the start of its validity; the current time when zero.
	Now time.Time
}

// CertOptions says what certificate to create.
type CertOptions struct {
	// CACert and CAKey are the signing CA, PEM-encoded.
	CACert, CAKey []byte
	// Role is server or client.
	Role Role
	// Domain of the role name; DefaultDomain when empty.
	Domain string
	// Days the certificate is valid; at most as long as the CA.
	Days int
	// DNSNames and IPs are more names the certificate is valid for,
	// besides the role name, localhost and 127.0.0.1.
	DNSNames []string
	IPs      []net.IP
	// Now is the start of its validity; the current time when zero.
	Now time.Time
}

// CreateCA makes a new certificate authority: an ECDSA P-256 key and a
// self-signed certificate, both PEM-encoded.
func CreateCA(opts CAOptions) (certPEM, keyPEM []byte, err error) {
	domain, err := checkDomain(opts.Domain)
	if err != nil {
		return nil, nil, err
	}
	if opts.Days < 1 {
		return nil, nil, fmt.Errorf("days: %d must be at least 1", opts.Days)
	}
	key, serial, ski, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := nowOr(opts.Now)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Tasker Agent CA %s (%s)", domain, serial.Text(16)[:8]), Organization: []string{"Tasker"}},
		NotBefore:             now.Add(-time.Minute), // tolerate clocks a little behind
		NotAfter:              now.AddDate(0, 0, opts.Days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs agents, never another CA
		SubjectKeyId:          ski,
		AuthorityKeyId:        ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA: %w", err)
	}
	return encode(der, key)
}

// CreateCert makes an agent's certificate for opts.Role, signed by the
// CA: an ECDSA P-256 key and the certificate, both PEM-encoded. It is
// valid for the role name, localhost, 127.0.0.1 and the extra names, and
// for both ends of a connection (servers dial, client agents answer
// dispatch).
func CreateCert(opts CertOptions) (certPEM, keyPEM []byte, err error) {
	if opts.Role != RoleServer && opts.Role != RoleClient {
		return nil, nil, fmt.Errorf("role %q: want server or client", opts.Role)
	}
	domain, err := checkDomain(opts.Domain)
	if err != nil {
		return nil, nil, err
	}
	if opts.Days < 1 {
		return nil, nil, fmt.Errorf("days: %d must be at least 1", opts.Days)
	}
	ca, err := ParseCert(opts.CACert)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("CA certificate: it is not a CA (an agent's certificate?)")
	}
	caKey, err := ParseKey(opts.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	if !samePublicKey(ca.PublicKey, caKey.Public()) {
		return nil, nil, errors.New("CA key: it does not belong to the CA certificate")
	}
	now := nowOr(opts.Now)
	notAfter := now.AddDate(0, 0, opts.Days)
	if notAfter.After(ca.NotAfter) {
		return nil, nil, fmt.Errorf("days: %d would outlive the CA, which expires %s; use fewer days or create a new CA", opts.Days, ca.NotAfter.UTC().Format(time.DateOnly))
	}
	key, serial, ski, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	name := opts.Role.Name(domain)
	dns := []string{name, "localhost"}
	for _, d := range opts.DNSNames {
		if d = strings.TrimSpace(d); d != "" && !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, ip := range opts.IPs {
		if ip != nil && !ip.Equal(ips[0]) {
			ips = append(ips, ip)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Tasker"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	return encode(der, key)
}

// ParseCert decodes the first certificate of a PEM file.
func ParseCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// ParseKey decodes an ECDSA private key (SEC 1 or PKCS #8) from PEM.
func ParseKey(b []byte) (*ecdsa.PrivateKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key block found")
		}
		switch blk.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("a %T key; want ECDSA", k)
			}
			return ek, nil
		}
	}
}

// RoleOf reads the role and domain from a certificate's DNS names: the
// first server.<domain>, else the first client.<domain>.
func RoleOf(cert *x509.Certificate) (Role, string, bool) {
	for _, r := range []Role{RoleServer, RoleClient} {
		for _, n := range cert.DNSNames {
			if d, ok := strings.CutPrefix(n, string(r)+"."); ok && d != "" {
				return r, d, true
			}
		}
	}
	return "", "", false
}

func checkDomain(d string) (string, error) {
	if d == "" {
		return DefaultDomain, nil
	}
	if strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.ContainsAny(d, " *\t/:") {
		return "", fmt.Errorf("domain %q: want a DNS name such as tasker or dc1.tasker", d)
	}
	return d, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// keyID is the subject key id of a public key: a hash of its encoding.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}

func nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// newKey makes what every certificate needs fresh: an ECDSA P-256 key, a
// random serial number and the key's subject key id.
func newKey() (*ecdsa.PrivateKey, *big.Int, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	ski, err := keyID(key.Public())
	if err != nil {
		return nil, nil, nil, err
	}
	return key, serial, ski, nil
}
