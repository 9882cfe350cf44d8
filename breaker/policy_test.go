package breaker

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const exampleYAML = `
policies:
  timeouts:
    general: 5s
    fast: 500ms
  retries:
    standard:
      initialInterval: 100ms
      maxInterval: 10s
      multiplier: 2
      jitter: 0.2
      maxRetries: 3
    once:
      policy: constant
      duration: 1s
      maxRetries: 1
  circuitBreakers:
    agents:
      maxRequests: 1
      interval: 30s
      timeout: 60s
      trip: consecutiveFailures > 5
    payments:
      maxRequests: 3
      timeout: 10s
      trip: failureRatio > 0.5
      minRequests: 20
defaults:
  timeout: general
  retry: standard
  circuitBreaker: agents
targets:
  agents:
    agent-b:
      timeout: fast
  capabilities:
    payments.charge:
      timeout: general
      retry: once
      circuitBreaker: payments
`

func TestParseConfigAndResolve(t *testing.T) {
	c, err := ParseConfig([]byte(exampleYAML))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target  string
		timeout time.Duration
		retry   int // MaxRetries
		trip    string
	}{
		{"agent-a", 5 * time.Second, 3, "consecutiveFailures > 5"},
		{"agent-b", 500 * time.Millisecond, 3, "consecutiveFailures > 5"},
		{Target("agent-a", "payments.charge"), 5 * time.Second, 1, "failureRatio > 0.5"},
		// The agent's own setting wins over the capability's, field by field.
		{Target("agent-b", "payments.charge"), 500 * time.Millisecond, 1, "failureRatio > 0.5"},
		{Target("agent-a", "inventory.reserve"), 5 * time.Second, 3, "consecutiveFailures > 5"},
	}
	for _, tt := range tests {
		p := c.Resolve(tt.target)
		if p.Timeout != tt.timeout || p.Retry.MaxRetries != tt.retry || p.CircuitBreaker.Trip != tt.trip {
			t.Errorf("%s: got %v, %d retries, %q; want %v, %d, %q", tt.target, p.Timeout, p.Retry.MaxRetries, p.CircuitBreaker.Trip, tt.timeout, tt.retry, tt.trip)
		}
	}
}

func TestParseConfigJSON(t *testing.T) {
	c, err := ParseConfig([]byte(`{"policies": {"timeouts": {"t": "2s"}}, "defaults": {"timeout": "t"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Resolve("x"); p.Timeout != 2*time.Second || p.Retry != DefaultPolicy().Retry {
		t.Fatalf("got %+v, want a 2s timeout and the default retry", p)
	}
}

func TestEmptyConfigGivesDefaults(t *testing.T) {
	for _, doc := range []string{"", "{}"} {
		c, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if p := c.Resolve("x"); p != DefaultPolicy() {
			t.Fatalf("%q: got %+v, want the default policy", doc, p)
		}
	}
	if err := configFor(DefaultPolicy()).Validate(); err != nil {
		t.Fatalf("the default policy is invalid: %v", err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // substrings, each naming the field and the limit
	}{
		{"unknown field", "policies:\n  retrys: {}\n", []string{"field retrys not found"}},
		{"bad duration", "policies:\n  timeouts:\n    t: 5 seconds\n", []string{"line 3", "time.Duration"}},
		{"timeout limit", "policies:\n  timeouts:\n    t: 2h\n", []string{"policies.timeouts.t: must be between 0 and 1h0m0s, got 2h0m0s"}},
		{"retry limits", `policies:
  retries:
    r: {initialInterval: 0s, maxInterval: 1s, multiplier: 20, jitter: 1.5, maxRetries: 101}
`, []string{
			"policies.retries.r.initialInterval: must be between 1ns and 1h0m0s, got 0s",
			"policies.retries.r.multiplier: must be between 1 and 10, got 20",
			"policies.retries.r.jitter: must be between 0 and 1, got 1.5",
			"policies.retries.r.maxRetries: must be between -1 (until the context ends) and 100, got 101",
		}},
		{"maxInterval below initial", "policies:\n  retries:\n    r: {initialInterval: 2s, maxInterval: 1s, multiplier: 2}\n",
			[]string{"policies.retries.r.maxInterval: must be at least initialInterval (2s), got 1s"}},
		{"retry policy name", "policies:\n  retries:\n    r: {policy: linear}\n", []string{`policies.retries.r.policy: must be "exponential" or "constant", got "linear"`}},
		{"constant needs duration", "policies:\n  retries:\n    r: {policy: constant}\n", []string{"policies.retries.r.duration: must be between 1ns and 1h0m0s, got 0s"}},
		{"breaker limits", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 0, interval: -1s, timeout: 0s, trip: consecutiveFailures > 5}\n", []string{
			"policies.circuitBreakers.cb.maxRequests: must be between 1 and 1000, got 0",
			"policies.circuitBreakers.cb.interval: must be between 0 (never clear) and 1h0m0s, got -1s",
			"policies.circuitBreakers.cb.timeout: must be between 1ns and 1h0m0s, got 0s",
		}},
		{"trip syntax", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 1, timeout: 1s, trip: failures >= 3}\n",
			[]string{`policies.circuitBreakers.cb.trip: must be "consecutiveFailures > N" or "failureRatio > R", got "failures >= 3"`}},
		{"trip count", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 1, timeout: 1s, trip: consecutiveFailures > -1}\n",
			[]string{`policies.circuitBreakers.cb.trip: consecutiveFailures limit must be an integer between 0 and 1000, got "-1"`}},
		{"trip ratio", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 1, timeout: 1s, trip: failureRatio > 1, minRequests: 5}\n",
			[]string{`policies.circuitBreakers.cb.trip: failureRatio limit must be a number from 0 up to (not including) 1, got "1"`}},
		{"ratio needs minRequests", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 1, timeout: 1s, trip: failureRatio > 0.5}\n",
			[]string{"policies.circuitBreakers.cb.minRequests: must be between 1 and 100000 with a failureRatio trip, got 0"}},
		{"minRequests without ratio", "policies:\n  circuitBreakers:\n    cb: {maxRequests: 1, timeout: 1s, trip: consecutiveFailures > 1, minRequests: 5}\n",
			[]string{"policies.circuitBreakers.cb.minRequests: only applies to a failureRatio trip"}},
		{"unknown references", "defaults: {timeout: t}\ntargets:\n  agents:\n    b: {retry: r}\n  capabilities:\n    pay: {circuitBreaker: cb}\n", []string{
			`defaults.timeout: no timeout policy named "t" in policies.timeouts`,
			`targets.agents.b.retry: no retry policy named "r" in policies.retries`,
			`targets.capabilities.pay.circuitBreaker: no circuit breaker policy named "cb" in policies.circuitBreakers`,
		}},
		{"capability with slash", "targets:\n  capabilities:\n    a/b: {}\n", []string{`targets.capabilities.a/b: a capability name cannot contain "/"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.doc))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			var fe *FieldError
			if decodeError := tt.name == "unknown field" || tt.name == "bad duration"; !decodeError {
				if !errors.As(err, &fe) {
					t.Errorf("%v: not a *FieldError", err)
				}
			}
		})
	}
}

func TestNewSetValidates(t *testing.T) {
	p := DefaultPolicy()
	p.Retry.Jitter = 2
	if _, err := NewSet(configFor(p)); err == nil || !strings.Contains(err.Error(), "policies.retries.r.jitter") {
		t.Fatalf("got %v, want a jitter error", err)
	}
}
