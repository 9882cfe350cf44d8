package natsbus_test

import (
	"context"
	"testing"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/bus/natsbus"
)

// TestAddSubjects: a subject outside tasker.> is refused until added;
// once added it carries messages, and a second client connecting keeps it.
func TestAddSubjects(t *testing.T) {
	ctx := context.Background()
	b, err := natsbus.New(ctx, natsbus.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const subject = "billing.invoice.create"
	msg := bus.Message{ID: "r1", Subject: subject, Data: []byte("{}")}
	if err := b.Publish(ctx, msg); err == nil {
		t.Fatal("publish to a subject no stream stores succeeded")
	}
	for range 2 { // the second call changes nothing
		if err := b.AddSubjects(ctx, subject, "tasker.events.x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddSubjects(ctx, "billing.*"); err == nil {
		t.Error("a wildcard subject was added")
	}
	// Another client (a service, another server) connects: the stream
	// keeps the subject.
	other, err := natsbus.New(ctx, natsbus.Config{URL: b.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	col := bustest.NewCollector()
	if err := other.Subscribe(ctx, subject, "svc", col.Handle); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	col.WaitFor(t, []string{"r1"}, bustest.DefaultWait)
}
