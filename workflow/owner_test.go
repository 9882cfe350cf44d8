package workflow

import "testing"

func TestOwnerInferredFromSystems(t *testing.T) {
	src := []byte(`name: shop
version: 1.0.0
systems:
  payments: {capabilities: [payments.charge]}
steps:
  - name: charge
    capability: payments.charge
  - name: audit
    capability: audit.record
`)
	p, err := Load(src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Steps[0].Owner; got != "payments" {
		t.Errorf("charge's owner = %q, want payments (it owns payments.charge)", got)
	}
	if got := p.Steps[1].Owner; got != "" {
		t.Errorf("audit's owner = %q, want none: no system lists audit.record", got)
	}
	if _, err := Compile(nil, Limits{}); err == nil {
		t.Error("Compile(nil) succeeded")
	}
}
