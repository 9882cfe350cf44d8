package e2e

// The network lab: agents as separate hosts, each in its own Linux network
// namespace on one bridge, so that a test can cut the network between
// them as a real partition does.
//
//	bridge tk<pid>-<r> (10.213.X.1/24, the test process)
//	  ├── veth ── ns tasker-<pid>-<r>-server-0   eth0 10.213.X.2
//	  ├── veth ── ns tasker-<pid>-<r>-server-1   eth0 10.213.X.3
//	  └── ...
//
// The test process stays in the root namespace with an address on the
// bridge: it reaches every host, partitioned or not, to ask each what it
// thinks.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireNetnsEnv, when set to 1, fails the network lab's tests where
// namespaces are unavailable instead of skipping them: CI sets it so that
// they never silently stop running.
const requireNetnsEnv = "TASKER_REQUIRE_NETNS"

// unreachableMAC is the link-layer address a partitioned host sends its
// peers' frames to: locally administered and held by no interface, so the
// bridge floods the frames and nobody takes them.
const unreachableMAC = "02:00:5e:00:de:ad"

// netLab is a bridge and the hosts on it, each a network namespace with a
// veth to the bridge. Everything it creates is removed when the test ends,
// processes in its namespaces first.
type netLab struct {
	t *testing.T
	// id is unique per lab among concurrent test binaries: it holds the
	// pid and a random part (two labs in one binary).
	id     string
	bridge string
	prefix netip.Prefix

	mu    sync.Mutex
	hosts []*netHost
	// cut lists the neighbour entries partition installed, for heal.
	cut []cutLink
}

// netHost is one host of a lab: a network namespace with one address.
type netHost struct {
	lab  *netLab
	name string
	ns   string
	veth string // the bridge's end, in the root namespace
	ip   netip.Addr
}

// cutLink is a neighbour entry that makes from's frames to to.ip vanish.
type cutLink struct{ from, to *netHost }

// newNetLab creates a bridge in the root namespace with an address for the
// test process, or skips the test (fails it with TASKER_REQUIRE_NETNS=1),
// naming what is missing, where namespaces cannot be made.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	lab, why := tryNetLab(t)
	if lab == nil {
		t.Skipf("%s; these tests need Linux, root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2", why)
	}
	return lab
}

// tryNetLab is newNetLab for a test that can run without the lab: where
// namespaces cannot be made it returns nil and why (and fails the test
// with TASKER_REQUIRE_NETNS=1).
func tryNetLab(t *testing.T) (*netLab, string) {
	t.Helper()
	if why := netnsUnavailable(); why != "" {
		msg := "network namespaces unavailable: " + why
		if os.Getenv(requireNetnsEnv) == "1" {
			t.Fatalf("%s (%s=1 requires them)", msg, requireNetnsEnv)
		}
		return nil, msg
	}
	var r [1]byte
	_, _ = rand.Read(r[:])
	lab := &netLab{t: t, id: fmt.Sprintf("%d-%02x", os.Getpid(), r[0])}
	lab.bridge = "tk" + lab.id
	t.Cleanup(lab.close)
	lab.must("link", "add", lab.bridge, "type", "bridge")
	lab.must("link", "set", lab.bridge, "up")
	lab.claimPrefix()
	return lab, ""
}

// netnsUnavailable says why this process cannot make a network lab, or
// returns "" when it can. A probe namespace tells "cannot" (a container
// without CAP_SYS_ADMIN, no netns support) from a bug of ours, before
// anything else is made.
func netnsUnavailable() string {
	if runtime.GOOS != "linux" {
		return fmt.Sprintf("this is %s, not Linux", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Sprintf("not root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Sprintf("the ip command (iproute2) is missing: %v", err)
	}
	var r [2]byte
	_, _ = rand.Read(r[:])
	probe := fmt.Sprintf("tasker-%d-%02x%02x-probe", os.Getpid(), r[0], r[1])
	if out, err := ipCmd("netns", "add", probe); err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	_, _ = ipCmd("netns", "del", probe)
	return ""
}

// claimPrefix gives the bridge the .1 of a 10.213.X.0/24 that no other
// interface of the root namespace is on, trying first an X derived from
// the pid so that concurrent test binaries rarely even try the same one.
// Two that took the same one at once both see it after adding theirs; the
// one whose bridge name sorts later gives it up and takes another.
func (l *netLab) claimPrefix() {
	start := os.Getpid() % 250
	for i := range 250 {
		x := (start+i)%250 + 1
		if l.prefixUsers(x) != "" {
			continue
		}
		p := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", x))
		addr := netip.PrefixFrom(p.Addr().Next(), 24).String()
		l.must("addr", "add", addr, "dev", l.bridge)
		if other := l.prefixUsers(x); other == "" || other > l.bridge {
			l.prefix = p
			return
		}
		l.must("addr", "del", addr, "dev", l.bridge)
	}
	l.t.Fatal("every 10.213.X.0/24 is in use in the root namespace")
}

// prefixUsers returns the first interface, other than the lab's bridge,
// with an address in 10.213.x.0/24 ("" for none).
func (l *netLab) prefixUsers(x int) string {
	out, err := ipCmd("-4", "-o", "addr", "show")
	if err != nil {
		l.t.Fatalf("list addresses: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		// "7: tk123-ab    inet 10.213.5.1/24 scope global tk123-ab ..."
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == "inet" && strings.HasPrefix(f[3], fmt.Sprintf("10.213.%d.", x)) && f[1] != l.bridge {
			return f[1]
		}
	}
	return ""
}

// host returns the host named name, creating it on first use: a namespace
// with lo up and a veth to the bridge holding the next free address.
func (l *netLab) host(name string) *netHost {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		if h.name == name {
			return h
		}
	}
	n := len(l.hosts)
	if n >= 250 {
		l.t.Fatalf("the lab's /24 has no address left for host %q", name)
	}
	ip := l.prefix.Addr().Next().Next() // .1 is the bridge's
	for range n {
		ip = ip.Next()
	}
	h := &netHost{lab: l, name: name, ns: "tasker-" + l.id + "-" + name, veth: fmt.Sprintf("%sh%d", l.bridge, n), ip: ip}
	if len(h.veth) > 15 {
		l.t.Fatalf("interface name %q is longer than Linux's 15 bytes", h.veth)
	}
	l.hosts = append(l.hosts, h) // before creating: close removes what exists
	l.must("netns", "add", h.ns)
	l.must("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	l.must("link", "set", h.veth, "master", l.bridge, "up")
	l.must("-n", h.ns, "link", "set", "lo", "up")
	l.must("-n", h.ns, "addr", "add", netip.PrefixFrom(ip, 24).String(), "dev", "eth0")
	l.must("-n", h.ns, "link", "set", "eth0", "up")
	return h
}

// partition cuts every host of a off from every host of b, both ways,
// until heal. Each side's frames to the other go to a link-layer address
// nobody holds (a permanent neighbour entry), so they vanish in silence:
// TCP connections hang and gossip's UDP probes go unanswered, as in a real
// partition. A blackhole route would fail sends at once with EINVAL, which
// hides the timeouts a real partition causes; taking a veth down would
// also cut the test off from the host it wants to ask. The test process
// (on the bridge itself) still reaches every host. Cuts add up: partition
// can be called several times before heal.
func (l *netLab) partition(a, b []*netHost) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			if x == y {
				l.t.Fatalf("partition: %s is on both sides", x.name)
			}
			for _, c := range []cutLink{{x, y}, {y, x}} {
				l.must("-n", c.from.ns, "neigh", "replace", c.to.ip.String(), "lladdr", unreachableMAC, "dev", "eth0", "nud", "permanent")
				l.cut = append(l.cut, c)
			}
		}
	}
	l.t.Logf("netlab: partitioned %v from %v", hostNames(a), hostNames(b))
}

// isolate cuts h off from every other host of the lab.
func (l *netLab) isolate(h *netHost) {
	l.t.Helper()
	l.mu.Lock()
	others := slices.DeleteFunc(slices.Clone(l.hosts), func(o *netHost) bool { return o == h })
	l.mu.Unlock()
	l.partition([]*netHost{h}, others)
}

// heal removes every cut: the hosts resolve each other again (ARP) at
// their next packet.
func (l *netLab) heal() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.cut {
		// The entry may be gone already (the same pair cut twice).
		_, _ = ipCmd("-n", c.from.ns, "neigh", "del", c.to.ip.String(), "dev", "eth0")
	}
	l.cut = nil
	l.t.Log("netlab: healed")
}

// command returns how to run bin with args inside the host's namespace.
// On a nil host (not in a lab) it is bin and args unchanged.
func (h *netHost) command(bin string, args []string) (string, []string) {
	if h == nil {
		return bin, args
	}
	// ip netns exec execs the binary in place: the pid is the binary's,
	// so signals and the parent-death signal reach it.
	return "ip", append([]string{"netns", "exec", h.ns, bin}, args...)
}

// agentArgs are the flags that put an agent on the host's address: its
// agent-to-agent traffic, and its local API, so that the test process
// can call it. An app in the same namespace reaches it there too.
func (h *netHost) agentArgs() []string {
	if h == nil {
		return nil
	}
	return []string{"-bind", h.ip.String(), "-client", h.ip.String()}
}

// close kills whatever still runs in the lab's namespaces, then removes
// the namespaces, the veths and the bridge. Failures are logged, not
// fatal: the test's own outcome matters more, and the rest is still
// removed.
func (l *netLab) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		// The harness kills the processes it started before this runs
		// (cleanups run last-registered first); this catches the rest.
		out, _ := ipCmd("netns", "pids", h.ns)
		for _, f := range strings.Fields(out) {
			// The test process itself is listed when the runtime parked its
			// main thread there after netHost.inside ran on it.
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
		}
	}
	var errs []string
	for _, h := range l.hosts {
		// Deleting the veth takes its peer in the namespace with it; a
		// namespace's devices are otherwise freed only once it is gone,
		// asynchronously.
		if out, err := ipCmd("link", "del", h.veth); err != nil && !strings.Contains(out, "Cannot find device") {
			errs = append(errs, fmt.Sprintf("link del %s: %v: %s", h.veth, err, out))
		}
		if out, err := ipCmd("netns", "del", h.ns); err != nil && !strings.Contains(out, "No such file") {
			errs = append(errs, fmt.Sprintf("netns del %s: %v: %s", h.ns, err, out))
		}
	}
	if out, err := ipCmd("link", "del", l.bridge); err != nil && !strings.Contains(out, "Cannot find device") {
		errs = append(errs, fmt.Sprintf("link del %s: %v: %s", l.bridge, err, out))
	}
	if len(errs) > 0 {
		l.t.Errorf("netlab %s: left behind: %s", l.id, strings.Join(errs, "; "))
	}
}

// must runs ip with args, failing the test on error.
func (l *netLab) must(args ...string) {
	l.t.Helper()
	if out, err := ipCmd(args...); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ipCmd runs ip with args, bounded in time, and returns its output.
func ipCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func hostNames(hs []*netHost) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.name
	}
	return out
}
