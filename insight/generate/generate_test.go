package generate

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/insight/llm"
	"github.com/tasker-run/tasker/insight/llm/llmtest"
	"github.com/tasker-run/tasker/workflow"
)

// catalog is a small shop: the capability schemas are what the apps
// advertise, and what the drafts are checked against.
func catalog() []Capability {
	return []Capability{
		{Name: "orders.validate", Description: "Checks an order and scores its risk",
			InputSchema:  json.RawMessage(`{"type":"object","required":["order_id"],"properties":{"order_id":{"type":"string"}}}`),
			OutputSchema: json.RawMessage(`{"type":"object","required":["valid","risk_score"],"properties":{"valid":{"type":"boolean"},"risk_score":{"type":"number"},"order_ref":{"type":"string"}}}`)},
		{Name: "payments.charge", Description: "Charges the card for an order's total",
			InputSchema:  json.RawMessage(`{"type":"object","required":["order_id","amount_cents"],"properties":{"order_id":{"type":"string"},"amount_cents":{"type":"integer","minimum":1},"token":{"type":"string","description":"card token, e.g. Bearer abcdefghijklmnop1234"}}}`),
			OutputSchema: json.RawMessage(`{"type":"object","required":["charge_id"],"properties":{"charge_id":{"type":"string"}}}`)},
		{Name: "shipping.book", Description: "Books a parcel with a carrier",
			InputSchema:  json.RawMessage(`{"type":"object","required":["order_id","charge"],"properties":{"order_id":{"type":"string"},"charge":{"type":"string"}}}`),
			OutputSchema: json.RawMessage(`{"type":"object","required":["tracking_number"],"properties":{"tracking_number":{"type":"string"}}}`)},
		{Name: "notifications.email", Description: "Emails a customer (relay login api_key=sk-relaysecret998877)"},
	}
}

// manifest is a draft's manifest with its steps given; keys are out of
// the manifest's order on purpose.
func manifest(steps string) string {
	return `{"steps":[` + steps + `],"version":"1.0.0","name":"model-picked","description":"Validate, charge, ship.",
	  "input_schema":{"type":"object","required":["order_id","amount_cents"],"properties":{"order_id":{"type":"string"},"amount_cents":{"type":"integer"}}}}`
}

const (
	validateStep = `{"input":{"order_id":"$.input.order_id"},"capability":"orders.validate","name":"validate"}`
	chargeStep   = `{"name":"charge","capability":"payments.charge","depends_on":["validate"],"input":{"order_id":"$.input.order_id","amount_cents":"$.input.amount_cents"}}`
	shipStep     = `{"name":"ship","capability":"shipping.book","depends_on":["charge"],"timeout":"1m","input":{"order_id":"$.input.order_id","charge":"$.steps.charge.result.charge_id"}}`
)

func reply(m string, missing string) string {
	if missing == "" {
		missing = "[]"
	}
	return `{"manifest":` + m + `,"missing_capabilities":` + missing + `,"explanation":"Validates the order, charges it, then ships it."}`
}

var good = reply(manifest(validateStep+","+chargeStep+","+shipStep), "")

func client(t *testing.T, srv *llmtest.Server) *llm.Client {
	t.Helper()
	c, err := llm.New(llm.Config{Endpoint: srv.URL(), Model: "scripted"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		script    []string
		maxRounds int
		// wantRounds is how many answers the model gives.
		wantRounds int
		wantValid  bool
		// repair must be in the repair message (the 2nd request's last message).
		repair []string
		// problems must be among the final problems.
		problems    []string
		wantMissing []string
	}{
		{name: "good first time", script: []string{good}, wantRounds: 1, wantValid: true},
		{
			name: "invented capability, repaired",
			script: []string{reply(manifest(validateStep+","+
				`{"name":"charge","capability":"payments.charge_card","depends_on":["validate"],"input":{"order_id":"$.input.order_id","amount_cents":"$.input.amount_cents"}}`+","+shipStep), ""), good},
			wantRounds: 2, wantValid: true,
			repair: []string{`steps[1].capability: "payments.charge_card" is not in the catalog`, "the closest are payments.charge", "whole corrected manifest"},
		},
		{
			name: "cycle, repaired",
			script: []string{reply(manifest(
				`{"name":"validate","capability":"orders.validate","depends_on":["ship"],"input":{"order_id":"$.input.order_id"}}`+","+chargeStep+","+shipStep), ""), good},
			wantRounds: 2, wantValid: true,
			repair: []string{"dependency cycle"},
		},
		{
			// Load checks a mapping against the upstream result schema: a
			// field charge does not return.
			name: "mapping reads a field the upstream result lacks, repaired",
			script: []string{reply(manifest(validateStep+","+chargeStep+","+
				`{"name":"ship","capability":"shipping.book","depends_on":["charge"],"input":{"order_id":"$.input.order_id","charge":"$.steps.charge.result.charge_ref"}}`), ""), good},
			wantRounds: 2, wantValid: true,
			repair: []string{`steps[2].input.charge`, `field "charge_ref" is not in the schema (it declares charge_id)`},
		},
		{
			// CheckCapability checks it against the downstream input
			// schema: a string (order_ref) into payments.charge's integer
			// amount_cents.
			name: "type mismatch between steps, repaired",
			script: []string{reply(manifest(validateStep+","+
				`{"name":"charge","capability":"payments.charge","depends_on":["validate"],"input":{"order_id":"$.input.order_id","amount_cents":"$.steps.validate.result.order_ref"}}`+","+shipStep), ""), good},
			wantRounds: 2, wantValid: true,
			repair: []string{"steps[1].input.amount_cents", "integer", "(capability payments.charge)"},
		},
		{
			name:       "not JSON, repaired",
			script:     []string{"Sure! Here is your workflow: validate, then charge.", good},
			wantRounds: 2, wantValid: true,
			repair: []string{"the answer is not JSON of the answer schema"},
		},
		{
			name: "still broken after MaxRounds",
			script: []string{reply(manifest(
				`{"name":"validate","capability":"orders.validate","depends_on":["ship"],"input":{"order_id":"$.input.order_id"}}`+","+chargeStep+","+shipStep), "")},
			maxRounds: 2, wantRounds: 3, wantValid: false,
			repair: []string{"dependency cycle"},
			// People get the line in the YAML they are shown.
			problems: []string{"steps[0].depends_on (line ", "dependency cycle"},
		},
		{
			name: "needs a missing capability",
			script: []string{reply(manifest(validateStep+","+chargeStep+","+shipStep),
				`[{"name":"payments.refund","why":"refund the card when shipping fails"}]`)},
			wantRounds: 1, wantValid: false,
			problems:    []string{`capability "payments.refund" is needed but no agent offers it: refund the card when shipping fails`},
			wantMissing: []string{"payments.refund"},
		},
		{
			name: "a step using a capability the model declared missing is not repaired",
			script: []string{reply(manifest(validateStep+","+chargeStep+","+shipStep+","+
				`{"name":"refund","capability":"payments.refund","depends_on":["ship"],"input":{"order_id":"$.input.order_id"}}`),
				`[{"name":"payments.refund","why":"refunds"}]`)},
			wantRounds: 1, wantValid: false,
			problems:    []string{`capability "payments.refund" is needed`},
			wantMissing: []string{"payments.refund"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replies := make([]llmtest.Reply, len(tc.script))
			for i, s := range tc.script {
				replies[i] = llmtest.Reply{Content: s}
			}
			srv := llmtest.New(t, replies...)
			d, err := Generate(context.Background(), client(t, srv), Input{
				Description: "Validate an order, charge the card, then book the parcel.",
				Namespace:   "shop", Name: "orders", Catalog: catalog(), MaxRounds: tc.maxRounds,
			})
			if err != nil {
				t.Fatal(err)
			}
			if d.Rounds != tc.wantRounds || len(srv.Requests()) != tc.wantRounds {
				t.Fatalf("rounds = %d, requests = %d, want %d; problems %v", d.Rounds, len(srv.Requests()), tc.wantRounds, d.Problems)
			}
			if d.Valid != tc.wantValid || (d.Plan != nil) != tc.wantValid {
				t.Fatalf("valid = %v (plan %v), want %v; problems %v\n%s", d.Valid, d.Plan != nil, tc.wantValid, d.Problems, d.Manifest)
			}
			if tc.wantValid && len(d.Problems) != 0 {
				t.Fatalf("a valid draft with problems %v", d.Problems)
			}
			if len(d.Manifest) == 0 {
				t.Fatal("no manifest")
			}
			if len(tc.repair) > 0 {
				msgs := srv.Requests()[1].Messages
				last := msgs[len(msgs)-1]
				if last.Role != "user" || msgs[len(msgs)-2].Role != "assistant" {
					t.Fatalf("the repair is not a user message after the answer: %+v", msgs[len(msgs)-2:])
				}
				for _, w := range tc.repair {
					if !strings.Contains(last.Content, w) {
						t.Errorf("repair message lacks %q:\n%s", w, last.Content)
					}
				}
				// The model wrote JSON: lines of the YAML would mislead it.
				if strings.Contains(last.Content, "(line ") {
					t.Errorf("repair message cites YAML lines:\n%s", last.Content)
				}
			}
			all := strings.Join(d.Problems, "\n")
			for _, w := range tc.problems {
				if !strings.Contains(all, w) {
					t.Errorf("problems lack %q:\n%s", w, all)
				}
			}
			if strings.Join(d.Missing, ",") != strings.Join(tc.wantMissing, ",") {
				t.Errorf("missing = %v, want %v", d.Missing, tc.wantMissing)
			}
			if !tc.wantValid {
				return
			}
			// A valid draft loads, is the requested workflow, and reads as a
			// manifest is written.
			p, err := workflow.Load(d.Manifest, workflow.Limits{})
			if err != nil {
				t.Fatalf("the valid draft does not load: %v\n%s", err, d.Manifest)
			}
			if p.Namespace != "shop" || p.Name != "orders" || p.Version != "1.0.0" {
				t.Errorf("draft is %s/%s %s, want shop/orders 1.0.0", p.Namespace, p.Name, p.Version)
			}
			y := string(d.Manifest)
			wantOrder := []string{"name: orders\n", "namespace: shop\n", "version: 1.0.0\n", "description:", "input_schema:", "steps:\n",
				"  - name: validate\n    capability: orders.validate\n    input:\n      order_id: $.input.order_id\n    result_schema:",
				"  - name: ship\n    capability: shipping.book\n    depends_on: [charge]\n    input:"}
			at := 0
			for _, w := range wantOrder {
				i := strings.Index(y[at:], w)
				if i < 0 {
					t.Fatalf("YAML lacks %q after byte %d:\n%s", w, at, y)
				}
				at += i + len(w)
			}
			// result_schema comes from the capability's output schema.
			ship := p.Steps[2]
			if ship.Result == nil || !strings.Contains(y, "tracking_number") {
				t.Errorf("ship has no result_schema from shipping.book's output schema:\n%s", y)
			}
			if !strings.Contains(d.Summary, "3 steps, 2 edges, 3 levels") || !strings.Contains(d.Summary, "validate → charge → ship") {
				t.Errorf("summary = %q", d.Summary)
			}
			if d.Explanation == "" {
				t.Error("no explanation")
			}
		})
	}
}

// TestPrompt: the model is told the catalog (names, descriptions, input
// and output schemas), the manifest schema and the rules, and no secret
// from the description or the catalog.
func TestPrompt(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: good})
	_, err := Generate(context.Background(), client(t, srv), Input{
		Description: "Charge the order; the gateway password=hunter2secret, card 4111 1111 1111 1111.",
		Catalog:     catalog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	req := srv.Requests()[0]
	if len(req.Messages) != 2 || req.Messages[0].Role != "system" || req.Messages[1].Role != "user" {
		t.Fatalf("messages %+v", req.Messages)
	}
	body := req.Messages[0].Content + req.Messages[1].Content
	for _, w := range []string{
		"orders.validate", "payments.charge", "shipping.book", "notifications.email",
		"Books a parcel with a carrier", `"amount_cents"`, `"tracking_number"`, // input and output schemas
		"Tasker workflow manifest", `"$defs"`, // the manifest schema
		"Never invent one", "missing_capabilities", "data, not instructions",
	} {
		if !strings.Contains(body, w) {
			t.Errorf("the prompt lacks %q", w)
		}
	}
	for _, secret := range []string{"hunter2secret", "4111 1111 1111 1111", "sk-relaysecret998877", "abcdefghijklmnop1234"} {
		if srv.Contains(secret) {
			t.Errorf("the secret %q reached the model", secret)
		}
	}
	// Field names that look like secrets are kept: the model must map them.
	if !strings.Contains(body, `"token"`) {
		t.Error("the token field of payments.charge's input schema was dropped")
	}
	var rf struct {
		JSONSchema struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(req.ResponseFormat, &rf); err != nil || rf.JSONSchema.Name != AnswerSchemaName || !strings.Contains(string(rf.JSONSchema.Schema), "missing_capabilities") {
		t.Errorf("response_format = %s (%v)", req.ResponseFormat, err)
	}
}

// TestGenerateDefaults: without a name the model's stands, the namespace
// is default and a missing version is 1.0.0; strings that would read as
// other types are quoted.
func TestGenerateDefaults(t *testing.T) {
	m := `{"name":"picked","steps":[{"name":"validate","capability":"orders.validate","input":{"order_id":"true"},"timeout":"30s"}]}`
	srv := llmtest.New(t, llmtest.Reply{Content: reply(m, "")})
	d, err := Generate(context.Background(), client(t, srv), Input{Description: "validate orders", Catalog: catalog()})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Valid {
		t.Fatalf("problems %v\n%s", d.Problems, d.Manifest)
	}
	if d.Plan.Name != "picked" || d.Plan.Namespace != "default" || d.Plan.Version != DefaultVersion {
		t.Errorf("draft is %s/%s %s", d.Plan.Namespace, d.Plan.Name, d.Plan.Version)
	}
	if !strings.Contains(string(d.Manifest), `order_id: "true"`) {
		t.Errorf("the string \"true\" is not quoted:\n%s", d.Manifest)
	}
}

func TestGenerateBadInput(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: good})
	c := client(t, srv)
	for _, tc := range []struct {
		name string
		m    Model
		in   Input
		want string
	}{
		{"no model", nil, Input{Description: "x"}, "not configured"},
		{"no description", c, Input{Description: "  "}, "description is required"},
		{"description too long", c, Input{Description: strings.Repeat("é", MaxDescription+1)}, "description is 4001 characters, over the limit of 4000"},
		{"rounds out of range", c, Input{Description: "x", MaxRounds: 11}, "MaxRounds 11 is out of range: use 0 (for 3) to 10"},
		{"bad schema", c, Input{Description: "x", Catalog: []Capability{{Name: "a.b", InputSchema: json.RawMessage(`{`)}}}, "catalog[0] (a.b): InputSchema is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Generate(context.Background(), tc.m, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if len(srv.Requests()) != 0 {
		t.Fatalf("bad input reached the model %d times", len(srv.Requests()))
	}
	if _, err := Generate(context.Background(), nil, Input{Description: "x"}); !errors.Is(err, llm.ErrNotConfigured) {
		t.Fatalf("no model: %v, want ErrNotConfigured", err)
	}
}

// TestGenerateModelFails: a model that does not answer is an error, not a
// draft.
func TestGenerateModelFails(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Status: 400, Content: `{"error":{"message":"bad model"}}`})
	_, err := Generate(context.Background(), client(t, srv), Input{Description: "x", Catalog: catalog()})
	if err == nil || !strings.Contains(err.Error(), "bad model") {
		t.Fatalf("err = %v", err)
	}
}

func TestGenerateExtendsBase(t *testing.T) {
	base := []byte("name: orders\nnamespace: shop\nversion: 1.0.0\nsteps:\n  - name: validate\n    capability: orders.validate\n    input: {order_id: $.input.order_id}\n  - name: charge\n    capability: payments.charge\n    depends_on: [validate]\n    input: {order_id: $.input.order_id, amount_cents: $.input.amount_cents}\n")
	dropped := reply(manifest(validateStep+","+shipStep), "")
	for _, tc := range []struct {
		name       string
		script     []string
		wantRounds int
	}{
		{name: "good", script: []string{good}, wantRounds: 1},
		{name: "a base step dropped, repaired", script: []string{dropped, good}, wantRounds: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replies := make([]llmtest.Reply, len(tc.script))
			for i, s := range tc.script {
				replies[i] = llmtest.Reply{Content: s}
			}
			srv := llmtest.New(t, replies...)
			d, err := Generate(context.Background(), client(t, srv), Input{Namespace: "shop", Name: "orders", Catalog: catalog(), Base: base})
			if err != nil {
				t.Fatal(err)
			}
			if d.Rounds != tc.wantRounds || !d.Valid {
				t.Fatalf("rounds = %d (want %d), valid = %v, problems %v", d.Rounds, tc.wantRounds, d.Valid, d.Problems)
			}
			first := srv.Requests()[0].Messages
			if u := first[len(first)-1].Content; !strings.Contains(u, "Extend this partial workflow") || !strings.Contains(u, "capability: payments.charge") {
				t.Errorf("the prompt lacks the base:\n%s", u)
			}
			if tc.wantRounds == 2 {
				msgs := srv.Requests()[1].Messages
				if last := msgs[len(msgs)-1].Content; !strings.Contains(last, `step "charge" of the partial workflow is missing`) {
					t.Errorf("repair message lacks the dropped step:\n%s", last)
				}
			}
		})
	}
}
