package bus

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, subject string
		want             bool
	}{
		{"tasker.events.>", "tasker.events.step.failed", true},
		{"tasker.events.>", "tasker.events", false},
		{"tasker.events.*", "tasker.events.task", true},
		{"tasker.events.*", "tasker.events.step.failed", false},
		{"tasker.events.*.failed", "tasker.events.step.failed", true},
		{"tasker.dlq", "tasker.dlq", true},
		{"tasker.dlq", "tasker.dlq.x", false},
		{"tasker.>", "tasker.dlq", true},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.subject); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.subject, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Message{ID: "1", Subject: EventSubject("step.failed")}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "a..b", "a.*", "a.>", "a b"} {
		if err := ValidSubject(s); err == nil {
			t.Errorf("ValidSubject(%q) accepted", s)
		}
	}
	for _, p := range []string{"", "a.>.b", "a..b"} {
		if err := ValidPattern(p); err == nil {
			t.Errorf("ValidPattern(%q) accepted", p)
		}
	}
	if err := ValidPattern("tasker.*.>"); err != nil {
		t.Error(err)
	}
}

func TestValidSubscription(t *testing.T) {
	tests := []struct {
		pattern, group, want string
	}{
		{"tasker.events.>", "audit", ""},
		{"tasker.>.x", "audit", "'>' must be the last token"},
		{"tasker.events.>", "", "subscribe needs a group"},
	}
	for _, tt := range tests {
		err := ValidSubscription(tt.pattern, tt.group)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("ValidSubscription(%q, %q) = %v, want %q", tt.pattern, tt.group, err, tt.want)
		}
	}
}
