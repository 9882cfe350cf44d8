package workflow_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// want is one problem a test expects: its field path, its line (0 when the
// problem is about the whole document) and a part of its message that a
// user relies on.
type want struct {
	path string
	line int
	msg  string
}

// problemsOf loads src and returns the problems of the *ValidationError it
// must fail with.
func problemsOf(t *testing.T, src string, lim workflow.Limits) []workflow.Problem {
	t.Helper()
	plan, err := workflow.Load([]byte(src), lim)
	if err == nil {
		t.Fatalf("Load accepted the manifest; want problems")
	}
	if plan != nil {
		t.Errorf("Load returned a plan together with an error")
	}
	var ve *workflow.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load failed with %T (%v); want a *workflow.ValidationError", err, err)
	}
	return ve.Problems
}

// checkProblems asserts that got is exactly want, in order.
func checkProblems(t *testing.T, got []workflow.Problem, want []want) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.Path == w.path && g.Line == w.line && strings.Contains(g.Message, w.msg)
	}
	if ok {
		return
	}
	var b strings.Builder
	b.WriteString("got problems:\n")
	for _, p := range got {
		b.WriteString("  " + p.Path + " | line " + itoa(p.Line) + " | " + p.Message + "\n")
	}
	b.WriteString("want:\n")
	for _, w := range want {
		b.WriteString("  " + w.path + " | line " + itoa(w.line) + " | ..." + w.msg + "...\n")
	}
	t.Error(b.String())
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// mustLoad loads src and fails the test on any error.
func mustLoad(t *testing.T, src string) *workflow.Plan {
	t.Helper()
	plan, err := workflow.Load([]byte(src), workflow.Limits{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return plan
}

// TestLoadReportsEveryProblem covers every class of problem a manifest can
// have, each with the field path, line and message a user sees.
func TestLoadReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "unknown top-level field suggests the closest name",
			src: `name: shop
version: 1.0.0
descripton: typo
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"descripton", 3, `unknown field "descripton"; did you mean "description"?`}},
		},
		{
			name: "unknown step field suggests depends_on",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
  - name: b
    capability: x.b
    dependson: [a]
`,
			want: []want{{"steps[1].dependson", 8, `unknown field "dependson"; did you mean "depends_on"?`}},
		},
		{
			name: "unknown fields nested in systems and defaults",
			src: `name: shop
version: 1.0.0
systems:
  x:
    capabilites: [x.a]
defaults:
  retry:
    backoff: {multipler: 3}
steps:
  - name: a
    capability: x.a
`,
			want: []want{
				{"systems.x.capabilites", 5, `unknown field "capabilites"; did you mean "capabilities"?`},
				{"defaults.retry.backoff.multipler", 8, `unknown field "multipler"; did you mean "multiplier"?`},
			},
		},
		{
			name: "unknown field unlike any known one gets no suggestion",
			src: `name: shop
version: 1.0.0
colour: red
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"colour", 3, `unknown field "colour"`}},
		},
		{
			name: "missing name, version and steps",
			src: `description: nothing else
`,
			want: []want{
				{"name", 1, "is required"},
				{"steps", 1, "is required"},
				{"version", 1, "is required"},
			},
		},
		{
			name: "step without a name",
			src: `name: shop
version: 1.0.0
steps:
  - capability: x.a
`,
			want: []want{{"steps[0].name", 4, "is required"}},
		},
		{
			name: "unquoted version is a number",
			src: `name: shop
version: 1.0
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"version", 2, "got number, want string; quote the value"}},
		},
		{
			name: "version that is not semantic",
			src: `name: shop
version: "1.0"
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"version", 2, `"1.0" is not a semantic version`}},
		},
		{
			name: "wrong types in a step",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: b
    timeout: 30
    input: [1, 2]
    retry:
      max_attempts: three
      backoff: {jitter: high}
    result_schema: 5
`,
			want: []want{
				{"steps[0].depends_on", 6, "got string, want array"},
				{"steps[0].timeout", 7, "got number, want string; quote the value"},
				{"steps[0].input", 8, "got array, want object"},
				{"steps[0].retry.max_attempts", 10, "got string, want integer"},
				{"steps[0].retry.backoff.jitter", 11, "got string, want number"},
				{"steps[0].result_schema", 12, "got number, want boolean or object"},
			},
		},
		{
			name: "fractional max_attempts",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    retry: {max_attempts: 2.5}
`,
			want: []want{{"steps[0].retry.max_attempts", 6, "got number, want integer"}},
		},
		{
			name: "no steps",
			src: `name: shop
version: 1.0.0
steps: []
`,
			want: []want{{"steps", 3, "minItems"}},
		},
		{
			name: "steps is not a list",
			src: `name: shop
version: 1.0.0
steps:
  a: {capability: x.a}
`,
			want: []want{{"steps", 3, "got object, want array"}},
		},
		{
			name: "duplicate step names",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
  - name: a
    capability: x.b
`,
			want: []want{{"steps[1].name", 6, `duplicate step name "a" (also steps[0] at line 4)`}},
		},
		{
			name: "invalid workflow, namespace, system, capability and step names",
			src: `name: Shop!
namespace: Team Shop
version: 1.0.0
systems:
  Inventory:
    capabilities: [Inventory.Reserve, reserve]
steps:
  - name: 1st
    capability: nodot
  - name: ok
    capability: x.ok
`,
			want: []want{
				{"name", 1, `"Shop!" is not a valid workflow name`},
				{"namespace", 2, `"Team Shop" is not a valid namespace`},
				{"systems.Inventory", 5, `"Inventory" is not a valid system name`},
				{"systems.Inventory.capabilities[0]", 6, `"Inventory.Reserve" is not a valid capability name`},
				{"systems.Inventory.capabilities[1]", 6, `"reserve" is not a valid capability name`},
				{"steps[0].name", 8, `"1st" is not a valid step name`},
				{"steps[0].capability", 9, `"nodot" is not a valid capability name`},
			},
		},
		{
			name: "unknown, self and duplicate dependencies",
			src: `name: shop
version: 1.0.0
steps:
  - name: validate
    capability: x.validate
  - name: charge
    capability: x.charge
    depends_on: [valdate, charge, validate, validate]
`,
			want: []want{
				{"steps[1].depends_on[0]", 8, `unknown step "valdate"; did you mean "validate"?`},
				{"steps[1].depends_on[1]", 8, `step "charge" depends on itself`},
				{"steps[1].depends_on[3]", 8, `"validate" is listed twice`},
			},
		},
		{
			name: "unknown dependency unlike any step",
			src: `name: shop
version: 1.0.0
steps:
  - name: validate
    capability: x.validate
    depends_on: [zzzzzz]
`,
			want: []want{{"steps[0].depends_on[0]", 6, `unknown step "zzzzzz"`}},
		},
		{
			name: "mapping reads a step that is not an ancestor, itself, or no step",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
  - name: b
    capability: x.b
  - name: c
    capability: x.c
    depends_on: [a]
    input:
      fromb: $.steps.b.result.id
      self: $.steps.c.result
      ghost: $.steps.d.result
      typo: $.steps.bb.result
`,
			want: []want{
				{"steps[2].input.fromb", 12, `$.steps.b.result.id reads step "b", which is not an ancestor of "c"; add it to depends_on`},
				{"steps[2].input.self", 13, `$.steps.c.result reads the result of step "c" itself`},
				{"steps[2].input.ghost", 14, `$.steps.d.result reads step "d", which does not exist`},
				{"steps[2].input.typo", 15, `reads step "bb", which does not exist; did you mean "b"?`},
			},
		},
		{
			name: "mapping reads a descendant",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    input: {later: $.steps.b.result}
  - name: b
    capability: x.b
    depends_on: [a]
`,
			want: []want{{"steps[0].input.later", 6, `reads step "b", which is not an ancestor of "a"`}},
		},
		{
			name: "mapping reads fields the schemas do not have",
			src: `name: shop
version: 1.0.0
input_schema:
  type: object
  properties:
    order_id: {type: string}
    customer:
      type: object
      properties:
        email: {type: string}
    note: {type: [string, "null"]}
steps:
  - name: reserve
    capability: x.reserve
    result_schema:
      type: object
      properties:
        id: {type: string}
        lines: {type: array, items: {type: object, properties: {sku: {type: string}}}}
  - name: ship
    capability: x.ship
    depends_on: [reserve]
    input:
      a: $.steps.reserve.result.idd
      b: $.steps.reserve.result.tracking
      c: $.input.custmer.email
      d: $.input.order_id.prefix
      e: $.input.customer[0]
      f: $.steps.reserve.result.lines[0].sku
      g: $.steps.reserve.result.lines.sku
      h: $.steps.reserve.result.id[0]
      i: $.steps.reserve.result.lines[0].qty
      j: $.input.note.x
`,
			want: []want{
				{"steps[1].input.a", 24, `$.steps.reserve.result.idd: field "idd" is not in the schema; did you mean "id"? (result_schema of step "reserve")`},
				{"steps[1].input.b", 25, `$.steps.reserve.result.tracking: field "tracking" is not in the schema (it declares id, lines) (result_schema of step "reserve")`},
				{"steps[1].input.c", 26, `$.input.custmer.email: field "custmer" is not in the schema; did you mean "customer"? (input_schema)`},
				{"steps[1].input.d", 27, `$.input.order_id.prefix: order_id is a string, it has no field "prefix" (input_schema)`},
				{"steps[1].input.e", 28, `$.input.customer[0]: customer is an object, not an array (input_schema)`},
				{"steps[1].input.g", 30, `lines is an array, it has no field "sku"`},
				{"steps[1].input.h", 31, `id is a string, not an array`},
				{"steps[1].input.i", 32, `field "qty" is not in the schema (it declares sku)`},
				{"steps[1].input.j", 33, `note is one of string|null, it has no field "x"`},
			},
		},
		{
			name: "mapping expressions that do not parse",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    input:
      a: $.input.
      b: $.foo
      c: $.steps.x
      d: $
      e: $.input[abc]
      f: ["$.input[-1]"]
`,
			want: []want{
				{"steps[0].input.a", 7, `expression "$.input.": empty field name`},
				{"steps[0].input.b", 8, `unknown root "foo"`},
				{"steps[0].input.c", 9, `a step's value is read as $.steps.<name>.result`},
				{"steps[0].input.d", 10, `expression "$" must start with $.input or $.steps.<name>.result`},
				{"steps[0].input.e", 11, `index [abc] must be a non-negative integer or a quoted field name`},
				{"steps[0].input.f[0]", 12, `index [-1] must be a non-negative integer`},
			},
		},
		{
			name: "invalid JSON Schemas",
			src: `name: shop
version: 1.0.0
input_schema: {type: strin}
steps:
  - name: a
    capability: x.a
    result_schema: {type: object, required: 5}
    error_schema: {properties: {code: {minLength: -1}}}
`,
			want: []want{
				{"input_schema", 3, "invalid JSON Schema: at /type: got string, want array; at /type: value must be one of 'array', 'boolean'"},
				{"steps[0].result_schema", 7, "invalid JSON Schema: at /required: got number, want array"},
				{"steps[0].error_schema", 8, "invalid JSON Schema: at /properties/code/minLength: minimum: got -1, want 0"},
			},
		},
		{
			name: "mapping follows local $refs, but not anchors",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    result_schema:
      $ref: "#/$defs/result"
      $defs:
        result: {type: object, properties: {id: {type: string}}}
  - name: b
    capability: x.b
    result_schema: {$ref: "#result", $defs: {r: {$anchor: result, type: object, properties: {id: {type: string}}}}}
  - name: c
    capability: x.c
    depends_on: [a, b]
    input:
      ok: $.steps.a.result.id
      typo: $.steps.a.result.ids
      anchored: $.steps.b.result.anything
`,
			want: []want{{"steps[2].input.typo", 18, `field "ids" is not in the schema; did you mean "id"?`}},
		},
		{
			name: "external $ref is refused",
			src: `name: shop
version: 1.0.0
input_schema: {$ref: "https://example.com/order.json"}
steps:
  - name: a
    capability: x.a
    result_schema: {$ref: "result.json#/$defs/r"}
    error_schema: {$ref: "file:///etc/passwd"}
`,
			want: []want{
				{"input_schema", 3, `external $ref "https://example.com/order.json" is not allowed`},
				{"steps[0].result_schema", 7, `external $ref "result.json" is not allowed`},
				{"steps[0].error_schema", 8, `external $ref "file:///etc/passwd" is not allowed`},
			},
		},
		{
			name: "bad durations",
			src: `name: shop
version: 1.0.0
defaults:
  timeout: fast
steps:
  - name: a
    capability: x.a
    timeout: 0s
  - name: b
    capability: x.b
    timeout: -5s
  - name: c
    capability: x.c
    timeout: 200h
    retry:
      backoff: {initial: 25h, max: 1d}
`,
			want: []want{
				{"defaults.timeout", 4, `"fast" is not a duration`},
				{"steps[0].timeout", 8, `"0s" must be positive`},
				{"steps[1].timeout", 11, `"-5s" must be positive`},
				{"steps[2].timeout", 14, `"200h" is over the limit of 168h0m0s`},
				{"steps[2].retry.backoff.initial", 16, `"25h" is over the limit of 24h0m0s`},
				{"steps[2].retry.backoff.max", 16, `"1d" is not a duration`},
			},
		},
		{
			name: "backoff max below initial, multiplier and jitter out of range",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    retry:
      backoff: {initial: 10s, max: 5s}
  - name: b
    capability: x.b
    retry:
      backoff: {multiplier: 0.5, jitter: -0.1}
  - name: c
    capability: x.c
    retry:
      backoff: {multiplier: 101, jitter: 1.5}
`,
			want: []want{
				{"steps[0].retry.backoff", 7, "max (5s) is shorter than initial (10s)"},
				{"steps[1].retry.backoff.jitter", 11, "-0.1 is out of range: use a fraction from 0 (none) to 1"},
				{"steps[1].retry.backoff.multiplier", 11, "0.5 is out of range: use 1 (constant delay) to 100"},
				{"steps[2].retry.backoff.jitter", 15, "1.5 is out of range"},
				{"steps[2].retry.backoff.multiplier", 15, "101 is out of range"},
			},
		},
		{
			name: "backoff max below an inherited initial",
			src: `name: shop
version: 1.0.0
defaults:
  retry:
    backoff: {initial: 2m}
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"defaults.retry.backoff", 5, "max (1m0s) is shorter than initial (2m0s)"}},
		},
		{
			name: "max_attempts out of range",
			src: `name: shop
version: 1.0.0
defaults:
  retry: {max_attempts: 0}
steps:
  - name: a
    capability: x.a
    retry: {max_attempts: 101}
  - name: b
    capability: x.b
    retry: {max_attempts: -1}
  - name: c
    capability: x.c
    retry: {max_attempts: 99999999999999999999}
`,
			want: []want{
				{"defaults.retry.max_attempts", 4, "0 is out of range: use 1 (no retries) to 100"},
				{"steps[0].retry.max_attempts", 8, "101 is out of range: use 1 (no retries) to 100"},
				{"steps[1].retry.max_attempts", 11, "-1 is out of range"},
				{"steps[2].retry.max_attempts", 14, "99999999999999999999 is out of range: use 1 (no retries) to 100"},
			},
		},
		{
			name: "retryable codes the error_schema does not list",
			src: `name: shop
version: 1.0.0
defaults:
  retry: {retryable: [unavailable]}
steps:
  - name: charge
    capability: x.charge
    error_schema:
      type: object
      properties:
        code: {enum: [card_declined, gateway_down]}
    retry: {retryable: [gateway_down, timeout, card_expired]}
  - name: refund
    capability: x.refund
    error_schema:
      properties: {code: {const: refund_failed}}
`,
			want: []want{
				{"defaults.retry.retryable[0]", 4, `error code "unavailable" is not in the error_schema of step "refund", which inherits it (codes: timeout, refund_failed)`},
				{"steps[0].retry.retryable[2]", 12, `error code "card_expired" is not in the step's error_schema (codes: timeout, card_declined, gateway_down)`},
			},
		},
		{
			name: "owner not declared under systems",
			src: `name: shop
version: 1.0.0
systems:
  inventory:
    capabilities: [inventory.reserve]
steps:
  - name: reserve
    owner: invntory
`,
			want: []want{{"steps[0].owner", 8, `system "invntory" is not declared under systems; did you mean "inventory"?`}},
		},
		{
			// Among equally close names the first in order is suggested,
			// the same one every time.
			name: "owner suggestion among equally close systems",
			src: `name: shop
version: 1.0.0
systems:
  pay: {}
  bay: {}
  way: {}
steps:
  - name: charge
    owner: day
`,
			want: []want{{"steps[0].owner", 9, `system "day" is not declared under systems; did you mean "bay"?`}},
		},
		{
			name: "capability owned by another system",
			src: `name: shop
version: 1.0.0
systems:
  inventory:
    capabilities: [inventory.reserve]
  payments:
    capabilities: [payments.charge]
steps:
  - name: charge
    owner: payments
    capability: inventory.reserve
`,
			want: []want{{"steps[0].owner", 10, `capability "inventory.reserve" belongs to system "inventory", not "payments"`}},
		},
		{
			name: "capability claimed by two systems",
			src: `name: shop
version: 1.0.0
systems:
  inventory:
    capabilities: [inventory.reserve]
  payments:
    capabilities: [payments.charge, inventory.reserve]
steps:
  - name: charge
    capability: payments.charge
`,
			want: []want{{"systems.payments.capabilities[1]", 7, `capability "inventory.reserve" is already owned by system "inventory"`}},
		},
		{
			name: "capability not listed for its owner",
			src: `name: shop
version: 1.0.0
systems:
  payments:
    capabilities: [payments.charge]
steps:
  - name: refund
    owner: payments
    capability: payments.refund
`,
			want: []want{{"steps[0].capability", 9, `capability "payments.refund" is not among system "payments"'s capabilities [payments.charge]`}},
		},
		{
			name: "capability derived from the owner but not listed",
			src: `name: shop
version: 1.0.0
systems:
  inventory:
    capabilities: [inventory.reserve]
steps:
  - name: count
    owner: inventory
`,
			want: []want{{"steps[0].capability", 7, `capability "inventory.count" is not among system "inventory"'s capabilities`}},
		},
		{
			name: "capability derived from an owner and a step name that is not lowercase",
			src: `name: shop
version: 1.0.0
systems:
  inventory: {}
steps:
  - name: Reserve
    owner: inventory
`,
			want: []want{{"steps[0].capability", 6, `"inventory.Reserve", made of the owner and the step name, is not a valid capability name: set capability`}},
		},
		{
			name: "step with neither capability nor owner",
			src: `name: shop
version: 1.0.0
steps:
  - name: orphan
    description: does nothing
`,
			want: []want{{"steps[0]", 4, `step "orphan" needs a capability (e.g. payments.charge) or an owner system`}},
		},
		{
			name: "non-finite number",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    input: {ratio: .inf}
`,
			want: []want{{"steps[0].input.ratio", 6, `".inf" is not a JSON number`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, problemsOf(t, tt.src, workflow.Limits{}), tt.want)
		})
	}
}

// TestMappingsAcceptWhatSchemasAllow: a mapping is rejected only when the
// schema plainly says the field cannot be there.
func TestMappingsAcceptWhatSchemasAllow(t *testing.T) {
	mustLoad(t, `name: shop
version: 1.0.0
input_schema:
  type: object
  properties:
    open: {type: object}
    extra: {type: object, properties: {a: {type: string}}, additionalProperties: true}
    typed: {type: object, properties: {a: {type: string}}, additionalProperties: {type: object, properties: {n: {type: number}}}}
    pattern: {type: object, properties: {a: {type: string}}, patternProperties: {"^x-": {}}}
    either: {anyOf: [{type: object, properties: {a: {type: string}}}, {type: array}]}
    tuple: {type: array, prefixItems: [{type: string}, {type: object, properties: {b: {type: string}}}]}
    nullable: {type: [object, "null"], properties: {a: {type: string}}, additionalProperties: true}
    anything: true
steps:
  - name: up
    capability: x.up
    result_schema: true
  - name: a
    capability: x.a
    depends_on: [up]
    input:
      open: $.input.open.whatever.deeper[3]
      extra: $.input.extra.other
      typed: $.input.typed.other.n
      pattern: $.input.pattern.x-anything
      either: $.input.either.b
      tuple: $.input.tuple[1].b
      beyond: $.input.tuple[5]
      nullable: $.input.nullable.z
      anything: $.input.anything.x[0].y
      result: $.steps.up.result.any.thing
      whole: $.steps.up.result
`)
}

func TestLoadReportsEachCycle(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "two steps depend on each other",
			src: `name: shop
version: 1.0.0
steps:
  - name: validate
    capability: x.validate
  - name: reserve
    capability: x.reserve
    depends_on: [validate, charge]
  - name: charge
    capability: x.charge
    depends_on: [reserve]
  - name: ship
    capability: x.ship
    depends_on: [charge]
`,
			// ship lies behind the cycle but is not on it: one problem.
			want: []want{{"steps[1].depends_on", 8, "dependency cycle: reserve → charge → reserve"}},
		},
		{
			name: "three steps",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: [c]
  - name: b
    capability: x.b
    depends_on: [a]
  - name: c
    capability: x.c
    depends_on: [b]
`,
			want: []want{{"steps[0].depends_on", 6, "dependency cycle: a → c → b → a"}},
		},
		{
			name: "two independent cycles",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: [b]
  - name: b
    capability: x.b
    depends_on: [a]
  - name: c
    capability: x.c
  - name: d
    capability: x.d
    depends_on: [c, e]
  - name: e
    capability: x.e
    depends_on: [d]
`,
			want: []want{
				{"steps[0].depends_on", 6, "dependency cycle: a → b → a"},
				{"steps[3].depends_on", 14, "dependency cycle: d → e → d"},
			},
		},
		{
			name: "the shortest cycle through the first step is printed",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: [b, d]
  - name: b
    capability: x.b
    depends_on: [c]
  - name: c
    capability: x.c
    depends_on: [a]
  - name: d
    capability: x.d
    depends_on: [a]
`,
			want: []want{{"steps[0].depends_on", 6, "dependency cycle: a → d → a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, problemsOf(t, tt.src, workflow.Limits{}), tt.want)
		})
	}
}

// TestLoadEnforcesLimits covers the limits that protect a server and the
// documents that cannot be read at all.
func TestLoadEnforcesLimits(t *testing.T) {
	chain := `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
  - name: b
    capability: x.b
    depends_on: [a]
  - name: c
    capability: x.c
    depends_on: [b]
`
	tests := []struct {
		name string
		src  string
		lim  workflow.Limits
		want []want
	}{
		{
			name: "too many steps",
			src:  chain,
			lim:  workflow.Limits{MaxSteps: 2},
			want: []want{{"steps", 3, "3 steps is over the limit of 2; split the workflow"}},
		},
		{
			name: "manifest too large",
			src:  chain,
			lim:  workflow.Limits{MaxManifestBytes: 64},
			want: []want{{"", 0, "over the limit of 64"}},
		},
		{
			name: "DAG too deep",
			src:  chain,
			lim:  workflow.Limits{MaxDepth: 2},
			want: []want{{"steps", 3, "the longest chain of dependencies has 3 steps, over the limit of 2"}},
		},
		{
			name: "max_attempts over a configured limit",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    retry: {max_attempts: 6}
`,
			lim:  workflow.Limits{MaxAttempts: 5},
			want: []want{{"steps[0].retry.max_attempts", 6, "6 is out of range: use 1 (no retries) to 5"}},
		},
		{
			name: "nesting too deep",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    input:
      a:
        b: {c: 1}
`,
			lim:  workflow.Limits{MaxNesting: 4},
			want: []want{{"steps[0].input.a.b", 8, "document nests too deeply (more than 4 levels"}},
		},
		{
			name: "aliases expand past the value limit",
			src: `name: shop
version: 1.0.0
x: &x [1, 2, 3, 4, 5, 6, 7, 8]
y: &y [*x, *x, *x, *x, *x, *x, *x, *x]
z: [*y, *y, *y, *y, *y, *y, *y, *y]
steps:
  - name: a
    capability: x.a
`,
			lim:  workflow.Limits{MaxNodes: 100},
			want: []want{{"", 0, "manifest has more than 100 values (aliases included)"}},
		},
		{
			name: "duplicate keys",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    name: b
`,
			want: []want{{"steps[0].name", 6, `key "name" appears twice (first at line 4)`}},
		},
		{
			name: "merge keys",
			src: `name: shop
version: 1.0.0
base: &base {capability: x.a}
steps:
  - name: a
    <<: *base
`,
			want: []want{{"steps[0]", 6, "YAML merge keys (<<) are not supported"}},
		},
		{
			name: "keys that are not strings",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    ? [x, y]
    : z
`,
			want: []want{{"steps[0]", 5, "mapping keys must be strings"}},
		},
		{
			name: "custom tags",
			src: `name: !shop shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
`,
			want: []want{{"name", 1, "unsupported YAML tag !shop"}},
		},
		{name: "no bytes", src: "", want: []want{{"", 0, "manifest is empty"}}},
		{name: "only white space", src: " \n\t\n  ", want: []want{{"", 0, "manifest is empty"}}},
		{name: "only comments", src: "# order fulfilment\n# to do\n", want: []want{{"", 0, "manifest is empty"}}},
		{name: "only a document marker", src: "---\n", want: []want{{"", 0, "manifest is empty"}}},
		{
			name: "invalid YAML syntax",
			src: `name: shop
version: 1.0.0
steps:
  - name: [a
    capability: x.a
`,
			// The line where the unclosed flow sequence starts.
			want: []want{{"", 4, "syntax error: did not find expected ',' or ']'"}},
		},
		{
			name: "two YAML documents",
			src: `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
---
name: other
`,
			want: []want{{"", 6, "more than one YAML document"}},
		},
		{
			name: "a list instead of a manifest",
			src:  "- name: a\n- name: b\n",
			want: []want{{"", 1, "got array, want object"}},
		},
		{
			name: "an explicit null",
			src:  "null\n",
			want: []want{{"", 1, "got null, want object"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, problemsOf(t, tt.src, tt.lim), tt.want)
		})
	}
}

// TestLoadReadsJSON checks that JSON manifests get the same checks and line
// numbers as YAML ones.
func TestLoadReadsJSON(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "structural and semantic problems with lines",
			src: `{
  "name": "shop",
  "version": 1.0,
  "steps": [
    {
      "name": "a",
      "capability": "x.a",
      "depends_on": ["b"],
      "timout": "5s"
    }
  ]
}`,
			want: []want{
				{"version", 3, "got number, want string; quote the value"},
				{"steps[0].depends_on[0]", 8, `unknown step "b"`},
				{"steps[0].timout", 9, `unknown field "timout"; did you mean "timeout"?`},
			},
		},
		{
			name: "duplicate keys",
			src: `{
  "name": "shop",
  "version": "1.0.0",
  "name": "again",
  "steps": [{"name": "a", "capability": "x.a"}]
}`,
			want: []want{{"name", 4, `key "name" appears twice (first at line 2)`}},
		},
		{
			name: "syntax error",
			src: `{
  "name": "shop"
  "version": "1.0.0"
}`,
			want: []want{{"", 3, "syntax error"}},
		},
		{
			name: "on one line, problems come in path order",
			src:  `{"name": "shop", "version": "1.0.0", "steps": [{"name": "a", "capability": "x.a", "timeout": 5, "owner": 3, "depends_on": ["a"]}]}`,
			want: []want{
				{"steps[0].depends_on[0]", 1, `step "a" depends on itself`},
				{"steps[0].owner", 1, "got number, want string"},
				{"steps[0].timeout", 1, "got number, want string"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, problemsOf(t, tt.src, workflow.Limits{}), tt.want)
		})
	}
}

// TestLoadJSONEscapes: JSON writers escape characters beyond the BMP as
// UTF-16 surrogate pairs (Python does by default); they load as the
// characters they stand for, as encoding/json would decode them.
func TestLoadJSONEscapes(t *testing.T) {
	tests := []struct {
		name    string
		escaped string // the description as written in JSON
		want    string
	}{
		{"surrogate pair", `\ud83d\ude00 shipped`, "😀 shipped"},
		{"two pairs and a BMP escape", `\uD83D\uDE00\u00e9\ud83d\udce6`, "😀é📦"},
		{"lone high surrogate", `a\ud83db`, "a\uFFFDb"},
		{"lone low surrogate", `\ude00`, "\uFFFD"},
		{"escaped backslash before u", `\\ud83d`, `\ud83d`},
		{"no escapes", `plain`, "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := `{"name": "s", "version": "1.0.0", "description": "` + tt.escaped + `",
				"steps": [{"name": "a", "capability": "x.a", "input": {"d": "` + tt.escaped + `"}}]}`
			var viaJSON struct{ Description string }
			if err := json.Unmarshal([]byte(src), &viaJSON); err != nil || viaJSON.Description != tt.want {
				t.Fatalf("the test is wrong: encoding/json reads %q (%v)", viaJSON.Description, err)
			}
			plan := mustLoad(t, src)
			if plan.Description != tt.want {
				t.Errorf("Description = %q, want %q", plan.Description, tt.want)
			}
			in, _ := plan.Steps[0].Input.Resolve(nil, nil)
			if got := in.(map[string]any)["d"]; got != tt.want {
				t.Errorf("input literal = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadJSONExampleMatchesYAML(t *testing.T) {
	fromYAML := loadFile(t, "../examples/order-fulfilment.yaml")
	fromJSON := loadFile(t, "testdata/order-fulfilment.json")
	if !reflect.DeepEqual(fromYAML.Summarize(), fromJSON.Summarize()) {
		t.Errorf("summaries differ:\nyaml %+v\njson %+v", fromYAML.Summarize(), fromJSON.Summarize())
	}
	for i, y := range fromYAML.Steps {
		j := fromJSON.Steps[i]
		if y.Name != j.Name || y.Capability != j.Capability || y.Timeout != j.Timeout || !reflect.DeepEqual(y.Retry, j.Retry) || !reflect.DeepEqual(y.ErrorCodes, j.ErrorCodes) {
			t.Errorf("step %d differs:\nyaml %+v\njson %+v", i, y, j)
		}
	}
}

func loadFile(t *testing.T, path string) *workflow.Plan {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return mustLoad(t, string(src))
}

// TestLoadReportsStructuralAndSemanticProblemsTogether: one call shows the
// user everything, in source-line order, without saying a field is wrong
// twice.
func TestLoadReportsStructuralAndSemanticProblemsTogether(t *testing.T) {
	src := `name: shop
steps:
  - name: a
    capability: x.a
    depends_on: [b]
    colour: red
  - name: b
    capability: x.b
    depends_on: [a]
    timeout: 5
  - name: c
    owner: nobody
    retry: {max_attempts: 0}
`
	checkProblems(t, problemsOf(t, src, workflow.Limits{}), []want{
		{"version", 1, "is required"},                             // structural
		{"steps[0].depends_on", 5, "dependency cycle: a → b → a"}, // semantic
		{"steps[0].colour", 6, `unknown field "colour"`},          // structural
		{"steps[1].timeout", 10, "got number, want string"},       // structural
		{"steps[2].owner", 12, `system "nobody" is not declared under systems`},
		{"steps[2].retry.max_attempts", 13, "0 is out of range"},
	})
}

func TestLoadOrdersProblemsByLine(t *testing.T) {
	src := `name: Shop
version: one
defaults:
  timeout: soon
steps:
  - name: b
    capability: x.b
    depends_on: [a]
  - name: a
    capability: x.a
    timeout: 0s
    extra: 1
  - name: c
`
	got := problemsOf(t, src, workflow.Limits{})
	var lines []int
	for _, p := range got {
		lines = append(lines, p.Line)
	}
	if want := []int{1, 2, 4, 11, 12, 13}; !reflect.DeepEqual(lines, want) {
		t.Errorf("problem lines = %v, want %v:\n%v", lines, want, got)
	}
	// The error message lists them in the same order, one per line.
	_, err := workflow.Load([]byte(src), workflow.Limits{})
	msg := err.Error()
	if !strings.HasPrefix(msg, "invalid workflow: 6 problems:\n  name (line 1): ") {
		t.Errorf("error message starts %q", msg[:min(len(msg), 60)])
	}
	if i, j := strings.Index(msg, "line 4"), strings.Index(msg, "line 11"); i < 0 || j < i {
		t.Errorf("line 4 should come before line 11 in:\n%s", msg)
	}
}

// TestParseChecksOnlyStructure: Parse is the cheap first half of Load.
func TestParseChecksOnlyStructure(t *testing.T) {
	cyclic := `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
    depends_on: [a]
`
	m, err := workflow.Parse([]byte(cyclic), workflow.Limits{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(m.Steps) != 1 || m.Steps[0].DependsOn[0] != "a" {
		t.Errorf("Parse decoded %+v", m)
	}
	_, err = workflow.Parse([]byte("name: shop\nversion: 1.0.0\nsteps: 5\n"), workflow.Limits{})
	var ve *workflow.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "steps" || ve.Problems[0].Line != 3 {
		t.Errorf("Parse error = %v, want one problem at steps (line 3)", err)
	}
}

// TestCompileWithoutSource: a Manifest built in code is checked the same
// way, without lines.
func TestCompileWithoutSource(t *testing.T) {
	m := &workflow.Manifest{
		Name:    "shop",
		Version: "1.0.0",
		Steps: []workflow.Step{
			{Name: "a", Capability: "x.a", DependsOn: []string{"b"}},
			{Name: "b", Capability: "x.b", DependsOn: []string{"a"}},
		},
	}
	_, err := workflow.Compile(m, workflow.Limits{})
	var ve *workflow.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Compile error = %v, want a *ValidationError", err)
	}
	checkProblems(t, ve.Problems, []want{{"steps[0].depends_on", 0, "dependency cycle: a → b → a"}})

	m.Steps[0].DependsOn = nil
	plan, err := workflow.Compile(m, workflow.Limits{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if plan.Namespace != "default" || plan.Levels() != 2 {
		t.Errorf("plan namespace %q levels %d, want default and 2", plan.Namespace, plan.Levels())
	}
}

func TestLoadExample(t *testing.T) {
	plan := loadFile(t, "../examples/order-fulfilment.yaml")
	if plan.Name != "order-fulfilment" || plan.Namespace != "shop" || plan.Version != "1.0.0" {
		t.Errorf("plan is %s/%s@%s", plan.Namespace, plan.Name, plan.Version)
	}
	if plan.Input == nil {
		t.Error("the example's input_schema did not become a contract")
	}
	defBackoff := workflow.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2}
	type stepWant struct {
		capability string
		owner      string
		timeout    time.Duration
		retry      workflow.RetryPolicy
		errorCodes []string
		level      int
	}
	want := map[string]stepWant{
		"validate": {"orders.validate", "orders", 5 * time.Second, workflow.RetryPolicy{MaxAttempts: 3, Backoff: defBackoff}, nil, 0},
		"reserve": {"inventory.reserve", "inventory", 30 * time.Second,
			workflow.RetryPolicy{MaxAttempts: 3, Backoff: defBackoff, Retryable: []string{"warehouse_unavailable", "timeout"}},
			[]string{"out_of_stock", "warehouse_unavailable"}, 1},
		"charge": {"payments.charge", "payments", 20 * time.Second,
			workflow.RetryPolicy{MaxAttempts: 5, Backoff: workflow.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.3}, Retryable: []string{"gateway_unavailable", "timeout"}},
			[]string{"card_declined", "insufficient_funds", "gateway_unavailable"}, 1},
		"ship":   {"shipping.book", "shipping", time.Minute, workflow.RetryPolicy{MaxAttempts: 3, Backoff: defBackoff}, nil, 2},
		"notify": {"notifications.email", "notifications", 30 * time.Second, workflow.RetryPolicy{MaxAttempts: 10, Backoff: defBackoff}, nil, 3},
	}
	if plan.Len() != len(want) {
		t.Fatalf("plan has %d steps, want %d", plan.Len(), len(want))
	}
	for _, st := range plan.Steps {
		t.Run(st.Name, func(t *testing.T) {
			w, ok := want[st.Name]
			if !ok {
				t.Fatalf("unexpected step %q", st.Name)
			}
			got := stepWant{st.Capability, st.Owner, st.Timeout, st.Retry, st.ErrorCodes, st.Level}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
			if hasSchema := st.Name != "notify"; (st.Result != nil) != hasSchema {
				t.Errorf("Result contract is %v; the step has a result_schema: %v", st.Result, hasSchema)
			}
		})
	}
	got := plan.Summarize()
	wantSummary := workflow.Summary{
		Steps: 5, Edges: 5, Levels: 4, MaxParallelism: 2,
		CriticalPath: []string{"validate", "reserve", "ship", "notify"},
		WorstCase:    125 * time.Second,
		Roots:        []string{"validate"},
		Leaves:       []string{"notify"},
	}
	if !reflect.DeepEqual(got, wantSummary) {
		t.Errorf("Summarize() = %+v\nwant %+v", got, wantSummary)
	}
}

// TestExampleStepInput resolves the example's ship and notify inputs the way
// the executor will.
func TestExampleStepInput(t *testing.T) {
	plan := loadFile(t, "../examples/order-fulfilment.yaml")
	input := decode(t, `{
		"order_id": "ord_42",
		"customer": {"id": "c1", "email": "zoë@example.com"},
		"items": [{"sku": "A", "quantity": 1}],
		"payment": {"token": "tok", "amount_cents": 1200, "currency": "EUR"}
	}`)
	results := map[string]any{
		"reserve": decode(t, `{"reservation_id": "r1", "expires_at": "2030-01-01T00:00:00Z"}`),
		"charge":  decode(t, `{"charge_id": "ch1", "status": "captured"}`),
		"ship":    decode(t, `{"tracking_number": "TN1", "carrier": "DHL"}`),
	}
	result := func(i int) any { return results[plan.Steps[i].Name] }
	tests := []struct {
		step  string
		reads []string
		want  string
	}{
		{
			// shipping_address is absent from this input: the field is left out.
			step:  "ship",
			reads: []string{"reserve", "charge"},
			want:  `{"order_id": "ord_42", "reservation": "r1", "charge": "ch1", "service": "standard"}`,
		},
		{
			step:  "notify",
			reads: []string{"ship"},
			want:  `{"to": "zoë@example.com", "template": "order-shipped", "vars": {"order_id": "ord_42", "tracking": "TN1", "carrier": "DHL"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			i, ok := plan.StepIndex(tt.step)
			if !ok {
				t.Fatalf("no step %q", tt.step)
			}
			m := plan.Steps[i].Input
			var reads []string
			for _, r := range m.Reads() {
				reads = append(reads, plan.Steps[r].Name)
			}
			if !reflect.DeepEqual(reads, tt.reads) {
				t.Errorf("Reads() = %v, want %v", reads, tt.reads)
			}
			got, err := m.Resolve(input, result)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if want := decode(t, tt.want); !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve() = %v, want %v", got, want)
			}
		})
	}
}

func decode(t *testing.T, s string) any {
	t.Helper()
	v, err := workflow.DecodeJSON([]byte(s))
	if err != nil {
		t.Fatalf("DecodeJSON(%s): %v", s, err)
	}
	return v
}

func TestDefaultsInheritAndStepsOverride(t *testing.T) {
	plan := mustLoad(t, `name: shop
version: 1.0.0
defaults:
  timeout: 10s
  retry:
    max_attempts: 4
    retryable: [busy]
    backoff: {initial: 2s, max: 20s, multiplier: 1.5, jitter: 0.1}
steps:
  - name: inherits
    capability: x.a
  - name: own-timeout
    capability: x.b
    timeout: 1m
  - name: own-attempts
    capability: x.c
    retry: {max_attempts: 1}
  - name: own-initial
    capability: x.d
    retry: {backoff: {initial: 5s}}
  - name: own-everything
    capability: x.e
    timeout: 2s
    retry:
      max_attempts: 7
      retryable: [throttled, timeout]
      backoff: {initial: 100ms, max: 1s, multiplier: 1, jitter: 0}
  - name: app-decides
    capability: x.f
    retry: {retryable: []}
`)
	def := workflow.Backoff{Initial: 2 * time.Second, Max: 20 * time.Second, Multiplier: 1.5, Jitter: 0.1}
	tests := []struct {
		step    string
		timeout time.Duration
		retry   workflow.RetryPolicy
	}{
		{"inherits", 10 * time.Second, workflow.RetryPolicy{MaxAttempts: 4, Backoff: def, Retryable: []string{"busy"}}},
		{"own-timeout", time.Minute, workflow.RetryPolicy{MaxAttempts: 4, Backoff: def, Retryable: []string{"busy"}}},
		{"own-attempts", 10 * time.Second, workflow.RetryPolicy{MaxAttempts: 1, Backoff: def, Retryable: []string{"busy"}}},
		{"own-initial", 10 * time.Second, workflow.RetryPolicy{MaxAttempts: 4,
			Backoff: workflow.Backoff{Initial: 5 * time.Second, Max: 20 * time.Second, Multiplier: 1.5, Jitter: 0.1}, Retryable: []string{"busy"}}},
		{"own-everything", 2 * time.Second, workflow.RetryPolicy{MaxAttempts: 7,
			Backoff: workflow.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 1, Jitter: 0}, Retryable: []string{"throttled", "timeout"}}},
		{"app-decides", 10 * time.Second, workflow.RetryPolicy{MaxAttempts: 4, Backoff: def, Retryable: []string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			i, _ := plan.StepIndex(tt.step)
			st := plan.Steps[i]
			if st.Timeout != tt.timeout {
				t.Errorf("Timeout = %v, want %v", st.Timeout, tt.timeout)
			}
			if !reflect.DeepEqual(st.Retry, tt.retry) {
				t.Errorf("Retry = %+v\nwant    %+v", st.Retry, tt.retry)
			}
		})
	}
	t.Run("an empty retryable list lets the app decide", func(t *testing.T) {
		i, _ := plan.StepIndex("app-decides")
		r := plan.Steps[i].Retry
		if r.Retries("busy", false) || !r.Retries("anything", true) {
			t.Errorf("Retries with an empty list should follow the app's flag")
		}
	})
}

// TestWholeNumbersWrittenAsDecimals: JSON Schema counts 3.0 and 1e2 as
// integers, and so does max_attempts.
func TestWholeNumbersWrittenAsDecimals(t *testing.T) {
	for _, tt := range []struct {
		written string
		want    int
	}{{"3.0", 3}, {"1e2", 100}, {"7", 7}} {
		t.Run(tt.written, func(t *testing.T) {
			plan := mustLoad(t, "name: n\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: x.a\n    retry: {max_attempts: "+tt.written+"}\n")
			if got := plan.Steps[0].Retry.MaxAttempts; got != tt.want {
				t.Errorf("MaxAttempts = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestDefaultLimits pins the limits the manifest reference documents.
func TestDefaultLimits(t *testing.T) {
	defaults := workflow.Limits{
		MaxManifestBytes: 4 << 20,
		MaxSteps:         10000,
		MaxDepth:         1000,
		MaxNesting:       64,
		MaxNodes:         1 << 20,
		MaxAttempts:      100,
	}
	if got := workflow.DefaultLimits(); got != defaults {
		t.Errorf("DefaultLimits() = %+v, want %+v", got, defaults)
	}
	// A configured max_attempts above 255 does not fit a step's state and
	// falls back to the default.
	checkProblems(t, problemsOf(t, "name: n\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: x.a\n    retry: {max_attempts: 101}\n",
		workflow.Limits{MaxAttempts: 1000}), []want{{"steps[0].retry.max_attempts", 6, "101 is out of range: use 1 (no retries) to 100"}})
}

func TestBuiltInDefaults(t *testing.T) {
	plan := mustLoad(t, `name: shop
version: 1.0.0
steps:
  - name: a
    capability: x.a
`)
	st := plan.Steps[0]
	want := workflow.RetryPolicy{MaxAttempts: workflow.DefaultMaxAttempts, Backoff: workflow.DefaultBackoff()}
	if st.Timeout != workflow.DefaultTimeout || !reflect.DeepEqual(st.Retry, want) {
		t.Errorf("step got timeout %v retry %+v; want %v and %+v", st.Timeout, st.Retry, workflow.DefaultTimeout, want)
	}
	if plan.Namespace != "default" {
		t.Errorf("Namespace = %q, want default", plan.Namespace)
	}
}

func TestCapabilityFromOwner(t *testing.T) {
	plan := mustLoad(t, `name: shop
version: 1.0.0
systems:
  inventory:
    capabilities: [inventory.reserve]
  payments: {}
steps:
  - name: reserve
    owner: inventory
  - name: charge
    owner: payments
  - name: refund
    capability: payments.refund
`)
	for step, want := range map[string]string{
		"reserve": "inventory.reserve", // derived and listed
		"charge":  "payments.charge",   // derived; payments lists nothing, so anything goes
		"refund":  "payments.refund",   // no owner: taken as written
	} {
		i, _ := plan.StepIndex(step)
		if got := plan.Steps[i].Capability; got != want {
			t.Errorf("step %s: Capability = %q, want %q", step, got, want)
		}
	}
}

// TestSummary covers the shapes people ask about: chains, diamonds,
// fan-outs and independent branches.
func TestSummary(t *testing.T) {
	tests := []struct {
		name  string
		steps string // one step per line: name timeout [parents...]
		want  workflow.Summary
	}{
		{
			name:  "single step",
			steps: "a 1s",
			want: workflow.Summary{Steps: 1, Levels: 1, MaxParallelism: 1,
				CriticalPath: []string{"a"}, WorstCase: time.Second, Roots: []string{"a"}, Leaves: []string{"a"}},
		},
		{
			name:  "chain",
			steps: "a 1s\nb 2s a\nc 3s b",
			want: workflow.Summary{Steps: 3, Edges: 2, Levels: 3, MaxParallelism: 1,
				CriticalPath: []string{"a", "b", "c"}, WorstCase: 6 * time.Second, Roots: []string{"a"}, Leaves: []string{"c"}},
		},
		{
			name:  "diamond takes the slower branch",
			steps: "a 1s\nb 5s a\nc 1s a\nd 1s b c",
			want: workflow.Summary{Steps: 4, Edges: 4, Levels: 3, MaxParallelism: 2,
				CriticalPath: []string{"a", "b", "d"}, WorstCase: 7 * time.Second, Roots: []string{"a"}, Leaves: []string{"d"}},
		},
		{
			name:  "fan-out and fan-in",
			steps: "a 1s\nb 1s a\nc 1s a\nd 2s a\ne 1s a\nf 1s b c d e",
			want: workflow.Summary{Steps: 6, Edges: 8, Levels: 3, MaxParallelism: 4,
				CriticalPath: []string{"a", "d", "f"}, WorstCase: 4 * time.Second, Roots: []string{"a"}, Leaves: []string{"f"}},
		},
		{
			name:  "independent branches",
			steps: "a 1s\nb 1s a\nc 1s\nd 10s c",
			want: workflow.Summary{Steps: 4, Edges: 2, Levels: 2, MaxParallelism: 2,
				CriticalPath: []string{"c", "d"}, WorstCase: 11 * time.Second, Roots: []string{"a", "c"}, Leaves: []string{"b", "d"}},
		},
		{
			name:  "a shortcut edge does not shorten the longest chain",
			steps: "a 1s\nb 1s a\nc 1s a b",
			want: workflow.Summary{Steps: 3, Edges: 3, Levels: 3, MaxParallelism: 1,
				CriticalPath: []string{"a", "b", "c"}, WorstCase: 3 * time.Second, Roots: []string{"a"}, Leaves: []string{"c"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := mustLoad(t, manifestOf(tt.steps))
			if got := plan.Summarize(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Summarize() = %+v\nwant %+v", got, tt.want)
			}
			checkOrder(t, plan)
		})
	}
}

// manifestOf writes a manifest from lines of "name timeout parents...".
func manifestOf(steps string) string {
	var b strings.Builder
	b.WriteString("name: shape\nversion: 1.0.0\nsteps:\n")
	for _, line := range strings.Split(steps, "\n") {
		f := strings.Fields(line)
		b.WriteString("  - name: " + f[0] + "\n    capability: x." + f[0] + "\n    timeout: " + f[1] + "\n")
		if len(f) > 2 {
			b.WriteString("    depends_on: [" + strings.Join(f[2:], ", ") + "]\n")
		}
	}
	return b.String()
}

// checkOrder asserts that Order is a topological order of every step and
// that Parents and Children agree.
func checkOrder(t *testing.T, plan *workflow.Plan) {
	t.Helper()
	pos := make(map[int32]int, plan.Len())
	for k, s := range plan.Order() {
		pos[s] = k
	}
	if len(plan.Order()) != plan.Len() || len(pos) != plan.Len() {
		t.Fatalf("Order() = %v does not cover the %d steps once each", plan.Order(), plan.Len())
	}
	for i := range plan.Len() {
		for _, p := range plan.Parents(i) {
			if pos[p] >= pos[int32(i)] {
				t.Errorf("parent %d comes after child %d in Order()", p, i)
			}
			found := false
			for _, c := range plan.Children(int(p)) {
				found = found || c == int32(i)
			}
			if !found {
				t.Errorf("step %d has parent %d, but is not among its children", i, p)
			}
		}
	}
}

// TestInputMappingLiterals covers what is not an expression: literals of
// every type, "$$" escapes and nesting.
func TestInputMappingLiterals(t *testing.T) {
	plan := mustLoad(t, `name: shop
version: 1.0.0
steps:
  - name: up
    capability: x.up
  - name: a
    capability: x.a
    depends_on: [up]
    input:
      price: "$$5"
      escaped: "$$.input.email"
      double: "$$$$"
      dollar: $5
      text: plain text
      count: 3
      big: 123456789012345678901234567890
      ratio: 0.1
      flag: true
      nothing: null
      nested:
        to: $.input.email
        from: $.steps.up.result.sender
        lines:
          - $.input.items[0].sku
          - literal
          - qty: $.input.items[0].qty
          - ["$.input.items[1].sku"]
`)
	in := decode(t, `{"email": "a@example.com", "items": [{"sku": "S1", "qty": 2}]}`)
	got, err := plan.Steps[1].Input.Resolve(in, func(int) any { return decode(t, `{"sender": "shop"}`) })
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := map[string]any{
		"price":   "$5",
		"escaped": "$.input.email",
		"double":  "$$$",
		"dollar":  "$5",
		"text":    "plain text",
		"count":   json.Number("3"),
		"big":     json.Number("123456789012345678901234567890"),
		"ratio":   json.Number("0.1"),
		"flag":    true,
		"nothing": nil,
		"nested": map[string]any{
			"to":    "a@example.com",
			"from":  "shop",
			"lines": []any{"S1", "literal", map[string]any{"qty": json.Number("2")}, []any{nil}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve() =\n%#v\nwant\n%#v", got, want)
	}
}

// TestYAMLNumbersBecomeJSON: whatever YAML spelling a number has, a step
// receives a valid JSON number.
func TestYAMLNumbersBecomeJSON(t *testing.T) {
	tests := []struct {
		yaml string
		want json.Number
	}{
		{"42", "42"},
		{"-7", "-7"},
		{"+5", "5"},
		{"0x1F", "31"},
		{"1_000", "1000"},
		{"18446744073709551615", "18446744073709551615"},
		{"123456789012345678901234567890", "123456789012345678901234567890"},
		{"!!int 0xFFFFFFFFFFFFFFFFFFFF", "1208925819614629174706175"},
		{"1.5", "1.5"},
		{"+1.5", "1.5"},
		{".5", "0.5"},
		{"1e3", "1e3"},
		{"-0.0", "-0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			plan := mustLoad(t, "name: n\nversion: 1.0.0\nsteps:\n  - name: a\n    capability: x.a\n    input: {v: "+tt.yaml+"}\n")
			got, err := plan.Steps[0].Input.Resolve(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			v := got.(map[string]any)["v"]
			if v != tt.want {
				t.Errorf("v = %#v, want %#v", v, tt.want)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("the step input does not encode as JSON: %v", err)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	tests := []struct {
		name     string
		problems []workflow.Problem
		want     string
	}{
		{
			name:     "one problem",
			problems: []workflow.Problem{{Path: "version", Line: 2, Message: "is required"}},
			want:     "invalid workflow: version (line 2): is required",
		},
		{
			name:     "a problem about the whole manifest",
			problems: []workflow.Problem{{Message: "manifest is empty"}},
			want:     "invalid workflow: (manifest): manifest is empty",
		},
		{
			name: "several problems",
			problems: []workflow.Problem{
				{Path: "name", Line: 1, Message: "is required"},
				{Path: "steps[0].timeout", Message: `"x" is not a duration`},
			},
			want: "invalid workflow: 2 problems:\n  name (line 1): is required\n  steps[0].timeout: \"x\" is not a duration",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := &workflow.ValidationError{Problems: tt.problems}
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestProblemsAreJSON: the API returns problems as JSON; the line is left
// out when unknown.
func TestProblemsAreJSON(t *testing.T) {
	b, err := json.Marshal([]workflow.Problem{{Path: "a", Line: 3, Message: "m"}, {Message: "whole"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"path":"a","line":3,"message":"m"},{"path":"","message":"whole"}]`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
}
