package e2e

// One workflow across Go, TypeScript and Python, each service behind its
// own sidecar: the order workflow with payments in TypeScript (the
// TypeScript SDK) and shipping in Python (push mode, standard library),
// and conformance workers in each language that echo a payload built to
// break naive JSON handling, so that what crosses languages is checked
// value by value.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
	"github.com/tasker-run/tasker/sdk/go/worker"
)

// runtimes are the programs the polyglot tests run services with.
type runtimes struct{ node, python string }

// needRuntimes finds node and python3 and checks that the TypeScript SDK
// and the payments service are built, or skips the test saying what is
// missing (fails it with TASKER_REQUIRE_TOOLS=1).
func needRuntimes(t *testing.T) runtimes {
	t.Helper()
	requireTools(t, "node", "python3")
	for _, f := range []string{"node_modules/@tasker-run/sdk/dist/index.js", "examples/polyglot/payments/dist/main.js"} {
		if _, err := os.Stat(filepath.Join(repoRoot, f)); err != nil {
			if os.Getenv(requireToolsEnv) == "1" {
				t.Fatalf("%s is not built (%s=1): run 'make ts'", f, requireToolsEnv)
			}
			t.Skipf("%s is not built: run 'make ts'", f)
		}
	}
	node, _ := exec.LookPath("node")
	python, _ := exec.LookPath("python3")
	return runtimes{node: node, python: python}
}

// polyglotWorkflow chains an echo in each language and back to Go, so
// that each language decodes what another encoded.
const polyglotWorkflow = `name: polyglot
version: 1.0.0
input_schema: {type: object, required: [value]}
defaults:
  timeout: 10s
  retry: {max_attempts: 1}
steps:
  - name: go
    capability: echo.go
    input: {value: $.input.value}
    result_schema: &echo {type: object, required: [lang, value, kinds], properties: {lang: {enum: [go, ts, py]}, value: {}, kinds: {type: object}}}
  - name: ts
    capability: echo.ts
    depends_on: [go]
    input: {value: $.steps.go.result.value}
    result_schema: *echo
  - name: py
    capability: echo.py
    depends_on: [ts]
    input: {value: $.steps.ts.result.value}
    result_schema: *echo
  - name: back
    capability: echo.go
    depends_on: [py]
    input: {value: $.steps.py.result.value}
    result_schema: *echo
`

// contractWorkflow has one step whose app breaks its result contract.
func contractWorkflow(lang string) string {
	return fmt.Sprintf(`name: contract-%[1]s
version: 1.0.0
steps:
  - name: check
    capability: echo.%[1]s
    retry: {max_attempts: 3, backoff: {initial: 10ms}}
    input: {value: $.input, break_contract: true}
    result_schema: {type: object, required: [lang, value, kinds]}
`, lang)
}

// payload is built to break naive JSON handling: integers past 2^53 (a
// JavaScript number's exact range) and past 64 bits, decimals, unicode in
// keys and values (astral characters, a combining-free accent, U+2028,
// NUL), JSON pointer escapes in keys, empty and deeply nested containers.
const payload = `{
  "unicode": "naïve café, Zoë Ångström — 日本語 🚀 \"quoted\" back\\slash \u2028 tab\t nul\u0000",
  "safe_int": 9007199254740991,
  "big_int": 9007199254740993,
  "int64_min": -9223372036854775808,
  "uint64_max": 18446744073709551615,
  "huge_int": 123456789012345678901234567890,
  "zero": 0,
  "negative": -42,
  "decimal": 0.1,
  "small": 1.5e-7,
  "negative_decimal": -2.5,
  "yes": true,
  "no": false,
  "nothing": null,
  "empty_object": {},
  "empty_array": [],
  "empty_string": "",
  "nested": {"level1": {"level2": {"level3": {"level4": ["deep", {"level5": true}]}}}},
  "mixed": [1, "two", 3.5, false, null, [], {}, [[["x"]]]],
  "clé 🔑": "unicode key",
  "a/b~c": "pointer escapes"
}`

// echoResult is what every conformance worker returns.
type echoResult struct {
	Lang  string            `json:"lang"`
	Value json.RawMessage   `json:"value"`
	Kinds map[string]string `json:"kinds"`
}

// goEcho is the Go conformance worker, run in the test process with the Go
// SDK against the sidecar at addr.
func goEcho(t *testing.T, addr string) {
	t.Helper()
	w := worker.New(worker.Options{Addr: addr, WorkerID: "echo-go"})
	w.Handle("echo.go", func(_ context.Context, s *worker.Step) (any, error) {
		var in struct {
			Value         any  `json:"value"`
			BreakContract bool `json:"break_contract"`
		}
		if err := s.Bind(&in); err != nil {
			return nil, err
		}
		if in.BreakContract {
			return map[string]any{"lang": "go"}, nil
		}
		return map[string]any{"lang": "go", "value": in.Value, "kinds": kindsOf(in.Value)}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("Go echo worker: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// kindsOf maps the JSON pointer of every node of v (decoded with
// UseNumber) to its JSON type; a number is "integer" when it is written
// without a fraction or exponent.
func kindsOf(v any) map[string]string {
	out := map[string]string{}
	var walk func(ptr string, v any)
	walk = func(ptr string, v any) {
		switch x := v.(type) {
		case map[string]any:
			out[ptr] = "object"
			for k, e := range x {
				walk(ptr+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k), e)
			}
		case []any:
			out[ptr] = "array"
			for i, e := range x {
				walk(fmt.Sprintf("%s/%d", ptr, i), e)
			}
		case string:
			out[ptr] = "string"
		case json.Number:
			out[ptr] = "number"
			if !strings.ContainsAny(x.String(), ".eE") {
				out[ptr] = "integer"
			}
		case bool:
			out[ptr] = "boolean"
		case nil:
			out[ptr] = "null"
		}
	}
	walk("", v)
	return out
}

func decodeNumbers(t *testing.T, what string, raw []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", what, err, raw)
	}
	return v
}

// sameValue compares two values decoded with UseNumber: numbers by their
// exact value (1.5e-7 equals 1.5e-07), everything else exactly. It
// returns where they first differ.
func sameValue(ptr string, a, b any) (string, bool) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: %v vs %v", ptr, a, b), false
		}
		for k, e := range x {
			if where, ok := sameValue(ptr+"/"+k, e, y[k]); !ok {
				return where, false
			}
		}
		return "", true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: %v vs %v", ptr, a, b), false
		}
		for i := range x {
			if where, ok := sameValue(fmt.Sprintf("%s/%d", ptr, i), x[i], y[i]); !ok {
				return where, false
			}
		}
		return "", true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return fmt.Sprintf("%s: number %v vs %v", ptr, a, b), false
		}
		ra, oka := new(big.Rat).SetString(x.String())
		rb, okb := new(big.Rat).SetString(y.String())
		if !oka || !okb || ra.Cmp(rb) != 0 {
			return fmt.Sprintf("%s: %s vs %s", ptr, x, y), false
		}
		return "", true
	default:
		if a != b {
			return fmt.Sprintf("%s: %q vs %q", ptr, a, b), false
		}
		return "", true
	}
}

func TestPolyglot(t *testing.T) {
	rt := needRuntimes(t)
	c := startClusterWith(t, clusterOptions{servers: 1})
	// One sidecar per service, as in the demo, and one per conformance
	// worker's language.
	goAgent := c.addClient(clientSpec{name: "inventory", only: "orders,inventory,notifications", flags: []string{"-delay", "5ms-20ms"}})
	tsAgent := c.addClient(clientSpec{name: "payments"})
	pyAgent := c.addClient(clientSpec{name: "shipping"})
	tsPayments := c.startProgram(tsAgent, "payments (TypeScript)", rt.node, filepath.Join(repoRoot, "examples/polyglot/payments/dist/main.js"),
		"--addr", tsAgent.api, "--log", c.journal, "--delay", "5ms-20ms", "--seed", "7", "--flaky", "0.2", "--log-level", "debug")
	pyShipping := c.startProgram(pyAgent, "shipping (Python)", rt.python, filepath.Join(repoRoot, "examples/polyglot/shipping/shipping.py"),
		"--addr", pyAgent.api, "--log", c.journal, "--delay", "5ms-20ms", "--seed", "7")
	c.startProgram(tsAgent, "echo (TypeScript)", rt.node, filepath.Join(repoRoot, "e2e/testdata/polyglot/echo.mjs"), "--addr", tsAgent.api)
	c.startProgram(pyAgent, "echo (Python)", rt.python, filepath.Join(repoRoot, "e2e/testdata/polyglot/echo.py"), "--addr", pyAgent.api)
	goEcho(t, goAgent.api)
	c.waitCapabilities(t, 30*time.Second, map[string][]string{
		"inventory.reserve": {"inventory"}, "payments.charge": {"payments"}, "shipping.book": {"shipping"},
		"echo.go": {"inventory"}, "echo.ts": {"payments"}, "echo.py": {"shipping"},
	})
	cl := newClient(goAgent.api)

	t.Run("orders", func(t *testing.T) {
		if _, err := cl.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
			t.Fatal(err)
		}
		// Unicode crosses from the task input through Go and TypeScript
		// to Python and back; a declined card is TypeScript's permanent
		// error.
		ids := map[string]string{}
		for i := range 8 {
			key := fmt.Sprintf("ord_poly%02d", i)
			in := orderInput(key, "tok_visa", "TEE-M")
			in["customer"].(map[string]any)["name"] = "Zoë Ångström 日本 🚀"
			if i == 7 {
				in = orderInput(key, "tok_declined", "TEE-M")
			}
			task, _, err := cl.StartTask(callCtx(t), "order-fulfilment", in, client.Namespace("shop"), client.IdempotencyKey(key))
			if err != nil {
				t.Fatal(err)
			}
			ids[key] = task.GetId()
		}
		for key, id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			task, err := cl.Wait(ctx, id)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if key == "ord_poly07" {
				charge := stepOfTask(task, "charge")
				if task.GetState() != taskerv1.TaskState_TASK_STATE_ERROR || charge.GetLastError().GetCode() != "card_declined" ||
					charge.GetLastError().GetRetryable() || charge.GetAttempts() != 1 {
					t.Fatalf("a declined card must fail the charge for good, once: task %s, %s", task.GetState(), describeSteps(task))
				}
				continue
			}
			if task.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
				t.Fatalf("%s: %s: %s", key, task.GetState(), describeSteps(task))
			}
			var ship struct {
				Tracking string `json:"tracking_number"`
				Carrier  string `json:"carrier"`
			}
			if err := json.Unmarshal([]byte(stepOfTask(task, "ship").GetResultJson()), &ship); err != nil || !strings.HasPrefix(ship.Tracking, "TRK") || ship.Carrier == "" {
				t.Fatalf("%s: Python's shipping result %s (%v)", key, stepOfTask(task, "ship").GetResultJson(), err)
			}
		}
		// Each language's journal says what its service sent, byte for
		// byte; the sidecar kept exactly that as the step's result.
		byPID := map[int]string{tsPayments.cmd.Process.Pid: "payments.charge", pyShipping.cmd.Process.Pid: "shipping.book"}
		seen := map[string]int{}
		results := map[stepKey]string{}
		for _, id := range ids {
			task, err := cl.GetTask(callCtx(t), id)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range task.GetSteps() {
				results[stepKey{id, s.GetName()}] = s.GetResultJson()
			}
		}
		for k, execs := range (&serviceSet{journal: c.journal}).executions(t) {
			for _, e := range execs {
				want, ok := byPID[e.PID]
				if !ok {
					continue
				}
				if e.Capability != want {
					t.Fatalf("journal line of pid %d for %s, want %s", e.PID, e.Capability, want)
				}
				seen[want]++
				if e.Outcome == "ok" {
					got := results[k]
					if where, ok := sameValue("", decodeNumbers(t, "the journal's result", e.Result), decodeNumbers(t, "the step's result", []byte(got))); !ok {
						t.Fatalf("%s: the %s service sent %s, the task holds %s (%s)", k, want, e.Result, got, where)
					}
				}
			}
		}
		if seen["payments.charge"] < 8 || seen["shipping.book"] < 7 {
			t.Fatalf("journal lines by language: %v; want every charge (8+) and shipment (7+)", seen)
		}
	})

	t.Run("payloads cross languages intact", func(t *testing.T) {
		if _, err := cl.ApplyWorkflow(callCtx(t), []byte(polyglotWorkflow)); err != nil {
			t.Fatal(err)
		}
		task, _, err := cl.StartTask(callCtx(t), "polyglot", json.RawMessage(`{"value": `+payload+`}`))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if task, err = cl.Wait(ctx, task.GetId()); err != nil {
			t.Fatal(err)
		}
		if task.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE {
			t.Fatalf("task %s: %s", task.GetState(), describeSteps(task))
		}
		want := decodeNumbers(t, "the payload", []byte(payload))
		wantKinds := kindsOf(want)
		for _, step := range []struct{ name, lang string }{{"go", "go"}, {"ts", "ts"}, {"py", "py"}, {"back", "go"}} {
			raw := stepOfTask(task, step.name).GetResultJson()
			var res echoResult
			if err := json.Unmarshal([]byte(raw), &res); err != nil {
				t.Fatalf("step %s: %v: %s", step.name, err, raw)
			}
			if res.Lang != step.lang {
				t.Fatalf("step %s ran in %q, want %q", step.name, res.Lang, step.lang)
			}
			if where, ok := sameValue("", want, decodeNumbers(t, "step "+step.name+"'s value", res.Value)); !ok {
				t.Errorf("step %s (%s) changed the payload at %s\nits value: %s", step.name, step.lang, where, res.Value)
			}
			// The kinds say how the language itself decoded each node:
			// a 30-digit integer is an integer in every language, not a
			// float, and 0.1 is a number.
			for _, p := range slices.Sorted(maps.Keys(wantKinds)) {
				if res.Kinds[p] != wantKinds[p] {
					t.Errorf("step %s (%s) decoded %q as %q, want %q", step.name, step.lang, p, res.Kinds[p], wantKinds[p])
				}
			}
			if len(res.Kinds) != len(wantKinds) {
				t.Errorf("step %s (%s) reports %d nodes, want %d: %v", step.name, step.lang, len(res.Kinds), len(wantKinds), res.Kinds)
			}
		}
	})

	t.Run("contract violations are reported the same from every language", func(t *testing.T) {
		errs := map[string]*taskerv1.StepError{}
		for _, lang := range []string{"go", "ts", "py"} {
			if _, err := cl.ApplyWorkflow(callCtx(t), []byte(contractWorkflow(lang))); err != nil {
				t.Fatal(err)
			}
			task, _, err := cl.StartTask(callCtx(t), "contract-"+lang, map[string]any{"n": 1})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			task, err = cl.Wait(ctx, task.GetId())
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			s := stepOfTask(task, "check")
			if task.GetState() != taskerv1.TaskState_TASK_STATE_ERROR || s.GetAttempts() != 1 {
				t.Fatalf("%s: a broken result contract must fail the step at once, not retry it: %s, %s", lang, task.GetState(), describeSteps(task))
			}
			errs[lang] = s.GetLastError()
		}
		for lang, e := range errs {
			if e.GetCode() != "contract_violation" || e.GetRetryable() || !strings.Contains(e.GetMessage(), "value") {
				t.Errorf("%s: %+v, want a contract_violation naming the missing value", lang, e)
			}
			if e.GetMessage() != errs["go"].GetMessage() {
				t.Errorf("%s reports %q, Go %q: the same violation must read the same", lang, e.GetMessage(), errs["go"].GetMessage())
			}
		}
		t.Logf("the violation, as every language's step reports it: %s", errs["go"].GetMessage())
	})
}

// startProgram starts a service written in another language (bin is its
// runtime) attached to agent a.
func (c *cluster) startProgram(a *clusterAgent, name, bin string, args ...string) *process {
	c.t.Helper()
	n := len(c.services[a.name]) + 1
	logPath := filepath.Join(c.dir, fmt.Sprintf("service-%s-%d.log", a.name, n))
	p := startProcess(c.t, name+"@"+a.name, bin, args, logPath, nil)
	c.services[a.name] = append(c.services[a.name], p)
	return p
}
