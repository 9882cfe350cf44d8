package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Image = "ghcr.io/tasker-run/tasker:0.1.0"
	cfg.RetryJoin = []string{"tasker-server.tasker.svc:7422"}
	return cfg
}

func fullConfig() Config {
	cfg := testConfig()
	cfg.GossipKeySecret = SecretKey{Name: "tasker-gossip", Key: "gossip-key"}
	cfg.ACLTokenSecret = SecretKey{Name: "tasker-acl-agent", Key: "agent-token"}
	cfg.TLSSecret = "tasker-client-tls"
	return cfg
}

// pod builds a pod with these annotations (nil: none at all) and
// containers named by names.
func pod(ann map[string]string, names ...string) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "orders-7d9f-", Namespace: "shop", Annotations: ann},
	}
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "example.com/" + n + ":1"})
	}
	return p
}

var injectTrue = map[string]string{AnnotationInject: "true"}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// admit runs a pod through Review as the API server would send it, and
// returns the response and the pod after its patch, decoded strictly: a
// patch that makes anything a Pod cannot hold fails the test.
func admit(t *testing.T, in *Injector, p *corev1.Pod) (*admissionv1.AdmissionResponse, *corev1.Pod) {
	t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		UID: "3c1f9e5a-0b1e-4c36-9f1f-2a8a5a0b0c11", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "shop",
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}
	resp, _, err := in.Review(req)
	if err != nil {
		t.Fatalf("Review: %v", err)
	}
	if resp.UID != req.UID {
		t.Fatalf("response uid %q, want the request's %q", resp.UID, req.UID)
	}
	if len(resp.Patch) == 0 {
		return resp, nil
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("the patch is not RFC 6902: %v\n%s", err, resp.Patch)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("the patch does not apply: %v\n%s", err, resp.Patch)
	}
	var got corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("the patched pod does not decode strictly into a Pod: %v\n%s", err, out)
	}
	return resp, &got
}

func mustNew(t *testing.T, cfg Config) *Injector {
	t.Helper()
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func sidecarOf(t *testing.T, p *corev1.Pod) corev1.Container {
	t.Helper()
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if c.Name == ContainerName {
			return c
		}
	}
	t.Fatalf("no %q container in the patched pod", ContainerName)
	return corev1.Container{}
}

func envOf(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// checkSidecar asserts what every injected sidecar must be.
func checkSidecar(t *testing.T, p *corev1.Pod, native bool) corev1.Container {
	t.Helper()
	c := sidecarOf(t, p)
	if native {
		if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != ContainerName {
			t.Errorf("native: the sidecar is not the first init container")
		}
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("native: restartPolicy %v, want Always", c.RestartPolicy)
		}
	} else if p.Spec.Containers[0].Name != ContainerName || c.RestartPolicy != nil {
		t.Errorf("not native: want the sidecar first among containers, without restartPolicy")
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("securityContext is not hardened: %+v", sc)
	}
	for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr == nil || pr.Exec == nil || !slices.Equal(pr.Exec.Command[:2], []string{"/tasker", "health"}) {
			t.Errorf("%s probe: %+v, want exec /tasker health", name, pr)
		}
	}
	if !slices.Contains(c.LivenessProbe.Exec.Command, "-live") {
		t.Errorf("liveness probe %v: want -live (a server without quorum must not restart every sidecar)", c.LivenessProbe.Exec.Command)
	}
	for _, a := range []string{"agent", "-node=$(POD_NAME).$(POD_NAMESPACE)", "-bind=$(POD_IP)", "-data-dir=/var/lib/tasker", "-retry-join=tasker-server.tasker.svc:7422"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %q", c.Args, a)
		}
	}
	if c.Args[0] != "agent" {
		t.Errorf("args %q: want agent first (the image's entrypoint is /tasker)", c.Args)
	}
	for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"} {
		e, ok := envOf(c, name)
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			t.Errorf("env %s: %+v, want the downward API's %s", name, e, path)
		}
	}
	if _, ok := envOf(c, AddrEnv); ok {
		t.Errorf("the sidecar itself got %s", AddrEnv)
	}
	var data string
	for _, m := range c.VolumeMounts {
		if m.MountPath == DataDir {
			data = m.Name
		}
	}
	vol := slices.IndexFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == data })
	if data == "" || vol < 0 || p.Spec.Volumes[vol].EmptyDir == nil {
		t.Errorf("the data dir %s is not on an emptyDir volume (mount %q)", DataDir, data)
	}
	if q := c.Resources.Requests[corev1.ResourceMemory]; q.IsZero() {
		t.Errorf("no memory request: %+v", c.Resources)
	}
	if p.Annotations[AnnotationInjected] != "true" {
		t.Errorf("annotations %v lack %s: true", p.Annotations, AnnotationInjected)
	}
	for _, app := range p.Spec.Containers {
		if app.Name == ContainerName {
			continue
		}
		if _, ok := envOf(app, AddrEnv); !ok {
			t.Errorf("app container %q lacks %s", app.Name, AddrEnv)
		}
	}
	return c
}

func TestInject(t *testing.T) {
	native := mustNew(t, testConfig())
	for _, tc := range []struct {
		name  string
		cfg   *Config // nil: testConfig
		pod   *corev1.Pod
		deny  string // a denial naming this
		skip  bool   // allowed, no patch
		warn  string
		check func(t *testing.T, before, after *corev1.Pod, side corev1.Container)
	}{
		{name: "a plain pod", pod: pod(injectTrue, "orders"), check: func(t *testing.T, _, p *corev1.Pod, side corev1.Container) {
			if e, _ := envOf(p.Spec.Containers[0], AddrEnv); e.Value != AddrValue {
				t.Errorf("%s = %q, want %q", AddrEnv, e.Value, AddrValue)
			}
			if !slices.Contains(side.ReadinessProbe.Exec.Command, "-live") {
				t.Errorf("readiness %v: the default is live", side.ReadinessProbe.Exec.Command)
			}
			for _, a := range side.Args {
				if strings.HasPrefix(a, "-tls") || a == "-acl" || strings.HasPrefix(a, "-system") {
					t.Errorf("unconfigured flag %q", a)
				}
			}
		}},
		{name: "annotations nil", pod: pod(nil, "orders"), skip: true},
		{name: "annotation absent", pod: pod(map[string]string{"team": "shop"}, "orders"), skip: true},
		{name: "annotation false", pod: pod(map[string]string{AnnotationInject: "false"}, "orders"), skip: true},
		{name: "annotation yes", pod: pod(map[string]string{AnnotationInject: "yes"}, "orders"), deny: `annotation tasker.io/inject: "yes": want "true" or "false"`},
		{name: "annotation True", pod: pod(map[string]string{AnnotationInject: "True"}, "orders"), deny: `want "true" or "false"`},
		{name: "already injected", pod: pod(with(injectTrue, AnnotationInjected, "true"), "orders"), skip: true},
		{name: "a tasker container written by hand", pod: pod(injectTrue, "orders", "tasker"), skip: true, warn: `already has a container named "tasker"`},
		{name: "no containers", pod: pod(injectTrue), skip: true},
		{name: "system", pod: pod(with(injectTrue, AnnotationSystem, "payments"), "pay"), check: func(t *testing.T, _, _ *corev1.Pod, side corev1.Container) {
			if !slices.Contains(side.Args, "-system=payments") {
				t.Errorf("args %q lack -system=payments", side.Args)
			}
		}},
		{name: "a bad system", pod: pod(with(injectTrue, AnnotationSystem, "Pay Ments"), "pay"), deny: `annotation tasker.io/system: "Pay Ments" is not a system name`},
		{name: "image override", pod: pod(with(injectTrue, AnnotationImage, "registry.local/tasker:dev"), "orders"), check: func(t *testing.T, _, _ *corev1.Pod, side corev1.Container) {
			if side.Image != "registry.local/tasker:dev" {
				t.Errorf("image %q", side.Image)
			}
		}},
		{name: "a bad image", pod: pod(with(injectTrue, AnnotationImage, ""), "orders"), deny: `annotation tasker.io/image: "" is not an image reference`},
		{name: "cpu and memory", pod: pod(with(injectTrue, AnnotationCPU, "200m", AnnotationMemory, "512Mi"), "orders"), check: func(t *testing.T, _, _ *corev1.Pod, side corev1.Container) {
			r := side.Resources
			if r.Requests.Cpu().String() != "200m" || r.Requests.Memory().String() != "512Mi" {
				t.Errorf("requests %v", r.Requests)
			}
			if r.Limits.Memory().String() != "512Mi" {
				t.Errorf("the memory limit %v must rise to the request", r.Limits.Memory())
			}
		}},
		{name: "a bad cpu", pod: pod(with(injectTrue, AnnotationCPU, "lots"), "orders"), deny: `annotation tasker.io/cpu: "lots" is not a positive quantity; use one such as 100m`},
		{name: "a negative memory", pod: pod(with(injectTrue, AnnotationMemory, "-1Gi"), "orders"), deny: `annotation tasker.io/memory: "-1Gi" is not a positive quantity`},
		{name: "an existing TASKER_ADDR", pod: func() *corev1.Pod {
			p := pod(injectTrue, "orders", "audit")
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "LOG", Value: "debug"}, {Name: AddrEnv, Value: "http://127.0.0.1:9000"}}
			p.Spec.Containers[1].Env = []corev1.EnvVar{{Name: "PASSWORD", Value: "s3cret"}}
			return p
		}(), check: func(t *testing.T, _, p *corev1.Pod, _ corev1.Container) {
			orders, audit := p.Spec.Containers[0], p.Spec.Containers[1]
			if e, _ := envOf(orders, AddrEnv); e.Value != "http://127.0.0.1:9000" || len(orders.Env) != 2 {
				t.Errorf("the app's own %s was changed: %+v", AddrEnv, orders.Env)
			}
			if len(audit.Env) != 2 || audit.Env[0].Name != "PASSWORD" || audit.Env[1].Value != AddrValue {
				t.Errorf("audit env %+v: want PASSWORD kept and %s appended", audit.Env, AddrEnv)
			}
		}},
		{name: "several containers and init containers", pod: func() *corev1.Pod {
			p := pod(injectTrue, "orders", "audit", "metrics")
			p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "example.com/migrate:1"}}
			return p
		}(), check: func(t *testing.T, _, p *corev1.Pod, _ corev1.Container) {
			if got := len(p.Spec.InitContainers); got != 2 || p.Spec.InitContainers[1].Name != "migrate" {
				t.Fatalf("init containers %d, want the sidecar then migrate", got)
			}
			if _, ok := envOf(p.Spec.InitContainers[1], AddrEnv); !ok {
				t.Errorf("the app's init container, started after the native sidecar, lacks %s", AddrEnv)
			}
			if len(p.Spec.Containers) != 3 {
				t.Errorf("containers %d, want the app's 3", len(p.Spec.Containers))
			}
		}},
		{name: "a volume name clash", cfg: ptr(fullConfig()), pod: func() *corev1.Pod {
			p := pod(injectTrue, "orders")
			p.Spec.Volumes = []corev1.Volume{
				{Name: "tasker-data", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "mine"}}}},
				{Name: "tasker-tls", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "tasker-tls-1", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tasker-data", MountPath: "/etc/mine"}}
			return p
		}(), check: func(t *testing.T, before, p *corev1.Pod, side corev1.Container) {
			if !reflect.DeepEqual(p.Spec.Volumes[:3], before.Spec.Volumes) {
				t.Errorf("the pod's own volumes changed: %+v", p.Spec.Volumes[:3])
			}
			names := map[string]string{}
			for _, m := range side.VolumeMounts {
				names[m.MountPath] = m.Name
			}
			if names[DataDir] != "tasker-data-1" || names[TLSDir] != "tasker-tls-2" {
				t.Errorf("mounts %v: want tasker-data-1 and tasker-tls-2", names)
			}
		}},
		{name: "TLS, gossip key and ACL token", cfg: ptr(fullConfig()), pod: pod(injectTrue, "orders"), check: func(t *testing.T, _, p *corev1.Pod, side corev1.Container) {
			for _, a := range []string{"-acl", "-tls-ca-file=/etc/tasker/tls/ca.pem", "-tls-cert-file=/etc/tasker/tls/cert.pem", "-tls-key-file=/etc/tasker/tls/key.pem", "-verify-incoming", "-verify-outgoing", "-verify-server-hostname"} {
				if !slices.Contains(side.Args, a) {
					t.Errorf("args %q lack %q", side.Args, a)
				}
			}
			for env, want := range map[string]SecretKey{"TASKER_ENCRYPT": {"tasker-gossip", "gossip-key"}, "TASKER_ACL_AGENT_TOKEN": {"tasker-acl-agent", "agent-token"}} {
				e, _ := envOf(side, env)
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != want.Name || e.ValueFrom.SecretKeyRef.Key != want.Key {
					t.Errorf("env %s: %+v, want from Secret %v", env, e, want)
				}
			}
			i := slices.IndexFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil })
			if i < 0 || p.Spec.Volumes[i].Secret.SecretName != "tasker-client-tls" {
				t.Errorf("no Secret volume tasker-client-tls: %+v", p.Spec.Volumes)
			}
		}},
		{name: "not native", cfg: func() *Config {
			c := testConfig()
			c.NativeSidecar = ptr(false)
			c.Readiness = ReadinessServing
			return &c
		}(), pod: pod(injectTrue, "orders", "audit"),
			check: func(t *testing.T, _, p *corev1.Pod, side corev1.Container) {
				if len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers) != 3 {
					t.Errorf("init containers %d, containers %d; want 0 and 3", len(p.Spec.InitContainers), len(p.Spec.Containers))
				}
				if slices.Contains(side.ReadinessProbe.Exec.Command, "-live") {
					t.Errorf("readiness: serving wants a leader, not -live")
				}
			}},
		{name: "hostNetwork", pod: func() *corev1.Pod {
			p := pod(injectTrue, "orders")
			p.Spec.HostNetwork = true
			return p
		}(), deny: "the pod uses hostNetwork"},
		{name: "an app on the agent's port", pod: func() *corev1.Pod {
			p := pod(injectTrue, "orders")
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 7421}}
			return p
		}(), deny: `container "orders" declares port 7421, which the tasker sidecar binds (its RPC port)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := native
			if tc.cfg != nil {
				in = mustNew(t, *tc.cfg)
			}
			resp, got := admit(t, in, tc.pod)
			switch {
			case tc.deny != "":
				if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, tc.deny) || resp.Result.Code != 400 {
					t.Fatalf("allowed %v, result %+v; want a 400 denial naming %q", resp.Allowed, resp.Result, tc.deny)
				}
				return
			case !resp.Allowed:
				t.Fatalf("denied: %+v", resp.Result)
			case tc.skip:
				if got != nil {
					t.Fatalf("patched %s; want it left alone", resp.Patch)
				}
				if tc.warn != "" && !slices.ContainsFunc(resp.Warnings, func(w string) bool { return strings.Contains(w, tc.warn) }) {
					t.Errorf("warnings %q; want %q", resp.Warnings, tc.warn)
				}
				return
			case got == nil:
				t.Fatal("no patch")
			}
			side := checkSidecar(t, got, in.cfg.Native())
			if tc.check != nil {
				tc.check(t, tc.pod, got, side)
			}
			// Reinvocation (reinvocationPolicy: IfNeeded) sees the patched
			// pod: it must be left as it is.
			if again, p2 := admit(t, in, got); !again.Allowed || p2 != nil {
				t.Errorf("a second admission of the patched pod changed it: %s", again.Patch)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestReviewOnlyPodCreation: updates, other kinds and subresources pass
// untouched; a request whose object is not a Pod is an error (HTTP 400).
func TestReviewOnlyPodCreation(t *testing.T) {
	in := mustNew(t, testConfig())
	raw, _ := json.Marshal(pod(injectTrue, "orders"))
	for _, req := range []admissionv1.AdmissionRequest{
		{UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Update, Object: runtime.RawExtension{Raw: raw}},
		{UID: "u2", Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
		{UID: "u3", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, SubResource: "ephemeralcontainers", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	} {
		resp, _, err := in.Review(&req)
		if err != nil || !resp.Allowed || resp.Patch != nil || resp.UID != req.UID {
			t.Errorf("%s %s: %+v, %v; want allowed, no patch", req.Operation, req.Kind.Kind, resp, err)
		}
	}
	_, _, err := in.Review(&admissionv1.AdmissionRequest{UID: "u4", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`{"spec":{"containers":"no"}}`)}})
	if err == nil || !strings.Contains(err.Error(), "request.object is not a Pod") {
		t.Errorf("a broken object: %v", err)
	}
}

func TestConfig(t *testing.T) {
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("the test config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no image", func(c *Config) { c.Image = "" }, "image: \"\": want the sidecar's image"},
		{"no servers", func(c *Config) { c.RetryJoin = nil }, "retryJoin: is empty"},
		{"a server without port", func(c *Config) { c.RetryJoin = []string{"tasker-server"} }, `retryJoin: "tasker-server" is not host:port`},
		{"a bad readiness", func(c *Config) { c.Readiness = "ready" }, `readiness: "ready": want live or serving`},
		{"a bad secret", func(c *Config) { c.GossipKeySecret = SecretKey{Name: "Gossip_Key", Key: "key"} }, `gossipKeySecret.name: "Gossip_Key" is not a Secret name`},
		{"a secret without key", func(c *Config) { c.ACLTokenSecret = SecretKey{Name: "acl"} }, `aclTokenSecret.key: "" is not a Secret key`},
		{"request above limit", func(c *Config) { c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("1Gi") }, "the memory request 1Gi is above its limit 256Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
