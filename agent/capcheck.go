package agent

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/workflow"
)

// checkCapabilities compares every step of plan with what the agents that
// offer its capability advertise (workflow.Plan.CheckCapability), as this
// agent's gossip registry knows them. ApplyWorkflow runs on the leader, so
// it is the leader's view, and gossip trails an app's registration by a
// few seconds: that is why a capability no agent offers is only a warning
// (its tasks wait until one does), not a refusal.
//
// A step incompatible with every schema its capability is advertised
// with refuses the workflow: the error is a *workflow.ValidationError
// whose problems name the agents. A step incompatible with some agents
// only is a warning naming them, since the others can run it. Agents that
// advertise identical schemas are checked once.
//
// Steps with transport: bus ask no app for a capability: they are not
// checked, only flagged when this server has no bus to publish them on.
func (a *Agent) checkCapabilities(plan *workflow.Plan) (warnings []string, err error) {
	if a.bus == nil {
		warnings = busWarnings(plan)
	}
	if a.gossip == nil {
		return warnings, nil
	}
	more, err := checkCatalog(plan, a.gossip.Registry().Catalog(), a.log)
	return append(warnings, more...), err
}

// busWarnings warns, at its first bus step, that a workflow has steps with
// transport: bus and the leader no bus: its tasks wait at those steps.
func busWarnings(plan *workflow.Plan) []string {
	first := slices.IndexFunc(plan.Steps, func(st workflow.PlanStep) bool { return st.IsBus() })
	if first < 0 {
		return nil
	}
	return []string{workflow.Problem{
		Path: "steps[" + strconv.Itoa(first) + "]", Line: plan.StepLine(first),
		Message: "transport: bus, but the leader has no service bus (-bus); tasks wait at bus steps until the servers run with one",
	}.String()}
}

// checkCatalog is checkCapabilities against a given catalog.
func checkCatalog(plan *workflow.Plan, catalog map[string][]gossip.Provider, log *slog.Logger) (warnings []string, err error) {
	variants := map[string][]capVariant{}
	var refused []workflow.Problem
	// One warning per capability no agent offers, at its first step: a
	// fan-out of twenty shards is one fact, not twenty.
	unoffered := map[string]int{}
	var unofferedOrder []string
	for i, st := range plan.Steps {
		if st.IsBus() {
			continue // whatever consumes its subject runs it: no app, no capability
		}
		providers := catalog[st.Capability]
		if len(providers) == 0 {
			if _, seen := unoffered[st.Capability]; !seen {
				unofferedOrder = append(unofferedOrder, st.Capability)
			}
			unoffered[st.Capability]++
			continue
		}
		vs, ok := variants[st.Capability]
		if !ok {
			vs = capabilityVariants(st.Capability, providers, log)
			variants[st.Capability] = vs
		}
		found, compatible := checkStep(plan, i, vs)
		for _, f := range found {
			p := f.problem
			if len(compatible) == 0 {
				p.Message += fmt.Sprintf(" (advertised by %s)", agentWords(f.agents))
				refused = append(refused, p)
				continue
			}
			p.Message += fmt.Sprintf(" (advertised by %s; %s a compatible schema, so only attempts dispatched to %s are likely to fail)",
				agentWords(f.agents), advertiseWords(compatible), pronounWords(f.agents))
			warnings = append(warnings, p.String())
		}
	}
	for _, capName := range unofferedOrder {
		first := slices.IndexFunc(plan.Steps, func(st workflow.PlanStep) bool { return st.Capability == capName })
		also := ""
		if n := unoffered[capName] - 1; n > 0 {
			also = fmt.Sprintf(" (nor for %d more steps)", n)
		}
		warnings = append(warnings, workflow.Problem{
			Path: "steps[" + strconv.Itoa(first) + "]", Line: plan.StepLine(first),
			Message: fmt.Sprintf("no agent offers capability %q yet%s; its tasks wait until one does", capName, also),
		}.String())
	}
	if len(refused) > 0 {
		return warnings, &workflow.ValidationError{Problems: refused}
	}
	return warnings, nil
}

// capVariant is one set of schemas a capability is advertised with, and
// the agents that advertise exactly it.
type capVariant struct {
	schemas *workflow.CapabilitySchemas
	agents  []string
}

// capabilityVariants groups a capability's providers by the schemas they
// advertise (compact JSON text, so equal schemas compare equal), in the
// registry's order of agents.
func capabilityVariants(capability string, providers []gossip.Provider, log *slog.Logger) []capVariant {
	index := map[[2]string]int{}
	var out []capVariant
	for _, p := range providers {
		key := [2]string{string(p.InputSchema), string(p.OutputSchema)}
		if j, ok := index[key]; ok {
			out[j].agents = append(out[j].agents, p.Agent)
			continue
		}
		c, err := workflow.NewCapabilitySchemas(p.InputSchema, p.OutputSchema)
		if err != nil {
			// Registration compiles every schema, so this is a bug or a
			// foreign agent; the provider is not judged (nil checks nothing).
			log.Warn("capability schemas unreadable; not checked", "capability", capability, "agent", p.Agent, "err", err)
		}
		index[key] = len(out)
		out = append(out, capVariant{schemas: c, agents: []string{p.Agent}})
	}
	return out
}

// stepFinding is one problem of a step and the agents whose schemas have it.
type stepFinding struct {
	problem workflow.Problem
	agents  []string
}

// checkStep checks step i against each variant. It returns the problems,
// merged across variants and in source order, and the agents whose
// schemas the step is compatible with.
func checkStep(plan *workflow.Plan, i int, vs []capVariant) (found []stepFinding, compatible []string) {
	index := map[workflow.Problem]int{}
	for _, v := range vs {
		ps := plan.CheckCapability(i, v.schemas)
		if len(ps) == 0 {
			compatible = append(compatible, v.agents...)
			continue
		}
		for _, p := range ps {
			if j, ok := index[p]; ok {
				found[j].agents = append(found[j].agents, v.agents...)
				continue
			}
			index[p] = len(found)
			found = append(found, stepFinding{problem: p, agents: slices.Clone(v.agents)})
		}
	}
	sort.SliceStable(found, func(x, y int) bool {
		a, b := found[x].problem, found[y].problem
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Path < b.Path
	})
	for _, f := range found {
		sort.Strings(f.agents)
	}
	sort.Strings(compatible)
	return found, compatible
}

// agentWords renders `agent "a"` or `agents "a", "b"`.
func agentWords(agents []string) string {
	q := make([]string, len(agents))
	for i, a := range agents {
		q[i] = strconv.Quote(a)
	}
	if len(q) == 1 {
		return "agent " + q[0]
	}
	return "agents " + strings.Join(q, ", ")
}

// advertiseWords renders `agent "a" advertises` or `agents "a", "b" advertise`.
func advertiseWords(agents []string) string {
	if len(agents) == 1 {
		return agentWords(agents) + " advertises"
	}
	return agentWords(agents) + " advertise"
}

// pronounWords names the agents again, shortly.
func pronounWords(agents []string) string {
	if len(agents) == 1 {
		return "it"
	}
	return "them"
}
