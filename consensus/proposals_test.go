package consensus

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

func withVersion(m, v string) string { return strings.Replace(m, "version: 1.0.0", "version: "+v, 1) }

func putProposal(p *fsmv1.Proposal) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_PutProposal{PutProposal: &fsmv1.PutProposal{Proposal: p}}}
}

func decide(id, d string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_DecideProposal{DecideProposal: &fsmv1.DecideProposal{Id: id, Decision: d, By: "op", Reason: "because"}}}
}

func mark(id, st string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_MarkProposal{MarkProposal: &fsmv1.MarkProposal{Id: id, State: st, By: "op"}}}
}

func setActive(v string) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Namespace: "shop", Workflow: "order-fulfilment", Version: v}}}
}

func allOrNothing(cmds ...*fsmv1.Command) *fsmv1.Command {
	return &fsmv1.Command{Kind: &fsmv1.Command_Batch{Batch: &fsmv1.Batch{Commands: cmds, Atomic: true}}}
}

// change is a workflow change of order-fulfilment 1.0.0 to version v.
func change(t *testing.T, v string) *fsmv1.Proposal {
	return &fsmv1.Proposal{
		Action: "change_timeout", Namespace: "shop", Workflow: "order-fulfilment", BaseVersion: "1.0.0", NewVersion: v,
		Manifest: withVersion(manifest(t), v), Source: "rules", Confidence: 0.8, CreatedBy: "acc_w",
	}
}

func (h *harness) proposal(id string) *Proposal {
	h.t.Helper()
	p, err := h.fsm.State().ProposalByID(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) active() string {
	h.t.Helper()
	v, err := h.fsm.State().Workflow("shop", "order-fulfilment", "")
	if err != nil {
		h.t.Fatal(err)
	}
	return v.Version
}

func TestProposalTransitions(t *testing.T) {
	tests := []struct {
		name  string
		setup []*fsmv1.Command // applied to a fresh pending p-1
		cmd   *fsmv1.Command
		want  string // the state after, or "" for a refusal
		err   string
	}{
		{"approve pending", nil, decide("p-1", ProposalApproved), ProposalApproved, ""},
		{"reject pending", nil, decide("p-1", ProposalRejected), ProposalRejected, ""},
		{"apply approved", []*fsmv1.Command{decide("p-1", ProposalApproved)}, mark("p-1", ProposalApplied), ProposalApplied, ""},
		{"fail approved", []*fsmv1.Command{decide("p-1", ProposalApproved)}, mark("p-1", ProposalFailed), ProposalFailed, ""},
		{"roll back applied", []*fsmv1.Command{decide("p-1", ProposalApproved), mark("p-1", ProposalApplied)}, mark("p-1", ProposalRolledBack), ProposalRolledBack, ""},
		{"apply pending", nil, mark("p-1", ProposalApplied), "", "is pending: it can only become approved or rejected, not applied"},
		{"approve twice", []*fsmv1.Command{decide("p-1", ProposalApproved)}, decide("p-1", ProposalApproved), "", "is approved: it can only become applied or failed"},
		{"reject applied", []*fsmv1.Command{decide("p-1", ProposalApproved), mark("p-1", ProposalApplied)}, decide("p-1", ProposalRejected), "", "is applied: it can only become rolled_back"},
		{"roll back rejected", []*fsmv1.Command{decide("p-1", ProposalRejected)}, mark("p-1", ProposalRolledBack), "", "is rejected, which is final"},
		{"decide with a mark state", nil, decide("p-1", ProposalApplied), "", `"applied" is not a state this command sets: use approved or rejected`},
		{"mark with a decision", []*fsmv1.Command{decide("p-1", ProposalApproved)}, mark("p-1", ProposalRejected), "", "use applied or failed or rolled_back"},
		{"unknown proposal", nil, decide("p-9", ProposalApproved), "", "not found: proposal p-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.ok(put(manifest(t)))
			if r := h.ok(putProposal(change(t, "1.0.1"))); r.ProposalID != "p-1" {
				t.Fatalf("id %q, want p-1", r.ProposalID)
			}
			for _, c := range tt.setup {
				h.ok(c)
			}
			before := h.proposal("p-1")
			r := h.do(tt.cmd)
			if tt.err != "" {
				if r.Err == nil || !errors.Is(r.Err, ErrInvalid) && !errors.Is(r.Err, ErrNotFound) || !strings.Contains(r.Err.Error(), tt.err) {
					t.Fatalf("err %v, want one containing %q", r.Err, tt.err)
				}
				if after := h.proposal("p-1"); !reflect.DeepEqual(before, after) {
					t.Fatalf("a refused transition changed the proposal:\n%+v\n%+v", before, after)
				}
				return
			}
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			p := h.proposal("p-1")
			if p.State != tt.want {
				t.Fatalf("state %s, want %s", p.State, tt.want)
			}
			if last := p.History[len(p.History)-1]; last.State != tt.want || last.By != "op" || len(p.History) != len(before.History)+1 {
				t.Fatalf("history %+v", p.History)
			}
		})
	}
}

func TestProposalValidation(t *testing.T) {
	long := strings.Repeat("x", maxProposalTitle+1)
	tests := []struct {
		name string
		edit func(p *fsmv1.Proposal)
		err  string
	}{
		{"unknown action", func(p *fsmv1.Proposal) { p.Action = "reboot" }, `action "reboot" is unknown`},
		{"kind of another action", func(p *fsmv1.Proposal) { p.Kind = ProposalOperation }, "does not match action change_timeout"},
		{"unknown source", func(p *fsmv1.Proposal) { p.Source = "oracle" }, `source "oracle" is unknown`},
		{"confidence out of range", func(p *fsmv1.Proposal) { p.Confidence = 1.5 }, "confidence 1.5 is out of range"},
		{"title too long", func(p *fsmv1.Proposal) { p.Title = long }, "proposal title is 201 bytes, over the limit of 200"},
		{"no manifest", func(p *fsmv1.Proposal) { p.Manifest = "" }, "carries the proposed manifest"},
		{"manifest does not compile", func(p *fsmv1.Proposal) { p.Manifest = "name: x\n" }, "proposed manifest"},
		{"new version exists", func(p *fsmv1.Proposal) { p.NewVersion, p.Manifest = "1.0.0", manifest(t) }, "version 1.0.0 exists"},
		{"version differs from the manifest's", func(p *fsmv1.Proposal) { p.NewVersion = "1.0.2" }, "has version 1.0.1, the proposal says 1.0.2"},
		{"another workflow", func(p *fsmv1.Proposal) { p.Workflow = "other" }, "not found: workflow shop/other"},
		{"unknown base", func(p *fsmv1.Proposal) { p.BaseVersion = "0.9.0" }, "version 0.9.0"},
		{"operation without a task", func(p *fsmv1.Proposal) { p.Action, p.Manifest = "retry_step", "" }, "names its task"},
		{"operation on an unknown task", func(p *fsmv1.Proposal) { p.Action, p.TaskId, p.Step = "retry_step", "nope", "charge" }, "not found: task nope"},
		{"operation on an unknown step", func(p *fsmv1.Proposal) { p.Action, p.TaskId, p.Step = "retry_step", "t1", "nope" }, `step "nope" in task t1`},
		{"retry without a step", func(p *fsmv1.Proposal) { p.Action, p.TaskId = "retry_step", "t1" }, "names its step"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.ok(put(manifest(t)))
			h.ok(create("t1", "", orderInput))
			p := change(t, "1.0.1")
			tt.edit(p)
			r := h.do(putProposal(p))
			if r.Err == nil || !strings.Contains(r.Err.Error(), tt.err) {
				t.Fatalf("err %v, want one containing %q", r.Err, tt.err)
			}
			if n := len(h.fsm.State().Proposals(ProposalFilter{})); n != 0 {
				t.Fatalf("%d proposals stored after a refusal", n)
			}
		})
	}
}

func TestProposalOperationFillsTheTask(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	r := h.ok(putProposal(&fsmv1.Proposal{Action: "retry_step", TaskId: "t1", Step: "charge", Source: "rules"}))
	p := h.proposal(r.ProposalID)
	if p.Kind != ProposalOperation || p.Workflow != "order-fulfilment" || p.Namespace != "shop" || p.BaseVersion != "1.0.0" || p.State != ProposalPending {
		t.Fatalf("%+v", p)
	}
	if !strings.Contains(p.Undo, "cannot be un-run") {
		t.Fatalf("undo %q", p.Undo)
	}
}

func TestProposalApplyIsAtomic(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(putProposal(change(t, "1.0.1")))
	approve := func(m string) *fsmv1.Command {
		return allOrNothing(decide("p-1", ProposalApproved), put(m), setActive("1.0.1"), mark("p-1", ProposalApplied))
	}

	// Someone applied 1.0.1 with other content meanwhile: the PutWorkflow is
	// refused, and with it the whole batch.
	other := withVersion(manifest(t), "1.0.1") + "\n# another edit\n"
	h.ok(put(other))
	h.ok(setActive("1.0.0"))
	r := h.do(approve(withVersion(manifest(t), "1.0.1")))
	if r.Err == nil || !errors.Is(r.Err, ErrVersionExists) || !strings.Contains(r.Err.Error(), "command 2 of 4") {
		t.Fatalf("err %v", r.Err)
	}
	if r.Batch[0].Err != nil || r.Batch[1].Err == nil || r.Batch[3].Err == nil {
		t.Fatalf("batch results %+v", r.Batch)
	}
	if p := h.proposal("p-1"); p.State != ProposalPending || len(p.History) != 1 {
		t.Fatalf("the refused batch left the proposal %s with %d transitions", p.State, len(p.History))
	}
	if a := h.active(); a != "1.0.0" {
		t.Fatalf("active %s", a)
	}

	// On a fresh state the same batch applies whole.
	h = newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(putProposal(change(t, "1.0.1")))
	h.ok(approve(withVersion(manifest(t), "1.0.1")))
	p := h.proposal("p-1")
	if p.State != ProposalApplied || len(p.History) != 3 {
		t.Fatalf("%s %+v", p.State, p.History)
	}
	v, _ := h.fsm.State().Workflow("shop", "order-fulfilment", "")
	if v.Version != "1.0.1" || !v.Pinned {
		t.Fatalf("active %s pinned %v", v.Version, v.Pinned)
	}
	// A new version undone by the batch's failure disappears, with its
	// workflow when it was the first.
	h.ok(putProposal(change(t, "1.0.2")))
	r = h.do(allOrNothing(decide("p-2", ProposalApproved), put(withVersion(manifest(t), "1.0.2")), setActive("9.9.9"), mark("p-2", ProposalApplied)))
	if r.Err == nil || !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("err %v", r.Err)
	}
	if _, err := h.fsm.State().Workflow("shop", "order-fulfilment", "1.0.2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("1.0.2 survived the undone batch: %v", err)
	}
	if a := h.active(); a != "1.0.1" || h.proposal("p-2").State != ProposalPending {
		t.Fatalf("active %s, p-2 %s", a, h.proposal("p-2").State)
	}
}

func TestAtomicBatchShape(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	cancel := &fsmv1.Command{Kind: &fsmv1.Command_CancelTask{CancelTask: &fsmv1.CancelTask{TaskId: "t1"}}}
	tests := []struct {
		name string
		cmds []*fsmv1.Command
		err  string
	}{
		{"two operations", []*fsmv1.Command{cancel, cancel}, "both cannot be undone"},
		{"a change after an operation", []*fsmv1.Command{cancel, setActive("1.0.0")}, "which cannot be undone; only MarkProposal may"},
		{"nested", []*fsmv1.Command{allOrNothing()}, "is a batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(allOrNothing(tt.cmds...))
			if r.Err == nil || !strings.Contains(r.Err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", r.Err, tt.err)
			}
			if tk, _ := h.fsm.State().Task("t1"); tk.State != workflow.TaskPending {
				t.Fatalf("a refused batch cancelled the task: %s", tk.State)
			}
		})
	}
	// An operation followed by a mark that would be refused is not run.
	h.ok(putProposal(&fsmv1.Proposal{Action: "cancel", TaskId: "t1", Source: "user"}))
	r := h.do(allOrNothing(cancel, mark("p-1", ProposalApplied)))
	if r.Err == nil || !strings.Contains(r.Err.Error(), "command 2 of 2") || len(r.Batch) != 2 {
		t.Fatalf("err %v, %d results", r.Err, len(r.Batch))
	}
	if tk, _ := h.fsm.State().Task("t1"); tk.State != workflow.TaskPending {
		t.Fatalf("the operation ran though its mark was refused: task %s", tk.State)
	}
	// An operation whose proposal transition fails first is not run.
	h.ok(decide("p-1", ProposalRejected))
	if r := h.do(allOrNothing(decide("p-1", ProposalApproved), cancel, mark("p-1", ProposalApplied))); r.Err == nil {
		t.Fatal("a rejected proposal was applied")
	}
	if tk, _ := h.fsm.State().Task("t1"); tk.State != workflow.TaskPending {
		t.Fatalf("task %s", tk.State)
	}
}

func TestActiveVersionPin(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(put(withVersion(manifest(t), "1.1.0")))
	start := func(id string) string {
		t.Helper()
		c := create(id, "", orderInput)
		c.GetCreateTask().Version = ""
		h.ok(c)
		tk, err := h.fsm.State().Task(id)
		if err != nil {
			t.Fatal(err)
		}
		return tk.Version
	}
	steps := []struct {
		name string
		cmd  *fsmv1.Command
		err  string
		want string // the version a task started now gets
	}{
		{"highest without a pin", nil, "", "1.1.0"},
		{"pinned to the older", setActive("1.0.0"), "", "1.0.0"},
		{"same content again keeps the pin", put(withVersion(manifest(t), "1.1.0")), "", "1.0.0"},
		{"unknown version refused", setActive("3.0.0"), "not found", "1.0.0"},
		{"a new version clears the pin", put(withVersion(manifest(t), "1.2.0")), "", "1.2.0"},
		{"pinned again", setActive("1.1.0"), "", "1.1.0"},
		{"cleared", setActive(""), "", "1.2.0"},
	}
	for i, st := range steps {
		if st.cmd != nil {
			r := h.do(st.cmd)
			if (r.Err != nil) != (st.err != "") || r.Err != nil && !strings.Contains(r.Err.Error(), st.err) {
				t.Fatalf("%s: err %v, want %q", st.name, r.Err, st.err)
			}
		}
		if got := start("t" + string(rune('a'+i))); got != st.want {
			t.Fatalf("%s: a task started without a version got %s, want %s", st.name, got, st.want)
		}
	}
	if r := h.do(&fsmv1.Command{Kind: &fsmv1.Command_SetActiveVersion{SetActiveVersion: &fsmv1.SetActiveVersion{Namespace: "shop", Workflow: "nope", Version: "1.0.0"}}}); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("pin of an unknown workflow: %v", r.Err)
	}
}

func TestProposalSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.ok(putProposal(change(t, "1.0.1")))
	h.ok(allOrNothing(decide("p-1", ProposalApproved), put(withVersion(manifest(t), "1.0.1")), setActive("1.0.1"), mark("p-1", ProposalApplied)))
	h.ok(put(withVersion(manifest(t), "2.0.0")))
	h.ok(setActive("1.0.1")) // pinned below a newer version, which a restore must not clear
	p := &fsmv1.Proposal{Action: "retry_step", TaskId: "t1", Step: "charge", Source: "model", Params: map[string]string{"task": "t1"}, EvidenceJson: `{"e":1}`}
	h.ok(putProposal(p))
	h.ok(decide("p-2", ProposalRejected))

	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(snap.(snapshot))
	restored := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := restored.Restore(nopCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if a, b := h.fsm.State().Proposals(ProposalFilter{}), restored.State().Proposals(ProposalFilter{}); !reflect.DeepEqual(a, b) {
		t.Fatalf("proposals differ after restore:\n%+v\n%+v", a, b)
	}
	v, err := restored.State().Workflow("shop", "order-fulfilment", "")
	if err != nil || v.Version != "1.0.1" || !v.Pinned {
		t.Fatalf("active version after restore: %+v %v", v, err)
	}
	again, _ := restored.Snapshot()
	if !bytes.Equal(data, []byte(again.(snapshot))) {
		t.Fatal("snapshot of the restored state differs from the original")
	}
	// Ids go on from the snapshot's sequence.
	h2 := &harness{t: t, fsm: restored, now: h.now}
	if r := h2.ok(putProposal(change(t, "1.0.2"))); r.ProposalID != "p-3" {
		t.Fatalf("id after restore %s, want p-3", r.ProposalID)
	}

	// A snapshot written before proposals existed has no such records and
	// a header without their counts: it restores with none.
	old := newHarness(t)
	old.ok(put(manifest(t)))
	snap, _ = old.fsm.Snapshot()
	fresh := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := fresh.Restore(nopCloser{bytes.NewReader([]byte(snap.(snapshot)))}); err != nil {
		t.Fatal(err)
	}
	if n := len(fresh.State().Proposals(ProposalFilter{})); n != 0 {
		t.Fatalf("%d proposals", n)
	}
}

func TestProposalLimit(t *testing.T) {
	h := newHarness(t)
	h.ok(put(manifest(t)))
	h.ok(create("t1", "", orderInput))
	h.fsm.State().SetMaxProposals(3)
	op := func() *fsmv1.Command {
		return putProposal(&fsmv1.Proposal{Action: "cancel", TaskId: "t1", Source: "rules"})
	}
	for range 3 {
		h.ok(op())
	}
	r := h.do(op())
	if !errors.Is(r.Err, ErrLimit) || !strings.Contains(r.Err.Error(), "every one is pending") {
		t.Fatalf("err %v", r.Err)
	}
	h.ok(decide("p-2", ProposalRejected))
	h.ok(decide("p-1", ProposalApproved)) // approved: still waits to be applied, kept
	if r := h.ok(op()); r.ProposalID != "p-4" {
		t.Fatalf("id %s", r.ProposalID)
	}
	var ids []string
	for _, p := range h.fsm.State().Proposals(ProposalFilter{}) {
		ids = append(ids, p.ID)
	}
	if want := []string{"p-4", "p-3", "p-1"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("kept %v, want %v (newest first, the rejected p-2 dropped)", ids, want)
	}
	if got := h.fsm.State().Proposals(ProposalFilter{State: ProposalPending, Limit: 1}); len(got) != 1 || got[0].ID != "p-4" {
		t.Fatalf("filtered %+v", got)
	}
}

// TestProposalCreateWorkflow: a create_workflow proposal carries the first
// version of a workflow that does not exist; approving it puts the
// workflow, atomically; it is refused for a workflow that exists or with a
// base version, and says it cannot be rolled back.
func TestProposalCreateWorkflow(t *testing.T) {
	create := func(t *testing.T) *fsmv1.Proposal {
		return &fsmv1.Proposal{Action: ActionCreateWorkflow, Namespace: "shop", Workflow: "order-fulfilment", Manifest: manifest(t), Source: "model", CreatedBy: "acc_w"}
	}
	for _, tt := range []struct {
		name   string
		exists bool
		edit   func(p *fsmv1.Proposal)
		err    string
	}{
		{"the workflow exists", true, func(*fsmv1.Proposal) {}, "workflow shop/order-fulfilment exists: propose a new version of it, not create_workflow"},
		{"a base version", false, func(p *fsmv1.Proposal) { p.BaseVersion = "0.9.0" }, "has no base version (it names 0.9.0)"},
		{"no manifest", false, func(p *fsmv1.Proposal) { p.Manifest = "" }, "carries the proposed manifest"},
		{"another workflow's manifest", false, func(p *fsmv1.Proposal) { p.Workflow = "other" }, "is workflow shop/order-fulfilment, not shop/other"},
		{"kind of an operation", false, func(p *fsmv1.Proposal) { p.Kind = ProposalOperation }, "does not match action create_workflow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.exists {
				h.ok(put(manifest(t)))
			}
			p := create(t)
			tt.edit(p)
			r := h.do(putProposal(p))
			if r.Err == nil || !errors.Is(r.Err, ErrInvalid) || !strings.Contains(r.Err.Error(), tt.err) {
				t.Fatalf("err %v, want ErrInvalid containing %q", r.Err, tt.err)
			}
			if n := len(h.fsm.State().Proposals(ProposalFilter{})); n != 0 {
				t.Fatalf("%d proposals stored after a refusal", n)
			}
		})
	}

	h := newHarness(t)
	r := h.ok(putProposal(create(t)))
	p := h.proposal(r.ProposalID)
	if p.Kind != ProposalWorkflowChange || p.BaseVersion != "" || p.NewVersion != "1.0.0" || p.Undo != CreateWorkflowUndo {
		t.Fatalf("%+v", p)
	}
	h.ok(allOrNothing(decide(p.ID, ProposalApproved), put(manifest(t)), setActive("1.0.0"), mark(p.ID, ProposalApplied)))
	if a := h.active(); a != "1.0.0" || h.proposal(p.ID).State != ProposalApplied {
		t.Fatalf("active %s, proposal %s", a, h.proposal(p.ID).State)
	}
}
