package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/tasker-run/tasker/agent"
	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/mtls"
)

const (
	manifestDir = "kubernetes"
	chartDir    = "helm/tasker"
	// The release name and namespace the chart is rendered with.
	releaseName = "tasker"
	releaseNS   = "tasker"
)

// kubeVersion is the Kubernetes the chart is rendered and linted for: the
// chart needs 1.29 (native sidecars in the NOTES' advice).
var kubeVersion = chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}

// objects are the decoded documents of one set of manifests.
type objects struct {
	serviceAccounts []*corev1.ServiceAccount
	services        []*corev1.Service
	statefulSets    []*appsv1.StatefulSet
	deployments     []*appsv1.Deployment
	pdbs            []*policyv1.PodDisruptionBudget
	secrets         []*corev1.Secret
	namespaces      []*corev1.Namespace
	configMaps      []*corev1.ConfigMap
	webhooks        []*admissionv1.MutatingWebhookConfiguration
}

// typeMeta reads only a document's kind, leniently: the strict decode
// into the kind's type follows.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// splitDocs splits a YAML stream on its --- lines and drops the documents
// that are only comments or blank (a template that rendered to nothing).
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, part := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		empty := true
		for _, line := range strings.Split(part, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(part))
		}
	}
	return docs
}

// decode adds every document of b to o, decoded strictly into its kind's
// k8s.io/api type: a field the type does not have, a duplicate field or a
// value of the wrong type fails. lenient is for files another part of
// deploy/ owns (the sidecar injector): a kind this test does not know is
// skipped there, not an error, and nothing is collected.
func (o *objects) decode(name string, b []byte, lenient bool) error {
	for i, doc := range splitDocs(b) {
		var tm typeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return fmt.Errorf("%s, document %d: %w", name, i+1, err)
		}
		var obj any
		var add func()
		want := ""
		switch tm.Kind {
		case "ServiceAccount":
			v := &corev1.ServiceAccount{}
			obj, want, add = v, "v1", func() { o.serviceAccounts = append(o.serviceAccounts, v) }
		case "Service":
			v := &corev1.Service{}
			obj, want, add = v, "v1", func() { o.services = append(o.services, v) }
		case "Secret":
			v := &corev1.Secret{}
			obj, want, add = v, "v1", func() { o.secrets = append(o.secrets, v) }
		case "Namespace":
			v := &corev1.Namespace{}
			obj, want, add = v, "v1", func() { o.namespaces = append(o.namespaces, v) }
		case "StatefulSet":
			v := &appsv1.StatefulSet{}
			obj, want, add = v, "apps/v1", func() { o.statefulSets = append(o.statefulSets, v) }
		case "Deployment":
			v := &appsv1.Deployment{}
			obj, want, add = v, "apps/v1", func() { o.deployments = append(o.deployments, v) }
		case "ConfigMap":
			v := &corev1.ConfigMap{}
			obj, want, add = v, "v1", func() { o.configMaps = append(o.configMaps, v) }
		case "MutatingWebhookConfiguration":
			v := &admissionv1.MutatingWebhookConfiguration{}
			obj, want, add = v, "admissionregistration.k8s.io/v1", func() { o.webhooks = append(o.webhooks, v) }
		case "PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			obj, want, add = v, "policy/v1", func() { o.pdbs = append(o.pdbs, v) }
		default:
			if lenient {
				continue
			}
			return fmt.Errorf("%s, document %d: kind %q (apiVersion %q) is not one this test decodes", name, i+1, tm.Kind, tm.APIVersion)
		}
		if tm.APIVersion != want {
			return fmt.Errorf("%s, document %d: %s has apiVersion %q, want %q", name, i+1, tm.Kind, tm.APIVersion, want)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return fmt.Errorf("%s, document %d (%s): %w", name, i+1, tm.Kind, err)
		}
		// The injector's objects are decoded (a typo there fails too), but
		// the assertions here are about this part of deploy/ only.
		if !lenient {
			add()
		}
	}
	return nil
}

// kustomization is the part of kustomization.yaml the test reads, decoded
// strictly too.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// loadManifests decodes the plain manifests: every resource the
// kustomization lists, and secrets.example.yaml. Every YAML file in the
// directory must be one of those, the kustomization itself, or the
// injector's (another engineer's, decoded leniently when listed).
func loadManifests(t *testing.T) (*objects, kustomization) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.Namespace == "" {
		t.Fatalf("kustomization.yaml: kind %q, namespace %q", k.Kind, k.Namespace)
	}
	o := &objects{}
	seen := map[string]bool{"kustomization.yaml": true}
	for _, f := range append(append([]string{}, k.Resources...), "secrets.example.yaml") {
		b, err := os.ReadFile(filepath.Join(manifestDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := o.decode(f, b, isInjector(f)); err != nil {
			t.Fatal(err)
		}
		seen[f] = true
	}
	files, _ := filepath.Glob(filepath.Join(manifestDir, "*.y*ml"))
	for _, f := range files {
		if base := filepath.Base(f); !seen[base] && !isInjector(base) {
			t.Errorf("%s is neither in kustomization.yaml nor secrets.example.yaml: nothing applies or tests it", base)
		}
	}
	return o, k
}

func isInjector(name string) bool { return strings.HasPrefix(filepath.Base(name), "injector") }

// loadChart loads the chart from its directory.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// render renders ch with vals over its values.yaml, as helm install would
// (the values schema included), and returns each template's output.
func render(ch *chart.Chart, vals map[string]any) (map[string]string, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = kubeVersion
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// renderObjects renders the chart and decodes every manifest it produced.
func renderObjects(t *testing.T, vals map[string]any) (*objects, string) {
	t.Helper()
	out, err := render(loadChart(t), vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	o := &objects{}
	var names []string
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	notes := ""
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			notes = out[name]
		case strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml"):
			if err := o.decode(name, []byte(out[name]), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	return o, notes
}

// The fake values of the downward API and of the Secrets, for expanding a
// container's $(VAR) references and environment as the kubelet would.
const fakePodIP = "10.244.1.7"

var (
	fakeOnce    sync.Once
	fakeSecrets map[string]string
	tlsDirs     map[mtls.Role]string
	fakeErr     error
)

// fakes makes a real gossip key, tokens, and a CA with a server and a
// client certificate, so that agent.Load checks a container's settings as
// the agent would at start, TLS files and all.
func fakes(t *testing.T) (map[string]string, map[mtls.Role]string) {
	t.Helper()
	fakeOnce.Do(func() {
		key, err := gossip.GenerateKey()
		if err != nil {
			fakeErr = err
			return
		}
		fakeSecrets = map[string]string{
			"gossip-key":       key,
			"management-token": "mgmt-0123456789abcdef0123456789abcdef",
			"agent-token":      "agent-0123456789abcdef0123456789abcdef",
			"token":            "app-0123456789abcdef0123456789abcdef",
		}
		dir, err := os.MkdirTemp("", "tasker-deploy-test-")
		if err != nil {
			fakeErr = err
			return
		}
		caCert, caKey, err := mtls.CreateCA(mtls.CAOptions{Domain: "tasker", Days: 2})
		if err != nil {
			fakeErr = err
			return
		}
		tlsDirs = map[mtls.Role]string{}
		for _, role := range []mtls.Role{mtls.RoleServer, mtls.RoleClient} {
			cert, key, err := mtls.CreateCert(mtls.CertOptions{CACert: caCert, CAKey: caKey, Role: role, Domain: "tasker", Days: 1})
			if err != nil {
				fakeErr = err
				return
			}
			d := filepath.Join(dir, string(role))
			if err := os.MkdirAll(d, 0o700); err != nil {
				fakeErr = err
				return
			}
			for f, b := range map[string][]byte{"ca.pem": caCert, "cert.pem": cert, "key.pem": key} {
				if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
					fakeErr = err
					return
				}
			}
			tlsDirs[role] = d
		}
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return fakeSecrets, tlsDirs
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) as the kubelet does; an unknown VAR stays as it
// is, as there.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[varRef.FindStringSubmatch(m)[1]]; ok {
			return v
		}
		return m
	})
}

// agentConfig loads the configuration the agent in container c of a pod
// named podName in namespace ns would start with: its args after
// `agent`, its environment, with the fake downward API values and
// Secrets, and the TLS volume's files replaced by real ones of role.
func agentConfig(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, podName, ns string, role mtls.Role) (agent.Config, error) {
	t.Helper()
	secrets, dirs := fakes(t)
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			switch p := e.ValueFrom.FieldRef.FieldPath; p {
			case "metadata.name":
				env[e.Name] = podName
			case "metadata.namespace":
				env[e.Name] = ns
			case "status.podIP":
				env[e.Name] = fakePodIP
			default:
				t.Fatalf("container %s: env %s from field %s, which this test does not fake", c.Name, e.Name, p)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			v, ok := secrets[e.ValueFrom.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("container %s: env %s from Secret key %q, which this test has no fake for", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = v
		default:
			t.Fatalf("container %s: env %s from a source this test does not fake", c.Name, e.Name)
		}
	}
	// The TLS Secret's mount is replaced by a directory of real files.
	tlsMount := ""
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				tlsMount = m.MountPath
			}
		}
	}
	fix := func(s string) string {
		s = expand(s, env)
		if tlsMount != "" {
			s = strings.ReplaceAll(s, tlsMount+"/", dirs[role]+"/")
		}
		return s
	}
	if len(c.Args) == 0 || c.Args[0] != "agent" {
		t.Fatalf("container %s: args %q do not start with the agent command", c.Name, c.Args)
	}
	var args []string
	for _, a := range c.Args[1:] {
		args = append(args, fix(a))
	}
	getenv := func(k string) string {
		v, ok := env[k]
		if !ok {
			return ""
		}
		return fix(v)
	}
	return agent.Load(args, getenv)
}

// findAgent returns the container that runs `tasker agent` in a pod,
// a regular container or a native sidecar (an init container that
// restarts always).
func findAgent(pod *corev1.PodSpec) (*corev1.Container, bool) {
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		if len(c.Args) > 0 && c.Args[0] == "agent" {
			return c, c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if len(c.Args) > 0 && c.Args[0] == "agent" {
			return c, true
		}
	}
	return nil, false
}

// quorum is the number of voters a Raft cluster of n needs.
func quorum(n int) int { return n/2 + 1 }

// leaveBudget is how long a server's termination may take: 'tasker leave'
// (a leadership transfer of up to 5 s, the removal through the leader,
// bounded by the RPC hold timeout, and up to 10 s for the leader to
// confirm it, agent/servers.go), then the graceful shutdown.
func leaveBudget(d agent.Config) time.Duration {
	return 5*time.Second + d.RPCHoldTimeout + 10*time.Second + d.ShutdownTimeout
}

// dump is for failure messages.
func dump(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(bytes.TrimSpace(b))
}
