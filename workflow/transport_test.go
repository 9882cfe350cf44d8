package workflow_test

import (
	"strings"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// TestBusStep: a transport: bus step compiles with its subject and no
// capability; a sidecar step keeps its capability and the default
// transport.
func TestBusStep(t *testing.T) {
	plan := mustLoad(t, `name: bx
version: 1.0.0
systems:
  billing: {}
steps:
  - name: invoice
    transport: bus
    subject: billing.invoice.create
    owner: billing
    timeout: 2s
  - name: mail
    capability: mail.send
    depends_on: [invoice]
    input: {invoice: $.steps.invoice.result}
`)
	tests := []struct {
		step                                  int
		transport, subject, capability, owner string
		bus                                   bool
	}{
		{0, workflow.TransportBus, "billing.invoice.create", "", "billing", true},
		{1, workflow.TransportSidecar, "", "mail.send", "", false},
	}
	for _, tt := range tests {
		st := plan.Steps[tt.step]
		if st.Transport != tt.transport || st.Subject != tt.subject || st.Capability != tt.capability || st.Owner != tt.owner || st.IsBus() != tt.bus {
			t.Errorf("step %s: transport %q subject %q capability %q owner %q bus %v; want %q %q %q %q %v",
				st.Name, st.Transport, st.Subject, st.Capability, st.Owner, st.IsBus(), tt.transport, tt.subject, tt.capability, tt.owner, tt.bus)
		}
	}
}

// TestBusStepProblems: each mistake with the new fields is named by its
// field and line, with the fix.
func TestBusStepProblems(t *testing.T) {
	src := `name: bx
version: 1.0.0
systems:
  billing: {}
steps:
  - name: nosubject
    transport: bus
  - name: reserved
    transport: bus
    subject: tasker.replies.x
    capability: billing.reserved
  - name: sidecar
    capability: billing.sidecar
    subject: billing.sidecar
  - name: badsubject
    transport: bus
    subject: "billing.*"
    owner: biling
  - name: spaces
    transport: bus
    subject: "billing .x"
  - name: typo
    transport: buss
    subject: billing.typo
`
	checkProblems(t, problemsOf(t, src, workflow.Limits{}), []want{
		{"steps[0]", 6, `step "nosubject" has transport: bus but no subject; set subject`},
		{"steps[1].subject", 10, `subject "tasker.replies.x" is reserved`},
		{"steps[1].capability", 11, "remove capability, or remove transport: bus"},
		{"steps[2].subject", 14, "subject is only for steps with transport: bus"},
		{"steps[3].subject", 17, `"billing.*" is not a valid bus subject: use dot-separated tokens without spaces or wildcards`},
		{"steps[3].owner", 18, `system "biling" is not declared under systems; did you mean "billing"?`},
		{"steps[4].subject", 21, `"billing .x" is not a valid bus subject`},
		{"steps[5].transport", 23, "'sidecar', 'bus'"},
	})
}

// TestCompileTransport covers Compile without source (the structural
// schema does not run): an unknown transport is reported, with a
// suggestion, by the compiler itself.
func TestCompileTransport(t *testing.T) {
	tests := []struct {
		transport, subject string
		want               string // "" compiles
	}{
		{"", "", ""},
		{"sidecar", "", ""},
		{"bus", "x.y", ""},
		{"bus", "", "has transport: bus but no subject"},
		{"buss", "x.y", `"buss" is not a transport; did you mean "bus"?`},
		{"kafka", "x.y", `"kafka" is not a transport: use sidecar`},
	}
	for _, tt := range tests {
		t.Run(tt.transport+"/"+tt.subject, func(t *testing.T) {
			st := workflow.Step{Name: "a", Transport: tt.transport, Subject: tt.subject}
			if tt.transport != "bus" {
				st.Capability = "x.a"
			}
			_, err := workflow.Compile(&workflow.Manifest{Name: "x", Version: "1.0.0", Steps: []workflow.Step{st}}, workflow.Limits{})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v; want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckBusSubject(t *testing.T) {
	tests := []struct {
		subject string
		ok      bool
	}{
		{"billing.invoice.create", true},
		{"billing", true},
		{"Billing-1.in_voice", true},
		{"tasker", true},
		{"taskers.x", true},
		{"tasker.events.x", false},
		{"", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"a.*", false},
		{"a.>", false},
		{"a.#", false},
		{"a b", false},
		{"a\tb", false},
	}
	for _, tt := range tests {
		if err := workflow.CheckBusSubject(tt.subject); (err == nil) != tt.ok {
			t.Errorf("CheckBusSubject(%q) = %v; want ok=%v", tt.subject, err, tt.ok)
		}
	}
}
