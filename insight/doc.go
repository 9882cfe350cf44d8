// Package insight is Tasker's deterministic workflow analyzers: pure
// functions from a compiled [workflow.Plan] (and, where they need it, the
// manifest text, measured step durations, a task's state and its execution
// history) to findings and proposals. They do no I/O, read no clock (the
// caller passes "now") and keep no state, so the same inputs always give
// the same output, in the same order, and a proposal can be reviewed,
// stored and applied later like any other manifest change.
//
// The dependency optimizer: [Dependencies] lists every depends_on edge
// with the expressions through which the child reads the parent;
// [Optimize] proposes removing the edges that carry no data so that their
// steps can run in parallel, estimates the critical-path time saved, and
// returns the proposed manifest with a unified diff. It never applies
// anything: bumping the version and applying are the operator's decision.
//
// The failure analyzers speak the vocabulary of finding.go. [Diagnose]
// explains one failed or stuck task: the root-cause steps and their
// [Class], the steps that failed or wait only because of them
// ([RoleConsequence], [ClassDependency]), the [Evidence] (errors, one
// entry per attempt, cluster events around the failure, how similar
// failures elsewhere were resolved), a documented confidence, and
// [Remediation]s from the fixed [Action] vocabulary citing that evidence.
// [Analyze] measures a window of a workflow version's attempts (duration
// percentiles, trends, waits, retry and success rates, timeout headroom,
// the critical path weighed by measured p50s and its bottlenecks); [Tune]
// turns an analysis into timeout, retry-limit and breaker [Advice].
//
// The evaluation set in testdata/eval replays recorded failure scenarios
// through Diagnose and optimizer scenarios through Optimize ([Evaluate]);
// TestEval and `make eval` (insight/cmd/eval) fail when the root-cause
// top-1 accuracy drops below [MinAccuracy] or an optimizer scenario
// regresses.
package insight
