package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The "any language, no SDK" tests: apps written without an SDK (Python
// with the standard library, bash with curl and jq) against a real agent,
// over plain HTTP: push mode, and pull mode with Connect's unary protocol.
// They also run every curl command of docs/sdk.md as written.

// requireToolsEnv, when set to 1 (CI sets it), fails these tests when a
// tool they need is missing instead of skipping them.
const requireToolsEnv = "TASKER_REQUIRE_TOOLS"

// requireTools skips the test, or fails it under TASKER_REQUIRE_TOOLS=1,
// when a tool is not on the PATH.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(requireToolsEnv) == "1" {
				t.Fatalf("%s is required (%s=1): %v", tool, requireToolsEnv, err)
			}
			t.Skipf("%s is not installed; set %s=1 to fail instead of skipping", tool, requireToolsEnv)
		}
	}
}

// connectCall makes a Connect unary call with JSON, as any HTTP client
// would, and decodes the response; a non-200 answer fails the test.
func connectCall(t *testing.T, addr, method string, req any) map[string]any {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(addr, "/")+"/"+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := h2cClient().Do(hreq)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read the response: %v", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", method, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %v in %s", method, err, raw)
	}
	return out
}

// applyFile applies the manifest at path (relative to the repository).
func applyFile(t *testing.T, addr, path string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	connectCall(t, addr, "tasker.v1.WorkflowService/ApplyWorkflow", map[string]any{"manifest": string(b)})
}

// startJSONTask starts a task of workflow with input and returns its id.
func startJSONTask(t *testing.T, addr, workflow string, input any) string {
	t.Helper()
	in, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	res := connectCall(t, addr, "tasker.v1.WorkflowService/StartTask", map[string]any{"workflow": workflow, "input_json": string(in)})
	id, _ := res["task"].(map[string]any)["id"].(string)
	if id == "" {
		t.Fatalf("StartTask returned no task id: %v", res)
	}
	return id
}

// jsonTask is the part of GetTask's JSON answer these tests read.
type jsonTask struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Steps []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		Attempts    int    `json:"attempts"`
		MaxAttempts int    `json:"maxAttempts"`
		ResultJSON  string `json:"resultJson"`
		LastError   *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"lastError"`
	} `json:"steps"`
}

// waitEnded polls GetTask until the task reaches a terminal state.
func waitEnded(t *testing.T, addr, id string, timeout time.Duration) jsonTask {
	t.Helper()
	var task jsonTask
	eventually(t, timeout, "task "+id+" ends", func(context.Context) (bool, error) {
		res := connectCall(t, addr, "tasker.v1.WorkflowService/GetTask", map[string]any{"id": id})
		b, _ := json.Marshal(res["task"])
		task = jsonTask{}
		if err := json.Unmarshal(b, &task); err != nil {
			return false, err
		}
		switch task.State {
		case "TASK_STATE_COMPLETE", "TASK_STATE_ERROR", "TASK_STATE_CANCELLED", "TASK_STATE_RESOLVED_MANUALLY":
			return true, nil
		}
		return false, nil
	})
	return task
}

// startPython runs a Python script of the repository and returns it once
// it logged a line for which ready returns true (bounded by 20s).
func startPython(t *testing.T, name, script string, args []string, ready func(line string) bool) *process {
	t.Helper()
	found := make(chan struct{})
	watch := &lineWriter{fn: func(line string) bool {
		if ready(line) {
			close(found)
			return true
		}
		return false
	}}
	p := startProcess(t, name, "python3", append([]string{filepath.Join(repoRoot, script)}, args...), filepath.Join(t.TempDir(), name+".log"), watch)
	select {
	case <-found:
	case <-p.done:
		t.Fatalf("%s exited before it was ready (%v):\n%s", name, p.err, p.tail(20))
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready within 20s:\n%s", name, p.tail(20))
	}
	return p
}

// shippingLog is a JSON log line of shipping.py.
type shippingLog struct {
	Msg    string `json:"msg"`
	Listen string `json:"listen"`
}

// startShipping runs examples/polyglot/shipping/shipping.py against the
// agent at addr, returns once it registered, and says where it listens.
func startShipping(t *testing.T, addr string, args ...string) (*process, string) {
	t.Helper()
	var listen string
	p := startPython(t, "shipping.py", "examples/polyglot/shipping/shipping.py", append([]string{"--addr", addr, "--delay", "5ms"}, args...), func(line string) bool {
		var l shippingLog
		if json.Unmarshal([]byte(line), &l) != nil {
			return false
		}
		if l.Msg == "serving" {
			listen = l.Listen
		}
		return l.Msg == "registered"
	})
	if listen == "" {
		t.Fatal("shipping.py registered before logging where it listens")
	}
	return p, listen
}

// trackingNumber is the tracking number shipping.book gives a step's
// idempotency key: strings.ToUpper(idFor("trk", key)) of
// examples/services, which shipping.py must match.
func trackingNumber(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return strings.ToUpper("trk" + strconv.FormatUint(x, 36))
}

// TestAnyLangCurlExamples runs examples/polyglot/curl: worker.sh pulls
// with ClaimSteps, client.sh starts tasks and waits for them.
func TestAnyLangCurlExamples(t *testing.T) {
	requireTools(t, "bash", "curl", "jq")
	a := startAgent(t, agentConfig{})
	t.Setenv("TASKER_ADDR", a.addr)
	t.Setenv("WORKER_ID", "sms-e2e")
	dir := filepath.Join(repoRoot, "examples", "polyglot", "curl")
	registered := make(chan struct{})
	watch := &lineWriter{fn: func(line string) bool {
		if strings.Contains(line, "registered notifications.sms as sms-e2e") {
			close(registered)
			return true
		}
		return false
	}}
	worker := startProcess(t, "worker.sh", "bash", []string{filepath.Join(dir, "worker.sh")}, filepath.Join(t.TempDir(), "worker.log"), watch)
	select {
	case <-registered:
	case <-worker.done:
		t.Fatalf("worker.sh exited (%v):\n%s", worker.err, worker.tail(20))
	case <-time.After(20 * time.Second):
		t.Fatalf("worker.sh did not register within 20s:\n%s", worker.tail(20))
	}

	client := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(dir, "client.sh")}, args...)...)
		cmd.Env = append(os.Environ(), "TASKER_WAIT=30")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ctx.Err() == nil:
			code = ee.ExitCode()
		default:
			t.Fatalf("client.sh %q: %v\nstderr: %s", args, err, errb.String())
		}
		return out.String(), errb.String(), code
	}

	text := strings.Repeat("x", 200) // two SMS segments
	out, errOut, code := client("+447700900123", text, "e2e-order-1")
	if code != 0 {
		t.Fatalf("client.sh exited %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var res struct {
		MessageID string `json:"message_id"`
		To        string `json:"to"`
		Segments  int    `json:"segments"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("client.sh printed %q: %v", out, err)
	}
	if !regexp.MustCompile(`^sms_\d+$`).MatchString(res.MessageID) || res.To != "+447700900123" || res.Segments != 2 {
		t.Fatalf("result %+v, want an sms_ id, the number and 2 segments", res)
	}
	// The same idempotency key returns the same task and result.
	if again, errOut, code := client("+447700900123", text, "e2e-order-1"); code != 0 || again != out {
		t.Fatalf("the same key again: exit %d, %q (want %q)\nstderr: %s", code, again, out, errOut)
	}
	// Bad input is a permanent failure reported with FailStep.
	out, errOut, code = client("12345", "hi")
	if code != 1 || !strings.Contains(errOut, `"code":"invalid_number"`) || !strings.Contains(errOut, "TASK_STATE_ERROR") {
		t.Fatalf("a bad number: exit %d (want 1), stdout %q, stderr:\n%s", code, out, errOut)
	}

	start := time.Now()
	worker.signal(t, syscall.SIGTERM)
	if code := worker.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("worker.sh exited %d after SIGTERM, want 0:\n%s", code, worker.tail(10))
	}
	t.Logf("worker.sh stopped %v after SIGTERM (its long poll abandoned)", time.Since(start).Round(time.Millisecond))
}

// TestAnyLangShippingUnit runs shipping.py's own unit tests (its pure
// functions against values the Go functions print), so that CI runs them.
func TestAnyLangShippingUnit(t *testing.T) {
	requireTools(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-m", "unittest", "-v")
	cmd.Dir = filepath.Join(repoRoot, "examples", "polyglot", "shipping")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python3 -m unittest in examples/polyglot/shipping: %v\n%s", err, out)
	}
}

// TestAnyLangShippingPush runs the Python shipping service in push mode:
// a booking, a permanent failure, the journal and the drain.
func TestAnyLangShippingPush(t *testing.T) {
	requireTools(t, "python3")
	a := startAgent(t, agentConfig{})
	applyFile(t, a.addr, "e2e/testdata/polyglot/shipping.yaml")
	journal := filepath.Join(t.TempDir(), "executions.jsonl")
	ship, _ := startShipping(t, a.addr, "--log="+journal, "--worker-id", "shipping-e2e", "--refresh=1s")

	ok := startJSONTask(t, a.addr, "ship-only", map[string]any{
		"order_id": "ord_1", "reservation": "res_1", "charge": "ch_1",
		"address": map[string]any{"country": "fr"}, "service": "express",
	})
	bad := startJSONTask(t, a.addr, "ship-only", map[string]any{"order_id": "ord_2", "reservation": "res_2"})

	got := waitEnded(t, a.addr, ok, 20*time.Second)
	if got.State != "TASK_STATE_COMPLETE" {
		t.Fatalf("task %s ended %s: %+v", ok, got.State, got.Steps)
	}
	var res struct {
		TrackingNumber string `json:"tracking_number"`
		Carrier        string `json:"carrier"`
		EtaDays        int    `json:"eta_days"`
		BookedAt       string `json:"booked_at"`
	}
	if err := json.Unmarshal([]byte(got.Steps[0].ResultJSON), &res); err != nil {
		t.Fatal(err)
	}
	if want := trackingNumber(ok + "/ship"); res.TrackingNumber != want || res.Carrier != "La Poste" || res.EtaDays != 1 {
		t.Fatalf("result %+v, want tracking number %s (as the Go service makes it), La Poste, 1 day", res, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, res.BookedAt); err != nil {
		t.Fatalf("booked_at: %v", err)
	}

	failed := waitEnded(t, a.addr, bad, 20*time.Second)
	st := failed.Steps[0]
	if failed.State != "TASK_STATE_ERROR" || st.LastError == nil || st.LastError.Code != "invalid_input" || st.Attempts != 1 || st.MaxAttempts < 2 {
		t.Fatalf("task without a charge: %s, step %+v; want TASK_STATE_ERROR after 1 attempt (of %d) with invalid_input", failed.State, st, st.MaxAttempts)
	}

	// The journal: one line per execution, the result byte for byte.
	lines := readPyJournal(t, journal)
	if len(lines) != 2 {
		t.Fatalf("journal has %d lines, want 2:\n%v", len(lines), lines)
	}
	for _, e := range lines {
		if e.PID != ship.cmd.Process.Pid || e.Step != "ship" || e.Capability != "shipping.book" || e.Attempt != 1 || e.Time.IsZero() || e.DurationMS <= 0 {
			t.Errorf("journal line %+v: want shipping.py's pid %d, step ship, attempt 1, a time and a duration", e, ship.cmd.Process.Pid)
		}
		switch e.TaskID {
		case ok:
			if e.Outcome != "ok" || string(e.Result) != got.Steps[0].ResultJSON || e.Error != "" {
				t.Errorf("journal line of the booking %+v: want outcome ok and result %s", e, got.Steps[0].ResultJSON)
			}
		case bad:
			if e.Outcome != "invalid_input" || e.Result != nil || !strings.Contains(e.Error, "reservation and a charge") {
				t.Errorf("journal line of the failure %+v: want outcome invalid_input, no result, the error", e)
			}
		default:
			t.Errorf("journal line of an unknown task: %+v", e)
		}
	}

	// A sidecar that restarted forgets its apps: shipping.py registers
	// again (every second here, --refresh) and gets steps again.
	// SIGTERM, not SIGKILL: a -dev agent removes its temporary data dir
	// when it stops gracefully.
	a.proc.signal(t, syscall.SIGTERM)
	if code := a.proc.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("the agent exited %d after SIGTERM", code)
	}
	a.start()
	applyFile(t, a.addr, "e2e/testdata/polyglot/shipping.yaml")
	again := startJSONTask(t, a.addr, "ship-only", map[string]any{"order_id": "ord_3", "reservation": "res_3", "charge": "ch_3"})
	if got := waitEnded(t, a.addr, again, 20*time.Second); got.State != "TASK_STATE_COMPLETE" {
		t.Fatalf("after the agent restarted, task %s ended %s: %+v", again, got.State, got.Steps)
	}

	ship.signal(t, syscall.SIGTERM)
	if code := ship.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("shipping.py exited %d after SIGTERM, want 0:\n%s", code, ship.tail(10))
	}
}

// TestAnyLangShippingDrain checks shipping.py's drain on SIGTERM: the
// health check fails at once, a new step is refused with a bare 503 and
// Retry-After, the running step finishes and is answered, and it exits 0.
// No agent is needed: the test plays the sidecar (registration keeps
// retrying against a closed port meanwhile, as while a sidecar is down).
func TestAnyLangShippingDrain(t *testing.T) {
	requireTools(t, "python3")
	listenCh, started := make(chan string, 1), make(chan struct{})
	watch := &lineWriter{fn: func(line string) bool {
		var l shippingLog
		if json.Unmarshal([]byte(line), &l) == nil {
			switch l.Msg {
			case "serving":
				listenCh <- l.Listen
			case "step started":
				close(started)
				return true
			}
		}
		return false
	}}
	ship := startProcess(t, "shipping.py", "python3", []string{filepath.Join(repoRoot, "examples/polyglot/shipping/shipping.py"),
		"--addr", "http://127.0.0.1:1", "--delay", "3s", "--drain=10s"}, filepath.Join(t.TempDir(), "shipping.log"), watch)
	var base string
	select {
	case l := <-listenCh:
		base = "http://" + l
	case <-ship.done:
		t.Fatalf("shipping.py exited (%v):\n%s", ship.err, ship.tail(20))
	case <-time.After(20 * time.Second):
		t.Fatalf("shipping.py did not serve within 20s:\n%s", ship.tail(20))
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	post := func() (*http.Response, []byte, error) {
		body := `{"task_id":"tsk_drain","step":"ship","capability":"shipping.book","attempt":1,` +
			`"input":{"order_id":"o","reservation":"r","charge":"c"},"idempotency_key":"tsk_drain/ship","deadline":"2099-01-01T00:00:00Z"}`
		resp, err := hc.Post(base+"/steps", "application/json", strings.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	type answer struct {
		status int
		body   string
		err    error
	}
	running := make(chan answer, 1)
	go func() {
		resp, b, err := post()
		if err != nil {
			running <- answer{err: err}
			return
		}
		running <- answer{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatalf("the step did not start within 10s:\n%s", ship.tail(20))
	}
	ship.signal(t, syscall.SIGTERM)
	eventually(t, 5*time.Second, "/healthz answers 503", func(ctx context.Context) (bool, error) {
		resp, err := hc.Get(base + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, nil
	})
	resp, b, err := post()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || bytes.Contains(b, []byte(`"code"`)) {
		t.Fatalf("a step while draining: HTTP %d, Retry-After %q, body %q; want 503, Retry-After 1 and no JSON error code", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	select {
	case a := <-running:
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, trackingNumber("tsk_drain/ship")) {
			t.Fatalf("the running step: HTTP %d %q (%v); want 200 with tracking number %s", a.status, a.body, a.err, trackingNumber("tsk_drain/ship"))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the running step was not answered within 10s of the drain")
	}
	if code := ship.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shipping.py exited %d after draining, want 0:\n%s", code, ship.tail(10))
	}
}

// readPyJournal reads shipping.py's --log strictly: a line must have
// exactly the fields of the Go services' execution, in the same format.
func readPyJournal(t *testing.T, path string) []execution {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []execution
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e execution
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAnyLangEchoFixture checks the conformance fixture
// e2e/testdata/polyglot/echo.py: the value and its kinds as Python sees
// them, and a broken result contract.
func TestAnyLangEchoFixture(t *testing.T) {
	requireTools(t, "python3")
	a := startAgent(t, agentConfig{})
	applyFile(t, a.addr, "e2e/testdata/polyglot/echo.yaml")
	startPython(t, "echo.py", "e2e/testdata/polyglot/echo.py", []string{"--addr", a.addr}, func(line string) bool {
		return strings.Contains(line, "serving")
	})
	value := json.RawMessage(`{"a/b":[1,1.5,true,null,"é",{"~":12345678901234567890}]}`)
	good := startJSONTask(t, a.addr, "echo-py", map[string]any{"value": value})
	broken := startJSONTask(t, a.addr, "echo-py", map[string]any{"value": 1, "break_contract": true})

	got := waitEnded(t, a.addr, good, 20*time.Second)
	if got.State != "TASK_STATE_COMPLETE" {
		t.Fatalf("echo task ended %s: %+v", got.State, got.Steps)
	}
	var res struct {
		Lang  string            `json:"lang"`
		Value json.RawMessage   `json:"value"`
		Kinds map[string]string `json:"kinds"`
	}
	if err := json.Unmarshal([]byte(got.Steps[0].ResultJSON), &res); err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, res.Value); err != nil {
		t.Fatal(err)
	}
	wantKinds := map[string]string{"": "object", "/a~1b": "array", "/a~1b/0": "integer", "/a~1b/1": "number", "/a~1b/2": "boolean",
		"/a~1b/3": "null", "/a~1b/4": "string", "/a~1b/5": "object", "/a~1b/5/~0": "integer"}
	if res.Lang != "py" || compact.String() != string(value) || fmt.Sprint(res.Kinds) != fmt.Sprint(wantKinds) {
		t.Fatalf("echo result %s\nwant lang py, value %s, kinds %v", got.Steps[0].ResultJSON, value, wantKinds)
	}

	b := waitEnded(t, a.addr, broken, 20*time.Second)
	if b.State != "TASK_STATE_ERROR" || b.Steps[0].LastError == nil || b.Steps[0].LastError.Code != "contract_violation" {
		t.Fatalf("break_contract: task %s, step %+v; want TASK_STATE_ERROR with contract_violation", b.State, b.Steps[0])
	}
}

// docMarker precedes each fenced sh block of docs/sdk.md that this test
// runs; "; prints: TEXT" says what its output must contain.
var docMarker = regexp.MustCompile(`^<!-- tested: e2e/anylang_test\.go(?:; prints: (.*?))? -->$`)

// docBlock is a tested command block of docs/sdk.md.
type docBlock struct {
	line   int // of the opening fence
	script string
	prints string
}

// docBlocks extracts the tested sh blocks of a markdown file and fails
// the test when a sh block that calls curl is not marked as tested.
func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []docBlock
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		var prints string
		marked := false
		if i > 0 {
			if m := docMarker.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
				marked, prints = true, m[1]
			}
		}
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		script := strings.Join(body, "\n")
		if !marked {
			if strings.Contains(script, "curl") {
				t.Errorf("%s:%d: a curl example without the <!-- tested: e2e/anylang_test.go --> marker; every curl example must run here", path, start+1)
			}
			continue
		}
		out = append(out, docBlock{line: start + 1, script: script, prints: prints})
	}
	return out
}

// connectErr matches a Connect error in a command's output.
var connectErr = regexp.MustCompile(`"code":\s*"(canceled|unknown|invalid_argument|deadline_exceeded|not_found|already_exists|permission_denied|resource_exhausted|failed_precondition|aborted|out_of_range|unimplemented|internal|unavailable|data_loss|unauthenticated)"`)

// TestAnyLangSDKDocs runs the curl examples of docs/sdk.md as written,
// in order, against a -dev agent and the Python shipping service: the
// agent's address replaces 127.0.0.1:7420 and the service's 127.0.0.1:8081.
// Shell variables a block sets are kept for the blocks after it, as in a
// terminal.
func TestAnyLangSDKDocs(t *testing.T) {
	requireTools(t, "bash", "curl", "jq", "python3")
	blocks := docBlocks(t, filepath.Join(repoRoot, "docs", "sdk.md"))
	if len(blocks) < 10 {
		t.Fatalf("docs/sdk.md has %d tested blocks; expected the push, pull and local-testing examples (10 or more)", len(blocks))
	}
	a := startAgent(t, agentConfig{})
	_, shipAddr := startShipping(t, a.addr)
	agentHost := strings.TrimPrefix(strings.TrimPrefix(a.addr, "http://"), "https://")
	subst := strings.NewReplacer("127.0.0.1:7420", strings.TrimSuffix(agentHost, "/"), "127.0.0.1:8081", shipAddr)

	// The variables the blocks assign, saved after each block and
	// restored before the next.
	var names []string
	seen := map[string]bool{}
	for _, b := range blocks {
		for _, m := range regexp.MustCompile(`(?m)^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=`).FindAllStringSubmatch(b.script, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				names = append(names, m[1])
			}
		}
	}
	state := filepath.Join(t.TempDir(), "state.sh")
	if err := os.WriteFile(state, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	save := fmt.Sprintf("for __v in %s; do if [ -n \"${!__v+x}\" ]; then declare -p \"$__v\"; fi; done > %q\n", strings.Join(append([]string{"__none"}, names...), " "), state)

	for _, b := range blocks {
		script := "set -euo pipefail\nsource " + strconv.Quote(state) + "\n" + subst.Replace(b.script) + "\n" + save
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Dir = repoRoot
		began := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		where := fmt.Sprintf("docs/sdk.md:%d", b.line)
		if err != nil {
			t.Fatalf("%s failed (%v) after %v:\n%s\noutput:\n%s", where, err, time.Since(began).Round(time.Millisecond), b.script, out)
		}
		if b.prints != "" && !strings.Contains(string(out), b.prints) {
			t.Fatalf("%s: the output lacks %q:\n%s", where, b.prints, out)
		}
		if !strings.Contains(b.prints, `"code"`) && connectErr.Match(out) {
			t.Fatalf("%s: the call was refused:\n%s", where, out)
		}
		t.Logf("%s ok in %v: %s", where, time.Since(began).Round(time.Millisecond), strings.TrimSpace(firstLine(string(out))))
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
