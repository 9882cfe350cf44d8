package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tasker-run/tasker/mtls"
)

// The files 'tasker tls' writes. A certificate's name says its domain,
// role and a serial number among those in the directory.
const (
	caCertFile = "tasker-agent-ca.pem"
	caKeyFile  = "tasker-agent-ca-key.pem"
)

func tlsCommand() command {
	return group("tls", "create the CA and certificates of agent-to-agent TLS", `
Creates the certificate authority and the agents' certificates for TLS
between agents (RPC and Raft), like 'consul tls'. A server's certificate
names server.<domain>, a client agent's client.<domain>; only servers may
join Raft. Then give each agent -tls-ca-file, -tls-cert-file, -tls-key-file
and the verify settings: see docs/security.md.
`, group("tls ca", "create the agents' certificate authority", `
Creates the certificate authority that signs every agent's certificate.
`, tlsCACreateCommand()), group("tls cert", "create an agent's certificate", `
Creates a server's or a client agent's certificate, signed by the CA.
`, tlsCertCreateCommand()))
}

const tlsCACreateUsage = `
Usage: tasker tls ca create [-days N] [-domain DOMAIN] [-dir DIR]

Creates a certificate authority: an ECDSA P-256 key and a self-signed
certificate, written to DIR as tasker-agent-ca.pem (give it to every agent
as -tls-ca-file) and tasker-agent-ca-key.pem (mode 0600: keep it off the
agents, in your secret store; it signs new certificates). Existing files
are never overwritten.
`

const tlsCertCreateUsage = `
Usage: tasker tls cert create -server|-client [-ca FILE] [-key FILE] [-days N]
         [-domain DOMAIN] [-additional-dnsname NAME]... [-additional-ipaddress IP]... [-dir DIR]

Creates an agent's certificate and key, signed by the CA, written to DIR as
<domain>-server-<n>.pem and <domain>-server-<n>-key.pem (-client:
<domain>-client-<n>...), n being the first number not taken. A server's
certificate names server.<domain>, a client agent's client.<domain>; both
name localhost and 127.0.0.1, and the additional names. Use the -domain of
the CA. The key file has mode 0600.
`

func tlsCACreateCommand() command {
	return command{name: "tls ca create", synopsis: "create a CA: tasker-agent-ca.pem and its key", usage: tlsCACreateUsage, run: runTLSCACreate}
}

func tlsCertCreateCommand() command {
	return command{name: "tls cert create", synopsis: "create a server's or a client agent's certificate", usage: tlsCertCreateUsage, run: runTLSCertCreate}
}

func runTLSCACreate(args []string, stdout, stderr io.Writer) int {
	c := tlsCACreateCommand()
	fset := flags(c, stderr)
	days := fset.Int("days", 1825, "days the CA is valid")
	domain := fset.String("domain", mtls.DefaultDomain, "domain of the role names (server.DOMAIN, client.DOMAIN)")
	dir := fset.String("dir", ".", "directory to write the files to")
	pos, code, ok := parse(c, fset, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *days < 1 {
		return usageError(stderr, c, "-days %d: want at least 1", *days)
	}
	certPath, keyPath := filepath.Join(*dir, caCertFile), filepath.Join(*dir, caKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			fmt.Fprintf(stderr, "tasker %s: %s exists; not overwriting it (a new CA would not trust the certificates of the old one): move it away, or pick another -dir\n", c.name, p)
			return exitFail
		}
	}
	certPEM, keyPEM, err := mtls.CreateCA(mtls.CAOptions{Domain: *domain, Days: *days})
	if err != nil {
		return usageError(stderr, c, "-%v", err)
	}
	if err := writeFiles(stdout, certPath, certPEM, keyPath, keyPEM); err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitFail
	}
	return exitOK
}

// stringList is a repeatable flag; commas separate values too.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func runTLSCertCreate(args []string, stdout, stderr io.Writer) int {
	c := tlsCertCreateCommand()
	fset := flags(c, stderr)
	server := fset.Bool("server", false, "a server's certificate (server.DOMAIN): may join Raft")
	client := fset.Bool("client", false, "a client agent's certificate (client.DOMAIN)")
	caPath := fset.String("ca", caCertFile, "the CA's certificate `file`")
	caKeyPath := fset.String("key", caKeyFile, "the CA's key `file`")
	days := fset.Int("days", 365, "days the certificate is valid")
	domain := fset.String("domain", mtls.DefaultDomain, "domain of the role name; the CA's")
	dir := fset.String("dir", ".", "directory to write the files to")
	var dnsNames, ipAddrs stringList
	fset.Var(&dnsNames, "additional-dnsname", "another DNS `name` the certificate is valid for (repeatable)")
	fset.Var(&ipAddrs, "additional-ipaddress", "another `IP` the certificate is valid for (repeatable)")
	pos, code, ok := parse(c, fset, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *server == *client {
		return usageError(stderr, c, "give exactly one of -server (for a Raft server) and -client (for a client agent)")
	}
	if *days < 1 {
		return usageError(stderr, c, "-days %d: want at least 1", *days)
	}
	var ips []net.IP
	for _, s := range ipAddrs {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError(stderr, c, "-additional-ipaddress %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	role := mtls.RoleClient
	if *server {
		role = mtls.RoleServer
	}
	caPEM, err := os.ReadFile(*caPath)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: -ca: %v; create a CA with 'tasker tls ca create', or point -ca at it\n", c.name, err)
		return exitFail
	}
	caKeyPEM, err := os.ReadFile(*caKeyPath)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: -key: %v; point -key at the CA's key (%s by default)\n", c.name, err, caKeyFile)
		return exitFail
	}
	certPEM, keyPEM, err := mtls.CreateCert(mtls.CertOptions{
		CACert: caPEM, CAKey: caKeyPEM, Role: role, Domain: *domain, Days: *days, DNSNames: dnsNames, IPs: ips,
	})
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v (-ca %s, -key %s)\n", c.name, err, *caPath, *caKeyPath)
		return exitFail
	}
	d := *domain
	if d == "" {
		d = mtls.DefaultDomain
	}
	for n := 0; ; n++ {
		base := filepath.Join(*dir, fmt.Sprintf("%s-%s-%d", d, role, n))
		err := writeFiles(stdout, base+".pem", certPEM, base+"-key.pem", keyPEM)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
			return exitFail
		}
		fmt.Fprintf(stdout, "==> Valid for %s, localhost, 127.0.0.1%s until %s\n", role.Name(d), extraNames(dnsNames, ipAddrs), time.Now().AddDate(0, 0, *days).UTC().Format(time.DateOnly))
		return exitOK
	}
}

func extraNames(dns, ips []string) string {
	all := append(append([]string(nil), dns...), ips...)
	if len(all) == 0 {
		return ""
	}
	return ", " + strings.Join(all, ", ")
}

// writeFiles writes a certificate (0644) and its key (0600), each only if
// it does not exist yet (fs.ErrExist otherwise); if the key cannot be
// written, the certificate is removed again.
func writeFiles(stdout io.Writer, certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("%s: %w", keyPath, fs.ErrExist)
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		return err
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		_ = os.Remove(certPath)
		return err
	}
	fmt.Fprintf(stdout, "==> Saved %s\n==> Saved %s\n", certPath, keyPath)
	return nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
