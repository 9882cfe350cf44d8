package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	sdkworker "github.com/tasker-run/tasker/sdk/go/worker"
	"github.com/tasker-run/tasker/workflow"
)

// The schemas the test app advertises for payments.charge.
const (
	chargeInputSchema  = `{"type":"object","required":["order_id","amount"],"additionalProperties":false,"properties":{"order_id":{"type":"string"},"amount":{"type":"integer"}}}`
	chargeOutputSchema = `{"type":"object","required":["charge_id"],"properties":{"charge_id":{"type":"string"}}}`
)

// chargeManifest is a workflow named name whose charge step (line 9) maps
// amount from amountExpr (line 13); extra is appended as more steps
// (from line 17).
func chargeManifest(name, amountExpr, extra string) string {
	return fmt.Sprintf(`name: %s
version: 1.0.0
input_schema:
  type: object
  properties:
    order_id: {type: string}
    amount: {type: integer}
steps:
  - name: charge
    capability: payments.charge
    input:
      order_id: $.input.order_id
      amount: %s
    result_schema:
      type: object
      required: [charge_id]
%s`, name, amountExpr, extra)
}

// TestApplyChecksCapabilities applies workflows against an app that
// registered payments.charge with schemas through the Go SDK, once gossip
// carries its catalog to the agent's own registry.
func TestApplyChecksCapabilities(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	w := sdkworker.New(sdkworker.Options{Addr: ta.Addr(), WorkerID: "app-1", Logger: slog.New(slog.DiscardHandler)})
	w.Handle("payments.charge", func(context.Context, *sdkworker.Step) (any, error) {
		return map[string]string{"charge_id": "ch_1"}, nil
	}, sdkworker.Schemas(chargeInputSchema, chargeOutputSchema))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Registered after startAgent's: runs first, so the app leaves before the agent stops.
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop within 10s")
		}
	})
	waitFor(t, 10*time.Second, "gossip to list payments.charge", func() bool {
		ps := ta.gossip.Registry().Providers("payments.charge")
		return len(ps) == 1 && len(ps[0].InputSchema) > 0
	})

	apply := func(manifest string) (*taskerv1.ApplyWorkflowResponse, error) {
		r, err := ta.wf.ApplyWorkflow(context.Background(), connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: manifest}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}

	t.Run("matching workflow", func(t *testing.T) {
		r, err := apply(chargeManifest("capcheck-ok", "$.input.amount", ""))
		if err != nil {
			t.Fatal(err)
		}
		if !r.GetCreated() || len(r.GetWarnings()) != 0 {
			t.Fatalf("created=%v warnings=%q; want created without warnings", r.GetCreated(), r.GetWarnings())
		}
	})

	t.Run("capability nobody offers", func(t *testing.T) {
		r, err := apply(chargeManifest("capcheck-unoffered", "$.input.amount", "  - name: ship\n    capability: shipping.book\n    depends_on: [charge]\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := `steps[1] (line 17): no agent offers capability "shipping.book" yet; its tasks wait until one does`
		if !r.GetCreated() || len(r.GetWarnings()) != 1 || r.GetWarnings()[0] != want {
			t.Fatalf("created=%v warnings=%q; want created with the warning %q", r.GetCreated(), r.GetWarnings(), want)
		}
	})

	t.Run("incompatible workflow", func(t *testing.T) {
		_, err := apply(chargeManifest("capcheck-bad", "$.input.order_id", "  - name: ship\n    capability: shipping.book\n    depends_on: [charge]\n"))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("apply: %v; want InvalidArgument", err)
		}
		var ce *connect.Error
		if !errors.As(err, &ce) {
			t.Fatalf("%T is not a *connect.Error", err)
		}
		var problems []*taskerv1.Problem
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if vf, ok := v.(*taskerv1.ValidationFailure); ok {
					problems = append(problems, vf.GetProblems()...)
				}
			}
		}
		if len(problems) != 1 {
			t.Fatalf("problems %v; want exactly the amount mapping", problems)
		}
		p := problems[0]
		if p.GetPath() != "steps[0].input.amount" || p.GetLine() != 13 ||
			!strings.Contains(p.GetMessage(), `$.input.order_id is a string (input_schema), but capability "payments.charge" takes input field "amount" as an integer`) ||
			!strings.Contains(p.GetMessage(), `(advertised by agent "test")`) {
			t.Fatalf("problem %v; want steps[0].input.amount at line 13 naming the type and agent \"test\"", p)
		}
		_, err = ta.wf.GetWorkflow(context.Background(), connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "capcheck-bad"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetWorkflow after a refused apply: %v; want NotFound", err)
		}
	})
}

// TestCheckCatalogAgents covers what one agent cannot show: several
// agents advertising one capability with different schemas.
func TestCheckCatalogAgents(t *testing.T) {
	plan, err := workflow.Load([]byte(chargeManifest("multi", "$.input.order_id", "")), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	loose := `{"type":"object","properties":{"amount":{"type":["string","integer"]}}}`
	strict := chargeInputSchema
	other := `{"type":"object","required":["order_id","amount","currency"]}`
	provider := func(agent, in string) gossip.Provider {
		return gossip.Provider{Agent: agent, InputSchema: json.RawMessage(in), OutputSchema: json.RawMessage(chargeOutputSchema)}
	}
	log := slog.New(slog.DiscardHandler)

	t.Run("a capability no agent offers: one warning, at its first step", func(t *testing.T) {
		m, err := os.ReadFile("../examples/fan-out-fan-in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		fan, err := workflow.Load(m, workflow.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		warnings, err := checkCatalog(fan, map[string][]gossip.Provider{}, log)
		if err != nil {
			t.Fatal(err)
		}
		want := `steps[1] (line 66): no agent offers capability "search.index_shard" yet (nor for 7 more steps); its tasks wait until one does`
		if !slices.Contains(warnings, want) {
			t.Fatalf("warnings %q\nwant one of them %q", warnings, want)
		}
		if len(warnings) != 4 { // split, index_shard, merge, publish
			t.Fatalf("%d warnings, want one per unoffered capability (4): %q", len(warnings), warnings)
		}
	})

	t.Run("incompatible with some agents: a warning naming them", func(t *testing.T) {
		catalog := map[string][]gossip.Provider{"payments.charge": {provider("a", loose), provider("b", strict), provider("c", strict)}}
		warnings, err := checkCatalog(plan, catalog, log)
		if err != nil {
			t.Fatal(err)
		}
		want := `steps[0].input.amount (line 13): $.input.order_id is a string (input_schema), but capability "payments.charge" takes input field "amount" as an integer; map a value of that type (advertised by agents "b", "c"; agent "a" advertises a compatible schema, so only attempts dispatched to them are likely to fail)`
		if len(warnings) != 1 || warnings[0] != want {
			t.Fatalf("warnings %q\nwant [%q]", warnings, want)
		}
	})

	t.Run("incompatible with every agent: refused, problems merged", func(t *testing.T) {
		catalog := map[string][]gossip.Provider{"payments.charge": {provider("b", strict), provider("d", other), provider("c", strict)}}
		warnings, err := checkCatalog(plan, catalog, log)
		var ve *workflow.ValidationError
		if !errors.As(err, &ve) || len(warnings) != 0 {
			t.Fatalf("err %v, warnings %q; want a ValidationError only", err, warnings)
		}
		var got []string
		for _, p := range ve.Problems {
			got = append(got, p.String())
		}
		want := []string{
			`steps[0].input (line 11): capability "payments.charge" requires input field "currency", which the mapping does not set; add "currency: <expression or value>" to the step's input (advertised by agent "d")`,
			`steps[0].input.amount (line 13): $.input.order_id is a string (input_schema), but capability "payments.charge" takes input field "amount" as an integer; map a value of that type (advertised by agents "b", "c")`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("unreadable schemas are not judged", func(t *testing.T) {
		catalog := map[string][]gossip.Provider{"payments.charge": {provider("b", strict), provider("e", `{"type":`)}}
		warnings, err := checkCatalog(plan, catalog, log)
		if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], `agent "e" advertises a compatible schema`) {
			t.Fatalf("err %v, warnings %q; want one warning, e counted as compatible", err, warnings)
		}
	})
}
