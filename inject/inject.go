// Package inject is the sidecar injector: it turns a Pod that asks for
// a Tasker agent (the annotation tasker.io/inject: "true") into the same
// Pod with the agent as a sidecar, answering a Kubernetes mutating
// admission webhook's AdmissionReview with a JSONPatch, as Dapr's and
// Istio's injectors do. server.go serves it over HTTPS; `tasker inject
// serve` runs that server.
//
// The patch only adds: the sidecar, its volumes, TASKER_ADDR on the
// app's containers and the tasker.io/injected annotation. It is built by
// hand rather than by diffing a re-encoded Pod, because re-encoding
// would drop any field newer than this build's k8s.io/api, and a diff
// would then remove it from the pod.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"

	"github.com/tasker-run/tasker/workflow"
)

// The annotations a pod may carry, and the one the injector sets.
const (
	// AnnotationInject "true" asks for the sidecar; "false" or none: no.
	AnnotationInject = "tasker.io/inject"
	// AnnotationSystem is the agent's -system label: the manifest system
	// whose apps run in the pod.
	AnnotationSystem = "tasker.io/system"
	// AnnotationImage overrides the sidecar's image.
	AnnotationImage = "tasker.io/image"
	// AnnotationCPU and AnnotationMemory override the sidecar's requests.
	AnnotationCPU    = "tasker.io/cpu"
	AnnotationMemory = "tasker.io/memory"
	// AnnotationInjected marks a pod the injector has patched; such a pod
	// is never patched again (a reinvocation, a re-applied pod spec).
	AnnotationInjected = "tasker.io/injected"
)

// The sidecar's fixed names and places. The ports are the agent's
// defaults: apps reach the local API on 127.0.0.1:7420, and other agents
// the pod's IP on 7421 (RPC) and 7422 (gossip).
const (
	ContainerName = "tasker"
	DataDir       = "/var/lib/tasker"
	TLSDir        = "/etc/tasker/tls"
	AddrEnv       = "TASKER_ADDR"
	AddrValue     = "http://127.0.0.1:7420"
	// taskerBin is the binary in the image (its ENTRYPOINT), which the
	// exec probes run.
	taskerBin = "/tasker"
)

// agentPorts are the ports the sidecar binds in the pod's network
// namespace, which its app containers share: an app declaring one of them
// would fail to start, or the agent would.
var agentPorts = map[int32]string{7420: "local API", 7421: "RPC", 7422: "gossip", 7423: "Raft"}

// Op is one RFC 6902 operation. The injector only adds.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// DeniedError is a pod the injector refuses: the message names the
// annotation or field at fault and the fix, for kubectl to show.
type DeniedError struct{ Msg string }

func (e *DeniedError) Error() string { return e.Msg }

func denied(format string, args ...any) error {
	return &DeniedError{Msg: fmt.Sprintf(format, args...)}
}

// Injector patches pods with one configuration.
type Injector struct {
	cfg Config
}

// New checks cfg and returns an injector for it.
func New(cfg Config) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Injector{cfg: cfg}, nil
}

// Result is the injector's answer about one pod.
type Result struct {
	// Patch is empty when the pod is left as it is.
	Patch []Op
	// Skipped says why the pod was left alone ("" when patched).
	Skipped string
	// Warnings go back to the client that created the pod (kubectl
	// prints them; a ReplicaSet's controller does not).
	Warnings []string
}

// Pod decides about one pod: a patch, nothing, or a *DeniedError.
func (in *Injector) Pod(pod *corev1.Pod) (Result, error) {
	ann := pod.Annotations // nil reads as empty
	want, ok := ann[AnnotationInject]
	if !ok {
		return Result{Skipped: "no " + AnnotationInject + " annotation"}, nil
	}
	switch want {
	case "true":
	case "false":
		return Result{Skipped: AnnotationInject + " is \"false\""}, nil
	default:
		return Result{}, denied("annotation %s: %q: want \"true\" or \"false\" (quoted in YAML: tasker.io/inject: \"true\")", AnnotationInject, want)
	}
	if _, ok := ann[AnnotationInjected]; ok {
		return Result{Skipped: "already injected (" + AnnotationInjected + ")"}, nil
	}
	if hasContainer(pod, ContainerName) {
		// A sidecar written by hand into the pod template, or injected
		// before: a second agent in the pod could not bind its ports.
		return Result{Skipped: "already has a container named " + ContainerName,
			Warnings: []string{"tasker.io/inject: the pod already has a container named \"tasker\"; no sidecar injected"}}, nil
	}
	if len(pod.Spec.Containers) == 0 {
		// The API server refuses such a pod after admission; a pod with
		// only our sidecar must not pass in its place.
		return Result{Skipped: "no containers"}, nil
	}
	if pod.Spec.HostNetwork {
		return Result{}, denied("the pod uses hostNetwork: its tasker sidecar would bind ports 7420-7423 on the node, where a second injected pod could not; drop hostNetwork or %s", AnnotationInject)
	}
	if err := checkPorts(pod); err != nil {
		return Result{}, err
	}
	side, err := in.sidecar(ann)
	if err != nil {
		return Result{}, err
	}
	var ops []Op
	native := in.cfg.Native()
	// TASKER_ADDR first: the sidecar's insertion below shifts indexes.
	ops = append(ops, addrOps("/spec/containers", pod.Spec.Containers)...)
	if native {
		// App init containers start after the native sidecar, so they can
		// use the agent too.
		ops = append(ops, addrOps("/spec/initContainers", pod.Spec.InitContainers)...)
	}
	vols, mounts := in.volumes(pod)
	side.VolumeMounts = mounts
	// Insert first: the kubelet starts init containers, and containers,
	// in order, so the agent starts before any app container.
	switch {
	case native && len(pod.Spec.InitContainers) == 0:
		ops = append(ops, Op{"add", "/spec/initContainers", []corev1.Container{side}})
	case native:
		ops = append(ops, Op{"add", "/spec/initContainers/0", side})
	default:
		ops = append(ops, Op{"add", "/spec/containers/0", side})
	}
	if len(pod.Spec.Volumes) == 0 {
		ops = append(ops, Op{"add", "/spec/volumes", vols})
	} else {
		for _, v := range vols {
			ops = append(ops, Op{"add", "/spec/volumes/-", v})
		}
	}
	// The annotations exist: tasker.io/inject is one of them.
	ops = append(ops, Op{"add", "/metadata/annotations/" + escape(AnnotationInjected), "true"})
	return Result{Patch: ops}, nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	is := func(c corev1.Container) bool { return c.Name == name }
	return slices.ContainsFunc(pod.Spec.Containers, is) || slices.ContainsFunc(pod.Spec.InitContainers, is)
}

func checkPorts(pod *corev1.Pod) error {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, p := range c.Ports {
			if what, ok := agentPorts[p.ContainerPort]; ok {
				return denied("container %q declares port %d, which the tasker sidecar binds (its %s port) in the pod's shared network: move the app to another port, or drop %s", c.Name, p.ContainerPort, what, AnnotationInject)
			}
		}
	}
	return nil
}

// addrOps sets TASKER_ADDR on each container lacking it. A value the app
// set itself is kept: it may point at a port the app proxies.
func addrOps(path string, cs []corev1.Container) []Op {
	var ops []Op
	env := corev1.EnvVar{Name: AddrEnv, Value: AddrValue}
	for i, c := range cs {
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == AddrEnv }) {
			continue
		}
		if len(c.Env) == 0 {
			ops = append(ops, Op{"add", fmt.Sprintf("%s/%d/env", path, i), []corev1.EnvVar{env}})
		} else {
			ops = append(ops, Op{"add", fmt.Sprintf("%s/%d/env/-", path, i), env})
		}
	}
	return ops
}

// volumes returns the sidecar's volumes and their mounts, named so as not
// to clash with the pod's own volumes.
func (in *Injector) volumes(pod *corev1.Pod) ([]corev1.Volume, []corev1.VolumeMount) {
	taken := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		taken[v.Name] = true
	}
	name := func(base string) string {
		n := base
		for i := 1; taken[n]; i++ {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		taken[n] = true
		return n
	}
	data := name("tasker-data")
	vols := []corev1.Volume{{Name: data, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	mounts := []corev1.VolumeMount{{Name: data, MountPath: DataDir}}
	if in.cfg.TLSSecret != "" {
		tls := name("tasker-tls")
		vols = append(vols, corev1.Volume{Name: tls, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: in.cfg.TLSSecret}}})
		mounts = append(mounts, corev1.VolumeMount{Name: tls, MountPath: TLSDir, ReadOnly: true})
	}
	return vols, mounts
}

// sidecar is the agent's container for a pod with these annotations.
func (in *Injector) sidecar(ann map[string]string) (corev1.Container, error) {
	cfg := in.cfg
	image := cfg.Image
	if v, ok := ann[AnnotationImage]; ok {
		if v == "" || strings.ContainsAny(v, " \t\n") {
			return corev1.Container{}, denied("annotation %s: %q is not an image reference; use one such as ghcr.io/tasker-run/tasker:0.1.0, or drop the annotation for %s", AnnotationImage, v, cfg.Image)
		}
		image = v
	}
	// $(VAR) in args is expanded by the kubelet from the container's env.
	// The namespace makes the node name unique in the cluster's gossip:
	// two namespaces may each have a pod worker-0.
	args := []string{"agent",
		"-node=$(POD_NAME).$(POD_NAMESPACE)",
		"-bind=$(POD_IP)",
		"-data-dir=" + DataDir,
		"-log-format=" + cfg.LogFormat,
	}
	for _, j := range cfg.RetryJoin {
		args = append(args, "-retry-join="+j)
	}
	if v, ok := ann[AnnotationSystem]; ok {
		if !workflow.ValidSystemName(v) {
			return corev1.Container{}, denied("annotation %s: %q is not a system name: use %s, as under your manifest's systems", AnnotationSystem, v, workflow.SystemNameRule)
		}
		args = append(args, "-system="+v)
	}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
	}
	if s := cfg.GossipKeySecret; s.Name != "" {
		env = append(env, corev1.EnvVar{Name: "TASKER_ENCRYPT", ValueFrom: secretRef(s)})
	}
	if s := cfg.ACLTokenSecret; s.Name != "" {
		args = append(args, "-acl")
		env = append(env, corev1.EnvVar{Name: "TASKER_ACL_AGENT_TOKEN", ValueFrom: secretRef(s)})
	}
	if cfg.TLSSecret != "" {
		args = append(args,
			"-tls-ca-file="+TLSDir+"/ca.pem", "-tls-cert-file="+TLSDir+"/cert.pem", "-tls-key-file="+TLSDir+"/key.pem",
			"-verify-incoming", "-verify-outgoing", "-verify-server-hostname")
	}
	res := *cfg.Resources.DeepCopy()
	for _, o := range []struct {
		ann  string
		name corev1.ResourceName
	}{{AnnotationCPU, corev1.ResourceCPU}, {AnnotationMemory, corev1.ResourceMemory}} {
		v, ok := ann[o.ann]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			return corev1.Container{}, denied("annotation %s: %q is not a positive quantity; use one such as %s", o.ann, v, map[corev1.ResourceName]string{corev1.ResourceCPU: "100m", corev1.ResourceMemory: "128Mi"}[o.name])
		}
		if res.Requests == nil {
			res.Requests = corev1.ResourceList{}
		}
		res.Requests[o.name] = q
		// A request above the limit is invalid: the limit follows it up.
		if l, ok := res.Limits[o.name]; ok && q.Cmp(l) > 0 {
			res.Limits[o.name] = q
		}
	}
	probe := func(period, failures int32, arg ...string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: append([]string{taskerBin, "health"}, arg...)}},
			PeriodSeconds:  period,
			TimeoutSeconds: 3, FailureThreshold: failures, SuccessThreshold: 1,
		}
	}
	ready := probe(5, 3)
	if cfg.Readiness == ReadinessLive {
		ready = probe(5, 3, "-live")
	}
	always := corev1.ContainerRestartPolicyAlways
	c := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: "tasker-rpc", ContainerPort: 7421, Protocol: corev1.ProtocolTCP},
			{Name: "tasker-gossip", ContainerPort: 7422, Protocol: corev1.ProtocolTCP},
			{Name: "tasker-gossip-u", ContainerPort: 7422, Protocol: corev1.ProtocolUDP},
		},
		Resources: res,
		// The app starts only once the agent's API answers (native
		// sidecars wait for the startup probe): 1 s steps, up to a minute.
		StartupProbe:             probe(1, 60, "-live"),
		LivenessProbe:            probe(10, 3, "-live"),
		ReadinessProbe:           ready,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          securityContext(),
	}
	if in.cfg.Native() {
		c.RestartPolicy = &always
	}
	return c, nil
}

func secretRef(s SecretKey) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: s.Name}, Key: s.Key}}
}

// securityContext is the restricted Pod Security Standard's, with the
// image's non-root user: the agent needs no privilege and writes only to
// its data volume.
func securityContext() *corev1.SecurityContext {
	uid := int64(65532)
	yes, no := true, false
	return &corev1.SecurityContext{
		RunAsUser:                &uid,
		RunAsGroup:               &uid,
		RunAsNonRoot:             &yes,
		ReadOnlyRootFilesystem:   &yes,
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// escape makes s one JSON Pointer token (RFC 6901).
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// Review answers one AdmissionReview request. An error is a request the
// injector cannot read (the caller's fault: HTTP 400); a pod it refuses is
// an answer with allowed: false.
func (in *Injector) Review(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result, error) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	// Only new pods: the containers of a pod never change after creation.
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return resp, Result{Skipped: fmt.Sprintf("not a pod's creation (%s %s%s)", req.Operation, req.Kind.Kind, sub(req.SubResource))}, nil
	}
	var pod corev1.Pod
	// As the API server decodes: field names match exactly (encoding/json
	// alone would read "Metadata" as metadata, and the patch would then
	// name paths the object lacks). Not strict: the API server may send
	// fields newer than this build's k8s.io/api.
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return nil, Result{}, fmt.Errorf("request.object is not a Pod: %w", err)
	}
	res, err := in.Pod(&pod)
	var d *DeniedError
	if errors.As(err, &d) {
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: 400, Reason: metav1.StatusReasonBadRequest, Message: d.Msg}
		return resp, res, nil
	}
	if err != nil {
		return nil, res, err
	}
	resp.Warnings = res.Warnings
	if len(res.Patch) > 0 {
		b, err := json.Marshal(res.Patch)
		if err != nil {
			return nil, res, fmt.Errorf("encode the patch: %w", err)
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = b, &pt
	}
	return resp, res, nil
}

func sub(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}
