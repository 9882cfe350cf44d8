package insight

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// Proposal is the dependency optimizer's proposed change to one workflow
// version. Nothing in it has been applied.
type Proposal struct {
	Workflow string
	Version  string
	// Removed are the depends_on edges that carry no data and whose
	// removal lets the child start earlier.
	Removed []Edge
	// Added are the direct edges that replace a removed one where a step
	// read a result it could reach only through the removed edge.
	Added []Edge
	// Redundant are edges that carry no data and whose parent stays an
	// ancestor of the child through another path, in the proposed manifest
	// too: removing them changes nothing at run time. They are reported as
	// a separate cleanup and are not edited in Manifest.
	Redundant []Edge
	// Before and After are the critical paths (step names) of the current
	// and proposed manifests, and BeforeTime and AfterTime their lengths.
	Before, After         []string
	BeforeTime, AfterTime time.Duration
	// Saved is BeforeTime − AfterTime.
	Saved time.Duration
	// Estimated lists the steps without a measured duration, whose timeout
	// stood in for it.
	Estimated []string
	// Manifest is the proposed manifest text; Diff the unified diff from
	// the current one ("" when nothing is proposed).
	Manifest []byte
	Diff     string
}

// Optimize proposes removing the depends_on edges of p that carry no data.
// manifest is the source text p was loaded from; the proposal edits only its
// depends_on lists. durations holds measured (p50) step durations by step
// name; a step without one is weighed by its timeout and listed in
// Estimated. The proposed manifest is compiled before it is returned: a
// proposal that would not load is an error, never a Proposal.
func Optimize(p *workflow.Plan, manifest []byte, durations map[string]time.Duration) (*Proposal, error) {
	if p == nil {
		return nil, fmt.Errorf("insight: no plan")
	}
	n := len(p.Steps)
	prop := &Proposal{Workflow: p.Name, Version: p.Version}
	weight := func(q *workflow.Plan) func(int) time.Duration { return stepWeight(q, durations) }
	for _, s := range p.Steps {
		if _, ok := durations[s.Name]; !ok {
			prop.Estimated = append(prop.Estimated, s.Name)
		}
	}
	path, total := p.CriticalPath(weight(p))
	prop.Before, prop.BeforeTime = names(p, path), total

	reads := make([]map[string][]string, n)
	for i := range n {
		reads[i] = readsByStep(p, i)
	}
	parents := make([][]int, n)
	for i := range n {
		for _, par := range p.Parents(i) {
			parents[i] = append(parents[i], int(par))
		}
	}
	anc := ancestry(p.Order(), parents, n)

	// Candidates are judged on the current graph: an edge that carries no
	// data and is not redundant there.
	newParents := make([][]int, n)
	redundant := map[[2]int]bool{}
	for i := range n {
		for _, par := range parents[i] {
			e := [2]int{par, i}
			if len(reads[i][p.Steps[par].Name]) > 0 {
				newParents[i] = append(newParents[i], par)
				continue
			}
			if reachedOtherwise(anc, parents[i], par) {
				redundant[e] = true
				newParents[i] = append(newParents[i], par)
				continue
			}
			prop.Removed = append(prop.Removed, Edge{
				Parent: p.Steps[par].Name, Child: p.Steps[i].Name,
				Why: fmt.Sprintf("%s reads nothing from %s", p.Steps[i].Name, p.Steps[par].Name),
			})
		}
	}

	// Without the removed edges a step may lose an ancestor it reads,
	// directly or as a step further down. Walking in the current
	// topological order (still valid: the new graph's edges all join a
	// step to one of its current ancestors), add a direct edge to each
	// lost step that no other lost step already brings back.
	newAnc := make([]bitset, n)
	words := (n + 63) / 64
	for _, s32 := range p.Order() {
		s := int(s32)
		b := make(bitset, words)
		for _, par := range newParents[s] {
			b.or(newAnc[par])
			b.set(par)
		}
		var lost []int
		for name := range reads[s] {
			k, _ := p.StepIndex(name)
			if !b.has(k) {
				lost = append(lost, k)
			}
		}
		slices.Sort(lost)
		for _, k := range lost {
			covered := false
			for _, o := range lost {
				if o != k && newAnc[o].has(k) {
					covered = true
					break
				}
			}
			if covered {
				continue
			}
			newParents[s] = append(newParents[s], k)
			prop.Added = append(prop.Added, Edge{
				Parent: p.Steps[k].Name, Child: p.Steps[s].Name, CarriesData: true, Reads: reads[s][p.Steps[k].Name],
				Why: fmt.Sprintf("%s reads %s, which it reached only through a removed edge", p.Steps[s].Name, p.Steps[k].Name),
			})
		}
		for _, k := range lost {
			b.or(newAnc[k])
			b.set(k)
		}
		newAnc[s] = b
	}
	for i := range n {
		for _, par := range newParents[i] {
			if redundant[[2]int{par, i}] && reachedOtherwise(newAnc, newParents[i], par) {
				prop.Redundant = append(prop.Redundant, Edge{
					Parent: p.Steps[par].Name, Child: p.Steps[i].Name,
					Why: fmt.Sprintf("%s reads nothing from %s, which is already an ancestor through another parent", p.Steps[i].Name, p.Steps[par].Name),
				})
			}
		}
	}

	if len(prop.Removed) == 0 {
		prop.After, prop.AfterTime = prop.Before, prop.BeforeTime
		prop.Manifest = manifest
		return prop, nil
	}
	deps := make(map[string][]string, n)
	for i := range n {
		if !slices.Equal(newParents[i], parents[i]) {
			list := make([]string, len(newParents[i]))
			for j, par := range newParents[i] {
				list[j] = p.Steps[par].Name
			}
			deps[p.Steps[i].Name] = list
		}
	}
	out, edits, err := editDependsOn(manifest, deps)
	if err != nil {
		return nil, fmt.Errorf("insight: edit the manifest of %s: %w", p.Name, err)
	}
	np, err := workflow.Load(out, workflow.Limits{})
	if err != nil {
		return nil, fmt.Errorf("insight: the proposed manifest of %s does not compile: %w", p.Name, err)
	}
	// The edit is checked against the graph it was meant to produce: a
	// manifest that is not p's source, or a layout the line splice got
	// wrong, must not come back as a proposal.
	if len(np.Steps) != n {
		return nil, fmt.Errorf("insight: the manifest has %d steps, the plan %d: is it the plan's source?", len(np.Steps), n)
	}
	for i := range n {
		got := make([]string, 0, len(np.Parents(i)))
		for _, par := range np.Parents(i) {
			got = append(got, np.Steps[par].Name)
		}
		want := names(p, newParents[i])
		if np.Steps[i].Name != p.Steps[i].Name || !slices.Equal(got, want) {
			return nil, fmt.Errorf("insight: the proposed manifest gives step %q depends_on %v, want %v: is the manifest the plan's source?", np.Steps[i].Name, got, want)
		}
	}
	prop.Manifest = out
	prop.Diff = unifiedDiff(manifest, edits)
	path, total = np.CriticalPath(weight(np))
	prop.After, prop.AfterTime = names(np, path), total
	prop.Saved = prop.BeforeTime - prop.AfterTime
	return prop, nil
}

// reachedOtherwise reports whether par is an ancestor of one of the other
// parents in list.
func reachedOtherwise(anc []bitset, list []int, par int) bool {
	for _, q := range list {
		if q != par && anc[q].has(par) {
			return true
		}
	}
	return false
}

func names(p *workflow.Plan, idx []int) []string {
	out := make([]string, len(idx))
	for i, s := range idx {
		out[i] = p.Steps[s].Name
	}
	return out
}

// bitset is a set of step indices. For 1000 steps a full ancestry is 125 KB
// and each union is 16 words: cheaper than maps, and simple.
type bitset []uint64

func (b bitset) has(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b bitset) or(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}

// ancestry returns every step's transitive ancestors.
func ancestry(order []int32, parents [][]int, n int) []bitset {
	words := (n + 63) / 64
	backing := make([]uint64, n*words)
	out := make([]bitset, n)
	for i := range out {
		out[i] = backing[i*words : (i+1)*words]
	}
	for _, s := range order {
		for _, par := range parents[s] {
			out[s].or(out[par])
			out[s].set(par)
		}
	}
	return out
}

// String renders the proposal for people, as a CLI prints it.
func (p *Proposal) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Dependency optimization for %s %s\n", p.Workflow, p.Version)
	list := func(title string, es []Edge) {
		if len(es) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for _, e := range es {
			fmt.Fprintf(&b, "  %s → %s: %s\n", e.Parent, e.Child, e.Why)
		}
	}
	if len(p.Removed) == 0 {
		b.WriteString("\nNo depends_on edge can be removed: every one carries data or is redundant.\n")
	}
	list("Remove (ordering only; check the parent has no side effect the child relies on)", p.Removed)
	list("Add (replacing a removed edge)", p.Added)
	list("Redundant (safe cleanup, not in the proposed manifest)", p.Redundant)
	fmt.Fprintf(&b, "\nCritical path before: %s (%v)\n", strings.Join(p.Before, " → "), p.BeforeTime)
	fmt.Fprintf(&b, "Critical path after:  %s (%v)\n", strings.Join(p.After, " → "), p.AfterTime)
	fmt.Fprintf(&b, "Saved: %v\n", p.Saved)
	if len(p.Estimated) > 0 {
		fmt.Fprintf(&b, "Estimated from timeouts (no measurement): %s\n", strings.Join(p.Estimated, ", "))
	}
	if p.Diff != "" {
		b.WriteString("\n")
		b.WriteString(p.Diff)
	}
	return b.String()
}
