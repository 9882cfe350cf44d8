package refdoc_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/refdoc"
	"github.com/tasker-run/tasker/workflow"
)

// TestBusStep: a transport: bus step is documented by its subject, not by
// a capability it does not have.
func TestBusStep(t *testing.T) {
	p, err := workflow.Load([]byte(`name: bx
version: 1.0.0
steps:
  - name: invoice
    transport: bus
    subject: billing.invoice.create
`), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := refdoc.Write(&b, p); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`s0["invoice<br/>bus: billing.invoice.create"]`,
		"| Transport | bus: a request on subject `billing.invoice.create`, completed by its reply |",
		"| Owner | — (whatever consumes the subject) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| Capability |") {
		t.Errorf("a bus step documented with a capability:\n%s", out)
	}
}
