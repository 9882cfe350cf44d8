// Package client starts and watches Tasker tasks through the app's local
// sidecar, and applies workflows.
//
//	c := client.New(client.Options{}) // $TASKER_ADDR or http://127.0.0.1:7420
//	task, created, err := c.StartTask(ctx, "order-fulfilment", order,
//		client.IdempotencyKey("order-"+order.ID))
//	...
//	task, err = c.Wait(ctx, task.GetId())
//	if task.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE { ... }
//
// Tasks, workflows and events are the API's own types from package
// taskerv1: the SDK adds convenience (JSON encoding of inputs, typed
// errors, waiting), not a second data model. Errors keep their Connect
// code: use [connect.CodeOf] to tell NotFound from FailedPrecondition.
//
// Calls are not retried, except that [Client.Wait] re-opens its watch when
// the connection to the sidecar breaks. StartTask with an [IdempotencyKey]
// is safe to retry: the same key never starts a second task.
package client
