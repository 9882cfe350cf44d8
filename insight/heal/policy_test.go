package heal

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight"
)

func TestParsePolicyExample(t *testing.T) {
	b, err := os.ReadFile("testdata/healing.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		Enabled:  true,
		Cooldown: 10 * time.Minute,
		Rules: []Rule{
			{Action: insight.ActionChangeTimeout, MinConfidence: 0.7, MaxFactor: 2, MaxTimeout: 5 * time.Minute, MaxPerHour: 2, Workflows: []string{"default/orders"}},
			{Action: insight.ActionRetryStep, MinConfidence: 0.8, MaxPerHour: 20},
			{Action: insight.ActionReroute, MinConfidence: DefaultMinConfidence, MaxPerHour: 10, Workflows: []string{"prod/*", "staging/*"}},
			{Action: insight.ActionChangeRetryPolicy, MinConfidence: 0.7, MaxAttempts: 6, MaxPerHour: 1},
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got  %+v\nwant %+v", p, want)
	}
}

func TestParsePolicyDefaults(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Policy
	}{
		{"empty document is disabled", ``, Policy{Cooldown: DefaultCooldown}},
		{"only enabled", `enabled: true`, Policy{Enabled: true, Cooldown: DefaultCooldown}},
		{"change_timeout defaults", "rules:\n  - action: change_timeout\n", Policy{Cooldown: DefaultCooldown, Rules: []Rule{{
			Action: insight.ActionChangeTimeout, MinConfidence: DefaultMinConfidence, MaxFactor: DefaultMaxFactor,
			MaxTimeout: DefaultMaxTimeout, MaxPerHour: DefaultMaxPerHour,
		}}}},
		{"change_retry_policy defaults", "rules:\n  - action: change_retry_policy\n", Policy{Cooldown: DefaultCooldown, Rules: []Rule{{
			Action: insight.ActionChangeRetryPolicy, MinConfidence: DefaultMinConfidence, MaxAttempts: DefaultMaxAttempts, MaxPerHour: DefaultMaxPerHour,
		}}}},
		{"json", `{"enabled": true, "cooldown": "1m", "rules": [{"action": "retry_step", "min_confidence": 1}]}`, Policy{Enabled: true, Cooldown: time.Minute, Rules: []Rule{{
			Action: insight.ActionRetryStep, MinConfidence: 1, MaxPerHour: DefaultMaxPerHour,
		}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, tt.want) {
				t.Errorf("got  %+v\nwant %+v", p, tt.want)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error, the field first
	}{
		{"unknown top-level key", "enabled: true\ncooldwn: 5m\n", []string{"cooldwn", "the policy's keys are enabled, rules, cooldown"}},
		{"unknown rule key", "rules:\n  - action: retry_step\n    min_confidnce: 0.9\n", []string{"min_confidnce"}},
		{"bare number duration", "cooldown: 600\n", []string{"600", "durations need a unit"}},
		{"unknown action", "rules:\n  - action: reboot\n", []string{"rules[0].action", `unknown action "reboot"`}},
		{"missing action", "rules:\n  - min_confidence: 0.9\n", []string{"rules[0].action", `unknown action ""`}},
		{"resolve_manually", "rules:\n  - action: resolve_manually\n", []string{"rules[0].action", "resolve_manually always needs a human: it invents a step's result"}},
		{"cancel", "rules:\n  - action: cancel\n", []string{"rules[0].action", "cancel always needs a human"}},
		{"escalate", "rules:\n  - action: retry_step\n  - action: escalate\n", []string{"rules[1].action", "escalate always needs a human"}},
		{"min_confidence zero", "rules:\n  - action: retry_step\n    min_confidence: 0\n", []string{"rules[0].min_confidence", "above 0 and at most 1", "got 0"}},
		{"min_confidence above one", "rules:\n  - action: retry_step\n    min_confidence: 1.5\n", []string{"rules[0].min_confidence", "got 1.5"}},
		{"min_confidence NaN", "rules:\n  - action: retry_step\n    min_confidence: .nan\n", []string{"rules[0].min_confidence", "NaN"}},
		{"max_factor one", "rules:\n  - action: change_timeout\n    max_factor: 1\n", []string{"rules[0].max_factor", "above 1 and at most 10", "got 1"}},
		{"max_factor eleven", "rules:\n  - action: change_timeout\n    max_factor: 11\n", []string{"rules[0].max_factor", "got 11"}},
		{"max_factor on retry_step", "rules:\n  - action: retry_step\n    max_factor: 2\n", []string{"rules[0].max_factor", "only applies to change_timeout"}},
		{"max_timeout on reroute", "rules:\n  - action: reroute\n    max_timeout: 1m\n", []string{"rules[0].max_timeout", "only applies to change_timeout"}},
		{"max_attempts on change_timeout", "rules:\n  - action: change_timeout\n    max_attempts: 3\n", []string{"rules[0].max_attempts", "only applies to change_retry_policy"}},
		{"max_timeout zero", "rules:\n  - action: change_timeout\n    max_timeout: 0s\n", []string{"rules[0].max_timeout", "positive and at most 24h0m0s", "got 0s"}},
		{"max_timeout negative", "rules:\n  - action: change_timeout\n    max_timeout: -1m\n", []string{"rules[0].max_timeout", "got -1m0s"}},
		{"max_attempts zero", "rules:\n  - action: change_retry_policy\n    max_attempts: 0\n", []string{"rules[0].max_attempts", "between 1 and 100", "got 0"}},
		{"max_attempts too many", "rules:\n  - action: change_retry_policy\n    max_attempts: 101\n", []string{"rules[0].max_attempts", "got 101"}},
		{"max_per_hour zero", "rules:\n  - action: retry_step\n    max_per_hour: 0\n", []string{"rules[0].max_per_hour", "between 1 and 1000", "got 0"}},
		{"max_per_hour too many", "rules:\n  - action: retry_step\n    max_per_hour: 1001\n", []string{"rules[0].max_per_hour", "got 1001"}},
		{"cooldown zero", "cooldown: 0s\n", []string{"cooldown", "positive and at most 24h0m0s", "got 0s"}},
		{"cooldown too long", "cooldown: 25h\n", []string{"cooldown", "got 25h0m0s"}},
		{"selector without namespace", "rules:\n  - action: retry_step\n    workflows: [\"orders\"]\n", []string{"rules[0].workflows[0]", `"namespace/name"`, `got "orders"`}},
		{"selector with two slashes", "rules:\n  - action: retry_step\n    workflows: [\"a/b/c\"]\n", []string{"rules[0].workflows[0]", `got "a/b/c"`}},
		{"bad glob", "rules:\n  - action: retry_step\n    workflows: [\"default/orders\", \"default/[\"]\n", []string{"rules[0].workflows[1]", "not a valid glob", "syntax error in pattern"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParsePolicyReportsEveryProblem(t *testing.T) {
	_, err := ParsePolicy([]byte("cooldown: 0s\nrules:\n  - action: cancel\n  - action: retry_step\n    max_per_hour: 0\n"))
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			fields = append(fields, fe.Field)
		}
	}
	want := []string{"cooldown", "rules[0].action", "rules[1].max_per_hour"}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("fields %v, want %v (error: %v)", fields, want, err)
	}
}

func TestValidateZeroPolicyNeedsCooldown(t *testing.T) {
	// A Policy built in code must be validated; the zero one lacks a cooldown.
	var fe *FieldError
	if err := (Policy{}).Validate(); !errors.As(err, &fe) || fe.Field != "cooldown" {
		t.Errorf("zero policy: %v, want a cooldown FieldError", err)
	}
}
