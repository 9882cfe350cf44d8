package inject

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Config is what the injector puts into every pod: the sidecar's image,
// where the servers are, and which Secrets (in the pod's own namespace)
// hold the agents' shared secrets. It is read from a YAML file, the
// injector's ConfigMap in Kubernetes.
type Config struct {
	// Image is the sidecar's image, ghcr.io/tasker-run/tasker:<tag>.
	Image string `json:"image"`
	// ImagePullPolicy of the sidecar; IfNotPresent when empty.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// RetryJoin lists the servers' gossip addresses (host:port), such as
	// the headless Service tasker-server.tasker.svc:7422; the sidecar keeps
	// trying them until one answers.
	RetryJoin []string `json:"retryJoin"`
	// NativeSidecar puts the agent among the init containers with
	// restartPolicy: Always (Kubernetes 1.29 and later), so that it is up
	// before the app starts and stops after it. False puts it first among
	// the containers, for older clusters. True unless set.
	NativeSidecar *bool `json:"nativeSidecar,omitempty"`
	// Readiness is what makes the sidecar, and so the pod, ready: "live"
	// (the agent's API answers; the default) or "serving" (the agent also
	// has a Raft leader to write through). See docs/deploy.md.
	Readiness string `json:"readiness,omitempty"`
	// GossipKeySecret holds the gossip encryption key (tasker keygen),
	// given to the agent as TASKER_ENCRYPT. Empty name: no encryption.
	GossipKeySecret SecretKey `json:"gossipKeySecret,omitempty"`
	// ACLTokenSecret holds the agent token (-acl-agent-token), given as
	// TASKER_ACL_AGENT_TOKEN; with it the agent runs with -acl. Empty
	// name: ACLs off.
	ACLTokenSecret SecretKey `json:"aclTokenSecret,omitempty"`
	// TLSSecret names a Secret with ca.pem, cert.pem and key.pem (as deploy/kubernetes/secrets.example.yaml): the
	// agents' CA and a client agent's certificate ('tasker tls cert create
	// -client'). With it the agent runs with every verify setting on.
	// Empty: no agent-to-agent TLS.
	TLSSecret string `json:"tlsSecret,omitempty"`
	// Resources of the sidecar; the annotations tasker.io/cpu and
	// tasker.io/memory override the requests.
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// LogFormat is the agent's -log-format: text or json (default json,
	// for a cluster's log collector).
	LogFormat string `json:"logFormat,omitempty"`
}

// SecretKey is one key of a Secret in the pod's namespace.
type SecretKey struct {
	Name string `json:"name,omitempty"`
	Key  string `json:"key,omitempty"`
}

// The readiness settings.
const (
	ReadinessLive    = "live"
	ReadinessServing = "serving"
)

// DefaultConfig is a configuration with every optional setting at its
// default; Image and RetryJoin are still to be set.
func DefaultConfig() Config {
	return Config{
		ImagePullPolicy: corev1.PullIfNotPresent,
		Readiness:       ReadinessLive,
		LogFormat:       "json",
		// A client agent holds little: its memory is mostly the Go
		// runtime and its connections. No CPU limit: throttling the agent
		// delays every step dispatched to the pod.
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
	}
}

// LoadConfig reads a configuration file (YAML or JSON) over the
// defaults, strictly: an unknown key is an error, since a misspelt
// setting would otherwise be silently ignored in every pod.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), fmt.Errorf("config file: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig reads a configuration (YAML or JSON) over the defaults,
// strictly, and validates it.
func ParseConfig(b []byte) (Config, error) {
	cfg := DefaultConfig()
	if err := decodeStrict(b, &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// decodeStrict decodes YAML or JSON into v as the API server does a
// strictly validated object: keys match field names exactly, and an
// unknown or repeated key is an error. (sigs.k8s.io/yaml's UnmarshalStrict
// alone would match keys case-insensitively, as encoding/json does, and
// take retryjoin for retryJoin.)
func decodeStrict(b []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// Native reports whether the sidecar goes among the init containers.
func (c *Config) Native() bool { return c.NativeSidecar == nil || *c.NativeSidecar }

// Validate names every setting that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", setting, fmt.Sprintf(format, args...)))
	}
	if c.Image == "" || strings.ContainsAny(c.Image, " \t\n") {
		bad("image", "%q: want the sidecar's image, such as ghcr.io/tasker-run/tasker:0.1.0", c.Image)
	}
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		bad("imagePullPolicy", "%q: want Always, IfNotPresent or Never", c.ImagePullPolicy)
	}
	if len(c.RetryJoin) == 0 {
		bad("retryJoin", "is empty: list the servers' gossip address, such as tasker-server.tasker.svc:7422")
	}
	for _, a := range c.RetryJoin {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			bad("retryJoin", "%q is not host:port (the servers' gossip port, 7422 by default)", a)
		}
	}
	switch c.Readiness {
	case ReadinessLive, ReadinessServing:
	default:
		bad("readiness", "%q: want %s or %s", c.Readiness, ReadinessLive, ReadinessServing)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("logFormat", "%q: want text or json", c.LogFormat)
	}
	for _, s := range []struct {
		setting string
		sk      SecretKey
	}{{"gossipKeySecret", c.GossipKeySecret}, {"aclTokenSecret", c.ACLTokenSecret}} {
		if s.sk.Name == "" && s.sk.Key == "" {
			continue
		}
		if msgs := validation.IsDNS1123Subdomain(s.sk.Name); len(msgs) > 0 {
			bad(s.setting+".name", "%q is not a Secret name: %s", s.sk.Name, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsConfigMapKey(s.sk.Key); len(msgs) > 0 {
			bad(s.setting+".key", "%q is not a Secret key: %s", s.sk.Key, strings.Join(msgs, "; "))
		}
	}
	if c.TLSSecret != "" {
		if msgs := validation.IsDNS1123Subdomain(c.TLSSecret); len(msgs) > 0 {
			bad("tlsSecret", "%q is not a Secret name: %s", c.TLSSecret, strings.Join(msgs, "; "))
		}
	}
	for name, q := range c.Resources.Requests {
		if l, ok := c.Resources.Limits[name]; ok && q.Cmp(l) > 0 {
			bad("resources", "the %s request %s is above its limit %s", name, q.String(), l.String())
		}
	}
	return errors.Join(errs...)
}
