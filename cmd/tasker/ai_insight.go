package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tasker-run/tasker/internal/window"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const aiDiagnoseUsage = `
Usage: tasker ai diagnose TASK_ID [-window D] [-explain] [-addr URL] [-o table|json]

Explains why a task failed or is stuck, from what the cluster recorded:
the root-cause steps, the steps that failed only because of them, the
class of each failure (timeout, breaker_open, capability_missing,
capability_unhealthy, contract_violation, input_mapping, app_error,
retry_exhausted, dependency_failure, lease_lost), the evidence (the
errors, the attempt timeline, breaker and member events around the
failure, similar failures within -window and how they were settled), a
confidence per finding and remediations from a fixed vocabulary, each
citing its evidence by id.

-explain also asks the configured language model to explain the findings
in plain language and rank the remediations (docs/insight.md). Its answer
is validated: actions outside the vocabulary, remediations citing no
evidence and over-confident claims are dropped or capped. With no model
configured the rules' diagnosis is printed and says so.

Nothing is changed: to act on a remediation, file it as a proposal
('tasker ai proposals') or use 'tasker step retry|resolve'.
` + apiFlagsHelp + apiExit

func aiDiagnoseCommand() command {
	return command{name: "ai diagnose", synopsis: "explain why a task failed or is stuck", usage: aiDiagnoseUsage, run: runAIDiagnose}
}

func runAIDiagnose(args []string, stdout, stderr io.Writer) int {
	c := aiDiagnoseCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	win := fs.String("window", "24h", "look for similar failures this far back (`D`: 36h, 7d)")
	explain := fs.Bool("explain", false, "ask the configured language model to explain and rank")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one task ID, got %d", len(pos))
	}
	w, err := window.Parse(*win)
	if err != nil {
		return usageError(stderr, c, "-window: %v", err)
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	if *explain {
		// A model may take its time; the call timeout is for the cluster.
		ctx, cancel = cn.context()
		defer cancel()
	}
	resp, err := cn.insight.Diagnose(ctx, connect.NewRequest(&taskerv1.DiagnoseRequest{TaskId: pos[0], Window: durationpb.New(w), Explain: *explain}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	writeDiagnosis(stdout, resp.Msg)
	return exitOK
}

// writeDiagnosis prints a diagnosis: the summary, each finding with its
// remediations, then the evidence they cite.
func writeDiagnosis(w io.Writer, d *taskerv1.DiagnoseResponse) {
	fmt.Fprintf(w, "Task %s: %s\n%s\n", d.GetTaskId(), d.GetStatus(), d.GetSummary())
	for _, f := range d.GetFindings() {
		fmt.Fprintf(w, "\n%s %s: %s (confidence %.2f)\n", roleLabel(f.GetRole()), f.GetStep(), f.GetClass(), f.GetConfidence())
		if f.GetCausedBy() != "" {
			fmt.Fprintf(w, "  caused by: %s\n", f.GetCausedBy())
		}
		fmt.Fprintf(w, "  %s\n", f.GetSummary())
		if len(f.GetEvidence()) > 0 {
			fmt.Fprintf(w, "  evidence: %s\n", strings.Join(f.GetEvidence(), ", "))
		}
		for _, r := range f.GetRemediations() {
			fmt.Fprintf(w, "  → %s%s (%s, confidence %.2f; cites %s): %s\n", r.GetAction(), params(r.GetParams()), r.GetSource(), r.GetConfidence(), strings.Join(r.GetCites(), ", "), r.GetRationale())
		}
	}
	if d.GetExplanation() != "" {
		fmt.Fprintf(w, "\nExplanation (language model):\n%s\n", d.GetExplanation())
	}
	if d.GetModelNote() != "" {
		fmt.Fprintf(w, "\nModel: %s\n", d.GetModelNote())
	}
	if len(d.GetEvidence()) > 0 {
		fmt.Fprintln(w, "\nEvidence:")
		tw := table(w)
		for _, e := range d.GetEvidence() {
			at := ""
			if e.GetAt() != nil {
				at = e.GetAt().AsTime().UTC().Format(time.TimeOnly)
			}
			row(tw, "  "+e.GetId(), e.GetKind(), at, e.GetStep(), e.GetText())
		}
		tw.Flush()
	}
}

func roleLabel(role string) string {
	if role == "root_cause" {
		return "Root cause"
	}
	return "Consequence"
}

// params prints remediation parameters in a stable order.
func params(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return "(" + strings.Join(parts, " ") + ")"
}

const aiAnalyzeUsage = `
Usage: tasker ai analyze [NAMESPACE/]WORKFLOW [-version V] [-window D] [-addr URL] [-o table|json]

Measures a workflow's steps from the execution history over -window (7d
by default; see 'tasker ai history'): per step the p50, p95 and p99 of
attempt durations and their trend (the second half of the window against
the first), the wait from ready to started, the retry rate, the success
rate by attempt number and how close the step runs to its timeout; then
the critical path through the DAG by measured p50, the bottlenecks, and
tuning advice: timeouts from the observed p99 with headroom, retry
limits from success by attempt, breaker thresholds from failure bursts.
Advice needs enough samples and says when there are too few.
` + apiFlagsHelp + apiExit

func aiAnalyzeCommand() command {
	return command{name: "ai analyze", synopsis: "measure a workflow's steps and advise on its settings", usage: aiAnalyzeUsage, run: runAIAnalyze}
}

func runAIAnalyze(args []string, stdout, stderr io.Writer) int {
	c := aiAnalyzeCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	namespace := fs.String("namespace", "", "the workflow's namespace `N`; \"default\" when empty")
	version := fs.String("version", "", "only version `V`; every version when empty")
	win := fs.String("window", "7d", "how far back (`D`: 7d, 36h)")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one workflow name, got %d", len(pos))
	}
	w, err := window.Parse(*win)
	if err != nil {
		return usageError(stderr, c, "-window: %v", err)
	}
	ns, name, err := splitWorkflow(pos[0], *namespace)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.insight.Analyze(ctx, connect.NewRequest(&taskerv1.AnalyzeRequest{Namespace: ns, Workflow: name, Version: *version, Window: durationpb.New(w)}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	writeAnalysis(stdout, resp.Msg)
	return exitOK
}

func writeAnalysis(w io.Writer, a *taskerv1.AnalyzeResponse) {
	ver := a.GetVersion()
	if ver == "" {
		ver = "(every version)"
	}
	fmt.Fprintf(w, "Workflow %s %s, %s to %s: %d task(s), %d attempt(s)\n", workflowName(a.GetNamespace(), a.GetWorkflow()), ver,
		timestamp(a.GetSince()), timestamp(a.GetUntil()), a.GetTasks(), a.GetAttempts())
	if len(a.GetSteps()) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		row(tw, "STEP", "ATTEMPTS", "P50", "P95", "P99", "TREND", "WAIT P95", "RETRIES", "SUCCESS BY ATTEMPT", "P95/TIMEOUT")
		for _, s := range a.GetSteps() {
			succ := make([]string, len(s.GetSuccessByAttempt()))
			for i, r := range s.GetSuccessByAttempt() {
				succ[i] = fmt.Sprintf("%.0f%%", r*100)
			}
			trend := s.GetTrend()
			if trend == "faster" || trend == "slower" {
				trend += fmt.Sprintf(" %+.0f%%", s.GetChangePercent())
			}
			row(tw, s.GetStep(), strconv.Itoa(int(s.GetAttempts())), dur(s.GetP50()), dur(s.GetP95()), dur(s.GetP99()), trend,
				dur(s.GetWaitP95()), fmt.Sprintf("%.0f%%", s.GetRetryRate()*100), strings.Join(succ, " "),
				fmt.Sprintf("%.2f of %s", s.GetTimeoutRatio(), dur(s.GetTimeout())))
		}
		tw.Flush()
	}
	if len(a.GetCriticalPath()) > 0 {
		fmt.Fprintf(w, "\nCritical path: %s (%s)\n", strings.Join(a.GetCriticalPath(), " → "), dur(a.GetCriticalPathTime()))
	}
	if len(a.GetBottlenecks()) > 0 {
		fmt.Fprintln(w, "Bottlenecks:")
		for _, b := range a.GetBottlenecks() {
			fmt.Fprintf(w, "  %s\n", b)
		}
	}
	if len(a.GetAdvice()) > 0 {
		fmt.Fprintln(w, "\nAdvice:")
		for _, ad := range a.GetAdvice() {
			if ad.GetProposed() == "" {
				fmt.Fprintf(w, "  %s %s: %s, no change proposed: %s\n", ad.GetStep(), ad.GetSetting(), ad.GetCurrent(), ad.GetRationale())
				continue
			}
			fmt.Fprintf(w, "  %s %s: %s → %s (confidence %.2f): %s\n", ad.GetStep(), ad.GetSetting(), ad.GetCurrent(), ad.GetProposed(), ad.GetConfidence(), ad.GetRationale())
		}
	}
}

func dur(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return d.AsDuration().Round(time.Millisecond).String()
}

const aiHistoryUsage = `
Usage: tasker ai history [-workflow [NS/]W] [-version V] [-step S] [-capability C] [-task ID]
                         [-since D] [-outcome O] [-limit N] [-addr URL] [-o table|json]

Lists the execution history, newest first: one record per step attempt
that ended, with its timings (ready, dispatched, started, ended), the
agent, the outcome (completed, failed, timed_out, released, cancelled),
the error, and how a failure was finally settled (retry_succeeded,
resolved_manually, retried_manually, cancelled, dead_lettered). The
servers keep it within their retention settings (history_max_records,
history_max_age) and in snapshots.
` + consistencyHelp + apiFlagsHelp + apiExit

func aiHistoryCommand() command {
	return command{name: "ai history", synopsis: "list step attempts from the execution history", usage: aiHistoryUsage, run: runAIHistory}
}

func runAIHistory(args []string, stdout, stderr io.Writer) int {
	c := aiHistoryCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	wf := fs.String("workflow", "", "only workflow `[NS/]W`")
	version := fs.String("version", "", "only version `V`")
	step := fs.String("step", "", "only step `S`")
	capability := fs.String("capability", "", "only capability `C`")
	task := fs.String("task", "", "only task `ID`")
	since := fs.String("since", "", "only attempts that ended within `D` (7d, 36h)")
	outcome := fs.String("outcome", "", "only outcome `O`: completed, failed, timed_out, released, cancelled")
	limit := fs.Int("limit", 100, "at most `N` records (1 to 10000)")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *limit < 1 || *limit > 10000 {
		return usageError(stderr, c, "-limit %d is out of range: use 1 to 10000", *limit)
	}
	req := &taskerv1.ListAttemptsRequest{Version: *version, Step: *step, Capability: *capability, TaskId: *task, Outcome: *outcome, Limit: uint32(*limit)}
	if *wf != "" {
		ns, name, err := splitWorkflow(*wf, "")
		if err != nil {
			return usageError(stderr, c, "-workflow: %v", err)
		}
		req.Namespace, req.Workflow = ns, name
	}
	if *since != "" {
		d, err := window.Parse(*since)
		if err != nil {
			return usageError(stderr, c, "-since: %v", err)
		}
		req.Since = timestamppb.New(now().Add(-d))
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.insight.ListAttempts(ctx, connect.NewRequest(req))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	tw := table(stdout)
	row(tw, "ENDED", "TASK", "WORKFLOW", "STEP", "ATTEMPT", "OUTCOME", "DURATION", "AGENT", "ERROR", "SETTLED")
	for _, r := range resp.Msg.GetAttempts() {
		d := "-"
		if r.GetStartedAt() != nil && r.GetEndedAt() != nil {
			d = r.GetEndedAt().AsTime().Sub(r.GetStartedAt().AsTime()).Round(time.Millisecond).String()
		}
		errText := ""
		if r.GetCode() != "" {
			errText = r.GetCode() + ": " + oneLine(r.GetMessage(), 60)
		}
		row(tw, timestamp(r.GetEndedAt()), r.GetTaskId(), workflowName(r.GetNamespace(), r.GetWorkflow())+" "+r.GetVersion(), r.GetStep(),
			strconv.Itoa(int(r.GetAttempt())), r.GetOutcome(), d, r.GetAgent(), errText, r.GetResolution())
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\n%d shown; the history holds %d record(s)", len(resp.Msg.GetAttempts()), resp.Msg.GetRetained())
	if resp.Msg.GetOldest() != nil {
		fmt.Fprintf(stdout, ", the oldest ended %s", timestamp(resp.Msg.GetOldest()))
	}
	fmt.Fprintln(stdout)
	return exitOK
}
