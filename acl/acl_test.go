package acl

import (
	"errors"
	"strings"
	"testing"
)

func TestAllow(t *testing.T) {
	payments := &Token{AccessorID: "acc_p", Policy: App, Capabilities: []string{"payments.*"}, Workflows: []string{"shop/order-*"}}
	tokens := map[Policy]*Token{
		Management: {AccessorID: "acc_m", Policy: Management},
		Writer:     {AccessorID: "acc_w", Policy: Writer},
		Reader:     {AccessorID: "acc_r", Policy: Reader},
		App:        payments,
		Agent:      {AccessorID: "acc_a", Policy: Agent},
	}
	read := Request{Need: Read}
	write := Request{Need: Write}
	op := Request{Need: Operator}
	agent := Request{Need: AgentRPC}
	own := Request{Need: Worker, Capability: "payments.charge"}
	other := Request{Need: Worker, Capability: "inventory.reserve"}
	anyCap := Request{Need: Worker}
	startOrder := Request{Need: Start, Workflow: "shop/order-fulfilment"}
	startOther := Request{Need: Start, Workflow: "billing/invoice"}
	for _, tc := range []struct {
		policy Policy
		req    Request
		want   bool
	}{
		{Management, op, true},
		{Management, agent, true},
		{Management, other, true},
		{Writer, read, true},
		{Writer, write, true},
		{Writer, startOther, true},
		{Writer, op, false},
		{Writer, own, false},
		{Writer, agent, false},
		{Reader, read, true},
		{Reader, write, false},
		{Reader, startOrder, false},
		{Reader, own, false},
		{App, read, true},
		{App, own, true},
		{App, anyCap, true},
		{App, other, false},
		{App, startOrder, true},
		{App, startOther, false},
		{App, write, false},
		{App, op, false},
		{App, agent, false},
		{Agent, agent, true},
		{Agent, other, true},
		{Agent, read, true},
		{Agent, op, false},
		{Agent, write, false},
	} {
		err := tokens[tc.policy].Allow(tc.req)
		if (err == nil) != tc.want {
			t.Errorf("%s %+v: allowed %v, want %v (%v)", tc.policy, tc.req, err == nil, tc.want, err)
		}
		var de *DeniedError
		if err != nil && !errors.As(err, &de) {
			t.Errorf("%s %+v: %T is not a *DeniedError", tc.policy, tc.req, err)
		}
	}
}

// The refusal is what an app's developer reads: it names the token, its
// policy and scope, and what the call needed.
func TestDeniedErrorSaysWhy(t *testing.T) {
	tok := &Token{AccessorID: "acc_p", Policy: App, Capabilities: []string{"payments.*"}}
	err := tok.Allow(Request{Need: Worker, Capability: "inventory.reserve"})
	for _, want := range []string{"acc_p", "policy app", "payments.*", `"inventory.reserve"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"payments.*", "payments.charge", true},
		{"payments.*", "payments", false},
		{"payments.*", "paymentsx.charge", false},
		{"payments.charge", "payments.charge", true},
		{"*", "shop/order", true},
		{"shop/*", "shop/order", true},
		{"shop/*", "billing/order", false},
		{"[", "[", false},
	} {
		if got := Match(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestCheckGrant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  Policy
		caps    []string
		wfs     []string
		wantErr string
	}{
		{"app with capabilities", App, []string{"payments.*"}, []string{"shop/*"}, ""},
		{"app without capabilities", App, nil, nil, "at least one capability"},
		{"writer with capabilities", Writer, []string{"x"}, nil, "only app tokens"},
		{"bad pattern", App, []string{"pay["}, nil, "not a pattern"},
		{"management", Management, nil, nil, ""},
	} {
		err := CheckGrant(tc.policy, tc.caps, tc.wfs)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestSecretsAreRandomAndHashed(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if a == b || !strings.HasPrefix(a, SecretPrefix) || len(a) < 40 {
		t.Fatalf("secrets %q, %q: want distinct, prefixed, 256-bit", a, b)
	}
	if Hash(a) == Hash(b) {
		t.Fatal("hash must be a function of the secret")
	}
	if _, err := ParsePolicy("admin"); err == nil {
		t.Fatal("unknown policy accepted")
	}
}
