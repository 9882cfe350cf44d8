package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight"
	"github.com/tasker-run/tasker/insight/llm"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// insightAPI serves InsightService on the leader (reads are routed there
// like the workflow reads): the analyzers run on the state it holds, with
// its scheduler's wait reasons and its breaker and member events.
type insightAPI struct{ a *Agent }

// Windows and bounds of the insight calls.
const (
	defaultDiagnoseWindow = 24 * time.Hour
	defaultAnalyzeWindow  = 7 * 24 * time.Hour
	maxInsightWindow      = 90 * 24 * time.Hour
	// stuckAfter is how long a step may wait for an agent, or run past
	// its deadline, before a diagnosis calls its task stuck.
	stuckAfter = time.Minute
	// clusterEventMargin is how far around a failure breaker and member
	// events count as evidence.
	clusterEventMargin = 5 * time.Minute
	// maxSimilar bounds the similar failures a diagnosis weighs.
	maxSimilar = 2000
	// maxAnalyzed bounds the attempts an analysis reads.
	maxAnalyzed = consensus.MaxHistoryLimit
)

// attemptOutcomes are the outcomes ListAttempts filters on.
var attemptOutcomes = []string{
	consensus.OutcomeCompleted, consensus.OutcomeFailed, consensus.OutcomeTimedOut,
	consensus.OutcomeReleased, consensus.OutcomeCancelled,
}

func window(field string, d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	w := d.AsDuration()
	if w <= 0 || w > maxInsightWindow {
		return 0, invalid(field, "%v is out of range: use a positive duration up to %v (90 days)", w, maxInsightWindow)
	}
	return w, nil
}

func (s *insightAPI) ListAttempts(_ context.Context, req *connect.Request[taskerv1.ListAttemptsRequest]) (*connect.Response[taskerv1.ListAttemptsResponse], error) {
	r := req.Msg
	f := consensus.HistoryFilter{
		Namespace: r.GetNamespace(), Workflow: r.GetWorkflow(), Version: r.GetVersion(), Step: r.GetStep(),
		Capability: r.GetCapability(), TaskID: r.GetTaskId(), Outcome: r.GetOutcome(), Limit: int(r.GetLimit()),
	}
	if f.Namespace == "" && f.Workflow != "" {
		f.Namespace = "default"
	}
	if f.Outcome != "" && !slices.Contains(attemptOutcomes, f.Outcome) {
		return nil, invalid("outcome", "%q is not an outcome: use one of %v", f.Outcome, attemptOutcomes)
	}
	if f.Limit > consensus.MaxHistoryLimit {
		return nil, invalid("limit", "%d is out of range: use 1 to %d (0 means %d)", f.Limit, consensus.MaxHistoryLimit, consensus.DefaultHistoryLimit)
	}
	if r.GetSince() != nil {
		f.Since = r.GetSince().AsTime()
	}
	if r.GetUntil() != nil {
		f.Until = r.GetUntil().AsTime()
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return nil, invalid("until", "%s is not after since (%s)", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	out := &taskerv1.ListAttemptsResponse{}
	for _, rec := range s.a.state.Attempts(f) {
		out.Attempts = append(out.Attempts, pbAttempt(rec))
	}
	n, oldest := s.a.state.HistoryStats()
	out.Retained, out.Oldest = uint64(n), pbTime(oldest)
	return connect.NewResponse(out), nil
}

func pbAttempt(r consensus.AttemptRecord) *taskerv1.AttemptRecord {
	return &taskerv1.AttemptRecord{
		TaskId: r.TaskID, Namespace: r.Namespace, Workflow: r.Workflow, Version: r.Version, Step: r.Step, Capability: r.Capability,
		Attempt: int32(r.Attempt), ReadyAt: pbTime(r.ReadyAt), DispatchedAt: pbTime(r.DispatchedAt), StartedAt: pbTime(r.StartedAt),
		EndedAt: pbTime(r.EndedAt), Agent: r.Agent, Worker: r.Worker, Outcome: r.Outcome, Code: r.Code, Message: r.Message,
		Retryable: r.Retryable, DetailsJson: r.DetailsJSON, Timeout: durationpb.New(r.Timeout), MaxAttempts: int32(r.MaxAttempts),
		Resolution: r.Resolution, ResolvedAt: pbTime(r.ResolvedAt),
	}
}

// insightAttempt is the analyzers' view of a history record.
func insightAttempt(r consensus.AttemptRecord) insight.Attempt {
	return insight.Attempt{
		TaskID: r.TaskID, Namespace: r.Namespace, Workflow: r.Workflow, Version: r.Version, Step: r.Step, Capability: r.Capability,
		Attempt: r.Attempt, ReadyAt: r.ReadyAt, DispatchedAt: r.DispatchedAt, StartedAt: r.StartedAt, EndedAt: r.EndedAt,
		Agent: r.Agent, Worker: r.Worker, Outcome: r.Outcome, Code: r.Code, Message: r.Message, Retryable: r.Retryable,
		DetailsJSON: r.DetailsJSON, Timeout: r.Timeout, MaxAttempts: r.MaxAttempts, Resolution: r.Resolution, ResolvedAt: r.ResolvedAt,
	}
}

func insightAttempts(rs []consensus.AttemptRecord) []insight.Attempt {
	out := make([]insight.Attempt, len(rs))
	for i, r := range rs {
		out[i] = insightAttempt(r)
	}
	return out
}

// diagnose runs the rules on a task as the leader sees it now.
func (a *Agent) diagnose(taskID string, win time.Duration) (*insight.Diagnosis, error) {
	v, err := a.state.Task(taskID)
	if err != nil {
		return nil, err
	}
	now := a.now()
	plan, _ := a.state.PlanOf(taskID) // nil for a task whose plan is gone: the rules cope
	own := a.state.Attempts(consensus.HistoryFilter{TaskID: taskID, Limit: consensus.MaxHistoryLimit})
	var similar []insight.Attempt
	for _, r := range a.state.Attempts(consensus.HistoryFilter{Namespace: v.Namespace, Workflow: v.Workflow, Since: now.Add(-win), Limit: maxSimilar}) {
		if r.TaskID != taskID {
			similar = append(similar, insightAttempt(r))
		}
	}
	snap := a.taskSnapshot(v)
	from := v.CreatedAt
	for _, r := range own {
		if !r.EndedAt.IsZero() && r.EndedAt.Before(from) {
			from = r.EndedAt
		}
	}
	d := insight.Diagnose(insight.DiagnoseInput{
		Task: snap, Plan: plan, Attempts: insightAttempts(own), Similar: similar,
		Cluster: a.events.cluster.between(from.Add(-clusterEventMargin), now), Now: now, StuckAfter: stuckAfter,
	})
	return d, nil
}

// taskSnapshot is the analyzers' view of a task, with the wait reasons
// of the leader's scheduler.
func (a *Agent) taskSnapshot(v *consensus.TaskView) insight.TaskSnapshot {
	pb := a.taskOut(v)
	waiting := map[string]string{}
	for _, st := range pb.GetSteps() {
		if st.GetWaiting() != "" {
			waiting[st.GetName()] = st.GetWaiting()
		}
	}
	out := insight.TaskSnapshot{
		ID: v.ID, Namespace: v.Namespace, Workflow: v.Workflow, Version: v.Version, State: v.State.String(),
		CreatedAt: v.CreatedAt, EndedAt: v.EndedAt,
	}
	for _, st := range v.Steps {
		s := insight.StepSnapshot{
			Name: st.Name, Capability: st.Capability, DependsOn: st.DependsOn, State: st.State.String(),
			Attempts: st.Attempts, MaxAttempts: st.MaxAttempts, WaitReason: waiting[st.Name],
			ReadyAt: st.ReadyAt, DispatchedAt: st.DispatchedAt, StartedAt: st.StartedAt, EndedAt: st.EndedAt,
			Deadline: st.Deadline, Agent: st.Agent,
		}
		if e := st.LastError; e != nil {
			s.LastCode, s.LastMessage, s.LastDetailsJSON, s.LastRetryable = e.Code, e.Message, e.DetailsJSON, e.Retryable
		}
		out.Steps = append(out.Steps, s)
	}
	return out
}

func (s *insightAPI) Diagnose(ctx context.Context, req *connect.Request[taskerv1.DiagnoseRequest]) (*connect.Response[taskerv1.DiagnoseResponse], error) {
	if err := required("task_id", req.Msg.GetTaskId()); err != nil {
		return nil, err
	}
	win, err := window("window", req.Msg.GetWindow(), defaultDiagnoseWindow)
	if err != nil {
		return nil, err
	}
	d, err := s.a.diagnose(req.Msg.GetTaskId(), win)
	if err != nil {
		return nil, toConnect(err)
	}
	out := pbDiagnosis(d)
	if req.Msg.GetExplain() {
		s.a.explain(ctx, d, out)
	}
	return connect.NewResponse(out), nil
}

func pbDiagnosis(d *insight.Diagnosis) *taskerv1.DiagnoseResponse {
	out := &taskerv1.DiagnoseResponse{TaskId: d.TaskID, Status: d.Status, Summary: d.Summary}
	for _, f := range d.Findings {
		out.Findings = append(out.Findings, pbFinding(f))
	}
	for _, e := range d.Evidence {
		out.Evidence = append(out.Evidence, &taskerv1.Evidence{Id: e.ID, Kind: e.Kind, At: pbTime(e.At), Step: e.Step, Text: e.Text})
	}
	return out
}

func pbFinding(f insight.Finding) *taskerv1.Finding {
	pf := &taskerv1.Finding{
		Step: f.Step, Role: string(f.Role), Class: string(f.Class), Code: f.Code, Summary: f.Summary,
		Confidence: f.Confidence, Evidence: f.Evidence, CausedBy: f.CausedBy,
	}
	for _, r := range f.Remediations {
		pf.Remediations = append(pf.Remediations, pbRemediation(r))
	}
	return pf
}

func pbRemediation(r insight.Remediation) *taskerv1.Remediation {
	return &taskerv1.Remediation{Action: string(r.Action), Params: r.Params, Rationale: r.Rationale, Cites: r.Cites, Confidence: r.Confidence, Source: r.Source}
}

func (s *insightAPI) Analyze(_ context.Context, req *connect.Request[taskerv1.AnalyzeRequest]) (*connect.Response[taskerv1.AnalyzeResponse], error) {
	r := req.Msg
	if err := required("workflow", r.GetWorkflow()); err != nil {
		return nil, err
	}
	win, err := window("window", r.GetWindow(), defaultAnalyzeWindow)
	if err != nil {
		return nil, err
	}
	ns := nsOrDefault(r.GetNamespace())
	w, err := s.a.state.Workflow(ns, r.GetWorkflow(), r.GetVersion())
	if err != nil {
		return nil, toConnect(err)
	}
	until := s.a.now()
	since := until.Add(-win)
	recs := s.a.state.Attempts(consensus.HistoryFilter{Namespace: ns, Workflow: r.GetWorkflow(), Version: r.GetVersion(), Since: since, Limit: maxAnalyzed})
	if len(recs) == maxAnalyzed {
		// The newest maxAnalyzed attempts are what the figures rest on:
		// say the window they cover, not the one asked for.
		since = recs[len(recs)-1].EndedAt
	}
	an := insight.Analyze(insight.AnalyzeInput{Plan: w.Plan, Attempts: insightAttempts(recs), Since: since, Until: until})
	advice := insight.Tune(an, w.Plan)
	return connect.NewResponse(pbAnalysis(ns, r.GetWorkflow(), r.GetVersion(), since, until, an, advice)), nil
}

func (s *insightAPI) Optimize(_ context.Context, req *connect.Request[taskerv1.OptimizeRequest]) (*connect.Response[taskerv1.OptimizeResponse], error) {
	r := req.Msg
	if err := required("workflow", r.GetWorkflow()); err != nil {
		return nil, err
	}
	n := int(r.GetTasks())
	switch {
	case n == 0:
		n = 200
	case n > 100000:
		return nil, invalid("tasks", "%d is out of range: use 1 to 100000 (0 means 200)", n)
	}
	ns := nsOrDefault(r.GetNamespace())
	w, err := s.a.state.Workflow(ns, r.GetWorkflow(), r.GetVersion())
	if err != nil {
		return nil, toConnect(err)
	}
	p50, measured := s.a.stepMedians(ns, w.Name, w.Version, n)
	prop, err := insight.Optimize(w.Plan, []byte(w.Manifest), p50)
	if err != nil {
		// The manifest has a form the optimizer does not edit (an anchor
		// shared by steps): a property of the workflow, not a fault here.
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("optimize %s/%s %s: %w", ns, w.Name, w.Version, err))
	}
	out := &taskerv1.OptimizeResponse{
		Namespace: ns, Workflow: w.Name, Version: w.Version,
		Removed: pbEdges(prop.Removed), Added: pbEdges(prop.Added), Redundant: pbEdges(prop.Redundant),
		CriticalPathBefore: prop.Before, CriticalPathAfter: prop.After,
		Before: durationpb.New(prop.BeforeTime), After: durationpb.New(prop.AfterTime), Saved: durationpb.New(prop.Saved),
		Measured: map[string]*durationpb.Duration{}, Estimated: prop.Estimated, TasksMeasured: uint32(measured),
		Diff: prop.Diff, Manifest: string(prop.Manifest),
	}
	for step, d := range p50 {
		out.Measured[step] = durationpb.New(d)
	}
	return connect.NewResponse(out), nil
}

func pbEdges(es []insight.Edge) []*taskerv1.Edge {
	out := make([]*taskerv1.Edge, len(es))
	for i, e := range es {
		out[i] = &taskerv1.Edge{Parent: e.Parent, Child: e.Child, Why: e.Why}
	}
	return out
}

// stepMedians is each step's median started-to-ended time over the
// completed attempts of the last n tasks of a workflow version that
// completed a step, from the execution history; and how many tasks that
// was.
func (a *Agent) stepMedians(ns, name, version string, n int) (map[string]time.Duration, int) {
	recs := a.state.Attempts(consensus.HistoryFilter{Namespace: ns, Workflow: name, Version: version, Outcome: consensus.OutcomeCompleted, Limit: consensus.MaxHistoryLimit})
	tasks := map[string]bool{}
	samples := map[string][]time.Duration{}
	for _, r := range recs { // newest first
		if !tasks[r.TaskID] {
			if len(tasks) == n {
				continue
			}
			tasks[r.TaskID] = true
		}
		if r.StartedAt.IsZero() || r.EndedAt.Before(r.StartedAt) {
			continue
		}
		samples[r.Step] = append(samples[r.Step], r.EndedAt.Sub(r.StartedAt))
	}
	out := make(map[string]time.Duration, len(samples))
	for step, ds := range samples {
		slices.Sort(ds)
		out[step] = ds[len(ds)/2]
	}
	return out, len(tasks)
}

// explain asks the configured language model to explain a diagnosis and
// rank its remediations, and merges what survives the checks of
// llm.Explain into out. The model never replaces the rules: without one,
// or when its answer fails, out keeps the rules' findings and says why.
func (a *Agent) explain(ctx context.Context, d *insight.Diagnosis, out *taskerv1.DiagnoseResponse) {
	if a.llm == nil {
		out.ModelNote = "no language model is configured (set ai_endpoint and ai_model, docs/insight.md): the findings are the rules' alone"
		return
	}
	var allowed []insight.Remediation
	for _, f := range d.Findings {
		allowed = append(allowed, f.Remediations...)
	}
	ex, err := a.llm.Explain(ctx, llm.ExplainInput{
		Findings: d.Findings, Evidence: d.Evidence, Allowed: allowed,
		Context: map[string]any{"task_id": d.TaskID, "status": d.Status, "summary": d.Summary},
	})
	if err != nil {
		a.log.WarnContext(ctx, "language model explanation failed", "task_id", d.TaskID, "err", err)
		out.ModelNote = "the language model's answer was not used: " + err.Error()
		return
	}
	out.Explanation = strings.TrimSpace(ex.Summary + "\n\n" + ex.Explanation)
	var notes []string
	for _, r := range ex.Rejected {
		notes = append(notes, fmt.Sprintf("rejected %s: %s", r.Action, r.Reason))
	}
	notes = append(notes, ex.Notes...)
	if len(notes) > 0 {
		out.ModelNote = ex.Model + ": " + strings.Join(notes, "; ")
	}
	// A model remediation joins the finding about the step it names, else
	// the first root cause.
	for _, r := range ex.Remediations {
		target := -1
		for i, f := range out.Findings {
			if f.GetStep() == r.Params["step"] {
				target = i
				break
			}
		}
		if target < 0 && len(out.Findings) > 0 {
			target = 0
		}
		if target >= 0 {
			out.Findings[target].Remediations = append(out.Findings[target].Remediations, pbRemediation(r))
		}
	}
}

func pbAnalysis(ns, name, version string, since, until time.Time, an *insight.Analysis, advice []insight.Advice) *taskerv1.AnalyzeResponse {
	out := &taskerv1.AnalyzeResponse{
		Namespace: ns, Workflow: name, Version: version, Since: pbTime(since), Until: pbTime(until),
		Tasks: uint32(an.Tasks), Attempts: uint32(an.Attempts), CriticalPath: an.CriticalPath,
		CriticalPathTime: durationpb.New(an.CriticalTime),
	}
	for _, s := range an.Steps {
		ps := &taskerv1.StepStats{
			Step: s.Step, Capability: s.Capability, Attempts: uint32(s.Attempts), Completed: uint32(s.Completed),
			P50: durationpb.New(s.Duration.P50), P95: durationpb.New(s.Duration.P95), P99: durationpb.New(s.Duration.P99),
			Trend: s.Trend.Label, ChangePercent: s.Trend.ChangePct,
			WaitP50: durationpb.New(s.Wait.P50), WaitP95: durationpb.New(s.Wait.P95),
			RetryRate: s.RetryRate, Timeout: durationpb.New(s.Timeout), TimeoutRatio: s.TimeoutRatio,
		}
		for _, b := range s.ByAttempt {
			ps.SuccessByAttempt = append(ps.SuccessByAttempt, b.Rate)
		}
		out.Steps = append(out.Steps, ps)
	}
	for _, b := range an.Bottlenecks {
		switch b.Reason {
		case "wait":
			out.Bottlenecks = append(out.Bottlenecks, fmt.Sprintf("%s: waits %v (p95) for an agent before it starts", b.Step, b.WaitP95.Round(time.Millisecond)))
		default:
			out.Bottlenecks = append(out.Bottlenecks, fmt.Sprintf("%s: %.0f%% of the critical path (p50 %v)", b.Step, b.Share*100, b.P50.Round(time.Millisecond)))
		}
	}
	for _, ad := range advice {
		out.Advice = append(out.Advice, &taskerv1.Advice{Step: ad.Step, Setting: ad.Setting, Current: ad.Current, Proposed: ad.Proposed, Rationale: ad.Rationale, Confidence: ad.Confidence})
	}
	if b, err := json.Marshal(struct {
		*insight.Analysis
		Advice []insight.Advice `json:"advice"`
	}{an, advice}); err == nil {
		out.AnalysisJson = string(b)
	}
	return out
}

// Status says whether a language model is configured and whether the
// cluster requires approvals, without asking the model anything.
func (s *insightAPI) Status(_ context.Context, _ *connect.Request[taskerv1.StatusRequest]) (*connect.Response[taskerv1.StatusResponse], error) {
	out := &taskerv1.StatusResponse{ApprovalRequired: s.a.cfg.ApprovalRequired}
	if s.a.llm != nil {
		out.ModelConfigured, out.Model = true, s.a.llm.Config().Model
	}
	return connect.NewResponse(out), nil
}
