package heal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tasker-run/tasker/insight"
)

// Defaults filled in by [ParsePolicy] for fields the file leaves out. A
// field written explicitly (even as 0) is validated as written, never
// replaced by its default, so "min_confidence: 0" is an error rather than a
// silent 0.8.
const (
	DefaultMinConfidence = 0.8
	DefaultMaxFactor     = 2.0
	DefaultMaxTimeout    = time.Hour
	DefaultMaxAttempts   = 5
	DefaultMaxPerHour    = 1
	DefaultCooldown      = 10 * time.Minute
)

// Limits enforced by [Policy.Validate]. They catch typos ("max_per_hour:
// 10000", "max_timeout: 500h"), not unusual but sane settings.
const (
	maxFactorLimit   = 10.0
	maxPerHourLimit  = 1000
	maxAttemptsLimit = 100
	maxTimeoutLimit  = 24 * time.Hour
	maxCooldownLimit = 24 * time.Hour
)

// Policy is the guarded self-healing policy: which remediation actions may
// apply without a human, above which confidence, within which bounds and at
// most how often. The zero Policy is disabled: every remediation waits for
// approval. Load one with [ParsePolicy].
type Policy struct {
	// Enabled turns automatic application on. Off, remediations are still
	// proposed, for humans to approve.
	Enabled bool
	// Rules name the actions that may apply automatically. For an action,
	// the first rule whose Workflows selects the task's workflow applies;
	// an action with no such rule always waits for approval.
	Rules []Rule
	// Cooldown is how long after an automatic action on a workflow's step
	// no other automatic action may touch the same step, so that one fix
	// gets the chance to show whether it worked before another is stacked
	// on it.
	Cooldown time.Duration
}

// Rule allows one action to apply automatically.
type Rule struct {
	// Action is retry_step, reroute, change_timeout or change_retry_policy.
	Action insight.Action
	// MinConfidence is the lowest confidence (see [Decide]) that applies
	// automatically; in (0, 1].
	MinConfidence float64
	// MaxFactor bounds a change_timeout: the new timeout is at most the
	// current one times this; in (1, 10].
	MaxFactor float64
	// MaxTimeout bounds a change_timeout absolutely.
	MaxTimeout time.Duration
	// MaxAttempts is the ceiling of a change_retry_policy's max_attempts;
	// 1 to 100.
	MaxAttempts int
	// MaxPerHour is how many automatic actions of this kind one workflow
	// may get in any hour; 1 to 1000.
	MaxPerHour int
	// Workflows selects workflows ("ns/name") by path.Match pattern, e.g.
	// "default/orders" or "prod/*"; empty selects every workflow.
	Workflows []string
}

// AutomaticActions lists the actions a rule may allow. Every other action
// in the vocabulary always needs a human; see [Policy.Validate] for why.
func AutomaticActions() []insight.Action {
	return []insight.Action{
		insight.ActionRetryStep, insight.ActionReroute,
		insight.ActionChangeTimeout, insight.ActionChangeRetryPolicy,
	}
}

// humanOnly says why an action can never apply automatically.
func humanOnly(a insight.Action) string {
	switch a {
	case insight.ActionResolveManually:
		return "resolve_manually always needs a human: it invents a step's result"
	case insight.ActionCancel:
		return "cancel always needs a human: it throws away the task's work and cannot be undone"
	case insight.ActionEscalate:
		return "escalate always needs a human: it is the hand-off to one, with nothing to apply"
	}
	return ""
}

// filePolicy and fileRule are the file's shape. Pointers tell a field left
// out (which gets its default) from one written as zero (which is checked
// as written).
type filePolicy struct {
	Enabled  bool           `yaml:"enabled"`
	Rules    []fileRule     `yaml:"rules"`
	Cooldown *time.Duration `yaml:"cooldown"`
}

type fileRule struct {
	Action        string         `yaml:"action"`
	MinConfidence *float64       `yaml:"min_confidence"`
	MaxFactor     *float64       `yaml:"max_factor"`
	MaxTimeout    *time.Duration `yaml:"max_timeout"`
	MaxAttempts   *int           `yaml:"max_attempts"`
	MaxPerHour    *int           `yaml:"max_per_hour"`
	Workflows     []string       `yaml:"workflows"`
}

// ParsePolicy reads a Policy from YAML (or JSON), refuses unknown fields,
// fills in the defaults for fields left out and validates it. An empty
// document gives a disabled policy.
func ParsePolicy(b []byte) (Policy, error) {
	var f filePolicy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Policy{}, fmt.Errorf("heal: policy: %w%s", err, decodeHint(err))
	}
	var errs []error
	p := Policy{Enabled: f.Enabled, Cooldown: orDefault(f.Cooldown, DefaultCooldown)}
	for i, fr := range f.Rules {
		r := Rule{
			Action:        insight.Action(fr.Action),
			MinConfidence: orDefault(fr.MinConfidence, DefaultMinConfidence),
			MaxPerHour:    orDefault(fr.MaxPerHour, DefaultMaxPerHour),
			Workflows:     fr.Workflows,
		}
		field := fmt.Sprintf("rules[%d]", i)
		// The bounds of one action make no sense on another; saying so
		// beats ignoring a line the author thought was protecting them.
		switch r.Action {
		case insight.ActionChangeTimeout:
			r.MaxFactor = orDefault(fr.MaxFactor, DefaultMaxFactor)
			r.MaxTimeout = orDefault(fr.MaxTimeout, DefaultMaxTimeout)
		default:
			if fr.MaxFactor != nil {
				errs = append(errs, &FieldError{field + ".max_factor", "only applies to change_timeout; remove it"})
			}
			if fr.MaxTimeout != nil {
				errs = append(errs, &FieldError{field + ".max_timeout", "only applies to change_timeout; remove it"})
			}
		}
		switch r.Action {
		case insight.ActionChangeRetryPolicy:
			r.MaxAttempts = orDefault(fr.MaxAttempts, DefaultMaxAttempts)
		default:
			if fr.MaxAttempts != nil {
				errs = append(errs, &FieldError{field + ".max_attempts", "only applies to change_retry_policy; remove it"})
			}
		}
		p.Rules = append(p.Rules, r)
	}
	if err := p.Validate(); err != nil {
		// Flattened, so that a caller unwrapping the join sees every
		// FieldError at one level.
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// decodeHint points the author of a file yaml could not decode at the fix,
// since yaml's messages name Go types rather than the file's keys.
func decodeHint(err error) string {
	var hint string
	if strings.Contains(err.Error(), "not found in type") {
		hint += "\n(the policy's keys are enabled, rules, cooldown; a rule's are action, min_confidence, max_factor, max_timeout, max_attempts, max_per_hour, workflows)"
	}
	if strings.Contains(err.Error(), "into time.Duration") {
		hint += "\n(durations need a unit, e.g. cooldown: 10m or max_timeout: 90s)"
	}
	return hint
}

func orDefault[T any](v *T, def T) T {
	if v == nil {
		return def
	}
	return *v
}

// FieldError is one problem in a policy, named by its field path, e.g.
// "rules[1].min_confidence".
type FieldError struct {
	// Field is the path of the offending field.
	Field string
	// Problem says what is wrong, the limit, and how to fix it.
	Problem string
}

func (e *FieldError) Error() string { return "heal: policy: " + e.Field + ": " + e.Problem }

// Validate reports every problem in p as a [FieldError], joined with
// [errors.Join], or nil. A Policy built in code must pass it before it is
// given to [Decide] or [NewHealer].
func (p Policy) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if p.Cooldown <= 0 || p.Cooldown > maxCooldownLimit {
		add("cooldown", "must be positive and at most %v, got %v (leave it out for %v)", maxCooldownLimit, p.Cooldown, DefaultCooldown)
	}
	for i, r := range p.Rules {
		field := fmt.Sprintf("rules[%d]", i)
		if _, err := insight.ParseAction(string(r.Action)); err != nil {
			add(field+".action", "%v", err)
			continue
		}
		if why := humanOnly(r.Action); why != "" {
			add(field+".action", "%s; only %v may apply automatically", why, AutomaticActions())
			continue
		}
		if !(r.MinConfidence > 0 && r.MinConfidence <= 1) {
			add(field+".min_confidence", "must be above 0 and at most 1, got %v (leave it out for %v)", r.MinConfidence, DefaultMinConfidence)
		}
		if !(r.MaxPerHour >= 1 && r.MaxPerHour <= maxPerHourLimit) {
			add(field+".max_per_hour", "must be between 1 and %d, got %d (leave it out for %d)", maxPerHourLimit, r.MaxPerHour, DefaultMaxPerHour)
		}
		switch r.Action {
		case insight.ActionChangeTimeout:
			if !(r.MaxFactor > 1 && r.MaxFactor <= maxFactorLimit) {
				add(field+".max_factor", "must be above 1 and at most %v, got %v (leave it out for %v)", maxFactorLimit, r.MaxFactor, DefaultMaxFactor)
			}
			if r.MaxTimeout <= 0 || r.MaxTimeout > maxTimeoutLimit {
				add(field+".max_timeout", "must be positive and at most %v, got %v (leave it out for %v)", maxTimeoutLimit, r.MaxTimeout, DefaultMaxTimeout)
			}
		case insight.ActionChangeRetryPolicy:
			if r.MaxAttempts < 1 || r.MaxAttempts > maxAttemptsLimit {
				add(field+".max_attempts", "must be between 1 and %d, got %d (leave it out for %d)", maxAttemptsLimit, r.MaxAttempts, DefaultMaxAttempts)
			}
		}
		for j, sel := range r.Workflows {
			if err := checkSelector(sel); err != nil {
				add(fmt.Sprintf("%s.workflows[%d]", field, j), "%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkSelector accepts "ns/name" where either part may be a path.Match
// pattern. A selector without the "/" would never match (a "*" does not
// cross it), so it is refused rather than silently selecting nothing.
func checkSelector(sel string) error {
	ns, name, ok := strings.Cut(sel, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf(`must be "namespace/name", either part a glob (e.g. "default/orders", "prod/*", "*/*"), got %q`, sel)
	}
	if _, err := path.Match(sel, "a/b"); err != nil {
		return fmt.Errorf("%q is not a valid glob (path.Match syntax: *, ?, [a-z], \\ to escape): %w", sel, err)
	}
	return nil
}

// selects says whether r covers workflow. Selectors were checked by
// Validate, so Match's error cannot occur.
func (r Rule) selects(workflow string) bool {
	if len(r.Workflows) == 0 {
		return true
	}
	for _, sel := range r.Workflows {
		if ok, _ := path.Match(sel, workflow); ok {
			return true
		}
	}
	return false
}
