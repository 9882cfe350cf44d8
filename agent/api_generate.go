package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight"
	"github.com/tasker-run/tasker/insight/generate"
	"github.com/tasker-run/tasker/insight/llm"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/workflow"
)

// errNoModel is GenerateWorkflow's answer on an agent without a language
// model: unlike a diagnosis, a draft has no rule-based fallback.
const errNoModel = "no language model is configured: set ai_endpoint and ai_model (docs/ai.md); generation needs one"

// Bounds of the evidence and text a drafted proposal carries, under the
// state's limits on a proposal's fields.
const (
	maxDraftExplanation = 8 << 10
	maxDraftTitle       = 200
	maxDraftSummary     = 4 << 10
)

// GenerateWorkflow drafts a workflow from a description with the
// configured language model and the live capability catalog
// (insight/generate), and files a valid draft as a proposal: create_workflow
// for a workflow that does not exist, update_workflow (a new version, on
// the active one) for one that does. Nothing runs until an operator
// approves it.
func (s *insightAPI) GenerateWorkflow(ctx context.Context, req *connect.Request[taskerv1.GenerateWorkflowRequest]) (*connect.Response[taskerv1.GenerateWorkflowResponse], error) {
	r := req.Msg
	desc := strings.TrimSpace(r.GetDescription())
	base := r.GetBaseManifest()
	if err := checkSize("base_manifest", base, s.a.cfg.MaxPayloadBytes); err != nil {
		return nil, err
	}
	if strings.TrimSpace(base) == "" {
		if err := required("description", desc); err != nil {
			return nil, err
		}
	}
	if n := utf8.RuneCountInString(desc); n > generate.MaxDescription {
		return nil, invalid("description", "is %d characters, over the limit of %d: shorten it to what the workflow must do", n, generate.MaxDescription)
	}
	ns := nsOrDefault(r.GetNamespace())
	if !workflow.ValidWorkflowName(ns) {
		return nil, invalid("namespace", "%q is not a valid namespace: use %s", r.GetNamespace(), workflow.WorkflowNameRule)
	}
	if r.GetName() != "" && !workflow.ValidWorkflowName(r.GetName()) {
		return nil, invalid("name", "%q is not a valid workflow name: use %s, or leave it empty for the model to pick", r.GetName(), workflow.WorkflowNameRule)
	}
	if s.a.llm == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(errNoModel))
	}
	catalog := s.a.generateCatalog()
	if len(catalog) == 0 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(
			"no agent offers a capability yet: a draft is built from the capabilities apps register, so start them (or their sidecars) and try again"))
	}
	// Each answer may take ai_timeout; a draft takes at most 1 + the repair
	// rounds of them.
	answers := generate.DefaultMaxRounds + 1
	gctx, cancel := context.WithTimeout(ctx, s.a.llm.Config().Timeout*time.Duration(answers))
	defer cancel()
	d, err := generate.Generate(gctx, s.a.llm, generate.Input{
		Description: desc, Namespace: ns, Name: r.GetName(), Catalog: catalog, Limits: fsmLimits(), Base: []byte(base),
	})
	if err != nil {
		s.a.log.WarnContext(ctx, "workflow generation failed", "err", err)
		switch {
		case ctx.Err() != nil:
			return nil, connect.NewError(connect.CodeCanceled, err)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("the language model did not finish the draft within %d answers of ai_timeout (%v): %w", answers, s.a.llm.Config().Timeout, err))
		case errors.Is(err, llm.ErrNotConfigured):
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(errNoModel))
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the language model did not answer: %w", err))
	}
	out := &taskerv1.GenerateWorkflowResponse{
		Manifest: string(d.Manifest), Valid: d.Valid, Problems: d.Problems, MissingCapabilities: d.Missing,
		Summary: d.Summary, Explanation: d.Explanation, Rounds: uint32(d.Rounds),
	}
	s.a.log.InfoContext(ctx, "workflow drafted", "namespace", ns, "name", r.GetName(), "valid", d.Valid, "rounds", d.Rounds,
		"problems", len(d.Problems), "missing", len(d.Missing), "by", by(ctx))
	if !d.Valid {
		return connect.NewResponse(out), nil
	}
	pr, err := s.draftProposal(desc, d)
	if err != nil {
		return nil, err
	}
	out.Manifest = pr.GetManifest()
	if r.GetDryRun() {
		return connect.NewResponse(out), nil
	}
	p, err := (&proposalAPI{s.a}).create(ctx, pr, by(ctx), false)
	if err != nil {
		return nil, err
	}
	out.ProposalId = p.ID
	return connect.NewResponse(out), nil
}

// draftProposal is the proposal a valid draft makes: the first version of
// a new workflow, or the next version of an existing one (the draft's
// version replaced by the next prerelease of the active version, as the
// other proposals do).
func (s *insightAPI) draftProposal(desc string, d *generate.Draft) (*taskerv1.CreateProposalRequest, error) {
	plan := d.Plan
	explanation := clip(d.Explanation, maxDraftExplanation)
	// Evidence is shown to every reader: redacted as the model saw it.
	ev, err := json.Marshal(map[string]any{"description": llm.RedactText(desc), "rounds": d.Rounds, "explanation": explanation})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode the evidence: %w", err))
	}
	pr := &taskerv1.CreateProposalRequest{
		Action: consensus.ActionCreateWorkflow, Namespace: plan.Namespace, Workflow: plan.Name, Manifest: string(d.Manifest),
		Source: "model", EvidenceJson: string(ev),
		Title:   clip(fmt.Sprintf("create workflow %s/%s %s, drafted from a description", plan.Namespace, plan.Name, plan.Version), maxDraftTitle),
		Summary: clip(strings.TrimSpace(d.Summary+"\n\n"+explanation), maxDraftSummary),
	}
	base, err := s.a.state.Workflow(plan.Namespace, plan.Name, "")
	if errors.Is(err, consensus.ErrNotFound) {
		return pr, nil
	}
	if err != nil {
		return nil, toConnect(err)
	}
	next := insight.NextVersion(base.Version, base.Versions, versionTag)
	manifest, err := insight.SetVersion(d.Manifest, next)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("set the draft's version to %s: %w", next, err))
	}
	pr.Action, pr.BaseVersion, pr.NewVersion, pr.Manifest = consensus.ActionUpdateWorkflow, base.Version, next, string(manifest)
	pr.Title = clip(fmt.Sprintf("update workflow %s/%s %s → %s, drafted from a description", plan.Namespace, plan.Name, base.Version, next), maxDraftTitle)
	return pr, nil
}

// generateCatalog is every capability the cluster offers, as this agent's
// gossip registry knows it, with a description and the schemas of one of
// its providers: the first, by agent name, that advertises schemas.
// Providers advertising different schemas are not told apart here; the
// agents' capability check finds that when the workflow is applied.
func (a *Agent) generateCatalog() []generate.Capability {
	if a.gossip == nil {
		return nil
	}
	cat := a.gossip.Registry().Catalog()
	names := make([]string, 0, len(cat))
	for n := range cat {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]generate.Capability, 0, len(names))
	for _, n := range names {
		c := generate.Capability{Name: n}
		for _, p := range cat[n] {
			if c.Description == "" {
				c.Description = p.Description
			}
			if c.InputSchema == nil && c.OutputSchema == nil && (len(p.InputSchema) > 0 || len(p.OutputSchema) > 0) {
				c.InputSchema, c.OutputSchema = p.InputSchema, p.OutputSchema
			}
		}
		out = append(out, c)
	}
	return out
}

// clip shortens s to at most n bytes, on a rune boundary, marking the cut:
// the state refuses longer fields, and protobuf strings must stay UTF-8.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
