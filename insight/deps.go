package insight

import (
	"sort"

	"github.com/tasker-run/tasker/workflow"
)

// Edge is one depends_on edge: Child lists Parent under depends_on.
type Edge struct {
	Parent string `json:"parent"`
	Child  string `json:"child"`
	// CarriesData reports whether the child's input mapping reads the
	// parent's result; Reads lists those expressions, in field order.
	CarriesData bool     `json:"carries_data"`
	Reads       []string `json:"reads,omitempty"`
	// Why says, in a proposal, why the edge is removed, added or redundant.
	Why string `json:"why,omitempty"`
}

// Dependencies returns every depends_on edge of p, children in manifest
// order and each child's parents in the order written. The only place a
// manifest reads another step's result is a step's input mapping (objects
// and arrays nest; every leaf expression is considered): there are no
// conditions or other expression sites.
func Dependencies(p *workflow.Plan) []Edge {
	var out []Edge
	for i := range p.Steps {
		reads := readsByStep(p, i)
		for _, par := range p.Parents(i) {
			name := p.Steps[par].Name
			r := reads[name]
			out = append(out, Edge{Parent: name, Child: p.Steps[i].Name, CarriesData: len(r) > 0, Reads: r})
		}
	}
	return out
}

// readsByStep returns step i's expressions that read other steps' results,
// keyed by the step read, each list in the order of the fields they fill.
func readsByStep(p *workflow.Plan, i int) map[string][]string {
	exprs := p.Steps[i].Input.Exprs()
	if len(exprs) == 0 {
		return nil
	}
	paths := make([]string, 0, len(exprs))
	for path, e := range exprs {
		if e.Step != "" {
			paths = append(paths, path)
		}
	}
	// Exprs is a map: sort so that the same plan always reads the same.
	sort.Strings(paths)
	out := map[string][]string{}
	for _, path := range paths {
		e := exprs[path]
		out[e.Step] = append(out[e.Step], e.Source)
	}
	return out
}
