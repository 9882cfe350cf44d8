package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/grpchealth"

	"github.com/tasker-run/tasker/sdk/go/client"
)

// logsEnv names a directory to copy every process's log into, for
// reading after the tests.
const logsEnv = "TASKER_E2E_LOGS"

// process is a binary under test, running. It is killed, if still
// running, when the test ends; if the test failed, the end of its log is
// logged.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // the result of Wait, set before done is closed
}

// startProcess starts bin with args, its standard output and error
// appended to logPath and also written to tee, if not nil.
func startProcess(t *testing.T, name, bin string, args []string, logPath string, tee io.Writer) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	return startCmd(t, name, cmd, logPath, tee, cmd.Start)
}

// startCmd starts cmd with start (cmd.Start, or a function that calls it
// in a network namespace), its standard output and error appended to
// logPath and also written to tee, if not nil, the way every test process starts.
func startCmd(t *testing.T, name string, cmd *exec.Cmd, logPath string, tee io.Writer, start func() error) *process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	fmt.Fprintf(f, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), cmd.Path, strings.Join(cmd.Args[1:], " "))
	var out io.Writer = f
	if tee != nil {
		out = io.MultiWriter(f, tee)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if b, err := os.ReadFile(logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s reported a data race; see %s", p.name, p.keep(t))
		}
		if t.Failed() {
			t.Logf("%s (pid %d) log, last lines:\n%s", p.name, p.cmd.Process.Pid, p.tail(40))
		}
		p.keep(t)
	})
	return p
}

// keep copies the process's log into the directory $TASKER_E2E_LOGS, if
// set, and returns where the log is.
func (p *process) keep(t *testing.T) string {
	dir := os.Getenv(logsEnv)
	if dir == "" {
		return p.logPath
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return p.logPath
	}
	name := strings.NewReplacer("/", "_", " ", "_", "(", "", ")", "").Replace(t.Name() + "-" + p.name + ".log")
	dst := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil || os.WriteFile(dst, b, 0o644) != nil {
		return p.logPath
	}
	return dst
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal).
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return 0
}

// tail returns the last n lines of the process's log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentProc is an agent under test: it can be killed and started again on
// the same data dir and ports.
type agentProc struct {
	t          *testing.T
	name       string
	args       []string // without the ports
	httpPort   int      // 0 until the first start has picked one
	raftPort   int
	rpcPort    int
	gossipPort int
	addr       string // the API's base URL
	proc       *process
	logPath    string
	starts     int
}

// agentConfig says how to run an agent.
type agentConfig struct {
	// dataDir, when set, runs a server with its state in dataDir
	// (-server -bootstrap-expect 1); else a -dev agent with its state
	// in the test's temporary dir, kept across restarts.
	dataDir string
	// configFile is the text of a -config file, if not empty.
	configFile string
}

// startAgent starts an agent on free ports and waits until it serves.
func startAgent(t *testing.T, cfg agentConfig) *agentProc {
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, name: "agent", logPath: filepath.Join(dir, "agent.log")}
	a.args = []string{"agent", "-node", "e2e", "-log-format", "json"}
	if cfg.dataDir != "" {
		a.args = append(a.args, "-server", "-bootstrap-expect", "1", "-data-dir", cfg.dataDir)
	} else {
		// In the test's own dir, not a temporary one of the agent's: a
		// killed agent cannot remove it.
		a.args = append(a.args, "-dev", "-data-dir", filepath.Join(dir, "data"))
	}
	if cfg.configFile != "" {
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, []byte(cfg.configFile), 0o600); err != nil {
			t.Fatal(err)
		}
		a.args = append(a.args, "-config", path)
	}
	a.start()
	return a
}

// started matches the agent's JSON log line that names its addresses.
type started struct {
	Msg    string `json:"msg"`
	API    string `json:"api"`
	Raft   string `json:"raft"`
	RPC    string `json:"rpc"`
	Gossip string `json:"gossip"`
}

// startedWatcher watches an agent's JSON log for its "agent started"
// line, which names its addresses, and sends it on the channel once.
func startedWatcher() (*lineWriter, <-chan started) {
	found := make(chan started, 1)
	return &lineWriter{fn: func(line string) bool {
		var s started
		if json.Unmarshal([]byte(line), &s) == nil && s.Msg == "agent started" {
			found <- s
			return true
		}
		return false
	}}, found
}

// start runs the agent, on the ports of its first start if it had one,
// and waits until its health check reports SERVING.
func (a *agentProc) start() {
	t := a.t
	t.Helper()
	a.starts++
	watch, found := startedWatcher()
	args := append(append([]string(nil), a.args...), "-http-port", strconv.Itoa(a.httpPort), "-raft-port", strconv.Itoa(a.raftPort),
		"-rpc-port", strconv.Itoa(a.rpcPort), "-gossip-port", strconv.Itoa(a.gossipPort))
	a.proc = startProcess(t, fmt.Sprintf("agent (start %d)", a.starts), taskerBin, args, a.logPath, watch)
	var s started
	select {
	case s = <-found:
	case <-a.proc.done:
		t.Fatalf("the agent exited before it started (%v):\n%s", a.proc.err, a.proc.tail(20))
	case <-time.After(30 * time.Second):
		t.Fatalf("no \"agent started\" log line (with api and raft) from the agent within 30s:\n%s", a.proc.tail(20))
	}
	a.addr = s.API
	if a.httpPort == 0 {
		a.httpPort = portOf(t, s.API)
		a.raftPort = portOf(t, s.Raft)
		a.rpcPort = portOf(t, s.RPC)
		a.gossipPort = portOf(t, s.Gossip)
	}
	health := grpchealth.NewClient(h2cClient(), a.addr)
	eventually(t, 30*time.Second, "the agent reports SERVING", func(ctx context.Context) (bool, error) {
		if a.proc.exited() {
			return false, fmt.Errorf("the agent exited: %v", a.proc.err)
		}
		res, err := health.Check(ctx, &grpchealth.CheckRequest{})
		return err == nil && res.Status == grpchealth.StatusServing, nil
	})
}

// portOf returns the port of a URL or host:port.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	m := regexp.MustCompile(`:(\d+)/?$`).FindStringSubmatch(addr)
	if m == nil {
		t.Fatalf("no port in %q", addr)
	}
	p, _ := strconv.Atoi(m[1])
	return p
}

// kill kills the agent with SIGKILL and waits for it to be gone.
func (a *agentProc) kill() {
	a.t.Helper()
	a.proc.signal(a.t, syscall.SIGKILL)
	if code := a.proc.wait(a.t, 10*time.Second); code != -1 {
		a.t.Fatalf("the agent killed with SIGKILL exited with %d", code)
	}
}

// lineWriter calls fn with each complete line written to it until fn
// returns true.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	fn   func(string) bool
	done bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		if w.fn(strings.TrimSuffix(string(w.buf.Next(i+1)), "\n")) {
			w.done = true
			w.buf.Reset()
			return len(p), nil
		}
	}
}

// serviceSet is the example services, run as three processes as in the
// demo: orders+shipping+notifications, inventory, payments. Every
// execution is journaled to one file.
type serviceSet struct {
	procs   []*process
	journal string
}

// startServices starts the services against addr; extra flags go to every
// process, payments gets paymentFlags too.
func startServices(t *testing.T, addr string, extra []string, paymentFlags ...string) *serviceSet {
	t.Helper()
	dir := t.TempDir()
	s := &serviceSet{journal: filepath.Join(dir, "executions.jsonl")}
	for _, svc := range []struct{ name, only string }{
		{"orders-shipping-notifications", "orders,shipping,notifications"},
		{"inventory", "inventory"},
		{"payments", "payments"},
	} {
		args := append([]string{"-addr", addr, "-only", svc.only, "-log", s.journal, "-log-level", "debug"}, extra...)
		if svc.name == "payments" {
			args = append(args, paymentFlags...)
		}
		s.procs = append(s.procs, startProcess(t, "service "+svc.name, servicesBin, args, filepath.Join(dir, svc.name+".log"), nil))
	}
	return s
}

// execution is a line of the services' journal (see examples/services).
type execution struct {
	Time       time.Time       `json:"time"`
	TaskID     string          `json:"task_id"`
	Step       string          `json:"step"`
	Capability string          `json:"capability"`
	Attempt    int             `json:"attempt"`
	DurationMS float64         `json:"duration_ms"`
	Outcome    string          `json:"outcome"`
	Result     json.RawMessage `json:"result"`
	Error      string          `json:"error"`
	PID        int             `json:"pid"`
}

// didWork reports whether the execution ran the service's logic, as
// opposed to being interrupted before it did anything.
func (e execution) didWork() bool { return e.Outcome != "interrupted" }

// executions reads the journal, grouped by task and step.
func (s *serviceSet) executions(t *testing.T) map[stepKey][]execution {
	t.Helper()
	f, err := os.Open(s.journal)
	if errors.Is(err, os.ErrNotExist) {
		return map[stepKey][]execution{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[stepKey][]execution{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e execution
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		k := stepKey{e.TaskID, e.Step}
		out[k] = append(out[k], e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stepKey names a step of a task.
type stepKey struct{ task, step string }

func (k stepKey) String() string { return k.task + "/" + k.step }

// eventually polls cond every 50ms until it reports true, failing the
// test when it returns an error or timeout passes. Each call of cond gets
// a context of at most 5s.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(5*time.Second, time.Until(deadline)+time.Millisecond))
		ok, err := cond(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting until %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// h2cClient speaks HTTP/2 without TLS, as the agent's API does. A test
// that turns ACLs on sets TASKER_TOKEN, which the CLI, the SDK and the
// example services read; the harness's own calls send it too.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: envToken{&http.Transport{Protocols: &p}}}
}

// envToken sends $TASKER_TOKEN, when set, as the call's ACL token.
type envToken struct{ next http.RoundTripper }

func (e envToken) RoundTrip(r *http.Request) (*http.Response, error) {
	if tok := os.Getenv("TASKER_TOKEN"); tok != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return e.next.RoundTrip(r)
}

// newClient returns an SDK client of the agent at addr, with its own
// connection.
func newClient(addr string) *client.Client {
	return client.New(client.Options{Addr: addr, HTTPClient: h2cClient()})
}

// callCtx bounds one call to the agent.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exampleWorkflow reads examples/order-fulfilment.yaml.
func exampleWorkflow(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "examples", "order-fulfilment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fastWorkflow is the example workflow with every step timeout set to
// timeout and shorter backoffs, so that attempts whose lease lapses (an
// agent killed, an app gone) are retried soon.
func fastWorkflow(t *testing.T, timeout string) []byte {
	t.Helper()
	b := exampleWorkflow(t)
	timeouts := regexp.MustCompile(`(?m)^(\s+timeout:) \S+$`)
	if n := len(timeouts.FindAll(b, -1)); n < 4 {
		t.Fatalf("the example workflow has %d timeout lines; this test expects the default and the steps' own: update fastWorkflow", n)
	}
	b = timeouts.ReplaceAll(b, []byte("${1} "+timeout))
	initial := regexp.MustCompile(`initial: \w+`)
	if !initial.Match(b) {
		t.Fatal("the example workflow has no backoff.initial: update fastWorkflow")
	}
	return initial.ReplaceAll(b, []byte("initial: 200ms"))
}

// orderInput is an order-fulfilment task input for order id, paid with
// token and holding one line of sku.
func orderInput(id, token, sku string) map[string]any {
	return map[string]any{
		"order_id": id,
		"customer": map[string]any{"id": "cus_" + id, "email": id + "@example.com", "name": "Test " + id},
		"items":    []map[string]any{{"sku": sku, "quantity": 2}, {"sku": "MUG-01", "quantity": 1}},
		"payment":  map[string]any{"token": token, "amount_cents": 4200, "currency": "EUR"},
		"shipping_address": map[string]any{
			"line1": "1 Main St", "city": "London", "postcode": "N1 9GU", "country": "GB",
		},
	}
}
