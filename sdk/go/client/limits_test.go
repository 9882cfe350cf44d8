package client_test

import (
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tasker-run/tasker/sdk/go/client"
)

// TestStartTaskThrottled: a StartTask the sidecar refuses for a limit is
// returned once, not retried behind the caller's back, with its code and
// the wait the sidecar asked for.
func TestStartTaskThrottled(t *testing.T) {
	c, f := newClient(t)
	cerr := connect.NewError(connect.CodeResourceExhausted, errors.New("the client at 127.0.0.1 sent more than 10 requests per second"))
	d, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(250 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(d)
	f.startErr = cerr

	_, _, err = c.StartTask(ctxFor(t), "order-fulfilment", nil)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("StartTask = %v, want ResourceExhausted", err)
	}
	if got := client.RetryAfter(err); got != 250*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want the sidecar's 250ms", got)
	}
	f.mu.Lock()
	n := len(f.starts)
	f.mu.Unlock()
	if n != 1 {
		t.Fatalf("StartTask sent %d times, want once", n)
	}
	if got := client.RetryAfter(errors.New("other")); got != 0 {
		t.Fatalf("RetryAfter of an error without a hint = %v, want 0", got)
	}
}
