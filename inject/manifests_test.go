package inject

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// decodeManifests decodes a multi-document YAML file strictly, each
// document into the k8s.io/api type of its kind, as the API server's
// strict field validation does: a misspelt, miscased, repeated or
// misplaced field, which kubectl apply might only warn about, fails here.
func decodeManifests(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]any{}
	for i, doc := range strings.Split(string(b), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 Deployment":
			obj = &appsv1.Deployment{}
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration":
			obj = &admissionregv1.MutatingWebhookConfiguration{}
		default:
			t.Fatalf("%s document %d: unexpected %q %q", path, i, tm.APIVersion, tm.Kind)
		}
		if err := decodeStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", path, i, tm.Kind, err)
		}
		if _, dup := objs[tm.Kind]; dup {
			t.Fatalf("%s: two %s", path, tm.Kind)
		}
		objs[tm.Kind] = obj
	}
	return objs
}

// TestManifests checks deploy/kubernetes/injector.yaml against the
// server: the webhook calls the path and port it serves, in the version it
// answers, for annotated pods only; the Deployment is hardened and probes
// /healthz; the ConfigMap's config loads.
func TestManifests(t *testing.T) {
	objs := decodeManifests(t, filepath.Join("..", "deploy", "kubernetes", "injector.yaml"))
	checkInjectorObjects(t, objs, "tasker")
}

func checkInjectorObjects(t *testing.T, objs map[string]any, ns string) {
	t.Helper()
	dep := objs["Deployment"].(*appsv1.Deployment)
	svc := objs["Service"].(*corev1.Service)
	cm := objs["ConfigMap"].(*corev1.ConfigMap)
	mwc := objs["MutatingWebhookConfiguration"].(*admissionregv1.MutatingWebhookConfiguration)
	sa := objs["ServiceAccount"].(*corev1.ServiceAccount)
	if _, ok := objs["PodDisruptionBudget"]; !ok {
		t.Error("no PodDisruptionBudget")
	}

	// The webhook.
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	if !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions %v, want [v1]: the server answers v1 only", wh.AdmissionReviewVersions)
	}
	if wh.SideEffects == nil || *wh.SideEffects != admissionregv1.SideEffectClassNone {
		t.Errorf("sideEffects %v, want None", wh.SideEffects)
	}
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregv1.Fail {
		t.Errorf("failurePolicy %v, want Fail (docs/deploy.md)", wh.FailurePolicy)
	}
	if wh.ReinvocationPolicy == nil || *wh.ReinvocationPolicy != admissionregv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy %v, want IfNeeded", wh.ReinvocationPolicy)
	}
	if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds < 1 || *wh.TimeoutSeconds > 30 {
		t.Errorf("timeoutSeconds %v, want 1-30", wh.TimeoutSeconds)
	}
	s := wh.ClientConfig.Service
	if s == nil || s.Name != svc.Name || s.Namespace != ns || s.Path == nil || *s.Path != MutatePath || s.Port == nil {
		t.Fatalf("clientConfig.service %+v, want %s/%s path %s", s, ns, svc.Name, MutatePath)
	}
	if len(wh.Rules) != 1 || !slices.Equal(wh.Rules[0].Operations, []admissionregv1.OperationType{admissionregv1.Create}) ||
		!slices.Equal(wh.Rules[0].Resources, []string{"pods"}) || !slices.Equal(wh.Rules[0].APIGroups, []string{""}) {
		t.Errorf("rules %+v, want CREATE of core pods", wh.Rules)
	}
	if len(wh.MatchConditions) == 0 || !strings.Contains(wh.MatchConditions[0].Expression, "'"+AnnotationInject+"' in object.metadata.annotations") {
		t.Errorf("matchConditions %+v: want only pods annotated %s", wh.MatchConditions, AnnotationInject)
	}
	if wh.NamespaceSelector == nil || !slices.ContainsFunc(wh.NamespaceSelector.MatchExpressions, func(r metav1.LabelSelectorRequirement) bool {
		return r.Key == "kubernetes.io/metadata.name" && r.Operator == metav1.LabelSelectorOpNotIn && slices.Contains(r.Values, ns) && slices.Contains(r.Values, "kube-system")
	}) {
		t.Errorf("namespaceSelector %+v: want the injector's namespace %s and kube-system excluded", wh.NamespaceSelector, ns)
	}

	// The Service routes the webhook's port to the server's.
	if svc.Namespace != ns || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != *s.Port {
		t.Fatalf("service %s/%s ports %+v, want port %d", svc.Namespace, svc.Name, svc.Spec.Ports, *s.Port)
	}
	if !matches(svc.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("the service's selector %v does not match the pods' labels %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	var port corev1.ContainerPort
	switch tp := svc.Spec.Ports[0].TargetPort; tp.Type {
	case intstr.String:
		i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == tp.StrVal })
		if i < 0 {
			t.Fatalf("targetPort %q: no such container port in %+v", tp.StrVal, c.Ports)
		}
		port = c.Ports[i]
	default:
		port.ContainerPort = tp.IntVal
	}
	if port.ContainerPort != 8443 || !slices.Contains(c.Args, "-listen=:8443") {
		t.Errorf("the service targets %d; the server listens per %v, want 8443", port.ContainerPort, c.Args)
	}

	// The Deployment.
	if dep.Namespace != ns || dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("deployment %s replicas %v, want at least 2 (failurePolicy Fail)", dep.Namespace, dep.Spec.Replicas)
	}
	if !slices.Equal(c.Args[:2], []string{"inject", "serve"}) {
		t.Errorf("args %v, want inject serve", c.Args)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != HealthPath || p.HTTPGet.Scheme != corev1.URISchemeHTTPS ||
			!(p.HTTPGet.Port.StrVal == port.Name || p.HTTPGet.Port.IntVal == port.ContainerPort) {
			t.Errorf("%s probe %+v, want HTTPS GET %s on the server's port", name, p, HealthPath)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("the injector's securityContext is not hardened: %+v", sc)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want memory requests and limits", c.Resources)
	}
	if spec.ServiceAccountName != sa.Name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account %q (automount %v): want %s without a token; the injector never calls the API", spec.ServiceAccountName, sa.AutomountServiceAccountToken, sa.Name)
	}

	// Each file the args name is on a mounted volume, and the config loads.
	mounts := map[string]corev1.Volume{}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Fatalf("mount %s: no volume", m.Name)
		}
		mounts[m.MountPath] = spec.Volumes[i]
	}
	for _, flag := range []string{"-config=", "-tls-cert-file=", "-tls-key-file="} {
		i := slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, flag) })
		if i < 0 {
			t.Fatalf("args %v lack %s", c.Args, flag)
		}
		file := strings.TrimPrefix(c.Args[i], flag)
		v, ok := mounts[filepath.Dir(file)]
		switch {
		case !ok:
			t.Errorf("%s%s: no volume mounted at %s", flag, file, filepath.Dir(file))
		case flag == "-config=":
			if v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
				t.Fatalf("%s is not on the ConfigMap %s", file, cm.Name)
			}
			text, ok := cm.Data[filepath.Base(file)]
			if !ok {
				t.Fatalf("the ConfigMap has no key %s", filepath.Base(file))
			}
			cfg, err := ParseConfig([]byte(text))
			if err != nil {
				t.Fatalf("the ConfigMap's %s: %v", filepath.Base(file), err)
			}
			if len(cfg.RetryJoin) == 0 || !strings.HasPrefix(cfg.RetryJoin[0], "tasker-server."+ns+".svc:") {
				t.Errorf("retryJoin %v: want the servers' headless Service tasker-server.%s.svc", cfg.RetryJoin, ns)
			}
		default:
			if v.Secret == nil {
				t.Errorf("%s is not on a Secret volume", file)
			}
		}
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
