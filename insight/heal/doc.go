// Package heal is Tasker's guarded self-healing policy: which of the
// remediations the analyzers propose for a failed task may apply without a
// human, and the loop that files and applies them.
//
// Self-healing is off by default. Off, or for any remediation the policy
// does not allow, the remediation is still filed as a pending proposal, for
// a human to approve or reject: the policy only ever decides what may skip
// that step, never what is proposed.
//
// # The policy file
//
// Parsed by [ParsePolicy]; unknown keys are errors, and every invalid value
// is reported with its field path, the limit and the default:
//
//	enabled: true              # default false: nothing applies automatically
//	rules:
//	  - action: change_timeout
//	    min_confidence: 0.7    # (0, 1]; default 0.8
//	    max_factor: 2.0        # (1, 10]; default 2: at most double the current timeout
//	    max_timeout: 5m        # (0, 24h]; default 1h: and never above this
//	    max_per_hour: 2        # [1, 1000] per workflow; default 1
//	    workflows: ["default/orders"]  # "ns/name" path.Match globs; empty = all
//	  - action: retry_step
//	    min_confidence: 0.8
//	    max_per_hour: 20
//	  - action: change_retry_policy
//	    min_confidence: 0.7
//	    max_attempts: 6        # [1, 100] ceiling; default 5
//	    max_per_hour: 1
//	cooldown: 10m              # (0, 24h]; default 10m
//
// Only retry_step, reroute, change_timeout and change_retry_policy may be
// listed. resolve_manually (it invents a step's result), cancel (it throws
// work away) and escalate (it is the hand-off to a human) are refused.
// max_factor and max_timeout belong to change_timeout rules only, and
// max_attempts to change_retry_policy rules only. For an action, the first
// rule whose workflows select the task's workflow is the one that applies,
// so a stricter rule for some workflows goes before a general one. See
// testdata/healing.example.yaml.
//
// # Guarantees
//
// [Decide] is pure and lists its guards in order. In short, a remediation
// applies automatically only if the policy is enabled and has a rule for its
// action and workflow; it comes from the rules (a language model's
// suggestion counts only when a rules-based remediation of the same action
// agrees); the lower of its and its finding's confidence reaches the rule's
// min_confidence; it raises a timeout or max_attempts (never lowers one)
// within the rule's bounds, clamped to them if it asked for more; the
// workflow has had fewer than max_per_hour automatic actions of that kind in
// the last hour; and the same workflow step has had no automatic action
// within the cooldown. Every decision carries a reason naming the guard or
// the clamping.
//
// Every automatic action is a proposal in the proposal store like any other,
// marked as the policy's and approved and applied "by" [By], with the
// decision's reason: it is audited there, and rolled back there like a
// human-approved one. The rate limit and cooldown read the store's history
// ([Env.Recent]), so they hold across restarts and leader changes. The
// [Healer] remembers which task, step and action it already proposed only
// in memory, so after a leader change a proposal may be filed twice; the
// duplicate is a pending proposal, and a second automatic one is still
// bounded by the store's rate limit and cooldown. If the history cannot be
// read, nothing applies automatically.
package heal
