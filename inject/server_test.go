package inject

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tasker-run/tasker/mtls"
)

func review(t *testing.T, apiVersion string, req *admissionv1.AdmissionRequest) string {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHandler: the webhook's HTTP contract: the answer carries the
// request's uid and the same apiVersion; anything but a v1 AdmissionReview
// in JSON is refused with a status and a message saying what is wanted.
func TestHandler(t *testing.T) {
	h := NewHandler(mustNew(t, testConfig()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	raw, _ := json.Marshal(pod(injectTrue, "orders"))
	good := review(t, "admission.k8s.io/v1", &admissionv1.AdmissionRequest{
		UID: "7f0e7c2a-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	})
	for _, tc := range []struct {
		name, method, path, ctype, body string
		code                            int
		want                            string
	}{
		{"a pod", "POST", MutatePath, "application/json", good, 200, `"uid":"7f0e7c2a-1"`},
		{"a charset", "POST", MutatePath, "application/json; charset=utf-8", good, 200, `"patchType":"JSONPatch"`},
		{"health", "GET", HealthPath, "", "", 200, "ok"},
		{"GET mutate", "GET", MutatePath, "", "", 405, ""},
		{"yaml", "POST", MutatePath, "application/yaml", good, 415, `Content-Type "application/yaml": want application/json`},
		{"no content type", "POST", MutatePath, "", good, 415, "no Content-Type"},
		{"not JSON", "POST", MutatePath, "application/json", "{", 400, "the body is not an AdmissionReview"},
		{"v1beta1", "POST", MutatePath, "application/json", review(t, "admission.k8s.io/v1beta1", &admissionv1.AdmissionRequest{UID: "x"}), 400, "want admission.k8s.io/v1 AdmissionReview (set admissionReviewVersions: [v1]"},
		{"no request", "POST", MutatePath, "application/json", review(t, "admission.k8s.io/v1", nil), 400, "has no request"},
		{"too big", "POST", MutatePath, "application/json", `{"x":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %q; want %d and %q", w.Code, w.Body.String(), tc.code, tc.want)
			}
			if tc.code == 200 && tc.path == MutatePath {
				var out admissionv1.AdmissionReview
				if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || !out.Response.Allowed {
					t.Fatalf("the answer %s: %v", w.Body.String(), err)
				}
			}
		})
	}
	h.Drain()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", HealthPath, nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("health while draining: %d, want 503", w.Code)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := LoadConfig(write("ok.yaml", `
image: ghcr.io/tasker-run/tasker:0.1.0
retryJoin: [tasker-server.tasker.svc:7422]
nativeSidecar: false
tlsSecret: tasker-client-tls
resources:
  requests: {cpu: 10m, memory: 32Mi}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Native() || cfg.TLSSecret != "tasker-client-tls" || cfg.Readiness != ReadinessLive || cfg.Resources.Requests.Cpu().String() != "10m" {
		t.Fatalf("loaded %+v", cfg)
	}
	if _, err := LoadConfig(write("typo.yaml", "image: x\nretryJoin: [a:1]\nnativeSidecars: true\n")); err == nil || !strings.Contains(err.Error(), `unknown field "nativeSidecars"`) {
		t.Fatalf("a misspelt key: %v, want unknown field", err)
	}
	if _, err := LoadConfig(write("case.yaml", "image: x\nretryjoin: [a:1]\n")); err == nil || !strings.Contains(err.Error(), `unknown field "retryjoin"`) {
		t.Fatalf("a miscased key: %v, want unknown field", err)
	}
	if _, err := LoadConfig(write("twice.yaml", "image: x\nimage: y\nretryJoin: [a:1]\n")); err == nil || !strings.Contains(err.Error(), `"image" already set`) {
		t.Fatalf("a repeated key: %v", err)
	}
	if _, err := LoadConfig(write("bad.yaml", "image: x\n")); err == nil || !strings.Contains(err.Error(), "retryJoin: is empty") {
		t.Fatalf("no servers: %v", err)
	}
}

// TestCertReloader: a renewed pair is served from the next check on; a
// pair that does not load (a rotation half written) leaves the last good
// one in place.
func TestCertReloader(t *testing.T) {
	caPEM, caKey, err := mtls.CreateCA(mtls.CAOptions{Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	issue := func() []byte {
		c, k, err := mtls.CreateCert(mtls.CertOptions{CACert: caPEM, CAKey: caKey, Role: mtls.RoleClient, Days: 1, DNSNames: []string{"tasker-injector.tasker.svc"}})
		if err != nil {
			t.Fatal(err)
		}
		for f, b := range map[string][]byte{certFile: c, keyFile: k} {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	leaf := func(c *tls.Certificate) *big.Int {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.SerialNumber
	}
	first := issue()
	r, err := NewCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.every = 0
	got, _ := r.GetCertificate(nil)
	want, _ := mtls.ParseCert(first)
	if leaf(got).Cmp(want.SerialNumber) != 0 {
		t.Fatal("not the first certificate")
	}
	// Make sure the modification time moves even on a coarse clock.
	time.Sleep(20 * time.Millisecond)
	second := issue()
	got, _ = r.GetCertificate(nil)
	want, _ = mtls.ParseCert(second)
	if leaf(got).Cmp(want.SerialNumber) != 0 {
		t.Fatal("the renewed certificate was not loaded")
	}
	time.Sleep(20 * time.Millisecond)
	if err := os.WriteFile(keyFile, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = r.GetCertificate(nil)
	if err != nil || leaf(got).Cmp(want.SerialNumber) != 0 {
		t.Fatalf("a broken key replaced the good pair: %v", err)
	}
	if _, err := NewCertReloader(certFile, filepath.Join(dir, "none.key"), nil); err == nil || !strings.Contains(err.Error(), "none.key") {
		t.Fatalf("a missing key: %v, want it named", err)
	}
}
