package heal

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight"
)

// t0 is the tests' fixed now.
func t0() time.Time { return time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC) }

// testPolicy is the example file's policy, written out so the tests do not
// depend on the parser.
func testPolicy() Policy {
	return Policy{
		Enabled:  true,
		Cooldown: 10 * time.Minute,
		Rules: []Rule{
			{Action: insight.ActionChangeTimeout, MinConfidence: 0.7, MaxFactor: 2, MaxTimeout: 5 * time.Minute, MaxPerHour: 2, Workflows: []string{"default/orders"}},
			{Action: insight.ActionRetryStep, MinConfidence: 0.8, MaxPerHour: 20},
			{Action: insight.ActionReroute, MinConfidence: 0.8, MaxPerHour: 10, Workflows: []string{"prod/*"}},
			{Action: insight.ActionChangeRetryPolicy, MinConfidence: 0.7, MaxAttempts: 6, MaxPerHour: 1},
		},
	}
}

func rem(a insight.Action, conf float64, params ...string) insight.Remediation {
	r := insight.Remediation{Action: a, Confidence: conf, Source: "rules", Params: map[string]string{"step": "charge"}}
	for i := 0; i+1 < len(params); i += 2 {
		r.Params[params[i]] = params[i+1]
	}
	return r
}

func TestDecide(t *testing.T) {
	timeout := func(d string) insight.Remediation {
		return rem(insight.ActionChangeTimeout, 0.9, "timeout", d)
	}
	attempts := func(n string) insight.Remediation {
		return rem(insight.ActionChangeRetryPolicy, 0.9, "max_attempts", n)
	}
	model := func(r insight.Remediation) insight.Remediation { r.Source = "model"; return r }
	applied := func(a insight.Action, wf, step string, ago time.Duration) Applied {
		return Applied{Action: a, Workflow: wf, Step: step, At: t0().Add(-ago)}
	}

	tests := []struct {
		name   string
		policy func(*Policy) // edits testPolicy(); nil keeps it
		in     Input         // Workflow, Step, Now, FindingConfidence and the current settings default below
		auto   bool
		reason []string          // substrings of Reason
		params map[string]string // the decision's params, when checked
	}{
		{
			name:   "disabled",
			policy: func(p *Policy) { p.Enabled = false },
			in:     Input{Remediation: rem(insight.ActionRetryStep, 0.95)},
			reason: []string{"self-healing is disabled"},
		},
		{
			name:   "retry_step allowed",
			in:     Input{Remediation: rem(insight.ActionRetryStep, 0.95)},
			auto:   true,
			reason: []string{"retry_step on default/orders step charge applies automatically", "confidence 0.90 reaches the policy's 0.80", "1 of 20 this hour"},
		},
		{
			name:   "resolve_manually never",
			in:     Input{Remediation: rem(insight.ActionResolveManually, 1)},
			reason: []string{"resolve_manually always needs a human: it invents a step's result"},
		},
		{
			name:   "cancel never",
			in:     Input{Remediation: rem(insight.ActionCancel, 1)},
			reason: []string{"cancel always needs a human"},
		},
		{
			name:   "escalate never",
			in:     Input{Remediation: rem(insight.ActionEscalate, 1)},
			reason: []string{"escalate always needs a human"},
		},
		{
			name:   "action outside the vocabulary",
			in:     Input{Remediation: rem("reboot", 1)},
			reason: []string{`unknown action "reboot"`},
		},
		{
			name:   "no rule for the action",
			policy: func(p *Policy) { p.Rules = p.Rules[:2] },
			in:     Input{Remediation: rem(insight.ActionChangeRetryPolicy, 1, "max_attempts", "4")},
			reason: []string{"the policy has no rule for change_retry_policy"},
		},
		{
			name:   "rule does not select the workflow",
			in:     Input{Workflow: "default/billing", Remediation: timeout("60s")},
			reason: []string{"no change_timeout rule in the policy selects workflow default/billing"},
		},
		{
			name:   "glob selects the workflow",
			in:     Input{Workflow: "prod/orders", Remediation: rem(insight.ActionReroute, 0.9, "avoid_agent", "a1")},
			auto:   true,
			reason: []string{"reroute on prod/orders"},
		},
		{
			name: "first matching rule wins",
			policy: func(p *Policy) {
				strict := Rule{Action: insight.ActionRetryStep, MinConfidence: 0.99, MaxPerHour: 1, Workflows: []string{"default/*"}}
				p.Rules = append([]Rule{strict}, p.Rules...)
			},
			in:     Input{Remediation: rem(insight.ActionRetryStep, 0.95)},
			reason: []string{"below the policy's 0.99"},
		},
		{
			name:   "remediation confidence below",
			in:     Input{Remediation: rem(insight.ActionChangeTimeout, 0.62, "timeout", "60s")},
			reason: []string{"confidence 0.62", "is below the policy's 0.70 for change_timeout"},
		},
		{
			name:   "finding confidence below: the lower one counts",
			in:     Input{FindingConfidence: 0.5, Remediation: rem(insight.ActionRetryStep, 0.99)},
			reason: []string{"confidence 0.50 (the lower of remediation 0.99 and finding 0.50) is below the policy's 0.80"},
		},
		{
			name:   "confidence exactly at the minimum",
			in:     Input{FindingConfidence: 0.8, Remediation: rem(insight.ActionRetryStep, 0.8)},
			auto:   true,
			reason: []string{"confidence 0.80 reaches the policy's 0.80"},
		},
		{
			name:   "model alone",
			in:     Input{Remediation: model(rem(insight.ActionRetryStep, 0.99))},
			reason: []string{"suggested by the model alone", "only when a rules-based remediation proposes the same action"},
		},
		{
			name: "model with a rules-based different action",
			in: Input{Remediation: model(rem(insight.ActionRetryStep, 0.99)),
				Alternatives: []insight.Remediation{rem(insight.ActionEscalate, 0.5)}},
			reason: []string{"suggested by the model alone"},
		},
		{
			name: "model backed by rules",
			in: Input{Remediation: model(timeout("50s")),
				Alternatives: []insight.Remediation{model(timeout("50s")), rem(insight.ActionChangeTimeout, 0.6, "timeout", "45s")}},
			auto:   true,
			reason: []string{"backed by a rules-based change_timeout"},
			params: map[string]string{"step": "charge", "timeout": "50s"},
		},
		{
			name:   "unknown source",
			in:     Input{Remediation: insight.Remediation{Action: insight.ActionRetryStep, Confidence: 1}},
			reason: []string{`remediation source "" is neither "rules" nor "model"`},
		},
		{
			name:   "timeout within the bounds",
			in:     Input{Remediation: timeout("45s")},
			auto:   true,
			params: map[string]string{"step": "charge", "timeout": "45s"},
		},
		{
			name:   "timeout clamped by max_factor",
			in:     Input{Remediation: timeout("3m")},
			auto:   true,
			reason: []string{"timeout clamped from 3m to 1m (max_factor 2 × current 30s)"},
			params: map[string]string{"step": "charge", "timeout": "1m0s"},
		},
		{
			name:   "timeout clamped by max_timeout",
			in:     Input{CurrentTimeout: 4 * time.Minute, Remediation: timeout("8m")},
			auto:   true,
			reason: []string{"timeout clamped from 8m to 5m (max_timeout 5m)"},
			params: map[string]string{"step": "charge", "timeout": "5m0s"},
		},
		{
			name:   "timeout already at max_timeout",
			in:     Input{CurrentTimeout: 5 * time.Minute, Remediation: timeout("8m")},
			reason: []string{"current timeout 5m is already at the policy's ceiling (max_timeout 5m)"},
		},
		{
			name:   "timeout never lowered",
			in:     Input{Remediation: timeout("10s")},
			reason: []string{"change_timeout to 10s would not raise the current 30s"},
		},
		{
			name:   "timeout unchanged",
			in:     Input{Remediation: timeout("30s")},
			reason: []string{"would not raise the current 30s"},
		},
		{
			name:   "step without a timeout",
			in:     Input{CurrentTimeout: -1, Remediation: timeout("30s")},
			reason: []string{"step charge has no timeout to scale"},
		},
		{
			name:   "timeout param missing",
			in:     Input{Remediation: rem(insight.ActionChangeTimeout, 0.9)},
			reason: []string{`timeout param "" is not a positive duration`},
		},
		{
			name:   "max_attempts within the ceiling",
			in:     Input{Remediation: attempts("5")},
			auto:   true,
			params: map[string]string{"step": "charge", "max_attempts": "5"},
		},
		{
			name:   "max_attempts clamped to the ceiling",
			in:     Input{Remediation: attempts("10")},
			auto:   true,
			reason: []string{"max_attempts clamped from 10 to 6 (the policy's ceiling)"},
			params: map[string]string{"step": "charge", "max_attempts": "6"},
		},
		{
			name:   "max_attempts already at the ceiling",
			in:     Input{CurrentMaxAttempts: 6, Remediation: attempts("8")},
			reason: []string{"current max_attempts 6 is already at the policy's ceiling 6"},
		},
		{
			name:   "max_attempts never lowered",
			in:     Input{Remediation: attempts("2")},
			reason: []string{"change_retry_policy to 2 attempts would not raise the current 3"},
		},
		{
			name:   "max_attempts param not a number",
			in:     Input{Remediation: attempts("many")},
			reason: []string{`max_attempts param "many" is not a positive integer`},
		},
		{
			name: "rate limit reached",
			in: Input{Remediation: timeout("45s"), Recent: []Applied{
				applied(insight.ActionChangeTimeout, "default/orders", "a", 50*time.Minute),
				applied(insight.ActionChangeTimeout, "default/orders", "b", 20*time.Minute),
			}},
			reason: []string{"2 change_timeout actions on default/orders in the last hour; the policy allows 2"},
		},
		{
			name: "rate limit counts only the last hour, this action and this workflow",
			in: Input{Remediation: timeout("45s"), Recent: []Applied{
				applied(insight.ActionChangeTimeout, "default/orders", "a", 61*time.Minute),
				applied(insight.ActionChangeTimeout, "default/billing", "b", 20*time.Minute),
				applied(insight.ActionRetryStep, "default/orders", "c", 20*time.Minute),
				applied(insight.ActionChangeTimeout, "default/orders", "d", 20*time.Minute),
			}},
			auto:   true,
			reason: []string{"2 of 2 this hour"},
		},
		{
			name: "cooldown on the same step, any action",
			in: Input{Remediation: rem(insight.ActionRetryStep, 0.9), Recent: []Applied{
				applied(insight.ActionChangeTimeout, "default/orders", "charge", 3*time.Minute),
			}},
			reason: []string{"cooldown: default/orders step charge was healed 3m ago; wait 10m"},
		},
		{
			name: "an entry from a clock ahead counts as just now",
			in: Input{Remediation: rem(insight.ActionRetryStep, 0.9), Recent: []Applied{
				applied(insight.ActionRetryStep, "default/orders", "charge", -2*time.Minute),
			}},
			reason: []string{"was healed 0s ago; wait 10m"},
		},
		{
			name: "cooldown over",
			in: Input{Remediation: rem(insight.ActionRetryStep, 0.9), Recent: []Applied{
				applied(insight.ActionRetryStep, "default/orders", "charge", 10*time.Minute),
			}},
			auto: true,
		},
		{
			name: "cooldown is per step and workflow",
			in: Input{Remediation: rem(insight.ActionRetryStep, 0.9), Recent: []Applied{
				applied(insight.ActionRetryStep, "default/orders", "ship", time.Minute),
				applied(insight.ActionRetryStep, "default/billing", "charge", time.Minute),
			}},
			auto: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			in := tt.in
			if in.Workflow == "" {
				in.Workflow = "default/orders"
			}
			in.Step = "charge"
			in.Now = t0()
			if in.FindingConfidence == 0 {
				in.FindingConfidence = 0.9
			}
			if in.CurrentTimeout == 0 {
				in.CurrentTimeout = 30 * time.Second
			}
			if in.CurrentMaxAttempts == 0 {
				in.CurrentMaxAttempts = 3
			}
			before := maps.Clone(in.Remediation.Params)

			d := Decide(p, in)

			if d.Auto != tt.auto {
				t.Errorf("Auto = %v, want %v (reason: %s)", d.Auto, tt.auto, d.Reason)
			}
			if d.Reason == "" {
				t.Error("empty Reason")
			}
			for _, w := range tt.reason {
				if !strings.Contains(d.Reason, w) {
					t.Errorf("Reason %q does not contain %q", d.Reason, w)
				}
			}
			if tt.params != nil && !maps.Equal(d.Remediation.Params, tt.params) {
				t.Errorf("params %v, want %v", d.Remediation.Params, tt.params)
			}
			if !d.Auto && !maps.Equal(d.Remediation.Params, before) {
				t.Errorf("a remediation sent to approval was changed: %v, was %v", d.Remediation.Params, before)
			}
			if !maps.Equal(in.Remediation.Params, before) {
				t.Errorf("the input's params were modified: %v, was %v", in.Remediation.Params, before)
			}
		})
	}
}

func TestShort(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{3 * time.Minute, "3m"},
		{3*time.Minute + 200*time.Millisecond, "3m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{45 * time.Second, "45s"},
		{1500 * time.Millisecond, "2s"},
		{300 * time.Millisecond, "300ms"},
	}
	for _, tt := range tests {
		if got := short(tt.d); got != tt.want {
			t.Errorf("short(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
