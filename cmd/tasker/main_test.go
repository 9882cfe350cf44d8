package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// examples lists the manifests shipped in examples/, relative to this package.
func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v, %d files", err, len(files))
	}
	return files
}

const order = "../../examples/order-fulfilment.yaml"

// tasker runs the command line in-process and returns its exit code and
// output.
func tasker(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// manifest writes a manifest into a temporary directory.
func manifest(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const cycle = `name: loop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: [b]
  - name: b
    capability: x.b
    depends_on: [a]
`

const typos = `name: Bad Name
version: one
steps:
  - name: a
    capability: x.a
    timout: 5s
    input: {n: $.steps.nope.result}
`

func TestCommands(t *testing.T) {
	cyclic := manifest(t, "cycle.yaml", cycle)
	bad := manifest(t, "typos.yaml", typos)
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings of stdout
		stderr     []string // substrings of stderr
		stdoutNone bool     // stdout must be empty
	}{
		{
			name: "validate every example",
			args: append([]string{"validate"}, examples(t)...),
			code: 0,
			stdout: []string{
				order + ": valid\n",
				"  namespace        shop\n",
				"  max parallelism  2\n",
				"  critical path    validate → reserve → ship → notify (worst case 2m5s)\n",
				"  roots            validate\n",
				"  leaves           notify\n",
				"  max parallelism  8\n",
				" valid, 0 invalid\n",
			},
		},
		{
			name:   "validate prints the cycle with its line",
			args:   []string{"validate", cyclic},
			code:   1,
			stdout: []string{cyclic + ": steps[0].depends_on (line 6): dependency cycle: a → b → a\n", cyclic + ": invalid, 1 problem\n"},
		},
		{
			name: "validate prints every problem of a file",
			args: []string{"validate", bad},
			code: 1,
			stdout: []string{
				bad + `: name (line 1): "Bad Name" is not a valid workflow name`,
				bad + `: version (line 2): "one" is not a semantic version`,
				bad + `: steps[0].timout (line 6): unknown field "timout"; did you mean "timeout"?`,
				bad + `: steps[0].input.n (line 7): $.steps.nope.result reads step "nope", which does not exist`,
			},
		},
		{
			name:       "validate names a missing file",
			args:       []string{"validate", "missing.yaml"},
			code:       1,
			stderr:     []string{"missing.yaml: cannot read: no such file or directory\n"},
			stdoutNone: true,
		},
		{
			name:   "validate checks every file even after a bad one",
			args:   []string{"validate", "missing.yaml", cyclic, order},
			code:   1,
			stdout: []string{"dependency cycle", order + ": valid\n", "3 files checked: 1 valid, 2 invalid\n"},
			stderr: []string{"missing.yaml: cannot read"},
		},
		{
			name:   "validate needs a file",
			args:   []string{"validate"},
			code:   2,
			stderr: []string{"tasker validate: no manifest given; run 'tasker help validate' for usage\n"},
		},
		{
			name:   "validate rejects an unknown output format",
			args:   []string{"validate", "-o", "yaml", order},
			code:   2,
			stderr: []string{`invalid value "yaml" for flag -o: want text or json`},
		},
		{
			name:   "docs writes the reference to stdout",
			args:   []string{"docs", order},
			code:   0,
			stdout: []string{"# order-fulfilment\n", "```mermaid\ngraph TD\n", "## Input contract\n", "### Step charge\n", "#### Error contract\n", "`gateway_unavailable`"},
		},
		{
			name:       "docs refuses an invalid manifest",
			args:       []string{"docs", cyclic},
			code:       1,
			stderr:     []string{"dependency cycle: a → b → a"},
			stdoutNone: true,
		},
		{
			name:   "docs takes one manifest",
			args:   []string{"docs", order, order},
			code:   2,
			stderr: []string{"want one manifest, got 2"},
		},
		{
			name: "demo shows the retry and the blocked task",
			args: []string{"demo", order},
			code: 0,
			stdout: []string{
				"shop/order-fulfilment 1.0.0: 5 steps on a simulated clock (seed 1)\n",
				"+0.000s   task      pending → in_progress\n",
				"charge    in_progress → error: gateway_unavailable, retry at +",
				"charge    error → enqueued (attempt 2)\n",
				"task complete after ",
				"ship      in_progress → error: contract_violation (",
				"never dispatched: notify\n",
				"refused: input violates its contract",
			},
		},
		{
			name:   "demo refuses an invalid manifest",
			args:   []string{"demo", cyclic},
			code:   1,
			stderr: []string{"dependency cycle"},
		},
		{
			name:   "demo names a missing input file",
			args:   []string{"demo", "-input", "nope.json", order},
			code:   1,
			stderr: []string{"nope.json: cannot read"},
		},
		{
			name: "help lists the commands",
			args: []string{"help"},
			code: 0,
			stdout: []string{
				"  validate ", "  docs ", "  demo ", "  version ", "  help ",
				"\n  capabilities  list the capabilities offered and the agents offering them\n",
				"\n  breakers      list the leader's circuit breakers\n",
				"\n  leave         make an agent leave the cluster gracefully and exit\n",
				"\n  force-leave   remove a failed agent from the cluster\n",
			},
		},
		{
			name:   "help for a command",
			args:   []string{"help", "docs"},
			code:   0,
			stdout: []string{"Usage: tasker docs FILE [-out FILE]\n", "-out FILE"},
		},
		{
			name:   "-h prints the command's help",
			args:   []string{"validate", "-h"},
			code:   0,
			stdout: []string{"Usage: tasker validate", "Exit status"},
		},
		{
			name:   "no command",
			args:   nil,
			code:   2,
			stderr: []string{"Usage: tasker COMMAND"},
		},
		{
			name:       "unknown command",
			args:       []string{"frobnicate"},
			code:       2,
			stderr:     []string{"tasker: unknown command \"frobnicate\"; run 'tasker help' for the list\n"},
			stdoutNone: true,
		},
		{
			name:   "unknown flag",
			args:   []string{"demo", "-speed", "2"},
			code:   2,
			stderr: []string{"flag provided but not defined: -speed", "run 'tasker help demo' for usage"},
		},
		{
			name:   "version",
			args:   []string{"version"},
			code:   0,
			stdout: []string{"tasker ", " go1."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := tasker(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tt.stdoutNone && stdout != "" {
				t.Errorf("stdout should be empty:\n%s", stdout)
			}
		})
	}
}

// An unknown command is reported in one line, so that scripts' logs stay
// readable.
func TestUnknownCommandIsOneLine(t *testing.T) {
	_, _, stderr := tasker(t, "valdate", order)
	if strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr is not one line: %q", stderr)
	}
}

func TestValidateJSON(t *testing.T) {
	cyclic := manifest(t, "cycle.yaml", cycle)
	code, stdout, _ := tasker(t, "validate", "-o", "json", order, cyclic, "missing.yaml")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var got []struct {
		File    string `json:"file"`
		Valid   bool   `json:"valid"`
		Summary *struct {
			Name         string   `json:"name"`
			Namespace    string   `json:"namespace"`
			Version      string   `json:"version"`
			Steps        int      `json:"steps"`
			CriticalPath []string `json:"critical_path"`
			WorstCaseNS  int64    `json:"worst_case_ns"`
			WorstCase    string   `json:"worst_case"`
		} `json:"summary"`
		Problems []struct {
			Path    string `json:"path"`
			Line    int    `json:"line"`
			Message string `json:"message"`
		} `json:"problems"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, stdout)
	}
	if len(got) != 3 {
		t.Fatalf("%d entries, want one per file", len(got))
	}
	if s := got[0].Summary; !got[0].Valid || s == nil || s.Name != "order-fulfilment" || s.Namespace != "shop" || s.Steps != 5 ||
		s.WorstCase != "2m5s" || s.WorstCaseNS != 125e9 || strings.Join(s.CriticalPath, ",") != "validate,reserve,ship,notify" {
		t.Errorf("valid entry: %+v", got[0])
	}
	if p := got[1].Problems; got[1].Valid || len(p) != 1 || p[0].Path != "steps[0].depends_on" || p[0].Line != 6 || !strings.Contains(p[0].Message, "a → b → a") {
		t.Errorf("cycle entry: %+v", got[1])
	}
	if got[2].Valid || !strings.Contains(got[2].Error, "no such file") {
		t.Errorf("missing entry: %+v", got[2])
	}
}

// -out writes the file, and flags may follow the manifest.
func TestDocsOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "order.md")
	code, stdout, stderr := tasker(t, "docs", order, "-out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout, "wrote "+out) {
		t.Errorf("stdout %q, want it to say where it wrote", stdout)
	}
	_, direct, _ := tasker(t, "docs", order)
	if string(doc) != direct {
		t.Error("the file differs from what docs prints to stdout")
	}
}

// The demo stays short enough to read in one screen, and a seed changes
// only the jitter.
func TestDemoOutput(t *testing.T) {
	_, one, _ := tasker(t, "demo", order)
	if n := strings.Count(one, "\n"); n >= 60 {
		t.Errorf("demo prints %d lines, want fewer than 60", n)
	}
	_, again, _ := tasker(t, "demo", order)
	if one != again {
		t.Error("two demos with the default seed differ")
	}
	_, other, _ := tasker(t, "demo", "-seed", "2", order)
	if other == one || !strings.Contains(other, "(seed 2)") {
		t.Error("-seed 2 printed the same run as seed 1")
	}
}

// Without a manifest the demo runs the order-fulfilment example, from the
// repository root as `make demo` does.
func TestDemoDefaultManifest(t *testing.T) {
	t.Chdir("../..")
	code, stdout, stderr := tasker(t, "demo")
	if code != 0 || !strings.HasPrefix(stdout, "shop/order-fulfilment 1.0.0") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, firstLine(stdout), stderr)
	}
}

func TestDemoJSON(t *testing.T) {
	input := filepath.Join(t.TempDir(), "input.json")
	if err := os.WriteFile(input, []byte(`{"order_id":"ord_7","customer":{"id":"c","email":"bo@example.com"},
		"items":[{"sku":"a","quantity":1}],"payment":{"token":"t","amount_cents":5,"currency":"GBP"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := tasker(t, "demo", "-o", "json", "-input", input, order)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Workflow string `json:"workflow"`
		Seed     uint64 `json:"seed"`
		Runs     []struct {
			Title string         `json:"title"`
			Input map[string]any `json:"input"`
			Log   []struct {
				Step string `json:"step"`
				To   string `json:"to"`
				Code string `json:"code"`
			} `json:"log"`
			Task *struct {
				State string `json:"state"`
				Steps []struct {
					Name     string `json:"name"`
					Attempts int    `json:"attempts"`
				} `json:"steps"`
			} `json:"task"`
			Refused string `json:"refused"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if got.Workflow != "order-fulfilment" || got.Seed != 1 || len(got.Runs) != 3 {
		t.Fatalf("got %s seed %d with %d runs", got.Workflow, got.Seed, len(got.Runs))
	}
	first := got.Runs[0]
	if first.Input["order_id"] != "ord_7" {
		t.Errorf("input %v, want the -input file's", first.Input)
	}
	if first.Task == nil || first.Task.State != "complete" || first.Task.Steps[2].Name != "charge" || first.Task.Steps[2].Attempts != 2 {
		t.Errorf("first run's task: %+v", first.Task)
	}
	if got.Runs[1].Task.State != "error" || got.Runs[2].Refused == "" {
		t.Errorf("second run %s, third refused %q", got.Runs[1].Task.State, got.Runs[2].Refused)
	}
}

func TestVersionJSON(t *testing.T) {
	code, stdout, _ := tasker(t, "version", "-o", "json")
	var v struct {
		Version  string `json:"version"`
		Go       string `json:"go"`
		Platform string `json:"platform"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Version == "" || !strings.HasPrefix(v.Go, "go") || !strings.Contains(v.Platform, "/") {
		t.Errorf("exit %d, %v: %s", code, err, stdout)
	}
}

// Every command answers -h with its own usage, so none is undocumented.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		code, stdout, _ := tasker(t, "help", c.name)
		if code != 0 || !strings.Contains(stdout, "Usage: tasker "+c.name) || c.synopsis == "" {
			t.Errorf("help %s: exit %d, %q", c.name, code, firstLine(stdout))
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
