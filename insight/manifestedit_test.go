package insight

import (
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

const blockManifest = `# The workflow's own comment.
name: wf
version: 1.0.0 # keep this comment

steps:
  # a comes first.
  - name: a
    capability: svc.a
    timeout: 5s # measured p99 is 3s
    retry:
      max_attempts: 3

  - name: b
    capability: svc.b
    depends_on: [a]
    retry:
      retryable: [timeout]

  - name: c
    capability: svc.c
    depends_on: [b]
  - {name: d, capability: svc.d, depends_on: [c]}
`

const quotedManifest = `name: wf
version: "1.0.0"
steps:
  - name: a
    capability: svc.a
    timeout: '5s'
`

func TestManifestEdits(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		edit     func([]byte) ([]byte, error)
		want     []string // lines the result holds
		gone     []string // lines it no longer holds
		err      string
		noReload bool
	}{
		{
			name: "version keeps its comment", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetVersion(b, "1.0.1-ai.1") },
			want: []string{"version: 1.0.1-ai.1 # keep this comment", "# The workflow's own comment.", "  # a comes first."},
		},
		{
			name: "version keeps its quotes", src: quotedManifest,
			edit: func(b []byte) ([]byte, error) { return SetVersion(b, "1.0.1") },
			want: []string{`version: "1.0.1"`},
		},
		{
			name: "version of JSON", src: jsonManifest,
			edit: func(b []byte) ([]byte, error) { return SetVersion(b, "2.0.0") },
			want: []string{`  "version": "2.0.0",`},
		},
		{
			name: "bad version", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetVersion(b, "v2") },
			err:  "not a semantic version",
		},
		{
			name: "timeout replaced, comment kept", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "a", 90*time.Second) },
			want: []string{"    timeout: 1m30s # measured p99 is 3s"},
			gone: []string{"    timeout: 5s # measured p99 is 3s"},
		},
		{
			name: "timeout added to a block step", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "c", 2*time.Minute) },
			want: []string{"  - name: c", "    timeout: 2m", "    capability: svc.c"},
		},
		{
			name: "timeout added to a flow step", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "d", 45*time.Second) },
			want: []string{"  - {timeout: 45s, name: d, capability: svc.d, depends_on: [c]}"},
		},
		{
			name: "timeout quoted stays quoted", src: quotedManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "a", time.Hour) },
			want: []string{"    timeout: '1h'"},
		},
		{
			name: "timeout of JSON", src: jsonManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "b", 10*time.Second) },
			want: []string{`    {"name": "b", "capability": "svc.b", "timeout": "10s",`},
		},
		{
			name: "unknown step", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepTimeout(b, "zz", time.Second) },
			err:  `no step "zz"`,
		},
		{
			name: "max attempts replaced", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "a", 7) },
			want: []string{"      max_attempts: 7"},
			gone: []string{"      max_attempts: 3"},
		},
		{
			name: "max attempts added to retry", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "b", 4) },
			want: []string{"    retry:", "      retryable: [timeout]", "      max_attempts: 4"},
		},
		{
			name: "retry added to a block step", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "c", 2) },
			want: []string{"  - name: c", "    retry:", "      max_attempts: 2"},
		},
		{
			name: "retry added to a flow step", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "d", 6) },
			want: []string{"  - {retry: {max_attempts: 6}, name: d, capability: svc.d, depends_on: [c]}"},
		},
		{
			name: "retry added to a JSON step", src: jsonManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "a", 2) },
			want: []string{`    {"retry": {"max_attempts": 2}, "name": "a", "capability": "svc.a", "timeout": "5s"},`},
		},
		{
			name: "max attempts below 1", src: blockManifest,
			edit: func(b []byte) ([]byte, error) { return SetStepMaxAttempts(b, "a", 0) },
			err:  "at least 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.edit([]byte(tt.src))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(out), "\n")
			for _, w := range tt.want {
				if !contains(lines, w) {
					t.Errorf("no line %q in\n%s", w, out)
				}
			}
			for _, g := range tt.gone {
				if contains(lines, g) {
					t.Errorf("line %q still in\n%s", g, out)
				}
			}
			// Only the edited line changes (or one is added).
			if d := len(lines) - len(strings.Split(tt.src, "\n")); d < 0 || d > 2 {
				t.Errorf("%d lines added", d)
			}
			if _, err := workflow.Load(out, workflow.Limits{}); err != nil {
				t.Fatalf("the edited manifest does not load: %v\n%s", err, out)
			}
		})
	}
}

func contains(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

func TestChangeStepDiff(t *testing.T) {
	out, diff, err := ChangeStep([]byte(blockManifest), "1.0.1-ai.1", StepChange{Step: "c", Timeout: time.Minute, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := workflow.Load(out, workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	i, _ := p.StepIndex("c")
	if p.Version != "1.0.1-ai.1" || p.Steps[i].Timeout != time.Minute || p.Steps[i].Retry.MaxAttempts != 2 {
		t.Fatalf("version %s, timeout %v, max attempts %d", p.Version, p.Steps[i].Timeout, p.Steps[i].Retry.MaxAttempts)
	}
	for _, w := range []string{"-version: 1.0.0 # keep this comment", "+version: 1.0.1-ai.1 # keep this comment", "+    timeout: 1m", "+      max_attempts: 2"} {
		if !strings.Contains(diff, w+"\n") {
			t.Errorf("diff lacks %q:\n%s", w, diff)
		}
	}
	// Diff, computed from the two texts, says the same.
	if d := Diff([]byte(blockManifest), out); d != diff {
		t.Errorf("Diff differs from the edits' diff:\n%s\n---\n%s", d, diff)
	}
	if d := Diff(out, out); d != "" {
		t.Errorf("diff of equal texts: %q", d)
	}
}

func TestNextVersion(t *testing.T) {
	tests := []struct {
		base     string
		existing []string
		want     string
	}{
		{"1.2.0", nil, "1.2.1-ai.1"},
		{"1.2.0", []string{"1.2.0", "1.2.1-ai.1", "1.2.1-ai.2"}, "1.2.1-ai.3"},
		{"1.2.1-ai.1", []string{"1.2.0", "1.2.1-ai.1"}, "1.2.1-ai.2"},
		{"1.2.1-ai.3", nil, "1.2.1-ai.4"},
		{"2.0.0-rc.1", nil, "2.0.0-rc.1.ai.1"},
		{"0.0.9", []string{"0.0.10-ai.1"}, "0.0.10-ai.2"},
	}
	for _, tt := range tests {
		if got := NextVersion(tt.base, tt.existing, "ai"); got != tt.want {
			t.Errorf("NextVersion(%s, %v) = %s, want %s", tt.base, tt.existing, got, tt.want)
		}
	}
}
