package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/mtls"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestTLSCreate: 'tasker tls ca create' and 'tasker tls cert create' write
// files an agent loads with the role asked for, never overwrite, and
// refuse a bad command line naming the flag and the fix.
func TestTLSCreate(t *testing.T) {
	dir := t.TempDir()
	if code, out, errOut := runCLI("tls", "ca", "create", "-dir", dir); code != exitOK || !strings.Contains(out, "Saved "+filepath.Join(dir, "tasker-agent-ca.pem")) {
		t.Fatalf("ca create: exit %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tasker-agent-ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the CA key: %v, mode %v; want 0600", err, fi.Mode())
	}
	ca := []string{"-ca", filepath.Join(dir, "tasker-agent-ca.pem"), "-key", filepath.Join(dir, "tasker-agent-ca-key.pem"), "-dir", dir}

	for _, tc := range []struct {
		args []string
		file string // written, without .pem
		role mtls.Role
		name string // the role name it carries
	}{
		{[]string{"-server"}, "tasker-server-0", mtls.RoleServer, "server.tasker"},
		{[]string{"-server", "-additional-ipaddress", "10.0.0.1", "-additional-dnsname", "s2.example.com"}, "tasker-server-1", mtls.RoleServer, "server.tasker"},
		{[]string{"-client"}, "tasker-client-0", mtls.RoleClient, "client.tasker"},
		{[]string{"-client", "-days", "30"}, "tasker-client-1", mtls.RoleClient, "client.tasker"},
	} {
		code, out, errOut := runCLI(append(append([]string{"tls", "cert", "create"}, tc.args...), ca...)...)
		if code != exitOK || !strings.Contains(out, "Valid for "+tc.name) {
			t.Fatalf("cert create %v: exit %d\n%s%s", tc.args, code, out, errOut)
		}
		base := filepath.Join(dir, tc.file)
		if fi, err := os.Stat(base + "-key.pem"); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("cert create %v: the key %s-key.pem: %v", tc.args, base, err)
		}
		c, err := mtls.Load(mtls.Files{CA: ca[1], Cert: base + ".pem", Key: base + "-key.pem"}, time.Now(), true, true)
		if err != nil || c.Role != tc.role {
			t.Fatalf("cert create %v: %s.pem loads as %v (%v), want %s", tc.args, base, c, err, tc.role)
		}
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "tasker-server-1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := mtls.ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("10.0.0.1"); err != nil {
		t.Errorf("-additional-ipaddress: %v", err)
	}
	if err := cert.VerifyHostname("s2.example.com"); err != nil {
		t.Errorf("-additional-dnsname: %v", err)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a second CA in the same dir", []string{"tls", "ca", "create", "-dir", dir}, exitFail, "tasker-agent-ca.pem exists; not overwriting it"},
		{"neither role", append([]string{"tls", "cert", "create"}, ca...), exitUsage, "give exactly one of -server (for a Raft server) and -client"},
		{"both roles", append([]string{"tls", "cert", "create", "-server", "-client"}, ca...), exitUsage, "give exactly one of -server"},
		{"no CA", []string{"tls", "cert", "create", "-server", "-ca", filepath.Join(dir, "nope.pem"), "-dir", dir}, exitFail, "-ca: open " + filepath.Join(dir, "nope.pem")},
		{"no CA key", []string{"tls", "cert", "create", "-server", "-ca", ca[1], "-key", filepath.Join(dir, "nope.pem"), "-dir", dir}, exitFail, "-key: open " + filepath.Join(dir, "nope.pem")},
		{"the key of a certificate, not of the CA", []string{"tls", "cert", "create", "-server", "-ca", ca[1], "-key", filepath.Join(dir, "tasker-server-0-key.pem"), "-dir", dir}, exitFail, "CA key: it does not belong to the CA certificate"},
		{"longer than the CA", append([]string{"tls", "cert", "create", "-server", "-days", "4000"}, ca...), exitFail, "would outlive the CA"},
		{"a bad IP", append([]string{"tls", "cert", "create", "-server", "-additional-ipaddress", "10.0.0"}, ca...), exitUsage, `-additional-ipaddress "10.0.0" is not an IP address`},
		{"no days", []string{"tls", "ca", "create", "-days", "0", "-dir", t.TempDir()}, exitUsage, "-days 0: want at least 1"},
		{"an unknown subcommand", []string{"tls", "ca", "rotate"}, exitUsage, `unknown subcommand "rotate"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("%v: exit %d, stderr %q (stdout %q); want exit %d and %q", tc.args, code, errOut, out, tc.code, tc.want)
			}
		})
	}
	if code, out, _ := runCLI("help", "tls", "cert", "create"); code != exitOK || !strings.Contains(out, "-additional-dnsname") {
		t.Fatalf("help tls cert create: exit %d\n%s", code, out)
	}
}
