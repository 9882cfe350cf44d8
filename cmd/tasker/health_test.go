package main

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/grpchealth"
)

// healthServer serves only gRPC health, over h2c as the agent's API does,
// with the status the test sets.
func healthServer(t *testing.T) (*grpchealth.StaticChecker, string) {
	t.Helper()
	checker := grpchealth.NewStaticChecker()
	mux := http.NewServeMux()
	mux.Handle(grpchealth.NewHandler(checker))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &p}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return checker, "http://" + ln.Addr().String()
}

func TestHealth(t *testing.T) {
	checker, addr := healthServer(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name    string
		status  grpchealth.Status
		args    []string
		code    int
		out     string
		errText string
	}{
		{"serving", grpchealth.StatusServing, []string{"-addr", addr}, exitOK, "SERVING", ""},
		{"not serving fails readiness", grpchealth.StatusNotServing, []string{"-addr", addr}, exitFail, "NOT_SERVING", ""},
		{"not serving passes liveness", grpchealth.StatusNotServing, []string{"-addr", addr, "-live"}, exitOK, "NOT_SERVING", ""},
		{"no agent fails liveness", grpchealth.StatusServing, []string{"-addr", gone, "-live"}, exitFail, "", "cannot reach the agent"},
		{"bad timeout", grpchealth.StatusServing, []string{"-addr", addr, "-timeout", "0s"}, exitUsage, "", "-timeout 0s: want a positive duration"},
		{"not a URL", grpchealth.StatusServing, []string{"-addr", "https://x"}, exitUsage, "", "only http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checker.SetStatus("", tc.status)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"health"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errText) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout.String(), stderr.String(), tc.code, tc.out, tc.errText)
			}
		})
	}
}
