package refdoc_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/refdoc"
	"github.com/tasker-run/tasker/workflow"
)

// update rewrites the golden files from the current output:
//
//	go test ./refdoc -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/*.md from the current output")

func load(t *testing.T, path string) *workflow.Plan {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := workflow.Load(src, workflow.Limits{})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

func write(t *testing.T, p *workflow.Plan) string {
	t.Helper()
	var b bytes.Buffer
	if err := refdoc.Write(&b, p); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// The reference of the order-fulfilment example is reviewed as a whole:
// any change to the output shows up as a diff of testdata.
func TestGolden(t *testing.T) {
	for _, name := range []string{"order-fulfilment"} {
		t.Run(name, func(t *testing.T) {
			got := write(t, load(t, filepath.Join("..", "examples", name+".yaml")))
			golden := filepath.Join("testdata", name+".md")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (run with -update to accept it):\n%s", golden, firstDiff(string(want), got))
			}
		})
	}
}

// firstDiff shows the first line where want and got differ.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, w, g)
		}
	}
	return ""
}

// Maps are unordered in Go; the reference must not be, or every
// regeneration would be a diff.
func TestWriteIsDeterministic(t *testing.T) {
	for _, name := range []string{"order-fulfilment", "user-onboarding", "fan-out-fan-in"} {
		p := load(t, filepath.Join("..", "examples", name+".yaml"))
		first := write(t, p)
		for range 20 {
			if again := write(t, p); again != first {
				t.Fatalf("%s: two writes of the same plan differ:\n%s", name, firstDiff(first, again))
			}
		}
	}
}

// Each example's reference has the sections a reader looks for, for
// every step.
func TestWriteSections(t *testing.T) {
	for _, name := range []string{"order-fulfilment", "user-onboarding", "fan-out-fan-in"} {
		t.Run(name, func(t *testing.T) {
			p := load(t, filepath.Join("..", "examples", name+".yaml"))
			doc := write(t, p)
			want := []string{"# " + p.Name + "\n", "```mermaid\ngraph TD\n", "## Input contract\n", "## Steps\n"}
			for _, st := range p.Steps {
				want = append(want, "### Step "+st.Name+"\n", "| Capability | `"+st.Capability+"` |")
			}
			for _, w := range want {
				if !strings.Contains(doc, w) {
					t.Errorf("reference lacks %q", w)
				}
			}
			if n, m := strings.Count(doc, "#### Input\n"), len(p.Steps); n != m {
				t.Errorf("%d input sections for %d steps", n, m)
			}
		})
	}
}

// A mapping's literals are shown with the value the step receives: "$$"
// unescaped, numbers and nested fields as written, absent ones noted.
func TestWriteMapping(t *testing.T) {
	p, err := workflow.Load([]byte(`
name: m
version: 1.0.0
input_schema: {type: object, properties: {amount: {type: integer}}}
steps:
  - name: a
    capability: x.a
    input:
      price: "$$5"
      amount: $.input.amount
      count: 3
      nested: {currency: EUR, first: $.input.amount}
      list: [$.input.amount, fixed]
`), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	doc := write(t, p)
	for _, row := range []string{
		"| `amount` | `$.input.amount` |",
		"| `count` | literal `3` |",
		"| `list[0]` | `$.input.amount` |",
		"| `list[1]` | literal `\"fixed\"` |",
		"| `nested.currency` | literal `\"EUR\"` |",
		"| `nested.first` | `$.input.amount` |",
		"| `price` | literal `\"$5\"` |",
	} {
		if !strings.Contains(doc, row+"\n") {
			t.Errorf("reference lacks mapping row %s", row)
		}
	}
}

// A retry policy reads as one sentence with the resolved values.
func TestWriteRetry(t *testing.T) {
	p, err := workflow.Load([]byte(`
name: r
version: 1.0.0
steps:
  - name: once
    capability: x.once
    retry: {max_attempts: 1}
  - name: flat
    capability: x.flat
    retry: {max_attempts: 4, backoff: {initial: 2s, max: 2s, multiplier: 1, jitter: 0}}
  - name: coded
    capability: x.coded
    retry: {retryable: [busy]}
`), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	doc := write(t, p)
	for _, want := range []string{
		"| Retry | 1 attempt: never retried |",
		"| Retry | up to 4 attempts; backoff 2s; retried when the app flags the error retryable |",
		"| Retry | up to 3 attempts; backoff 1s, ×2 per attempt up to 1m, jitter ±20%; retryable codes: `busy` |",
		"| Timeout | 30s per attempt |",
		"No `input_schema`: a task accepts any JSON input.",
		"No `result_schema`: any result completes the step.",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}
