package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// admissionReview is a pod's creation as the API server sends it to a
// mutating webhook (kube-apiserver's request body, trimmed of nothing the
// injector reads). The env value is a stand-in secret: it must never
// reach the injector's log.
const admissionReview = `{
  "kind": "AdmissionReview",
  "apiVersion": "admission.k8s.io/v1",
  "request": {
    "uid": "%s",
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "resource": {"group": "", "version": "v1", "resource": "pods"},
    "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
    "requestResource": {"group": "", "version": "v1", "resource": "pods"},
    "namespace": "shop",
    "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
    "object": {
      "kind": "Pod",
      "apiVersion": "v1",
      "metadata": {
        "generateName": "orders-5d4c9b7f8-",
        "namespace": "shop",
        "labels": {"app": "orders"},
        "annotations": {"tasker.io/inject": %q, "tasker.io/system": "orders"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-5d4c9b7f8", "uid": "0b7e", "controller": true}]
      },
      "spec": {
        "containers": [{
          "name": "orders",
          "image": "example.com/orders:1.4",
          "env": [{"name": "DB_PASSWORD", "value": "hunter2-not-for-logs"}],
          "ports": [{"containerPort": 8080, "protocol": "TCP"}],
          "resources": {},
          "terminationMessagePath": "/dev/termination-log",
          "imagePullPolicy": "IfNotPresent"
        }],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "enableServiceLinks": true
      },
      "status": {}
    },
    "oldObject": null,
    "dryRun": false,
    "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
  }
}`

// TestInjectorServe runs 'tasker inject serve' as Kubernetes would: over
// HTTPS with a certificate made by 'tasker tls' for the webhook's Service
// name, verified against its CA as the API server does with caBundle. A
// real AdmissionReview of an annotated pod gets a JSONPatch that, applied,
// gives the pod its sidecar; a bad annotation is denied with a message;
// a malformed review gets 400; SIGTERM stops it cleanly.
func TestInjectorServe(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "webhook-ca")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	const service = "tasker-injector.tasker.svc"
	tasker(t, "", "tls", "ca", "create", "-dir", pki).must(t, "tls ca create", 0, "tasker-agent-ca.pem")
	tasker(t, "", "tls", "cert", "create", "-client", "-dir", pki, "-additional-dnsname", service,
		"-ca", filepath.Join(pki, "tasker-agent-ca.pem"), "-key", filepath.Join(pki, "tasker-agent-ca-key.pem")).must(t, "tls cert create", 0, service)
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(`
image: ghcr.io/tasker-run/tasker:0.1.0
retryJoin: [tasker-server.tasker.svc:7422]
gossipKeySecret: {name: tasker-gossip, key: gossip-key}
tlsSecret: tasker-client-tls
`), 0o600); err != nil {
		t.Fatal(err)
	}
	certArgs := []string{"-tls-cert-file", filepath.Join(pki, "tasker-client-0.pem"), "-tls-key-file", filepath.Join(pki, "tasker-client-0-key.pem")}

	// A config the injector cannot use stops it at start, naming the key.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("image: ghcr.io/tasker-run/tasker:0.1.0\nretryjoin: [x:1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := tasker(t, "", append([]string{"inject", "serve", "-listen", "127.0.0.1:0", "-config", bad}, certArgs...)...); r.code != 2 || !strings.Contains(r.stderr, `unknown field "retryjoin"`) {
		t.Fatalf("a misspelt key: exit %d, stderr %q; want 2 naming it", r.code, r.stderr)
	}

	addrc := make(chan string, 1)
	watch := &lineWriter{fn: func(line string) bool {
		var l struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "serving the sidecar injector" {
			addrc <- l.Addr
			return true
		}
		return false
	}}
	logPath := filepath.Join(dir, "injector.log")
	p := startProcess(t, "injector", taskerBin, append([]string{"inject", "serve", "-listen", "127.0.0.1:0", "-config", config,
		"-shutdown-delay", "0s", "-log-level", "debug"}, certArgs...), logPath, watch)
	var addr string
	select {
	case addr = <-addrc:
	case <-p.done:
		t.Fatalf("the injector exited: %v\n%s", p.err, p.tail(20))
	case <-time.After(30 * time.Second):
		t.Fatalf("no \"serving\" line within 30s:\n%s", p.tail(20))
	}

	// Trust only the webhook's CA, and check the name the API server
	// checks: the Service's.
	caPEM, err := os.ReadFile(filepath.Join(pki, "tasker-agent-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: service}}}
	base := "https://" + addr
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := hc.Post(base+"/mutate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST /mutate: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	resp, err := hc.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// An annotated pod: the patch, applied, gives it the sidecar.
	body := fmt.Sprintf(admissionReview, "e2e-uid-1", "true")
	code, out := post(body)
	if code != 200 {
		t.Fatalf("POST /mutate: %d %s", code, out)
	}
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal([]byte(out), &rv); err != nil || rv.Response == nil {
		t.Fatalf("the answer is not an AdmissionReview: %v\n%s", err, out)
	}
	if rv.APIVersion != "admission.k8s.io/v1" || rv.Kind != "AdmissionReview" || rv.Response.UID != "e2e-uid-1" || !rv.Response.Allowed ||
		rv.Response.PatchType == nil || *rv.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("the answer: %s", out)
	}
	var req struct {
		Request struct{ Object json.RawMessage }
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(rv.Response.Patch)
	if err != nil {
		t.Fatalf("the patch: %v\n%s", err, rv.Response.Patch)
	}
	patched, err := patch.Apply(req.Request.Object)
	if err != nil {
		t.Fatalf("applying the patch: %v\n%s", err, rv.Response.Patch)
	}
	var pod corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(patched))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pod); err != nil {
		t.Fatalf("the patched pod: %v\n%s", err, patched)
	}
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != "tasker" {
		t.Fatalf("init containers %+v, want the tasker sidecar", pod.Spec.InitContainers)
	}
	side := pod.Spec.InitContainers[0]
	args := strings.Join(side.Args, " ")
	for _, want := range []string{"agent ", "-system=orders", "-retry-join=tasker-server.tasker.svc:7422", "-tls-ca-file=/etc/tasker/tls/ca.pem", "-verify-incoming"} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %q", args, want)
		}
	}
	if side.Image != "ghcr.io/tasker-run/tasker:0.1.0" || side.RestartPolicy == nil || *side.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar image %q restartPolicy %v", side.Image, side.RestartPolicy)
	}
	app := pod.Spec.Containers[0]
	if len(app.Env) != 2 || app.Env[0].Value != "hunter2-not-for-logs" || app.Env[1].Name != "TASKER_ADDR" || app.Env[1].Value != "http://127.0.0.1:7420" {
		t.Errorf("app env %+v: want its own kept and TASKER_ADDR added", app.Env)
	}
	if pod.Annotations["tasker.io/injected"] != "true" || pod.Annotations["tasker.io/system"] != "orders" {
		t.Errorf("annotations %v", pod.Annotations)
	}

	// A bad annotation: denied, saying which and what it wants.
	code, out = post(fmt.Sprintf(admissionReview, "e2e-uid-2", "yes"))
	if code != 200 || !strings.Contains(out, `"allowed":false`) || !strings.Contains(out, `"uid":"e2e-uid-2"`) ||
		!strings.Contains(out, `annotation tasker.io/inject: \"yes\": want \"true\" or \"false\"`) {
		t.Errorf("a bad annotation: %d %s", code, out)
	}
	// Malformed reviews: the HTTP status says the caller is wrong, and
	// the body what was wanted.
	for _, tc := range []struct{ name, body, want string }{
		{"truncated JSON", body[:len(body)/2], "the body is not an AdmissionReview"},
		{"v1beta1", strings.Replace(body, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), "want admission.k8s.io/v1 AdmissionReview"},
		{"no request", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`, "has no request"},
	} {
		if code, out := post(tc.body); code != 400 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %d %q; want 400 and %q", tc.name, code, out, tc.want)
		}
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("after SIGTERM the injector exited %d, want 0:\n%s", code, p.tail(20))
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"msg":"injected the sidecar"`, `"generate_name":"orders-5d4c9b7f8-"`, `"msg":"denied a pod"`, `"msg":"stopped"`} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the log lacks %s:\n%s", want, log)
		}
	}
	if bytes.Contains(log, []byte("hunter2")) {
		t.Errorf("the log shows a container's env value:\n%s", log)
	}
}
