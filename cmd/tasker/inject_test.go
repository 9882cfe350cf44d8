package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInjectServeUsage: 'tasker inject serve' refuses a command line, a
// config or a certificate it cannot serve with, exit 2, naming what is
// wrong, before it listens.
func TestInjectServeUsage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "image: ghcr.io/tasker-run/tasker:0.1.0\nretryJoin: [tasker-server.tasker.svc:7422]\n")
	bad := write("bad.yaml", "image: ghcr.io/tasker-run/tasker:0.1.0\n")
	certs := []string{"-tls-cert-file", filepath.Join(dir, "tls.crt"), "-tls-key-file", filepath.Join(dir, "tls.key")}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no config", certs, "-config is required"},
		{"no certificate", []string{"-config", good}, "-tls-cert-file and -tls-key-file are required"},
		{"a negative delay", append([]string{"-config", good, "-shutdown-delay", "-1s"}, certs...), "-shutdown-delay -1s: want 0 or more"},
		{"a bad log format", append([]string{"-config", good, "-log-format", "xml"}, certs...), `-log-format "xml": want text or json`},
		{"a bad config", append([]string{"-config", bad}, certs...), "config file " + bad + ": retryJoin: is empty"},
		{"no certificate files", append([]string{"-config", good}, certs...), "TLS: " + filepath.Join(dir, "tls.crt")},
		{"an argument", append([]string{"-config", good, "extra"}, certs...), `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append([]string{"inject", "serve"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q (stdout %q); want exit 2 and %q", code, errOut, out, tc.want)
			}
		})
	}
	if code, out, _ := runCLI("help", "inject", "serve"); code != exitOK || !strings.Contains(out, "-shutdown-delay") {
		t.Fatalf("help inject serve: exit %d\n%s", code, out)
	}
}
