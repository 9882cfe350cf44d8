package client_test

import (
	"context"
	"errors"
	"fmt"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/sdk/go/client"
)

func Example() {
	// A stand-in for the sidecar, so that the example runs on its own. In
	// an app, leave Addr empty: the client finds its sidecar at
	// $TASKER_ADDR, else http://127.0.0.1:7420.
	agent := newFakeWorkflows()
	sidecar := agent.start(nil)
	defer closeServer(sidecar)
	agent.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{
		{Task: task("task-1", pending)},
		event("task-1", 2, "step.completed", "reserve", inProgress),
		event("task-1", 3, "step.completed", "charge", inProgress),
		event("task-1", 4, "task.completed", "", complete),
	}}}

	c := client.New(client.Options{Addr: sidecar.URL})
	ctx := context.Background()

	order := map[string]any{"order_id": "42", "amount": 1999}
	task, created, err := c.StartTask(ctx, "order-fulfilment", order,
		client.Namespace("shop"), client.IdempotencyKey("order-42"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("started", task.GetId(), "created:", created)

	// The same key never starts a second task.
	again, created, _ := c.StartTask(ctx, "order-fulfilment", order,
		client.Namespace("shop"), client.IdempotencyKey("order-42"))
	fmt.Println("again", again.GetId(), "created:", created)

	err = c.Watch(ctx, task.GetId(), func(ev *taskerv1.TaskEvent, t *taskerv1.Task) error {
		if ev == nil {
			fmt.Println("now", t.GetState())
			return nil
		}
		if ev.GetStep() != "" {
			fmt.Println(ev.GetSequence(), ev.GetType(), ev.GetStep())
		} else {
			fmt.Println(ev.GetSequence(), ev.GetType())
		}
		return nil
	})
	fmt.Println("watch:", err)
	// Output:
	// started task-1 created: true
	// again task-1 created: false
	// now TASK_STATE_PENDING
	// 2 step.completed reserve
	// 3 step.completed charge
	// 4 task.completed
	// watch: <nil>
}

func ExampleClient_Wait() {
	agent := newFakeWorkflows() // stands in for the sidecar
	sidecar := agent.start(nil)
	defer closeServer(sidecar)
	agent.scripts = []watchScript{{msgs: []*taskerv1.WatchTaskResponse{
		{Task: task("task-1", inProgress)},
		event("task-1", 9, "task.completed", "", complete),
	}}}

	c := client.New(client.Options{Addr: sidecar.URL})
	t, err := c.Wait(context.Background(), "task-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	switch t.GetState() {
	case taskerv1.TaskState_TASK_STATE_COMPLETE:
		fmt.Println("done")
	case taskerv1.TaskState_TASK_STATE_ERROR:
		fmt.Println("blocked: an operator must retry or resolve a step")
	default:
		fmt.Println("ended as", t.GetState())
	}
	// Output:
	// done
}

func ExampleValidationError() {
	agent := newFakeWorkflows() // stands in for the sidecar
	sidecar := agent.start(nil)
	defer closeServer(sidecar)
	agent.refuseManifests(
		&taskerv1.Problem{Path: "steps[1].depends_on[0]", Line: 12, Message: `unknown step "reserv"; did you mean "reserve"?`},
		&taskerv1.Problem{Path: "steps[2].retry.max_attempts", Line: 19, Message: "must be at least 1"},
	)

	c := client.New(client.Options{Addr: sidecar.URL})
	_, err := c.ApplyWorkflow(context.Background(), []byte("name: order-fulfilment\n..."))
	var invalid *client.ValidationError
	if errors.As(err, &invalid) {
		for _, p := range invalid.Problems {
			fmt.Println(p)
		}
	}
	// Output:
	// line 12: steps[1].depends_on[0]: unknown step "reserv"; did you mean "reserve"?
	// line 19: steps[2].retry.max_attempts: must be at least 1
}
