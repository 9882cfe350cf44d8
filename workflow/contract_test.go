package workflow_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// contractOf compiles a JSON Schema the way a manifest does: as a
// workflow's input_schema.
func contractOf(t *testing.T, schema string) *workflow.Contract {
	t.Helper()
	plan := mustLoad(t, `{"name": "c", "version": "1.0.0", "input_schema": `+schema+`,
		"steps": [{"name": "s", "capability": "x.s"}]}`)
	if plan.Input == nil {
		t.Fatal("input_schema did not become a contract")
	}
	return plan.Input
}

func TestContractCheckListsEveryViolation(t *testing.T) {
	charge := contractOf(t, `{
		"type": "object",
		"required": ["charge_id", "status", "amount"],
		"properties": {
			"charge_id": {"type": "string"},
			"status": {"enum": ["captured", "pending_review"]},
			"amount": {"type": "integer", "minimum": 1},
			"lines": {"type": "array", "items": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}},
			"a/b": {"type": "string"},
			"m~n": {"type": "string"}
		}
	}`)
	tests := []struct {
		name  string
		value string
		want  []workflow.Violation // Pointer and a key part of Message
	}{
		{
			name:  "valid",
			value: `{"charge_id": "ch_1", "status": "captured", "amount": 100}`,
		},
		{
			name:  "two fields missing and one of the wrong type",
			value: `{"amount": "100"}`,
			want: []workflow.Violation{
				{Pointer: "/amount", Message: "got string, want integer"},
				{Pointer: "/charge_id", Message: "is required"},
				{Pointer: "/status", Message: "is required"},
			},
		},
		{
			name:  "nested array elements",
			value: `{"charge_id": "c", "status": "captured", "amount": 1, "lines": [{"sku": "A"}, {"sku": 5}, {}]}`,
			want: []workflow.Violation{
				{Pointer: "/lines/1/sku", Message: "got number, want string"},
				{Pointer: "/lines/2/sku", Message: "is required"},
			},
		},
		{
			name:  "enum and minimum",
			value: `{"charge_id": "c", "status": "refunded", "amount": 0}`,
			want: []workflow.Violation{
				{Pointer: "/amount", Message: "minimum: got 0, want 1"},
				{Pointer: "/status", Message: "value must be one of 'captured', 'pending_review'"},
			},
		},
		{
			name:  "pointers escape / and ~",
			value: `{"charge_id": "c", "status": "captured", "amount": 1, "a/b": 1, "m~n": 2}`,
			want: []workflow.Violation{
				{Pointer: "/a~1b", Message: "want string"},
				{Pointer: "/m~0n", Message: "want string"},
			},
		},
		{
			name:  "not an object at all",
			value: `[1, 2]`,
			want:  []workflow.Violation{{Pointer: "", Message: "got array, want object"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := charge.Check("result of step charge", decode(t, tt.value))
			checkViolations(t, err, "result of step charge", tt.want)
		})
	}
}

func checkViolations(t *testing.T, err error, contract string, want []workflow.Violation) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return
	}
	var ce *workflow.ContractError
	if !errors.As(err, &ce) {
		t.Fatalf("Check error = %v (%T), want a *workflow.ContractError", err, err)
	}
	if ce.Contract != contract {
		t.Errorf("Contract = %q, want %q", ce.Contract, contract)
	}
	ok := len(ce.Violations) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = ce.Violations[i].Pointer == want[i].Pointer && strings.Contains(ce.Violations[i].Message, want[i].Message)
	}
	if !ok {
		t.Errorf("violations:\n%v\nwant:\n%v", ce.Violations, want)
	}
	for _, v := range ce.Violations {
		if p := v.Pointer; p == "" {
			p = "/"
		} else if !strings.Contains(err.Error(), p+": ") {
			t.Errorf("error message %q does not name %s", err, p)
		}
	}
}

func TestContractAssertsFormats(t *testing.T) {
	c := contractOf(t, `{
		"type": "object",
		"properties": {
			"email": {"type": "string", "format": "email"},
			"at": {"type": "string", "format": "date-time"}
		}
	}`)
	tests := []struct {
		name  string
		value string
		want  []workflow.Violation
	}{
		{name: "valid", value: `{"email": "zoe@example.com", "at": "2030-01-02T03:04:05Z"}`},
		{
			// Non-ASCII addresses need "format: idn-email".
			name:  "non-ASCII email",
			value: `{"email": "zoë@example.com"}`,
			want:  []workflow.Violation{{Pointer: "/email", Message: "is not valid email"}},
		},
		{name: "offset time", value: `{"at": "2030-01-02T03:04:05.123+02:00"}`},
		{
			name:  "not an email",
			value: `{"email": "not-an-email"}`,
			want:  []workflow.Violation{{Pointer: "/email", Message: "is not valid email"}},
		},
		{
			name:  "a date without a time",
			value: `{"at": "2030-01-02"}`,
			want:  []workflow.Violation{{Pointer: "/at", Message: "is not valid date-time"}},
		},
		{
			name:  "an impossible date",
			value: `{"at": "2030-02-30T00:00:00Z", "email": "@"}`,
			want: []workflow.Violation{
				{Pointer: "/at", Message: "is not valid date-time"},
				{Pointer: "/email", Message: "is not valid email"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkViolations(t, c.Check("input", decode(t, tt.value)), "input", tt.want)
		})
	}
}

// TestContractComparesNumbersExactly: integers beyond float64 precision are
// compared as written.
func TestContractComparesNumbersExactly(t *testing.T) {
	c := contractOf(t, `{"type": "integer", "maximum": 9007199254740993}`)
	tests := []struct {
		value string
		ok    bool
	}{
		{"9007199254740993", true},
		{"9007199254740994", false},
		{"123456789012345678901234567890", false},
		{"1.0", true},
		{"1.5", false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			err := c.CheckJSON("input", []byte(tt.value))
			if (err == nil) != tt.ok {
				t.Errorf("CheckJSON(%s) = %v, want ok=%v", tt.value, err, tt.ok)
			}
		})
	}
}

func TestContractCheckJSON(t *testing.T) {
	c := contractOf(t, `{"type": "object", "required": ["id"]}`)
	tests := []struct {
		name string
		raw  string
		want []workflow.Violation
	}{
		{name: "valid", raw: `{"id": 1}`},
		{name: "violation", raw: `{}`, want: []workflow.Violation{{Pointer: "/id", Message: "is required"}}},
		{name: "not JSON", raw: `{id: 1}`, want: []workflow.Violation{{Pointer: "", Message: "invalid JSON"}}},
		{name: "trailing data", raw: `{"id": 1} {"id": 2}`, want: []workflow.Violation{{Pointer: "", Message: "invalid JSON: unexpected data after the value"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkViolations(t, c.CheckJSON("result of step s", []byte(tt.raw)), "result of step s", tt.want)
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		raw    string
		want   any
		errMsg string
	}{
		{raw: `{"a": [1, "x", true, null]}`, want: map[string]any{"a": []any{json.Number("1"), "x", true, nil}}},
		{raw: "  42  \n", want: json.Number("42")},
		{raw: `123456789012345678901234567890`, want: json.Number("123456789012345678901234567890")},
		{raw: `"Zoë 😀"`, want: "Zoë 😀"},
		{raw: `"\ud83d\ude00"`, want: "😀"},
		{raw: ``, errMsg: "invalid JSON"},
		{raw: `{"a": }`, errMsg: "invalid JSON"},
		{raw: `{} {}`, errMsg: "unexpected data after the value"},
		{raw: `{}}`, errMsg: "unexpected data after the value"},
		{raw: `{}]`, errMsg: "unexpected data after the value"},
		{raw: `1 2`, errMsg: "unexpected data after the value"},
		{raw: `[1],`, errMsg: "unexpected data after the value"},
		{raw: `"a" x`, errMsg: "unexpected data after the value"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := workflow.DecodeJSON([]byte(tt.raw))
			if tt.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
					t.Fatalf("DecodeJSON = %#v, %v; want an error saying %q", got, err, tt.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeJSON = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestNilContractAcceptsAnything(t *testing.T) {
	var c *workflow.Contract
	for _, v := range []any{nil, "x", json.Number("1"), map[string]any{"a": []any{}}} {
		if err := c.Check("input", v); err != nil {
			t.Errorf("Check(%#v) = %v", v, err)
		}
	}
	if err := c.CheckJSON("input", []byte(`{"any": "thing"}`)); err != nil {
		t.Errorf("CheckJSON = %v", err)
	}
}

// TestPlanContracts: the contracts a plan carries are the schemas the
// manifest wrote, applied to results and errors.
func TestPlanContracts(t *testing.T) {
	plan := loadFile(t, "../examples/order-fulfilment.yaml")
	i, _ := plan.StepIndex("reserve")
	st := plan.Steps[i]
	tests := []struct {
		name     string
		contract *workflow.Contract
		value    string
		want     []workflow.Violation
	}{
		{"good result", st.Result, `{"reservation_id": "r1", "expires_at": "2030-01-01T00:00:00Z"}`, nil},
		{"result with a bad date", st.Result, `{"reservation_id": "r1", "expires_at": "tomorrow"}`,
			[]workflow.Violation{{Pointer: "/expires_at", Message: "is not valid date-time"}}},
		{"known error", st.Error, `{"code": "out_of_stock", "message": "none left"}`, nil},
		{"unknown error code", st.Error, `{"code": "on_fire"}`,
			[]workflow.Violation{{Pointer: "/code", Message: "value must be one of 'out_of_stock', 'warehouse_unavailable'"}}},
		{"input without items", plan.Input, `{"order_id": "ord_1", "customer": {"id": "c", "email": "c@example.com"}, "items": [], "payment": {"token": "t", "amount_cents": 1, "currency": "EUR"}}`,
			[]workflow.Violation{{Pointer: "/items", Message: "minItems: got 0, want 1"}}},
		{"input with an unknown field", plan.Input, `{"order_id": "ord_1", "customer": {"id": "c", "email": "c@example.com"}, "items": [{"sku": "A", "quantity": 1}], "payment": {"token": "t", "amount_cents": 1, "currency": "EUR"}, "coupon": "X"}`,
			[]workflow.Violation{{Pointer: "", Message: "additional properties 'coupon' not allowed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkViolations(t, tt.contract.Check("c", decode(t, tt.value)), "c", tt.want)
		})
	}
	if doc, ok := st.Result.Doc().(map[string]any); !ok || doc["type"] != "object" {
		t.Errorf("Doc() = %#v, want the result_schema as written", st.Result.Doc())
	}
}

func TestContractErrorMessage(t *testing.T) {
	err := &workflow.ContractError{Contract: "result of step charge", Violations: []workflow.Violation{
		{Pointer: "", Message: "got array, want object"},
		{Pointer: "/id", Message: "is required"},
	}}
	want := "result of step charge violates its contract: /: got array, want object; /id: is required"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q\nwant %q", got, want)
	}
}
