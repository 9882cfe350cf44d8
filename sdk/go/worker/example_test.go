package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tasker-run/tasker/sdk/go/worker"
)

// ChargeInput is the input of the payments.charge capability.
type ChargeInput struct {
	OrderID string `json:"order_id"`
	Amount  int64  `json:"amount"` // cents
}

// ChargeResult is its result.
type ChargeResult struct {
	ChargeID string `json:"charge_id"`
}

// charge is a handler: a plain function of a decoded input.
func charge(ctx context.Context, s *worker.Step, in ChargeInput) (ChargeResult, error) {
	if in.Amount <= 0 {
		return ChargeResult{}, worker.Permanent("invalid_amount", "amount must be positive")
	}
	// A real handler passes s.IdempotencyKey to the payment provider, so
	// that a retried attempt never charges twice, and ctx, so that the
	// call stops at the step's deadline.
	return ChargeResult{ChargeID: "ch_" + in.OrderID}, nil
}

func Example() {
	// A stand-in for the sidecar, so that the example runs on its own. In
	// an app, leave Addr empty: the worker finds its sidecar at
	// $TASKER_ADDR, else http://127.0.0.1:7420.
	agent := newFakeAgent()
	sidecar := agent.serve("")
	defer sidecar.Kill()

	w := worker.New(worker.Options{Addr: sidecar.URL, Logger: slog.New(slog.DiscardHandler)})
	w.Handle("payments.charge", worker.Typed(charge),
		worker.Concurrency(8),
		worker.Schemas(
			`{"type":"object","required":["order_id","amount"]}`,
			`{"type":"object","required":["charge_id"]}`),
		worker.Version("1.2.0"),
		worker.Description("Charges an order's card"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	// The sidecar assigns two steps; the worker runs them and reports.
	agent.assign <- step("task-1", "charge", "payments.charge", `{"order_id":"42","amount":1999}`)
	fmt.Println(agent.nextReport())
	agent.assign <- step("task-2", "charge", "payments.charge", `{"order_id":"43","amount":0}`)
	fmt.Println(agent.nextReport())

	cancel() // shut down: drain, then return
	fmt.Println("Run:", <-done)
	// Output:
	// completed task-1/charge attempt 1: {"charge_id":"ch_42"}
	// failed task-2/charge attempt 1: invalid_amount (retryable: false): amount must be positive
	// Run: <nil>
}

func ExampleStep_Bind() {
	s := &worker.Step{Input: json.RawMessage(`{"order_id":"42","total":12345678901234567890}`)}

	var in map[string]any
	if err := s.Bind(&in); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%T %v\n", in["total"], in["total"]) // every digit kept

	// An input that does not fit is a permanent failure: return it as is.
	var typed struct {
		Total int32 `json:"total"`
	}
	var e *worker.Error
	if err := s.Bind(&typed); errors.As(err, &e) {
		fmt.Println(e.Code, "retryable:", e.Retryable)
	}
	// Output:
	// json.Number 12345678901234567890
	// invalid_input retryable: false
}

func ExampleRetryable() {
	h := func(ctx context.Context, s *worker.Step) (any, error) {
		// A rate-limited upstream says when to come back.
		return nil, worker.Retryable("rate_limited", "provider quota exhausted", 30*time.Second)
	}
	_, err := h(context.Background(), &worker.Step{})
	fmt.Println(err)
	// Output:
	// rate_limited: provider quota exhausted
}
