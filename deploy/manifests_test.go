package deploy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"

	"github.com/tasker-run/tasker/agent"
	"github.com/tasker-run/tasker/mtls"
)

// serverWant is what a set of manifests should run.
type serverWant struct {
	replicas     int
	namespace    string // where the servers run
	storageClass string // "" for the cluster's default
	storageSize  string
	encrypt      bool
	tls          bool
	acl          bool
}

// check is one assertion of a table.
type check struct {
	what string
	ok   bool
	got  any
}

func run(t *testing.T, checks []check) {
	t.Helper()
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s; got %v", c.what, c.got)
		}
	}
}

type named interface{ GetName() string }

func byName[T named](t *testing.T, items []T, kind, name string) T {
	t.Helper()
	for _, it := range items {
		if it.GetName() == name {
			return it
		}
	}
	var names []string
	for _, it := range items {
		names = append(names, it.GetName())
	}
	t.Fatalf("no %s named %q (have %v)", kind, name, names)
	var zero T
	return zero
}

// selects reports whether a selector's labels are all on the pod.
func selects(selector, labels map[string]string) bool {
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

func execOf(h *corev1.ProbeHandler) []string {
	if h == nil || h.Exec == nil {
		return nil
	}
	return h.Exec.Command
}

func probeCmd(p *corev1.Probe) []string {
	if p == nil {
		return nil
	}
	return execOf(&p.ProbeHandler)
}

// hardened checks the container's security context: the restricted Pod
// Security Standard and a read-only root filesystem.
func hardened(c *corev1.Container) []check {
	sc := c.SecurityContext
	if sc == nil {
		return []check{{c.Name + ": has a securityContext", false, nil}}
	}
	return []check{
		{c.Name + ": runAsNonRoot", sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, sc.RunAsNonRoot},
		{c.Name + ": runAsUser 65532 (the image's non-root user)", sc.RunAsUser != nil && *sc.RunAsUser == 65532, sc.RunAsUser},
		{c.Name + ": allowPrivilegeEscalation false", sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, sc.AllowPrivilegeEscalation},
		{c.Name + ": readOnlyRootFilesystem", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, sc.ReadOnlyRootFilesystem},
		{c.Name + ": capabilities drop ALL", sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0, dump(sc.Capabilities)},
		{c.Name + ": seccomp RuntimeDefault", sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault, dump(sc.SeccompProfile)},
		{c.Name + ": not privileged", sc.Privileged == nil || !*sc.Privileged, sc.Privileged},
	}
}

func podHardened(pod *corev1.PodSpec) []check {
	sc := pod.SecurityContext
	if sc == nil {
		return []check{{"the pod has a securityContext", false, nil}}
	}
	return []check{
		{"pod runAsNonRoot", sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, sc.RunAsNonRoot},
		{"pod runAsUser 65532", sc.RunAsUser != nil && *sc.RunAsUser == 65532, sc.RunAsUser},
		{"pod fsGroup 65532 (volumes writable by the agent)", sc.FSGroup != nil && *sc.FSGroup == 65532, sc.FSGroup},
		{"pod seccomp RuntimeDefault", sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault, dump(sc.SeccompProfile)},
		{"no ServiceAccount token in the pod", pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken, pod.AutomountServiceAccountToken},
		// Service links would add <SERVICE>_PORT variables, and the agent
		// reads TASKER_* variables as settings.
		{"enableServiceLinks false", pod.EnableServiceLinks != nil && !*pod.EnableServiceLinks, pod.EnableServiceLinks},
		{"no host network", !pod.HostNetwork, pod.HostNetwork},
	}
}

func resourced(c *corev1.Container) []check {
	r := c.Resources
	return []check{
		{c.Name + ": CPU and memory requests", !r.Requests.Cpu().IsZero() && !r.Requests.Memory().IsZero(), dump(r.Requests)},
		{c.Name + ": a memory limit", !r.Limits.Memory().IsZero(), dump(r.Limits)},
		{c.Name + ": a CPU limit", !r.Limits.Cpu().IsZero(), dump(r.Limits)},
		{c.Name + ": requests within limits", r.Requests.Cpu().Cmp(*r.Limits.Cpu()) <= 0 && r.Requests.Memory().Cmp(*r.Limits.Memory()) <= 0, dump(r)},
	}
}

type portKey struct {
	port  int32
	proto corev1.Protocol
}

// agentPorts are the ports an agent's pod must expose, from the agent's
// own defaults: never the local API's.
func agentPorts(d agent.Config, server bool) map[string]portKey {
	p := map[string]portKey{
		"rpc":        {int32(d.RPCPort), corev1.ProtocolTCP},
		"gossip":     {int32(d.GossipPort), corev1.ProtocolTCP},
		"gossip-udp": {int32(d.GossipPort), corev1.ProtocolUDP},
	}
	if server {
		p["raft"] = portKey{int32(d.RaftPort), corev1.ProtocolTCP}
	}
	return p
}

func containerPorts(c *corev1.Container) map[string]portKey {
	out := map[string]portKey{}
	for _, p := range c.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		out[p.Name] = portKey{p.ContainerPort, proto}
	}
	return out
}

// localAPIUnexposed: no container of the pod publishes the local API port.
func localAPIUnexposed(d agent.Config, pod *corev1.PodSpec) check {
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.ContainerPort == int32(d.HTTPPort) || p.HostPort != 0 {
					return check{"no container publishes the local API or a host port", false, c.Name + ": " + dump(p)}
				}
			}
		}
	}
	return check{"", true, nil}
}

func mountPath(c *corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// configChecks are what an agent's loaded configuration must say in any
// pod: the local API on loopback at the default port, agent-to-agent
// traffic on the pod IP at the default ports.
func configChecks(d agent.Config, cfg agent.Config, dataMount string) []check {
	ip := net.ParseIP(cfg.ClientAddr)
	return []check{
		{"the local API is on loopback (-client)", ip != nil && ip.IsLoopback(), cfg.ClientAddr},
		{"the local API on the default port", cfg.HTTPPort == d.HTTPPort, cfg.HTTPPort},
		{"-bind is the pod IP", cfg.BindAddr == fakePodIP, cfg.BindAddr},
		{"RPC, gossip and Raft on the default ports", cfg.RPCPort == d.RPCPort && cfg.GossipPort == d.GossipPort && cfg.RaftPort == d.RaftPort,
			[]int{cfg.RPCPort, cfg.GossipPort, cfg.RaftPort}},
		{"-data-dir is the data volume's mount", dataMount != "" && cfg.DataDir == dataMount, cfg.DataDir + " vs mount " + dataMount},
	}
}

// checkServers checks the servers' StatefulSet, headless Service,
// ServiceAccount and PodDisruptionBudget.
func checkServers(t *testing.T, o *objects, w serverWant) {
	t.Helper()
	d := agent.Defaults()
	sts := byName(t, o.statefulSets, "StatefulSet", "tasker-server")
	svc := byName(t, o.services, "Service", sts.Spec.ServiceName)
	pod := &sts.Spec.Template.Spec
	labels := sts.Spec.Template.Labels
	c, _ := findAgent(pod)
	if c == nil {
		t.Fatal("the server pod runs no `agent` container")
	}
	run(t, []check{
		{"replicas", sts.Spec.Replicas != nil && int(*sts.Spec.Replicas) == w.replicas, sts.Spec.Replicas},
		{"podManagementPolicy Parallel (no server is Ready alone)", sts.Spec.PodManagementPolicy == "Parallel", sts.Spec.PodManagementPolicy},
		{"minReadySeconds holds a rollout until a restarted server is promoted", sts.Spec.MinReadySeconds > 0, sts.Spec.MinReadySeconds},
		{"the StatefulSet's selector selects its pods", selects(sts.Spec.Selector.MatchLabels, labels), dump(sts.Spec.Selector)},
		{"the Service is headless", svc.Spec.ClusterIP == corev1.ClusterIPNone, svc.Spec.ClusterIP},
		{"the Service publishes servers before they are Ready", svc.Spec.PublishNotReadyAddresses, svc.Spec.PublishNotReadyAddresses},
		{"the Service selects the server pods", selects(svc.Spec.Selector, labels), dump(svc.Spec.Selector)},
		{"a ServiceAccount", pod.ServiceAccountName != "", pod.ServiceAccountName},
		{"the image's binary", strings.HasPrefix(c.Image, "ghcr.io/tasker-run/tasker:") && !strings.HasSuffix(c.Image, ":"), c.Image},
		localAPIUnexposed(d, pod),
	})
	sa := byName(t, o.serviceAccounts, "ServiceAccount", pod.ServiceAccountName)
	run(t, []check{{"the ServiceAccount mounts no token", sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken, sa.AutomountServiceAccountToken}})
	run(t, podHardened(pod))
	run(t, hardened(c))
	run(t, resourced(c))

	// Never two servers on one node.
	anti := false
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil && selects(term.LabelSelector.MatchLabels, labels) {
				anti = true
			}
		}
	}
	run(t, []check{{"a required pod anti-affinity on kubernetes.io/hostname selecting the servers", anti, dump(pod.Affinity)}})

	// Probes run `tasker health` in the container; the API is on loopback.
	var preStop []string
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		preStop = execOf(&corev1.ProbeHandler{Exec: c.Lifecycle.PreStop.Exec})
	}
	grace := int64(leaveBudget(d).Seconds())
	run(t, []check{
		{"startupProbe exec `tasker health -live`", slices.Equal(probeCmd(c.StartupProbe), []string{"/tasker", "health", "-live"}), probeCmd(c.StartupProbe)},
		{"livenessProbe exec `tasker health -live` (a server waiting for quorum is not restarted)", slices.Equal(probeCmd(c.LivenessProbe), []string{"/tasker", "health", "-live"}), probeCmd(c.LivenessProbe)},
		{"readinessProbe exec `tasker health` (SERVING: a leader)", slices.Equal(probeCmd(c.ReadinessProbe), []string{"/tasker", "health"}), probeCmd(c.ReadinessProbe)},
		{"probe timeouts above tasker health's own 2 s", c.ReadinessProbe != nil && c.LivenessProbe != nil && c.ReadinessProbe.TimeoutSeconds > 2 && c.LivenessProbe.TimeoutSeconds > 2, dump(c.ReadinessProbe)},
		{"preStop exec `tasker leave`", slices.Equal(preStop, []string{"/tasker", "leave"}), preStop},
		{fmt.Sprintf("terminationGracePeriodSeconds covers leave and shutdown (%d s)", grace),
			pod.TerminationGracePeriodSeconds != nil && *pod.TerminationGracePeriodSeconds >= grace, pod.TerminationGracePeriodSeconds},
	})

	// Ports: the container's and the Service's are the agent's defaults.
	want := agentPorts(d, true)
	got := containerPorts(c)
	run(t, []check{{fmt.Sprintf("container ports are the agent's defaults %v", want), fmt.Sprint(got) == fmt.Sprint(want), got}})
	svcPorts := map[string]portKey{}
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		target, ok := got[p.TargetPort.String()]
		if p.TargetPort.IntValue() != 0 {
			target, ok = portKey{int32(p.TargetPort.IntValue()), p.Protocol}, true
		}
		run(t, []check{{fmt.Sprintf("Service port %s targets a container port of the same number and protocol", p.Name),
			ok && target == portKey{p.Port, p.Protocol}, dump(p)}})
		svcPorts[p.Name] = portKey{p.Port, p.Protocol}
	}
	run(t, []check{{fmt.Sprintf("Service ports are the agent's defaults %v", want), fmt.Sprint(svcPorts) == fmt.Sprint(want), svcPorts}})

	// The data volume.
	var claim *corev1.PersistentVolumeClaim
	for i := range sts.Spec.VolumeClaimTemplates {
		if sts.Spec.VolumeClaimTemplates[i].Name == "data" {
			claim = &sts.Spec.VolumeClaimTemplates[i]
		}
	}
	if claim == nil {
		t.Fatal("no volumeClaimTemplate named data")
	}
	class := ""
	if claim.Spec.StorageClassName != nil {
		class = *claim.Spec.StorageClassName
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	run(t, []check{
		{"the claim's storage class", class == w.storageClass, class},
		{"the claim's size " + w.storageSize, size.String() == w.storageSize, size.String()},
		{"the claim is ReadWriteOnce", slices.Equal(claim.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}), claim.Spec.AccessModes},
		{"the data volume is mounted", mountPath(c, "data") != "", c.VolumeMounts},
	})

	// Secrets come from Secrets, never from literals in args or env.
	for _, a := range c.Args {
		for _, flag := range []string{"-encrypt", "-acl-initial-management-token", "-acl-agent-token"} {
			if strings.HasPrefix(a, flag) {
				t.Errorf("a secret in args: %q; use the TASKER_ environment from a Secret", a)
			}
		}
	}
	for _, e := range c.Env {
		if (e.Name == "TASKER_ENCRYPT" || strings.Contains(e.Name, "TOKEN")) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s is not from a Secret", e.Name)
		}
	}
	if w.acl {
		// preStop's `tasker leave` is a management call.
		var mgmt, cli string
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
				switch e.Name {
				case "TASKER_ACL_INITIAL_MANAGEMENT_TOKEN":
					mgmt = ref
				case "TASKER_TOKEN":
					cli = ref
				}
			}
		}
		run(t, []check{{"with ACLs, the CLI in the pod (preStop's leave) holds the management token", mgmt != "" && cli == mgmt, cli + " vs " + mgmt}})
	}

	// Each server's configuration, loaded by the agent's own loader.
	var wantJoin []string
	for i := 0; i < w.replicas; i++ {
		// A StatefulSet pod's DNS name through its headless Service.
		wantJoin = append(wantJoin, fmt.Sprintf("%s-%d.%s.%s.svc:%d", sts.Name, i, svc.Name, w.namespace, d.GossipPort))
	}
	for i := 0; i < w.replicas; i++ {
		podName := fmt.Sprintf("%s-%d", sts.Name, i)
		cfg, err := agentConfig(t, pod, c, podName, w.namespace, mtls.RoleServer)
		if err != nil {
			t.Fatalf("%s: the agent refuses its settings: %v", podName, err)
		}
		join := slices.Sorted(slices.Values(cfg.RetryJoin))
		run(t, append(configChecks(d, cfg, mountPath(c, "data")), []check{
			{podName + ": -server", cfg.Server, cfg.Server},
			{podName + ": -node is the pod name (the stable Raft id)", cfg.NodeName == podName, cfg.NodeName},
			{podName + ": -bootstrap-expect is the replica count", cfg.BootstrapExpect == w.replicas, cfg.BootstrapExpect},
			{fmt.Sprintf("%s: -retry-join names every server's pod DNS %v", podName, wantJoin), slices.Equal(join, wantJoin), join},
			{podName + ": gossip encryption", (cfg.Encrypt != "") == w.encrypt, cfg.Encrypt != ""},
			{podName + ": TLS", (cfg.TLSCertFile != "") == w.tls && cfg.VerifyIncoming == w.tls && cfg.VerifyOutgoing == w.tls && cfg.VerifyServerHostname == w.tls,
				[]bool{cfg.TLSCertFile != "", cfg.VerifyIncoming, cfg.VerifyOutgoing, cfg.VerifyServerHostname}},
			{podName + ": ACLs", cfg.ACLEnabled == w.acl, cfg.ACLEnabled},
		}...))
	}

	// The budget keeps a quorum, and lets a drain through.
	var pdbs []string
	for _, p := range o.pdbs {
		if p.Spec.Selector == nil || !selects(p.Spec.Selector.MatchLabels, labels) {
			continue
		}
		pdbs = append(pdbs, p.Name)
		n, q := w.replicas, quorum(w.replicas)
		switch {
		case p.Spec.MaxUnavailable != nil:
			v := p.Spec.MaxUnavailable.IntValue()
			if p.Spec.MaxUnavailable.String() != strconv.Itoa(v) {
				t.Errorf("PDB %s: maxUnavailable %s is a percentage; use a count", p.Name, p.Spec.MaxUnavailable.String())
			}
			run(t, []check{
				{fmt.Sprintf("PDB %s: %d servers minus maxUnavailable keep the quorum of %d", p.Name, n, q), n-v >= q, v},
				{fmt.Sprintf("PDB %s: maxUnavailable lets a drain through", p.Name), v >= 1, v},
			})
		case p.Spec.MinAvailable != nil:
			v := p.Spec.MinAvailable.IntValue()
			run(t, []check{
				{fmt.Sprintf("PDB %s: minAvailable is at least the quorum of %d", p.Name, q), v >= q, v},
				{fmt.Sprintf("PDB %s: minAvailable lets a drain through", p.Name), v < n, v},
			})
		default:
			t.Errorf("PDB %s sets neither maxUnavailable nor minAvailable", p.Name)
		}
	}
	if w.replicas > 1 && len(pdbs) != 1 {
		t.Errorf("want one PodDisruptionBudget for the servers, have %v", pdbs)
	}
	if w.replicas == 1 && len(pdbs) != 0 {
		t.Errorf("one server has no quorum to keep, and a budget would only block drains; have %v", pdbs)
	}
}

// TestPlainManifests: deploy/kubernetes, decoded strictly.
func TestPlainManifests(t *testing.T) {
	o, k := loadManifests(t)
	t.Run("servers", func(t *testing.T) {
		checkServers(t, o, serverWant{replicas: 3, namespace: k.Namespace, storageSize: "10Gi", encrypt: true, tls: true, acl: true})
	})
	t.Run("sidecar", func(t *testing.T) { checkSidecar(t, o, k.Namespace) })
	t.Run("secrets", func(t *testing.T) { checkSecretRefs(t, o) })
}

// checkSidecar checks the example app's Deployment and its agent.
func checkSidecar(t *testing.T, o *objects, ns string) {
	d := agent.Defaults()
	dep := byName(t, o.deployments, "Deployment", "payments")
	pod := &dep.Spec.Template.Spec
	c, native := findAgent(pod)
	if c == nil {
		t.Fatal("the app's pod runs no `agent` container")
	}
	run(t, []check{
		{"the agent runs for the pod's life (a container, or an init container with restartPolicy Always)", native, c.RestartPolicy},
		{"the agent has no preStop (SIGTERM makes a client agent leave gossip)", c.Lifecycle == nil || c.Lifecycle.PreStop == nil, dump(c.Lifecycle)},
		localAPIUnexposed(d, pod),
	})
	run(t, podHardened(pod))
	var app []corev1.Container
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for i := range cs {
			run(t, hardened(&cs[i]))
			run(t, resourced(&cs[i]))
			if cs[i].Name != c.Name {
				app = append(app, cs[i])
			}
		}
	}
	if len(app) == 0 {
		t.Fatal("no app container beside the agent")
	}
	for _, a := range app {
		addr := ""
		for _, e := range a.Env {
			if e.Name == "TASKER_ADDR" {
				addr = e.Value
			}
		}
		run(t, []check{{a.Name + ": TASKER_ADDR is the agent's loopback API", addr == fmt.Sprintf("http://127.0.0.1:%d", d.HTTPPort), addr}})
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
	}{{"startup", c.StartupProbe}, {"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}} {
		// Any answer: an election among the servers must not take every
		// app pod out of its Services.
		run(t, []check{{"sidecar " + p.name + "Probe exec `tasker health -live`", slices.Equal(probeCmd(p.probe), []string{"/tasker", "health", "-live"}), probeCmd(p.probe)}})
	}
	want := agentPorts(d, false)
	run(t, []check{{fmt.Sprintf("sidecar ports are the agent's defaults %v", want), fmt.Sprint(containerPorts(c)) == fmt.Sprint(want), containerPorts(c)}})

	for _, a := range c.Args {
		if strings.HasPrefix(a, "-client") || strings.HasPrefix(a, "-http-port") {
			t.Errorf("the sidecar sets %q: the local API must stay on its default, loopback and 7420", a)
		}
	}
	cfg, err := agentConfig(t, pod, c, "payments-7d9f8-abcde", ns, mtls.RoleClient)
	if err != nil {
		t.Fatalf("the sidecar agent refuses its settings: %v", err)
	}
	var tlsSecret, dataMount string
	dataEmptyDir := false
	for _, v := range pod.Volumes {
		m := mountPath(c, v.Name)
		if m == "" {
			continue
		}
		if v.Secret != nil {
			tlsSecret = v.Secret.SecretName
		}
		if m == cfg.DataDir {
			dataMount, dataEmptyDir = m, v.EmptyDir != nil
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && strings.Contains(e.ValueFrom.SecretKeyRef.Key, "management") {
			t.Errorf("the sidecar holds the management token (%s): an app pod needs only the agent token", e.Name)
		}
	}
	server := byName(t, o.statefulSets, "StatefulSet", "tasker-server")
	for _, v := range server.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == tlsSecret {
			t.Errorf("the sidecar mounts the servers' TLS Secret %s: a client agent gets a client certificate", tlsSecret)
		}
	}
	checks := append(configChecks(d, cfg, dataMount), []check{
		{"a client agent (no -server)", !cfg.Server, cfg.Server},
		{"the data dir is an emptyDir", dataEmptyDir, cfg.DataDir},
		{"gossip encryption, TLS and ACLs as on the servers", cfg.Encrypt != "" && cfg.TLSCertFile != "" && cfg.VerifyIncoming && cfg.VerifyOutgoing && cfg.VerifyServerHostname && cfg.ACLEnabled, dump(cfg)},
		{"-retry-join is set", len(cfg.RetryJoin) > 0, cfg.RetryJoin},
	}...)
	run(t, checks)
	svc := byName(t, o.services, "Service", server.Spec.ServiceName)
	for _, addr := range cfg.RetryJoin {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		// The headless Service's name, which resolves to every server pod.
		run(t, []check{{fmt.Sprintf("-retry-join %s names the headless Service %s.%s.svc and the gossip port %d", addr, svc.Name, ns, d.GossipPort),
			host == svc.Name+"."+ns+".svc" && port == strconv.Itoa(d.GossipPort), addr}})
	}
}

// checkSecretRefs: every Secret a manifest reads is in
// secrets.example.yaml, with the key it reads.
func checkSecretRefs(t *testing.T, o *objects) {
	have := map[string]bool{}
	for _, s := range o.secrets {
		for k := range s.StringData {
			have[s.Name+"/"+k] = true
		}
	}
	var pods []*corev1.PodSpec
	for _, s := range o.statefulSets {
		pods = append(pods, &s.Spec.Template.Spec)
	}
	for _, d := range o.deployments {
		pods = append(pods, &d.Spec.Template.Spec)
	}
	for _, pod := range pods {
		for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
			for _, c := range cs {
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						ref := e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
						run(t, []check{{c.Name + ": secrets.example.yaml has " + ref, have[ref], e.Name}})
					}
				}
			}
		}
		for _, v := range pod.Volumes {
			if v.Secret != nil {
				for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
					ref := v.Secret.SecretName + "/" + f
					run(t, []check{{"secrets.example.yaml has " + ref, have[ref], v.Name}})
				}
			}
		}
	}
}

// The chart's overrides: five servers, TLS and ACLs on, a storage class.
var overrides = map[string]any{
	"server": map[string]any{
		"replicas": 5,
		"storage":  map[string]any{"size": "50Gi", "storageClass": "fast-ssd"},
	},
	"tls": map[string]any{"enabled": true},
	"acl": map[string]any{"enabled": true},
}

// TestChartRenders renders the chart as helm install would and decodes
// every manifest strictly.
func TestChartRenders(t *testing.T) {
	for _, tt := range []struct {
		name string
		vals map[string]any
		want serverWant
	}{
		{"defaults", nil, serverWant{replicas: 3, namespace: releaseNS, storageSize: "10Gi", encrypt: true}},
		{"five servers, TLS, ACLs, storage class", overrides,
			serverWant{replicas: 5, namespace: releaseNS, storageClass: "fast-ssd", storageSize: "50Gi", encrypt: true, tls: true, acl: true}},
		{"one server, no gossip encryption", map[string]any{"server": map[string]any{"replicas": 1}, "gossip": map[string]any{"encryption": map[string]any{"enabled": false}}},
			serverWant{replicas: 1, namespace: releaseNS, storageSize: "10Gi"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, notes := renderObjects(t, tt.vals)
			checkServers(t, o, tt.want)
			join := fmt.Sprintf("-retry-join=tasker-server.%s.svc:%d", releaseNS, agent.Defaults().GossipPort)
			if !strings.Contains(notes, join) {
				t.Errorf("NOTES.txt does not tell a sidecar to %s:\n%s", join, notes)
			}
		})
	}
}

// TestChartInjector renders the sidecar injector (off by default): its
// objects decode strictly, and the webhook reaches the injector's Service
// on the port the injector serves, only for annotated pods, failing closed.
func TestChartInjector(t *testing.T) {
	if o, _ := renderObjects(t, nil); len(o.webhooks) != 0 {
		t.Fatal("the injector is off by default, yet the chart renders a webhook")
	}
	o, _ := renderObjects(t, map[string]any{"injector": map[string]any{"enabled": true, "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}})
	if len(o.webhooks) != 1 || len(o.webhooks[0].Webhooks) != 1 {
		t.Fatalf("want one MutatingWebhookConfiguration with one webhook, got %d", len(o.webhooks))
	}
	wh := o.webhooks[0].Webhooks[0]
	dep := byName(t, o.deployments, "Deployment", "tasker-injector")
	svc := byName(t, o.services, "Service", "tasker-injector")
	ref := wh.ClientConfig.Service
	var checks []check
	checks = append(checks,
		check{"the webhook calls the injector's Service", ref != nil && ref.Name == svc.Name && ref.Namespace == releaseNS && ref.Path != nil && *ref.Path == "/mutate", nil},
		check{"a CA bundle", len(wh.ClientConfig.CABundle) > 0, nil},
		check{"AdmissionReview v1 only", len(wh.AdmissionReviewVersions) == 1 && wh.AdmissionReviewVersions[0] == "v1", nil},
		check{"no side effects", wh.SideEffects != nil && *wh.SideEffects == "None", nil},
		check{"fails closed", wh.FailurePolicy != nil && *wh.FailurePolicy == "Fail", nil},
		check{"only pods that ask, by the annotation", len(wh.MatchConditions) > 0 && strings.Contains(wh.MatchConditions[0].Expression, "tasker.io/inject"), nil},
		check{"the Service selects the injector's pods", selects(svc.Spec.Selector, dep.Spec.Template.Labels), nil},
	)
	// The injector is not an agent: no volume to own, no TASKER_* settings
	// from service links, and no CPU limit (throttling would add latency to
	// every pod creation); its containers are hardened all the same.
	pod := &dep.Spec.Template.Spec
	checks = append(checks, check{"runs as non-root", pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot, pod.SecurityContext})
	for i := range pod.Containers {
		c := &pod.Containers[i]
		checks = append(checks, hardened(c)...)
		checks = append(checks, check{c.Name + ": memory and CPU requests, a memory limit", !c.Resources.Requests.Cpu().IsZero() && !c.Resources.Requests.Memory().IsZero() && !c.Resources.Limits.Memory().IsZero(), c.Resources})
	}
	run(t, checks)
}

// TestChartLint: helm lint finds nothing worse than INFO.
func TestChartLint(t *testing.T) {
	for _, tt := range []struct {
		name string
		vals map[string]any
	}{{"defaults", nil}, {"overrides", overrides}} {
		t.Run(tt.name, func(t *testing.T) {
			kv := kubeVersion
			res := lint.AllWithKubeVersion(chartDir, tt.vals, releaseNS, &kv)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestChartRejects: values that would break the quorum do not render.
func TestChartRejects(t *testing.T) {
	for _, tt := range []struct {
		name      string
		vals      map[string]any
		noSchema  bool // test the template's own check, without values.schema.json
		wantError string
	}{
		{"an even replica count", map[string]any{"server": map[string]any{"replicas": 4}}, false, "replicas"},
		{"no servers", map[string]any{"server": map[string]any{"replicas": 0}}, false, "replicas"},
		{"more than -bootstrap-expect takes", map[string]any{"server": map[string]any{"replicas": 11}}, false, "replicas"},
		{"an even replica count, template check", map[string]any{"server": map[string]any{"replicas": 2}}, true, "server.replicas is 2: use an odd number"},
		{"eleven, template check", map[string]any{"server": map[string]any{"replicas": 11}}, true, "server.replicas is 11: use an odd number"},
		{"a budget that loses the quorum", map[string]any{"server": map[string]any{"podDisruptionBudget": map[string]any{"maxUnavailable": 2}}}, true, "maxUnavailable is 2: with 3 servers at most 1"},
		{"the injector without the CA bundle of its certificate", map[string]any{"injector": map[string]any{"enabled": true}}, false, "caBundle"},
		{"a budget that blocks drains", map[string]any{"server": map[string]any{"podDisruptionBudget": map[string]any{"maxUnavailable": 0}}}, true, "at least 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch := loadChart(t)
			if tt.noSchema {
				ch.Schema = nil
			}
			_, err := render(ch, tt.vals)
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Errorf("render: %v, want an error mentioning %q", err, tt.wantError)
			}
		})
	}
}

// TestStrictDecoding: the decoder this file relies on refuses a field the
// Kubernetes type does not have, as the API server would.
func TestStrictDecoding(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicaz: 3}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1, protocl: UDP}]}\n",
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailable: 1, maxUnavailable: 2}\n",
		"apiVersion: apps/v1beta1\nkind: StatefulSet\nmetadata: {name: x}\n",
		"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
	} {
		if err := (&objects{}).decode("test", []byte(doc), false); err == nil {
			t.Errorf("decoded without an error:\n%s", doc)
		}
	}
}
