// Package insight is Tasker's deterministic workflow analyzers: pure
// functions from a compiled [workflow.Plan] (and, where they need it, the
// manifest text and measured step durations) to findings and proposals. They
// do no I/O, read no clock and keep no state, so the same inputs always give
// the same proposal, and a proposal can be reviewed, stored and applied
// later like any other manifest change.
//
// This file set is the dependency optimizer. [Dependencies] lists every
// depends_on edge with the expressions through which the child reads the
// parent; [Optimize] proposes removing the edges that carry no data so that
// their steps can run in parallel, estimates the critical-path time saved,
// and returns the proposed manifest with a unified diff. It never applies
// anything: bumping the version and applying are the operator's decision.
package insight
