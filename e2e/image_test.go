//go:build linux

package e2e

// The container image cannot be built here (no container engine), so this
// test checks the next best thing, from the Dockerfile itself so that the
// two stay in sync: the binary built with exactly the builder stage's
// environment and `go build` flags is static and stripped, and it runs
// the way the image runs it — ENTRYPOINT and CMD, the image's ENV, as its
// USER (65532) when the test runs as root, from /, without HOME, in a
// network namespace of its own as in a container — until the image's
// HEALTHCHECK command succeeds. It must write nothing outside its data
// dir (the image's VOLUME).

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tasker-run/tasker/agent"
)

// imageUID is the user the image runs as: distroless's nonroot.
const imageUID = 65532

// dockerStage is one FROM ... stage of the Dockerfile, with the
// instructions the test reads.
type dockerStage struct {
	name, from   string
	env          [][2]string
	run, copies  []string
	user         string
	entrypoint   []string
	cmd          []string
	health       []string
	healthOpts   map[string]string
	expose, vols []string
}

func (s *dockerStage) envValue(k string) string {
	v := ""
	for _, kv := range s.env {
		if kv[0] == k {
			v = kv[1]
		}
	}
	return v
}

// readDockerfile parses the repository's Dockerfile into its stages.
func readDockerfile(t *testing.T) []*dockerStage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages  []*dockerStage
		cur     *dockerStage
		logical string
	)
	jsonArray := func(instr, v string) []string {
		var a []string
		if err := json.Unmarshal([]byte(v), &a); err != nil {
			t.Fatalf("Dockerfile: %s %s: want the exec form, a JSON array (%v)", instr, v, err)
		}
		return a
	}
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if logical == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			logical += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		logical += line
		instr, rest, _ := strings.Cut(logical, " ")
		rest = strings.TrimSpace(rest)
		logical = ""
		instr = strings.ToUpper(instr)
		if instr == "FROM" {
			f := strings.Fields(rest)
			cur = &dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				cur.name = f[2]
			}
			stages = append(stages, cur)
			continue
		}
		if cur == nil {
			t.Fatalf("Dockerfile: %s before FROM", instr)
		}
		switch instr {
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || strings.ContainsAny(v, `"'$`) {
					t.Fatalf("Dockerfile: ENV %s: keep ENV as KEY=VALUE pairs with plain values, which this test reads", rest)
				}
				cur.env = append(cur.env, [2]string{k, v})
			}
		case "RUN":
			cur.run = append(cur.run, rest)
		case "COPY":
			cur.copies = append(cur.copies, rest)
		case "USER":
			cur.user = rest
		case "ENTRYPOINT":
			cur.entrypoint = jsonArray(instr, rest)
		case "CMD":
			cur.cmd = jsonArray(instr, rest)
		case "HEALTHCHECK":
			opts, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile: HEALTHCHECK %s: want [OPTIONS] CMD [...]", rest)
			}
			cur.health = jsonArray(instr, cmd)
			cur.healthOpts = map[string]string{}
			for _, o := range strings.Fields(opts) {
				k, v, _ := strings.Cut(strings.TrimPrefix(o, "--"), "=")
				cur.healthOpts[k] = v
			}
		case "EXPOSE":
			cur.expose = append(cur.expose, strings.Fields(rest)...)
		case "VOLUME":
			cur.vols = append(cur.vols, jsonArray(instr, rest)...)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a builder and the image", len(stages))
	}
	return stages
}

// shellWords splits a RUN command as sh would split a simple command.
// Anything more (&&, ;, |, $) is refused: the go build line must be a
// command of its own, so that this test runs exactly it.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	words, err := splitWords(s, "&;|$`<>\\")
	if err != nil {
		t.Fatalf("Dockerfile: RUN: %v; keep the go build command simple", err)
	}
	return words
}

func TestImageBinary(t *testing.T) {
	stages := readDockerfile(t)
	builder, image := stages[0], stages[len(stages)-1]

	// The builder's go build line, run here with its environment.
	var build []string
	for _, r := range builder.run {
		if w := shellWords(t, r); len(w) > 1 && w[0] == "go" && w[1] == "build" {
			if build != nil {
				t.Fatal("Dockerfile: the builder runs go build twice")
			}
			build = w
		}
	}
	if build == nil {
		t.Fatal("Dockerfile: no RUN go build in the builder stage")
	}
	root := imageRoot(t)
	bin := filepath.Join(root, "tasker")
	outIdx := slices.Index(build, "-o")
	if outIdx < 0 || outIdx+1 >= len(build) {
		t.Fatalf("Dockerfile: %s: no -o", strings.Join(build, " "))
	}
	builtAt := build[outIdx+1]
	args := slices.Clone(build[1:])
	args[outIdx] = bin
	if pkg := args[len(args)-1]; pkg != "./cmd/tasker" {
		t.Fatalf("Dockerfile builds %s, want ./cmd/tasker", pkg)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go"); !fileExists(goBin) {
			t.Fatalf("go: %v", err)
		}
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = repoRoot
	cmd.Env = os.Environ()
	for _, kv := range builder.env {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s (%s): %v", strings.Join(args, " "), envString(builder.env), time.Since(start).Round(time.Millisecond))

	checkStatic(t, bin, build)

	// The image's files: the binary at ENTRYPOINT[0], copied from the
	// builder's output; the data dir a VOLUME the user owns.
	if len(image.entrypoint) == 0 {
		t.Fatal("Dockerfile: no ENTRYPOINT in the image")
	}
	var copied, chowned bool
	dataDir := image.envValue("TASKER_DATA_DIR")
	for _, c := range image.copies {
		f := strings.Fields(c)
		if slices.Contains(f, "--from="+builder.name) && f[len(f)-2] == builtAt && f[len(f)-1] == image.entrypoint[0] {
			copied = true
		}
		if slices.Contains(f, "--chown="+image.user) && f[len(f)-1] == dataDir {
			chowned = true
		}
	}
	if !copied {
		t.Errorf("Dockerfile: no COPY --from=%s %s %s: the ENTRYPOINT is not the binary the builder made", builder.name, builtAt, image.entrypoint[0])
	}
	if dataDir == "" || !slices.Contains(image.vols, dataDir) {
		t.Errorf("Dockerfile: TASKER_DATA_DIR (%q) is not a VOLUME (%v): the agent's state would live in the container's writable layer", dataDir, image.vols)
	}
	if !chowned {
		t.Errorf("Dockerfile: no COPY --chown=%s to %s: a new volume there would not be writable by the image's user", image.user, dataDir)
	}
	if image.user != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("Dockerfile: USER %q, want %d:%d (numeric, so that Kubernetes' runAsNonRoot can check it)", image.user, imageUID, imageUID)
	}
	d := agent.Defaults()
	for _, p := range []string{strconv.Itoa(d.HTTPPort), strconv.Itoa(d.RPCPort), fmt.Sprintf("%d/tcp", d.GossipPort), fmt.Sprintf("%d/udp", d.GossipPort), strconv.Itoa(d.RaftPort)} {
		if !slices.Contains(image.expose, p) {
			t.Errorf("Dockerfile: EXPOSE %v lacks %s", image.expose, p)
		}
	}
	if len(image.health) == 0 || image.health[0] != image.entrypoint[0] {
		t.Fatalf("Dockerfile: HEALTHCHECK %v does not run the binary", image.health)
	}

	runLikeImage(t, root, bin, image)
}

// imageRoot makes a directory that stands for the image's file system,
// readable by the image's user.
func imageRoot(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "tasker-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func envString(env [][2]string) string {
	var s []string
	for _, kv := range env {
		s = append(s, kv[0]+"="+kv[1])
	}
	return strings.Join(s, " ")
}

// checkStatic checks that bin needs no dynamic loader and no shared
// library (it runs on distroless/static, which has no libc), is stripped
// as -ldflags asks, and records the builder's settings.
func checkStatic(t *testing.T, bin string, build []string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a PT_INTERP program header: it is dynamically linked, and would not start on a static base image", bin)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (%v)", bin, libs, err)
	}
	var ldflags string
	for _, a := range build {
		if v, ok := strings.CutPrefix(a, "-ldflags="); ok {
			ldflags = v
		}
	}
	if strings.Contains(" "+ldflags+" ", " -s ") && f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table, though built with -ldflags=%q", bin, ldflags)
	}
	if strings.Contains(" "+ldflags+" ", " -w ") && (f.Section(".debug_info") != nil || f.Section(".zdebug_info") != nil) {
		t.Errorf("%s has DWARF, though built with -ldflags=%q", bin, ldflags)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range info.Settings {
		got[s.Key] = s.Value
	}
	// Go leaves -ldflags out of the build information under -trimpath
	// (it may hold paths): the sections above check -s and -w.
	want := map[string]string{"CGO_ENABLED": "0"}
	if slices.Contains(build, "-trimpath") {
		want["-trimpath"] = "true"
	} else {
		want["-ldflags"] = ldflags
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s was built with %s=%q, want %q", bin, k, got[k], v)
		}
	}
}

// imageRun is how the test stands in for the container runtime.
type imageRun struct {
	env     []string
	cred    *syscall.Credential
	netns   string // "" when the agent shares the test's network
	mapping map[string]string
}

// command returns an exec.Cmd for the image's argv, its paths mapped.
func (r *imageRun) command(ctx context.Context, argv []string) *exec.Cmd {
	args := slices.Clone(argv)
	for i, a := range args {
		if m, ok := r.mapping[a]; ok {
			args[i] = m
		}
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = r.env
	cmd.Dir = "/"
	cmd.SysProcAttr = sysProcAttr()
	cmd.SysProcAttr.Credential = r.cred
	return cmd
}

// inNetns runs fn on an OS thread in the run's network namespace (or on
// any thread without one). A process started in fn is created on that
// thread; done keeps the thread alive until it may go, because the
// parent-death signal fires when the creating thread exits.
func (r *imageRun) inNetns(fn func() error, done <-chan struct{}) error {
	if r.netns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine rather than
		// go back to the runtime's pool inside another namespace.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + r.netns)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", r.netns, err)
			return
		}
		errc <- fn()
		<-done
	}()
	return <-errc
}

// run runs argv to completion, within timeout, and returns its output
// and exit code.
func (r *imageRun) run(argv []string, timeout time.Duration) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := r.command(ctx, argv)
	var out []byte
	err := r.inNetns(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	}, closed)
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return string(out), -1, fmt.Errorf("%s did not finish within %v", strings.Join(argv, " "), timeout)
	case err == nil:
		return string(out), 0, nil
	case errors.As(err, &ee):
		return string(out), ee.ExitCode(), nil
	}
	return string(out), -1, err
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// newNetns makes a network namespace with its loopback up, as a container
// runtime does, or says why it cannot.
func newNetns(t *testing.T) (string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "", "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "", "no ip command (iproute2)"
	}
	ns := fmt.Sprintf("tasker-image-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return "", fmt.Sprintf("ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Sprintf("ip link set lo up: %v: %s", err, bytes.TrimSpace(out))
	}
	return ns, ""
}

// runLikeImage runs bin as the image would and waits for its HEALTHCHECK.
func runLikeImage(t *testing.T, root, bin string, image *dockerStage) {
	dataDir := image.envValue("TASKER_DATA_DIR")
	data := filepath.Join(root, "data")
	tmp := filepath.Join(root, "tmp") // the container's /tmp
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	r := &imageRun{mapping: map[string]string{image.entrypoint[0]: bin, dataDir: data}}
	if os.Geteuid() == 0 {
		if err := os.Chown(data, imageUID, imageUID); err != nil {
			t.Fatal(err)
		}
		r.cred = &syscall.Credential{Uid: imageUID, Gid: imageUID, Groups: []uint32{}}
	} else {
		t.Logf("not root: the agent runs as uid %d, not the image's %d (run the test as root to cover the user)", os.Geteuid(), imageUID)
	}
	// The environment of a container of the image: its PATH (distroless),
	// its ENV with paths mapped, no HOME.
	r.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + tmp}
	for _, kv := range image.env {
		v := kv[1]
		if m, ok := r.mapping[v]; ok {
			v = m
		}
		r.env = append(r.env, kv[0]+"="+v)
	}
	ns, why := newNetns(t)
	if ns == "" && os.Getenv(requireNetnsEnv) == "1" {
		t.Fatalf("no network namespace for the image's agent (%s), and %s=1", why, requireNetnsEnv)
	}
	r.netns = ns
	var healthEnv []string
	if ns == "" {
		// Without a namespace of its own the agent cannot have the
		// image's fixed ports (a developer's agent may hold 7420): free
		// ones, and the health check told where the API is.
		t.Logf("no network namespace (%s): the agent runs on free ports, and the health check gets TASKER_ADDR", why)
		r.env = append(r.env, "TASKER_HTTP_PORT=0", "TASKER_RPC_PORT=0", "TASKER_GOSSIP_PORT=0", "TASKER_RAFT_PORT=0")
	}
	var before map[string]bool
	if r.cred != nil {
		before = ownedBy(t, os.TempDir(), imageUID)
	}

	// The image's command alone: a client agent with nowhere to join. It
	// must refuse to start and say what is missing, not run half set up.
	argv := append(slices.Clone(image.entrypoint), image.cmd...)
	out, code, err := r.run(argv, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 2 || !strings.Contains(out, "join") {
		t.Fatalf("%s with no settings: exit %d, want 2 and a message about join:\n%s", strings.Join(argv, " "), code, out)
	}

	// docker run tasker agent -server -bootstrap-expect 1: a one-server
	// cluster.
	argv = append(argv, "-server", "-bootstrap-expect", "1")
	proc := startImageAgent(t, r, argv, root)
	if ns == "" {
		healthEnv = append(slices.Clone(r.env), "TASKER_ADDR="+waitAPI(t, proc))
	}
	timeout := dockerDuration(t, image.healthOpts, "timeout", 30*time.Second)
	period := dockerDuration(t, image.healthOpts, "start-period", 0)
	hr := *r
	if healthEnv != nil {
		hr.env = healthEnv
	}
	begin := time.Now()
	var last string
	for {
		if proc.exited() {
			t.Fatalf("the agent exited (%v) before its health check passed:\n%s", proc.err, proc.tail(20))
		}
		out, code, err := hr.run(image.health, timeout)
		if err != nil {
			t.Fatalf("HEALTHCHECK %v: %v (its --timeout is %v)", image.health, err, timeout)
		}
		last = fmt.Sprintf("exit %d: %s", code, strings.TrimSpace(out))
		if code == 0 {
			if !strings.Contains(out, "SERVING") {
				t.Fatalf("HEALTHCHECK %v exited 0 without SERVING: %s", image.health, out)
			}
			break
		}
		if time.Since(begin) > period+10*time.Second {
			t.Fatalf("HEALTHCHECK %v still fails %v after the start (start-period %v): %s", image.health, time.Since(begin).Round(time.Millisecond), period, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("HEALTHCHECK %v: %s after %v (user %v, network namespace %q)", image.health, last, time.Since(begin).Round(time.Millisecond), credString(r.cred), ns)

	// docker stop: SIGTERM.
	proc.signal(t, syscall.SIGTERM)
	if code := proc.wait(t, 45*time.Second); code != 0 {
		t.Fatalf("the agent exited with %d on SIGTERM, want 0:\n%s", code, proc.tail(20))
	}

	// It wrote its state to the volume, and nothing anywhere else it could.
	if _, err := os.Stat(filepath.Join(data, "raft")); err != nil {
		t.Errorf("no Raft state in the data dir: %v", err)
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
		t.Errorf("the agent wrote to the container's /tmp (%v): %v", err, entries)
	}
	if r.cred != nil {
		for name := range ownedBy(t, os.TempDir(), imageUID) {
			if !before[name] {
				t.Errorf("the agent (uid %d) created %s outside its data dir", imageUID, filepath.Join(os.TempDir(), name))
			}
		}
		if bad := ownedOutside(t, root, imageUID, data, tmp); len(bad) > 0 {
			t.Errorf("files of uid %d outside the data dir: %v", imageUID, bad)
		}
	}
}

func credString(c *syscall.Credential) string {
	if c == nil {
		return strconv.Itoa(os.Geteuid())
	}
	return fmt.Sprintf("%d:%d", c.Uid, c.Gid)
}

// startImageAgent starts the agent as r says, in r's namespace.
func startImageAgent(t *testing.T, r *imageRun, argv []string, dir string) *process {
	t.Helper()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // after the process is killed
	cmd := r.command(context.Background(), argv)
	return startCmd(t, "agent (as the image runs it)", cmd, filepath.Join(dir, "agent.log"), nil, func() error {
		return r.inNetns(cmd.Start, release)
	})
}

// waitAPI returns the API address the agent logs at start (text format,
// the image's default).
func waitAPI(t *testing.T, p *process) string {
	t.Helper()
	re := regexp.MustCompile(`msg="agent started".* api=(\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.logPath)
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		if p.exited() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no \"agent started\" line with the API address:\n%s", p.tail(20))
	return ""
}

// dockerDuration reads a HEALTHCHECK option such as --timeout=3s.
func dockerDuration(t *testing.T, opts map[string]string, key string, def time.Duration) time.Duration {
	t.Helper()
	v, ok := opts[key]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("Dockerfile: HEALTHCHECK --%s=%s: %v", key, v, err)
	}
	return d
}

// ownedBy lists the entries of dir owned by uid.
func ownedBy(t *testing.T, dir string, uid int) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
				m[e.Name()] = true
			}
		}
	}
	return m
}

// ownedOutside lists the files under root owned by uid, outside allowed.
func ownedOutside(t *testing.T, root string, uid int, allowed ...string) []string {
	t.Helper()
	var bad []string
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		for _, a := range allowed {
			if path == a || strings.HasPrefix(path, a+string(filepath.Separator)) {
				return nil
			}
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
			bad = append(bad, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
