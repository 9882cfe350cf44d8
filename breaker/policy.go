package breaker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits enforced by [Config.Validate]. They exist to catch typos (a timeout
// of "5000s" meant as "5000ms"), not to forbid unusual but sane settings.
const (
	maxTimeout     = time.Hour
	maxInterval    = time.Hour
	maxRetries     = 100
	maxMultiplier  = 10.0
	maxMaxRequests = 1000
	maxTripCount   = 1000
	maxMinRequests = 100000
)

// Config is a resiliency document, modelled on Dapr's: named policies, the
// policies used for targets that are not listed, and per-agent and
// per-capability overrides. Load one with [ParseConfig]; the zero Config is
// valid and gives every target [DefaultPolicy].
type Config struct {
	// Policies holds the named timeouts, retries and circuit breakers that
	// bindings refer to.
	Policies Policies `yaml:"policies" json:"policies"`
	// Defaults names the policies for a target with no override. An empty
	// name means the built-in value from [DefaultPolicy].
	Defaults Binding `yaml:"defaults" json:"defaults"`
	// Targets holds the overrides.
	Targets Targets `yaml:"targets" json:"targets"`
}

// Policies are the named building blocks of a [Config].
type Policies struct {
	// Timeouts bounds a single attempt; zero means no timeout.
	Timeouts map[string]time.Duration `yaml:"timeouts" json:"timeouts"`
	// Retries says how often and how long to wait before trying again.
	Retries map[string]Retry `yaml:"retries" json:"retries"`
	// CircuitBreakers says when to stop calling a target, and for how long.
	CircuitBreakers map[string]CircuitBreaker `yaml:"circuitBreakers" json:"circuitBreakers"`
}

// Targets holds per-agent and per-capability overrides. For a target
// "agent/capability" (see [Target]), each field of the binding is taken from
// the agent's entry if it sets it, else from the capability's entry, else
// from [Config.Defaults].
type Targets struct {
	// Agents is keyed by agent name.
	Agents map[string]Binding `yaml:"agents" json:"agents"`
	// Capabilities is keyed by capability name, e.g. "payments.charge".
	Capabilities map[string]Binding `yaml:"capabilities" json:"capabilities"`
}

// Binding names the policies that apply to a target. An empty field falls
// through to the next, less specific binding.
type Binding struct {
	// Timeout is a key of [Policies.Timeouts].
	Timeout string `yaml:"timeout" json:"timeout"`
	// Retry is a key of [Policies.Retries].
	Retry string `yaml:"retry" json:"retry"`
	// CircuitBreaker is a key of [Policies.CircuitBreakers].
	CircuitBreaker string `yaml:"circuitBreaker" json:"circuitBreaker"`
}

// Retry is a retry policy: exponential backoff with a cap and jitter, or a
// constant delay.
type Retry struct {
	// Policy is "exponential" (the default when empty) or "constant".
	Policy string `yaml:"policy" json:"policy"`
	// Duration is the delay between attempts of a constant policy.
	Duration time.Duration `yaml:"duration" json:"duration"`
	// InitialInterval is the first delay of an exponential policy.
	InitialInterval time.Duration `yaml:"initialInterval" json:"initialInterval"`
	// MaxInterval caps each exponential delay (before a retry-after).
	MaxInterval time.Duration `yaml:"maxInterval" json:"maxInterval"`
	// Multiplier grows each exponential delay; 1 to 10.
	Multiplier float64 `yaml:"multiplier" json:"multiplier"`
	// Jitter spreads each delay uniformly over ±Jitter of itself (0 to 1),
	// so that callers failing together do not retry together.
	Jitter float64 `yaml:"jitter" json:"jitter"`
	// MaxRetries is the number of retries after the first attempt: 0 means
	// none, -1 means until the caller's context ends.
	MaxRetries int `yaml:"maxRetries" json:"maxRetries"`
}

// CircuitBreaker is a circuit breaker policy, with gobreaker's semantics.
type CircuitBreaker struct {
	// MaxRequests is the number of trial calls let through while half-open;
	// that many consecutive successes close the breaker. 1 to 1000.
	MaxRequests uint32 `yaml:"maxRequests" json:"maxRequests"`
	// Interval is how often the counts are cleared while closed; zero means
	// never (only a state change clears them).
	Interval time.Duration `yaml:"interval" json:"interval"`
	// Timeout is how long the breaker stays open before letting trial calls
	// through (half-open).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Trip is when a closed breaker opens: "consecutiveFailures > N" or
	// "failureRatio > R" (0 <= R < 1, with MinRequests).
	Trip string `yaml:"trip" json:"trip"`
	// MinRequests is how many calls since the counts were last cleared a
	// failureRatio trip needs before it can open the breaker.
	MinRequests uint32 `yaml:"minRequests" json:"minRequests"`
}

// Policy is everything that applies to one target, resolved from a
// [Config].
type Policy struct {
	// Timeout bounds each attempt; zero means no timeout.
	Timeout time.Duration
	// Retry is the retry policy.
	Retry Retry
	// CircuitBreaker is the breaker policy.
	CircuitBreaker CircuitBreaker
}

// DefaultPolicy is what a target gets when the [Config] names nothing for
// it: a 10 s timeout per attempt, 3 retries with exponential backoff from
// 200 ms to 5 s with 20% jitter, and a breaker that opens after more than 5
// consecutive failures for 30 s, then closes after 1 successful trial call.
func DefaultPolicy() Policy {
	return Policy{
		Timeout: 10 * time.Second,
		Retry: Retry{
			Policy:          "exponential",
			InitialInterval: 200 * time.Millisecond,
			MaxInterval:     5 * time.Second,
			Multiplier:      2,
			Jitter:          0.2,
			MaxRetries:      3,
		},
		CircuitBreaker: CircuitBreaker{
			MaxRequests: 1,
			Interval:    60 * time.Second,
			Timeout:     30 * time.Second,
			Trip:        "consecutiveFailures > 5",
		},
	}
}

// Target is the target name for calls to capability on agent: breakers,
// counts and policy overrides are per target, so a failing capability does
// not stop calls to the agent's other capabilities. An empty capability
// gives the agent's name, for calls that are about the agent itself.
func Target(agent, capability string) string {
	if capability == "" {
		return agent
	}
	return agent + "/" + capability
}

// splitTarget undoes [Target]. Capability names contain no "/".
func splitTarget(target string) (agent, capability string) {
	if i := strings.LastIndexByte(target, '/'); i >= 0 {
		return target[:i], target[i+1:]
	}
	return target, ""
}

// ParseConfig reads a Config from YAML or JSON (JSON is YAML), refuses
// unknown fields and validates it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("breaker: config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// FieldError is one problem in a [Config], named by its field path, e.g.
// "policies.retries.fast.maxRetries".
type FieldError struct {
	// Field is the path of the offending field.
	Field string
	// Problem says what is wrong and what the limit is.
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Validate reports every problem in c as a [FieldError], joined with
// [errors.Join], or nil.
func (c Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies.Timeouts)) {
		d := c.Policies.Timeouts[name]
		if d < 0 || d > maxTimeout {
			add("policies.timeouts."+name, "must be between 0 and %v, got %v", maxTimeout, d)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies.Retries)) {
		c.Policies.Retries[name].validate("policies.retries."+name, add)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies.CircuitBreakers)) {
		c.Policies.CircuitBreakers[name].validate("policies.circuitBreakers."+name, add)
	}
	c.validateBinding("defaults", c.Defaults, add)
	for _, name := range slices.Sorted(maps.Keys(c.Targets.Agents)) {
		c.validateBinding("targets.agents."+name, c.Targets.Agents[name], add)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Targets.Capabilities)) {
		if strings.Contains(name, "/") {
			add("targets.capabilities."+name, "a capability name cannot contain \"/\"")
		}
		c.validateBinding("targets.capabilities."+name, c.Targets.Capabilities[name], add)
	}
	return errors.Join(errs...)
}

func (c Config) validateBinding(field string, b Binding, add func(string, string, ...any)) {
	if _, ok := c.Policies.Timeouts[b.Timeout]; b.Timeout != "" && !ok {
		add(field+".timeout", "no timeout policy named %q in policies.timeouts", b.Timeout)
	}
	if _, ok := c.Policies.Retries[b.Retry]; b.Retry != "" && !ok {
		add(field+".retry", "no retry policy named %q in policies.retries", b.Retry)
	}
	if _, ok := c.Policies.CircuitBreakers[b.CircuitBreaker]; b.CircuitBreaker != "" && !ok {
		add(field+".circuitBreaker", "no circuit breaker policy named %q in policies.circuitBreakers", b.CircuitBreaker)
	}
}

func (r Retry) validate(field string, add func(string, string, ...any)) {
	switch r.Policy {
	case "", "exponential":
		if r.InitialInterval <= 0 || r.InitialInterval > maxInterval {
			add(field+".initialInterval", "must be between 1ns and %v, got %v", maxInterval, r.InitialInterval)
		}
		if r.MaxInterval < 0 || r.MaxInterval > maxInterval {
			add(field+".maxInterval", "must be between 0 (no cap) and %v, got %v", maxInterval, r.MaxInterval)
		} else if r.MaxInterval > 0 && r.MaxInterval < r.InitialInterval {
			add(field+".maxInterval", "must be at least initialInterval (%v), got %v", r.InitialInterval, r.MaxInterval)
		}
		if r.Multiplier < 1 || r.Multiplier > maxMultiplier {
			add(field+".multiplier", "must be between 1 and %v, got %v", maxMultiplier, r.Multiplier)
		}
	case "constant":
		if r.Duration <= 0 || r.Duration > maxInterval {
			add(field+".duration", "must be between 1ns and %v, got %v", maxInterval, r.Duration)
		}
	default:
		add(field+".policy", "must be \"exponential\" or \"constant\", got %q", r.Policy)
	}
	if r.Jitter < 0 || r.Jitter > 1 {
		add(field+".jitter", "must be between 0 and 1, got %v", r.Jitter)
	}
	if r.MaxRetries < -1 || r.MaxRetries > maxRetries {
		add(field+".maxRetries", "must be between -1 (until the context ends) and %d, got %d", maxRetries, r.MaxRetries)
	}
}

func (cb CircuitBreaker) validate(field string, add func(string, string, ...any)) {
	if cb.MaxRequests < 1 || cb.MaxRequests > maxMaxRequests {
		add(field+".maxRequests", "must be between 1 and %d, got %d", maxMaxRequests, cb.MaxRequests)
	}
	if cb.Interval < 0 || cb.Interval > maxInterval {
		add(field+".interval", "must be between 0 (never clear) and %v, got %v", maxInterval, cb.Interval)
	}
	if cb.Timeout <= 0 || cb.Timeout > maxInterval {
		add(field+".timeout", "must be between 1ns and %v, got %v", maxInterval, cb.Timeout)
	}
	t, err := parseTrip(cb.Trip)
	if err != nil {
		add(field+".trip", "%v", err)
		return
	}
	switch {
	case t.ratio && (cb.MinRequests < 1 || cb.MinRequests > maxMinRequests):
		add(field+".minRequests", "must be between 1 and %d with a failureRatio trip, got %d", maxMinRequests, cb.MinRequests)
	case !t.ratio && cb.MinRequests != 0:
		add(field+".minRequests", "only applies to a failureRatio trip")
	}
}

// trip is a parsed [CircuitBreaker.Trip].
type trip struct {
	ratio     bool    // failureRatio > limit, else consecutiveFailures > count
	count     uint32  // consecutiveFailures limit
	limit     float64 // failureRatio limit
	minRecent uint32  // minRequests, for ratio
}

// parseTrip reads "consecutiveFailures > N" or "failureRatio > R".
func parseTrip(s string) (trip, error) {
	fields := strings.Fields(s)
	if len(fields) != 3 || fields[1] != ">" {
		return trip{}, fmt.Errorf(`must be "consecutiveFailures > N" or "failureRatio > R", got %q`, s)
	}
	switch fields[0] {
	case "consecutiveFailures":
		n, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil || n > maxTripCount {
			return trip{}, fmt.Errorf("consecutiveFailures limit must be an integer between 0 and %d, got %q", maxTripCount, fields[2])
		}
		return trip{count: uint32(n)}, nil
	case "failureRatio":
		r, err := strconv.ParseFloat(fields[2], 64)
		if err != nil || !(r >= 0 && r < 1) {
			return trip{}, fmt.Errorf("failureRatio limit must be a number from 0 up to (not including) 1, got %q", fields[2])
		}
		return trip{ratio: true, limit: r}, nil
	default:
		return trip{}, fmt.Errorf(`must start with "consecutiveFailures" or "failureRatio", got %q`, fields[0])
	}
}

// readyToTrip says whether a closed breaker opens, given the calls that
// completed since the counts were cleared.
func (t trip) readyToTrip(completed, failures, consecutive uint32) bool {
	if !t.ratio {
		return consecutive > t.count
	}
	return completed >= t.minRecent && completed > 0 && float64(failures)/float64(completed) > t.limit
}

// Resolve returns the policy for target (an agent name, or
// [Target](agent, capability)). c must be valid.
func (c Config) Resolve(target string) Policy {
	agent, capability := splitTarget(target)
	bindings := []Binding{c.Targets.Agents[agent]}
	if capability != "" {
		bindings = append(bindings, c.Targets.Capabilities[capability])
	}
	bindings = append(bindings, c.Defaults)
	p := DefaultPolicy()
	for _, b := range bindings {
		if b.Timeout != "" {
			p.Timeout = c.Policies.Timeouts[b.Timeout]
			break
		}
	}
	for _, b := range bindings {
		if b.Retry != "" {
			p.Retry = c.Policies.Retries[b.Retry]
			break
		}
	}
	for _, b := range bindings {
		if b.CircuitBreaker != "" {
			p.CircuitBreaker = c.Policies.CircuitBreakers[b.CircuitBreaker]
			break
		}
	}
	return p
}
