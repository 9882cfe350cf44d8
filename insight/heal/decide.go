package heal

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/tasker-run/tasker/insight"
)

// Applied is one automatic action already applied, as the proposal store
// records it: the rate limit and the cooldown count these.
type Applied struct {
	Action   insight.Action
	Workflow string // "ns/name"
	Step     string
	At       time.Time
}

// Input is everything [Decide] looks at for one remediation.
type Input struct {
	// Workflow is the task's workflow, "ns/name".
	Workflow string
	// Step is the step the remediation acts on.
	Step string
	// Remediation is the one being decided.
	Remediation insight.Remediation
	// Alternatives are the finding's remediations (Remediation may be
	// among them). A model-sourced remediation applies automatically only
	// if a rules-sourced one here has the same action.
	Alternatives []insight.Remediation
	// FindingConfidence is the confidence of the diagnosis the
	// remediation rests on.
	FindingConfidence float64
	// CurrentTimeout and CurrentMaxAttempts are the step's settings in the
	// task's workflow version; the bounds of change_timeout and
	// change_retry_policy are relative to them.
	CurrentTimeout     time.Duration
	CurrentMaxAttempts int
	// Recent are the automatic actions applied in at least the last hour
	// and the last cooldown; older entries are ignored.
	Recent []Applied
	// Now is the time of the decision.
	Now time.Time
}

// Decision is what [Decide] concluded.
type Decision struct {
	// Auto says the remediation may apply without a human.
	Auto bool
	// Reason is always set: why it applies automatically (with any
	// clamping), or which guard sent it to approval.
	Reason string
	// Remediation is the one to propose. When Auto, its parameters are
	// clamped to the rule's bounds. Otherwise it is the input unchanged:
	// the bounds limit what applies without a human, not what a human may
	// approve.
	Remediation insight.Remediation
}

// Decide says whether one remediation may apply automatically under p (which
// must be valid). It is pure: the same Input always gives the same Decision.
//
// The guards, in order; the first that fails sends the remediation to
// approval and names itself in Reason:
//
//  1. the policy is enabled;
//  2. the action may apply automatically at all (resolve_manually, cancel
//     and escalate never do) and a rule for it selects the workflow;
//  3. the remediation comes from the rules, or from the model with a
//     rules-sourced alternative of the same action agreeing;
//  4. the confidence reaches the rule's min_confidence. The confidence
//     used is the lower of the remediation's and the finding's: a fix is
//     no surer than the diagnosis it rests on, and a rule that is certain
//     of its remedy "given a timeout" says nothing about whether it was a
//     timeout;
//  5. the parameters are sane and the change is an increase that the
//     bounds leave room for: change_timeout raises the timeout to at most
//     current × max_factor and max_timeout, change_retry_policy raises
//     max_attempts to at most the ceiling. A change that would lower or
//     keep the setting, or that the bounds leave no room for, needs a human;
//  6. fewer than max_per_hour automatic actions of this kind on the
//     workflow in the last hour;
//  7. no automatic action of any kind on the same workflow and step within
//     the cooldown.
func Decide(p Policy, in Input) Decision {
	r := in.Remediation
	hold := func(format string, args ...any) Decision {
		return Decision{Reason: fmt.Sprintf(format, args...), Remediation: r}
	}
	if !p.Enabled {
		return hold("self-healing is disabled (enabled: false in the policy); a human decides")
	}
	if why := humanOnly(r.Action); why != "" {
		return hold("%s", why)
	}
	if _, err := insight.ParseAction(string(r.Action)); err != nil {
		return hold("%v", err)
	}
	rule, found, anyRule := ruleFor(p, r.Action, in.Workflow)
	if !found {
		if anyRule {
			return hold("no %s rule in the policy selects workflow %s", r.Action, in.Workflow)
		}
		return hold("the policy has no rule for %s", r.Action)
	}

	var agreed string
	switch r.Source {
	case "rules":
	case "model":
		if !rulesAgree(r, in.Alternatives) {
			return hold("%s was suggested by the model alone; a model's suggestion applies automatically only when a rules-based remediation proposes the same action", r.Action)
		}
		agreed = "; the model's suggestion is backed by a rules-based " + string(r.Action)
	default:
		return hold("remediation source %q is neither \"rules\" nor \"model\"; only known sources apply automatically", r.Source)
	}

	conf := min(r.Confidence, in.FindingConfidence)
	if !(conf >= rule.MinConfidence) { // also catches NaN
		return hold("confidence %.2f (the lower of remediation %.2f and finding %.2f) is below the policy's %.2f for %s",
			conf, r.Confidence, in.FindingConfidence, rule.MinConfidence, r.Action)
	}

	adjusted, clamp, why := bound(rule, in)
	if why != "" {
		return hold("%s", why)
	}

	since := in.Now.Add(-time.Hour)
	n := 0
	for _, a := range in.Recent {
		if a.Action == r.Action && a.Workflow == in.Workflow && a.At.After(since) {
			n++
		}
	}
	if n >= rule.MaxPerHour {
		return hold("%d %s actions on %s in the last hour; the policy allows %d", n, r.Action, in.Workflow, rule.MaxPerHour)
	}

	var last time.Time
	for _, a := range in.Recent {
		if a.Workflow == in.Workflow && a.Step == in.Step && a.At.After(last) {
			last = a.At
		}
	}
	// An entry stamped after Now (another leader's clock ran ahead) counts
	// as just now rather than as long ago.
	if ago := max(0, in.Now.Sub(last)); !last.IsZero() && ago < p.Cooldown {
		return hold("cooldown: %s step %s was healed %s ago; wait %s", in.Workflow, in.Step, short(ago), short(p.Cooldown))
	}

	return Decision{
		Auto: true,
		Reason: fmt.Sprintf("%s on %s step %s applies automatically: confidence %.2f reaches the policy's %.2f, %d of %d this hour%s%s",
			r.Action, in.Workflow, in.Step, conf, rule.MinConfidence, n+1, rule.MaxPerHour, clamp, agreed),
		Remediation: adjusted,
	}
}

// ruleFor returns the first rule for action that selects workflow, and
// whether any rule for action exists at all (for the reason).
func ruleFor(p Policy, action insight.Action, workflow string) (rule Rule, found, anyForAction bool) {
	for _, r := range p.Rules {
		if r.Action != action {
			continue
		}
		anyForAction = true
		if r.selects(workflow) {
			return r, true, true
		}
	}
	return Rule{}, false, anyForAction
}

// rulesAgree says whether a rules-sourced alternative proposes the same
// action on the same step as the model's r. Only the action must agree, not
// the values: the values are clamped to the policy's bounds either way.
func rulesAgree(r insight.Remediation, alts []insight.Remediation) bool {
	for _, a := range alts {
		if a.Source == "rules" && a.Action == r.Action && a.Params["step"] == r.Params["step"] {
			return true
		}
	}
	return false
}

// bound checks and clamps the parameters of the actions that change a
// workflow version. It returns the remediation to apply, a note on any
// clamping for the reason, or why it needs a human.
func bound(rule Rule, in Input) (adjusted insight.Remediation, clamp, hold string) {
	r := in.Remediation
	switch r.Action {
	case insight.ActionChangeTimeout:
		raw := r.Params["timeout"]
		want, err := time.ParseDuration(raw)
		if err != nil || want <= 0 {
			return r, "", fmt.Sprintf("change_timeout's timeout param %q is not a positive duration such as \"90s\"", raw)
		}
		cur := in.CurrentTimeout
		if cur <= 0 {
			return r, "", fmt.Sprintf("step %s has no timeout to scale by max_factor; setting one needs a human", in.Step)
		}
		if want <= cur {
			return r, "", fmt.Sprintf("change_timeout to %s would not raise the current %s; the policy only raises timeouts automatically", short(want), short(cur))
		}
		byFactor := time.Duration(float64(cur) * rule.MaxFactor)
		ceiling, limit := byFactor, fmt.Sprintf("max_factor %g × current %s", rule.MaxFactor, short(cur))
		if rule.MaxTimeout < ceiling {
			ceiling, limit = rule.MaxTimeout, "max_timeout "+short(rule.MaxTimeout)
		}
		if ceiling <= cur {
			return r, "", fmt.Sprintf("current timeout %s is already at the policy's ceiling (%s); a longer one needs a human", short(cur), limit)
		}
		got := min(want, ceiling)
		if got < want {
			clamp = fmt.Sprintf("; timeout clamped from %s to %s (%s)", short(want), short(got), limit)
		}
		return withParam(r, "timeout", got.String()), clamp, ""

	case insight.ActionChangeRetryPolicy:
		raw := r.Params["max_attempts"]
		want, err := strconv.Atoi(raw)
		if err != nil || want < 1 {
			return r, "", fmt.Sprintf("change_retry_policy's max_attempts param %q is not a positive integer", raw)
		}
		cur := in.CurrentMaxAttempts
		if want <= cur {
			return r, "", fmt.Sprintf("change_retry_policy to %d attempts would not raise the current %d; the policy only raises max_attempts automatically", want, cur)
		}
		if rule.MaxAttempts <= cur {
			return r, "", fmt.Sprintf("current max_attempts %d is already at the policy's ceiling %d; more needs a human", cur, rule.MaxAttempts)
		}
		got := min(want, rule.MaxAttempts)
		if got < want {
			clamp = fmt.Sprintf("; max_attempts clamped from %d to %d (the policy's ceiling)", want, got)
		}
		return withParam(r, "max_attempts", strconv.Itoa(got)), clamp, ""
	}
	return r, "", ""
}

// withParam returns r with one parameter replaced, leaving the caller's
// map alone: the input remediation is the finding's and may be shown as is.
func withParam(r insight.Remediation, key, value string) insight.Remediation {
	r.Params = maps.Clone(r.Params)
	if r.Params == nil {
		r.Params = map[string]string{}
	}
	r.Params[key] = value
	return r
}

// short formats a duration for a reason: "3m" rather than "3m0s".
func short(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
