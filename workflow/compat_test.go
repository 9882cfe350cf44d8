package workflow_test

import (
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// shopManifest has a typed task input, an upstream step with a typed
// result, a step (charge, steps[1], line 18) that maps from both, and a
// step with neither mapping nor result_schema (notify, line 38).
const shopManifest = `name: shop
version: 1.0.0
input_schema:
  type: object
  properties:
    order_id: {type: string}
    amount: {type: integer}
    tags: {type: array, items: {type: string}}
    meta: {}
steps:
  - name: reserve
    capability: inventory.reserve
    result_schema:
      type: object
      properties:
        id: {type: string}
        count: {type: integer}
  - name: charge
    capability: payments.charge
    depends_on: [reserve]
    input:
      order_id: $.input.order_id
      amount: $.input.amount
      reservation: $.steps.reserve.result.id
      meta: $.input.meta
      currency: EUR
      customer: {email: a@example.com}
    result_schema:
      type: object
      required: [charge_id, status]
      properties:
        charge_id: {type: string}
        status: {type: string}
        receipt:
          type: object
          properties:
            total: {type: integer}
  - name: notify
    capability: notifications.email
    depends_on: [charge]
`

// chargeInput is an input schema charge's mapping satisfies.
const chargeInput = `{"type": "object",
	"required": ["order_id", "amount"],
	"properties": {
		"order_id": {"type": "string"},
		"amount": {"type": "number"},
		"reservation": {"type": ["string", "null"]},
		"meta": {"type": "object"},
		"currency": {"type": "string", "enum": ["EUR"]},
		"customer": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
	}}`

const chargeOutput = `{"type": "object",
	"required": ["charge_id"],
	"properties": {
		"charge_id": {"type": "string"},
		"status": {"type": "string"},
		"receipt": {"type": "object", "properties": {"total": {"type": "integer"}}}
	}}`

func TestCheckCapability(t *testing.T) {
	tests := []struct {
		name          string
		src           string // shopManifest when empty
		step          string // charge when empty
		input, output string
		want          []want
	}{
		{name: "compatible", input: chargeInput, output: chargeOutput},
		{name: "nothing advertised"},
		{
			name:  "missing required input field",
			input: `{"type": "object", "required": ["order_id", "amount", "card_token"]}`,
			want:  []want{{"steps[1].input", 21, `capability "payments.charge" requires input field "card_token", which the mapping does not set; add "card_token: <expression or value>" to the step's input`}},
		},
		{
			name:  "missing required field of an object the mapping writes out",
			input: `{"type": "object", "properties": {"customer": {"type": "object", "required": ["email", "name"]}}}`,
			want:  []want{{"steps[1].input.customer", 27, `requires input field "customer.name", which the mapping does not set; add "name: <expression or value>" to input.customer`}},
		},
		{
			name:  "type mismatch through the task input schema",
			input: `{"type": "object", "properties": {"amount": {"type": "string"}}}`,
			want:  []want{{"steps[1].input.amount", 23, `$.input.amount is an integer (input_schema), but capability "payments.charge" takes input field "amount" as a string; map a value of that type`}},
		},
		{
			name:  "type mismatch through an upstream result",
			input: `{"type": "object", "properties": {"reservation": {"type": "integer"}}}`,
			want:  []want{{"steps[1].input.reservation", 24, `$.steps.reserve.result.id is a string (result_schema of step "reserve"), but capability "payments.charge" takes input field "reservation" as an integer`}},
		},
		{
			name:  "type mismatch of a literal and of a built object",
			input: `{"type": "object", "properties": {"currency": {"type": "integer"}, "customer": {"type": "string"}}}`,
			want: []want{
				{"steps[1].input.currency", 26, `the literal "EUR" is a string, but capability "payments.charge" takes input field "currency" as an integer`},
				{"steps[1].input.customer", 27, `the mapping builds an object here, but capability "payments.charge" takes input field "customer" as a string`},
			},
		},
		{
			name:  "field refused by additionalProperties false",
			input: `{"type": "object", "additionalProperties": false, "properties": {"order_id": {}, "amount": {}, "reservations": {}, "meta": {}, "currency": {}, "customer": {}}}`,
			want:  []want{{"steps[1].input.reservation", 24, `capability "payments.charge" does not accept input field "reservation": its input schema sets additionalProperties: false and declares amount, currency, customer, meta, order_id, reservations; remove the field from the mapping, or did you mean "reservations"?`}},
		},
		{
			name:   "result_schema requires a field the output schema does not declare",
			output: `{"type": "object", "properties": {"charge_id": {"type": "string"}, "state": {"type": "string"}}}`,
			want:   []want{{"steps[1].result_schema.required[1]", 30, `requires field "status", which capability "payments.charge" does not return: its output schema declares only charge_id, state`}},
		},
		{
			name:   "result types disagree at depth",
			output: `{"type": "object", "properties": {"charge_id": {"type": "integer"}, "status": {"type": "string"}, "receipt": {"type": "object", "properties": {"total": {"type": "string"}}}}}`,
			want: []want{
				{"steps[1].result_schema.properties.charge_id", 32, `wants field "charge_id" to be a string, but capability "payments.charge"'s output schema says an integer`},
				{"steps[1].result_schema.properties.receipt.properties.total", 37, `wants field "receipt.total" to be an integer, but capability "payments.charge"'s output schema says a string`},
			},
		},
		{
			name:   "an output schema of another type altogether",
			output: `{"type": "array"}`,
			want:   []want{{"steps[1].result_schema", 28, `wants the result to be an object, but capability "payments.charge"'s output schema says an array`}},
		},
		{
			name:  "an input schema that is not an object",
			input: `{"type": "string"}`,
			want:  []want{{"steps[1].input", 21, `capability "payments.charge" takes a string as its input, but a step's input is always an object`}},
		},
		{
			name:   "a step without result_schema accepts what the app returns",
			step:   "notify",
			output: `{"type": "array"}`,
		},
		{
			name: "a step without a mapping sends an empty object",
			step: "notify",
			// notify has no input to point at: the step's line it is.
			input: `{"type": "object", "required": ["sku"]}`,
			want:  []want{{"steps[2].input", 38, `requires input field "sku", which the mapping does not set`}},
		},
		{
			name: "what is not certain is not reported",
			input: `{"type": "object",
				"required": ["order_id"],
				"properties": {
					"meta": {"type": "string"},
					"amount": {"type": "integer"},
					"order_id": {"anyOf": [{"type": "integer"}]},
					"customer": {"$ref": "#/$defs/nowhere"}
				},
				"patternProperties": {"^x": {}},
				"additionalProperties": false}`,
			output: `{"type": "object", "additionalProperties": true, "properties": {"charge_id": {"type": "string"}}}`,
		},
		{
			name:   "an output schema that leaves its fields open is not judged on them",
			output: `{"type": "object", "properties": {"charge_id": {}}, "allOf": [{"properties": {"status": {}}}]}`,
		},
		{
			name:   "fields declared beside a $ref count",
			output: `{"$ref": "#/$defs/base", "properties": {"status": {}}, "$defs": {"base": {"properties": {"charge_id": {}}}}}`,
		},
		{
			name:   "fields declared behind a $ref count",
			output: `{"$ref": "#/$defs/base", "$defs": {"base": {"properties": {"charge_id": {}}}}}`,
			want:   []want{{"steps[1].result_schema.required[1]", 30, `requires field "status", which capability "payments.charge" does not return: its output schema declares only charge_id; remove it from required, or have the app return it and advertise it`}},
		},
		{
			name:   "number and integer overlap",
			input:  `{"type": "object", "properties": {"amount": {"type": "number"}}}`,
			output: `{"type": "object", "properties": {"charge_id": {"type": "string"}, "status": {"type": "string"}, "receipt": {"type": "object", "properties": {"total": {"type": "number"}}}}}`,
		},
		{
			name:  "local references are followed",
			input: `{"$ref": "#/$defs/in", "$defs": {"in": {"type": "object", "properties": {"amount": {"$ref": "#/$defs/money"}}}, "money": {"type": "object"}}}`,
			want:  []want{{"steps[1].input.amount", 23, `$.input.amount is an integer (input_schema), but capability "payments.charge" takes input field "amount" as an object`}},
		},
		{
			name: "array elements against items",
			src: `name: tags
version: 1.0.0
input_schema: {type: object, properties: {tags: {type: array, items: {type: string}}, n: {type: integer}}}
steps:
  - name: label
    capability: labels.apply
    input:
      tags: [$.input.n, urgent, "$.input.tags[0]"]
`,
			step:  "label",
			input: `{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}`,
			want:  []want{{"steps[0].input.tags[0]", 8, `$.input.n is an integer (input_schema), or null when absent, but capability "labels.apply" takes input field "tags[0]" as a string`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, step := tt.src, tt.step
			if src == "" {
				src = shopManifest
			}
			if step == "" {
				step = "charge"
			}
			plan := mustLoad(t, src)
			i, ok := plan.StepIndex(step)
			if !ok {
				t.Fatalf("no step %q", step)
			}
			c, err := workflow.NewCapabilitySchemas([]byte(tt.input), []byte(tt.output))
			if err != nil {
				t.Fatal(err)
			}
			checkProblems(t, plan.CheckCapability(i, c), tt.want)
		})
	}
}

func TestCheckCapabilityEdges(t *testing.T) {
	plan := mustLoad(t, shopManifest)
	if got := plan.CheckCapability(1, nil); got != nil {
		t.Errorf("nil schemas: %v", got)
	}
	if got := plan.CheckCapability(7, &workflow.CapabilitySchemas{}); got != nil {
		t.Errorf("step out of range: %v", got)
	}
	if _, err := workflow.NewCapabilitySchemas([]byte(`{"type":`), nil); err == nil {
		t.Error("malformed input schema accepted")
	}
	if got, want := plan.StepLine(1), 18; got != want {
		t.Errorf("StepLine(1) = %d, want %d", got, want)
	}
	// A plan from Compile has no lines; problems still name their fields.
	compiled, err := workflow.Compile(plan.Manifest(), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := workflow.NewCapabilitySchemas([]byte(`{"required": ["card"]}`), nil)
	checkProblems(t, compiled.CheckCapability(1, c), []want{{"steps[1].input", 0, `requires input field "card"`}})
}
