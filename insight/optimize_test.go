package insight

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

func load(t testing.TB, src string) *workflow.Plan {
	t.Helper()
	p, err := workflow.Load([]byte(src), workflow.Limits{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return p
}

// edges lists a plan's edges as "parent→child", in Dependencies' order.
func edges(p *workflow.Plan) []string {
	var out []string
	for _, e := range Dependencies(p) {
		out = append(out, e.Parent+"→"+e.Child)
	}
	return out
}

func edgeNames(es []Edge) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Parent+"→"+e.Child)
	}
	return out
}

const head = "name: wf\nversion: 1.0.0\ndefaults:\n  timeout: 10s\nsteps:\n"

const diamond = head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
    input: {x: $.steps.a.result.x}
  - name: c
    capability: svc.c
    depends_on: [a]
    input: {x: $.input.x}
  - name: d
    capability: svc.d
    depends_on: [b, c]
    input: {b: $.steps.b.result, c: $.steps.c.result}
`

// c reads a, its grandparent, through b, from which it reads nothing.
const grandparent = head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
    input: {x: $.steps.a.result.x}
  - name: c
    capability: svc.c
    depends_on:
      - b
    input: {x: $.steps.a.result.y}
`

// b reads nothing from a, but its child c reads a through it.
const descendant = head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
  - name: c
    capability: svc.c
    depends_on: [b]
    input: {a: $.steps.a.result, b: $.steps.b.result}
`

// c's edge to a carries no data, but a stays an ancestor through b.
const redundant = head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
    input: {x: $.steps.a.result.x}
  - name: c
    capability: svc.c
    depends_on: [a, b]
    input: {x: $.steps.b.result.x}
`

// The only read of a is deep inside nested objects and arrays.
const nested = head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: [a]
    input:
      outer:
        list:
          - literal
          - deep: '$.steps.a.result.items[0]["odd key"]'
`

const commented = `# The workflow's own comment.
name: wf
version: 1.0.0 # keep this version

steps:
  # a comes first.
  - name: a
    capability: svc.a
    timeout: 5s

  - name: b
    capability: svc.b
    timeout: 7s

  - name: c
    capability: svc.c
    timeout: 3s
    depends_on: # c waits, for no reason it reads
      - a  # the first
      - b  # the second
    input:
      note: "$$literal" # escaped
`

// JSON: an emptied list shares its line with a comma, so it stays, empty.
const jsonManifest = `{
  "name": "wf",
  "version": "1.0.0",
  "steps": [
    {"name": "a", "capability": "svc.a", "timeout": "5s"},
    {"name": "b", "capability": "svc.b", "timeout": "5s",
     "depends_on": ["a"],
     "input": {"x": "$.input.x"}}
  ]
}
`

// The step opens with its depends_on, a block list.
const firstKey = head + `  - name: a
    capability: svc.a
  - depends_on:
      - a
    name: b
    capability: svc.b
`

func TestOptimize(t *testing.T) {
	order, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	onboarding, err := os.ReadFile("../examples/user-onboarding.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	tests := []struct {
		name      string
		src       string
		durations map[string]time.Duration
		removed   []string
		added     []string
		redundant []string
		before    []string
		after     []string
		saved     time.Duration
		estimated []string
		// edges are the proposed plan's edges, in Dependencies' order.
		edges []string
		// diff lines that must appear, and text the new manifest must hold.
		diff []string
		keep []string
	}{
		{
			name: "order-fulfilment: reserve reads nothing from validate",
			src:  string(order),
			durations: map[string]time.Duration{
				"validate": sec(2), "reserve": sec(3), "charge": sec(1), "ship": sec(4), "notify": sec(1),
			},
			removed: []string{"validate→reserve"},
			before:  []string{"validate", "reserve", "ship", "notify"},
			after:   []string{"reserve", "ship", "notify"},
			saved:   sec(2),
			edges:   []string{"validate→charge", "reserve→ship", "charge→ship", "ship→notify"},
			diff:    []string{"-    depends_on: [validate]\n"},
			keep:    []string{"# Order fulfilment across three systems", "  - name: reserve\n    description: Hold the stock for every line of the order.\n    owner: inventory\n    capability: inventory.reserve\n    input:\n"},
		},
		{
			name:      "order-fulfilment from timeouts",
			src:       string(order),
			removed:   []string{"validate→reserve"},
			before:    []string{"validate", "reserve", "ship", "notify"},
			after:     []string{"reserve", "ship", "notify"},
			saved:     sec(5), // validate's 5s timeout; reserve's 30s default now starts at once
			estimated: []string{"validate", "reserve", "charge", "ship", "notify"},
			edges:     []string{"validate→charge", "reserve→ship", "charge→ship", "ship→notify"},
		},
		{
			name:    "user-onboarding: verify_email gates provisioning and the trial",
			src:     string(onboarding),
			removed: []string{"verify_email→provision_workspace", "verify_email→start_trial"},
			added:   []string{"create_account→provision_workspace", "create_account→start_trial"},
			diff:    []string{"-    depends_on: [verify_email]\n+    depends_on: [create_account]\n"},
			saved:   sec(15),
		},
		{
			name:      "diamond",
			src:       diamond,
			durations: map[string]time.Duration{"a": sec(10), "b": sec(1), "c": sec(20), "d": sec(1)},
			removed:   []string{"a→c"},
			before:    []string{"a", "c", "d"},
			after:     []string{"c", "d"},
			saved:     sec(10),
			edges:     []string{"a→b", "b→d", "c→d"},
			diff:      []string{"-    depends_on: [a]\n     input: {x: $.input.x}"},
		},
		{
			name:      "grandparent read through the removed parent",
			src:       grandparent,
			durations: map[string]time.Duration{"a": sec(1), "b": sec(10), "c": sec(5)},
			removed:   []string{"b→c"},
			added:     []string{"a→c"},
			before:    []string{"a", "b", "c"},
			after:     []string{"a", "b"},
			saved:     sec(5),
			edges:     []string{"a→b", "a→c"},
			diff:      []string{"-      - b\n+      - a\n"},
		},
		{
			name:      "a descendant reads through the removed edge",
			src:       descendant,
			durations: map[string]time.Duration{"a": sec(10), "b": sec(9), "c": sec(1)},
			removed:   []string{"a→b"},
			added:     []string{"a→c"},
			before:    []string{"a", "b", "c"},
			after:     []string{"a", "c"},
			saved:     sec(9),
			edges:     []string{"b→c", "a→c"},
			diff:      []string{"-    depends_on: [a]\n", "-    depends_on: [b]\n+    depends_on: [b, a]\n"},
		},
		{
			name:      "redundant edge is reported, not removed",
			src:       redundant,
			durations: map[string]time.Duration{"a": sec(1), "b": sec(1), "c": sec(1)},
			redundant: []string{"a→c"},
			before:    []string{"a", "b", "c"},
			after:     []string{"a", "b", "c"},
			edges:     []string{"a→b", "a→c", "b→c"},
		},
		{
			name:      "data through a nested mapping is not proposed",
			src:       nested,
			durations: map[string]time.Duration{"a": sec(1), "b": sec(1)},
			before:    []string{"a", "b"},
			after:     []string{"a", "b"},
			edges:     []string{"a→b"},
		},
		{
			name:      "comments and blank lines are kept; an emptied depends_on goes",
			src:       commented,
			removed:   []string{"a→c", "b→c"},
			before:    []string{"b", "c"},
			after:     []string{"b"},
			saved:     sec(3),
			estimated: []string{"a", "b", "c"},
			diff:      []string{"-    depends_on: # c waits, for no reason it reads\n-      - a  # the first\n-      - b  # the second\n"},
			keep: []string{
				"# The workflow's own comment.\n", "version: 1.0.0 # keep this version\n\nsteps:\n  # a comes first.\n",
				"    timeout: 7s\n\n  - name: c\n    capability: svc.c\n    timeout: 3s\n    input:\n      note: \"$$literal\" # escaped\n",
			},
		},
		{
			name:    "JSON: the emptied list stays, empty",
			src:     jsonManifest,
			removed: []string{"a→b"},
			saved:   5 * time.Second,
			edges:   []string{},
			diff:    []string{"-     \"depends_on\": [\"a\"],\n+     \"depends_on\": [],\n"},
		},
		{
			name:    "a block list that opens the step",
			src:     firstKey,
			removed: []string{"a→b"},
			saved:   10 * time.Second,
			edges:   []string{},
			diff:    []string{"-  - depends_on:\n-      - a\n+  - depends_on: []\n"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, tc.src)
			prop, err := Optimize(p, []byte(tc.src), tc.durations)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("removed", edgeNames(prop.Removed), tc.removed)
			check("added", edgeNames(prop.Added), tc.added)
			check("redundant", edgeNames(prop.Redundant), tc.redundant)
			if tc.before != nil {
				check("before", prop.Before, tc.before)
				check("after", prop.After, tc.after)
			}
			if tc.estimated != nil {
				check("estimated", prop.Estimated, tc.estimated)
			}
			if prop.Saved != tc.saved || prop.Saved != prop.BeforeTime-prop.AfterTime {
				t.Errorf("saved %v (before %v, after %v), want %v", prop.Saved, prop.BeforeTime, prop.AfterTime, tc.saved)
			}
			for _, e := range prop.Removed {
				if e.CarriesData || !strings.Contains(e.Why, "reads nothing from "+e.Parent) {
					t.Errorf("removed %+v", e)
				}
			}
			np, err := workflow.Load(prop.Manifest, workflow.Limits{})
			if err != nil {
				t.Fatalf("proposed manifest: %v", err)
			}
			if np.Version != p.Version || np.Name != p.Name {
				t.Errorf("proposed %s %s, want %s %s unchanged", np.Name, np.Version, p.Name, p.Version)
			}
			if tc.edges != nil {
				check("proposed edges", edges(np), tc.edges)
			}
			if len(prop.Removed) == 0 {
				if prop.Diff != "" || string(prop.Manifest) != tc.src {
					t.Errorf("nothing removed, yet the manifest changed:\n%s", prop.Diff)
				}
			}
			for _, d := range tc.diff {
				if !strings.Contains(prop.Diff, d) {
					t.Errorf("diff lacks %q:\n%s", d, prop.Diff)
				}
			}
			for _, k := range tc.keep {
				if !strings.Contains(string(prop.Manifest), k) {
					t.Errorf("manifest lacks %q:\n%s", k, prop.Manifest)
				}
			}
			checkDiff(t, tc.src, string(prop.Manifest), prop.Diff)
			if s := prop.String(); !strings.Contains(s, "Saved: "+prop.Saved.String()) {
				t.Errorf("String() lacks the saving:\n%s", s)
			}
		})
	}
}

// checkDiff applies the unified diff to old and checks it gives new: the
// hunk headers and context lines are right, not only the changed lines.
func checkDiff(t *testing.T, old, new, diff string) {
	t.Helper()
	if diff == "" {
		if old != new {
			t.Error("no diff for a changed manifest")
		}
		return
	}
	src := strings.Split(old, "\n")
	var out []string
	pos := 0
	lines := strings.Split(strings.TrimSuffix(diff, "\n"), "\n")
	if lines[0] != "--- current" || lines[1] != "+++ proposed" {
		t.Fatalf("diff header %q", lines[:2])
	}
	for _, l := range lines[2:] {
		if strings.HasPrefix(l, "@@") {
			var os, ol, ns, nl int
			if _, err := fmt.Sscanf(l, "@@ -%d,%d +%d,%d @@", &os, &ol, &ns, &nl); err != nil {
				t.Fatalf("hunk header %q: %v", l, err)
			}
			if ol == 0 {
				os++
			}
			out = append(out, src[pos:os-1]...)
			pos = os - 1
			if nl > 0 && len(out)+1 != ns {
				t.Errorf("hunk %q starts at new line %d, want %d", l, len(out)+1, ns)
			}
			continue
		}
		switch l[0] {
		case ' ', '-':
			if src[pos] != l[1:] {
				t.Fatalf("diff line %q does not match source line %d %q", l, pos+1, src[pos])
			}
			if l[0] == ' ' {
				out = append(out, src[pos])
			}
			pos++
		case '+':
			out = append(out, l[1:])
		}
	}
	out = append(out, src[pos:]...)
	if got := strings.Join(out, "\n"); got != new {
		t.Errorf("applying the diff gives\n%s\nwant\n%s", got, new)
	}
}

func TestDependencies(t *testing.T) {
	got := Dependencies(load(t, nested))
	want := Edge{Parent: "a", Child: "b", CarriesData: true, Reads: []string{`$.steps.a.result.items[0]["odd key"]`}}
	if len(got) != 1 || got[0].Parent != want.Parent || got[0].Child != want.Child || !got[0].CarriesData || !slices.Equal(got[0].Reads, want.Reads) {
		t.Errorf("Dependencies = %+v, want [%+v]", got, want)
	}
	src, err := os.ReadFile("../examples/order-fulfilment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, e := range Dependencies(load(t, string(src))) {
		data = append(data, fmt.Sprintf("%s→%s %v %q", e.Parent, e.Child, e.CarriesData, e.Reads))
	}
	wantData := []string{
		`validate→reserve false []`,
		`validate→charge true ["$.steps.validate.result.risk_score"]`,
		`reserve→ship true ["$.steps.reserve.result.reservation_id"]`,
		`charge→ship true ["$.steps.charge.result.charge_id"]`,
		`ship→notify true ["$.steps.ship.result.carrier" "$.steps.ship.result.tracking_number"]`,
	}
	if !slices.Equal(data, wantData) {
		t.Errorf("order-fulfilment edges:\n%s\nwant\n%s", strings.Join(data, "\n"), strings.Join(wantData, "\n"))
	}
}

func TestOptimizeRefuses(t *testing.T) {
	// An anchored list is shared: editing it for one step would edit the others.
	src := head + `  - name: a
    capability: svc.a
  - name: b
    capability: svc.b
    depends_on: &deps [a]
  - name: c
    capability: svc.c
    depends_on: *deps
    input: {x: $.steps.a.result}
`
	p := load(t, src)
	_, err := Optimize(p, []byte(src), nil)
	if err == nil || !strings.Contains(err.Error(), "anchor") {
		t.Errorf("err = %v, want one about the anchor", err)
	}
	// The manifest must be the plan's source.
	other := strings.Replace(diamond, "depends_on: [b, c]", "depends_on: [b, c, a]", 1)
	if _, err := Optimize(load(t, diamond), []byte(other), nil); err == nil || !strings.Contains(err.Error(), "plan's source") {
		t.Errorf("err = %v, want one about the manifest not being the plan's source", err)
	}
	if _, err := Optimize(nil, nil, nil); err == nil {
		t.Error("a nil plan gave no error")
	}
}

// generated is a layered workflow of n steps: each step depends on the two
// before it, reads the first and not the second, so that half the edges are
// candidates.
func generated(n int) string {
	var b strings.Builder
	b.WriteString(head)
	for i := range n {
		fmt.Fprintf(&b, "  - name: s%d\n    capability: svc.s%d\n", i, i)
		switch {
		case i == 1:
			b.WriteString("    depends_on: [s0]\n")
		case i >= 2:
			fmt.Fprintf(&b, "    depends_on: [s%d, s%d]\n    input: {x: $.steps.s%d.result.x}\n", i-2, i-1, i-2)
		}
	}
	return b.String()
}

func TestGenerated(t *testing.T) {
	src := generated(50)
	prop, err := Optimize(load(t, src), []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	// s(i-1) → s(i) carries no data and is not redundant: all 49 go, and
	// the chain halves into odd and even steps.
	if len(prop.Removed) != 49 || len(prop.Added) != 0 {
		t.Errorf("removed %d, added %d", len(prop.Removed), len(prop.Added))
	}
	if prop.BeforeTime != 500*time.Second || prop.AfterTime != 250*time.Second {
		t.Errorf("before %v, after %v", prop.BeforeTime, prop.AfterTime)
	}
}

func BenchmarkOptimize1000(b *testing.B) {
	src := []byte(generated(1000))
	p := load(b, string(src))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Optimize(p, src, nil); err != nil {
			b.Fatal(err)
		}
	}
}
