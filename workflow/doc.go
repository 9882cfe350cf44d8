// Package workflow is Tasker's pure core: the model of a workflow and the
// rules that decide what runs next. It does no I/O, never reads the clock
// and starts no goroutines; time and randomness arrive as arguments and
// decisions come back as values. That makes it deterministic — every Raft
// replica that applies the same commands reaches the same state — fast,
// and testable exhaustively.
//
// # Definitions
//
// A [Manifest] is a workflow as written, in YAML or JSON. [Load] parses and
// validates one and returns a [Plan]: the compiled, immutable form shared by
// every task of that workflow version, with steps indexed 0..n-1, the DAG in
// flat adjacency arrays, compiled [Contract]s (JSON Schema) and input
// [Mapping]s. Every problem in a manifest comes back at once in a
// *[ValidationError], each [Problem] naming its field path and line.
//
// # Running tasks
//
// [Runs] is the scheduling state of many active tasks: a few bytes per step.
// The coordinator drives it from one goroutine. The loop it writes:
//
//	runs := workflow.NewRuns()
//	plan := runs.AddPlan(p)                    // once per workflow version
//	task, ready := runs.Add(plan, now, nil)    // the roots are ready
//	for each step s in ready:
//	    attempt, err := runs.Dispatch(task, s, now)   // begin an attempt
//	    ... the app executes it; input from p.Steps[s].Input.Resolve ...
//	on a result:   check it with p.Steps[s].Result.Check, then
//	               ready, err = runs.Succeed(task, s, ready[:0]) // children now ready
//	on a failure:  out, err := runs.Fail(task, s, failure, now)
//	               if out.Retry { set a timer for out.RetryAt; then runs.Ready(task, now, buf) }
//	               else { record a dead letter; an operator may Retry or Resolve }
//	on recovery:   runs.Restore(plan, created, state, manual, records, now, nil)
//
// Succeed, Resolve, Retry and Release append the steps they made ready, so
// the coordinator never scans a whole task on the hot path (the incremental
// update); Recompute rebuilds readiness from step states alone (the full
// recompute) and the tests show the two always agree.
//
// # States
//
// Steps move pending → enqueued → in_progress → complete; a failed attempt
// moves to error, from which the step is dispatched again once its backoff
// has elapsed and while attempts remain. pending and error steps can be
// resolved manually; every unfinished step can be cancelled. Tasks move
// pending → in_progress → complete | error | cancelled | resolved_manually.
// The transitions are tables ([NextStep], [NextTask]); an illegal event
// returns a *[TransitionError] and changes nothing.
//
// A step is ready when it is pending (or in error with attempts left and
// its backoff elapsed), all its parents are complete or resolved manually,
// and no agent holds it.
package workflow
