package natsbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/internal/bustest"
	"github.com/tasker-run/tasker/bus/natsbus"
)

// A batch is confirmed as a whole prefix: everything before the first
// message that could not go is on the stream, nothing after it.
func TestPublishBatch(t *testing.T) {
	ctx := context.Background()
	b, err := natsbus.New(ctx, natsbus.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	col := bustest.NewCollector()
	if err := b.Subscribe(ctx, "tasker.events.>", "batch", col.Handle); err != nil {
		t.Fatal(err)
	}
	var ms []bus.Message
	var ids []string
	for i := range 200 {
		id := fmt.Sprintf("b%d", i)
		ids = append(ids, id)
		ms = append(ms, bus.Message{ID: id, Subject: bus.EventSubject("step.completed"), Data: []byte(id)})
	}
	n, err := b.PublishBatch(ctx, ms)
	if err != nil || n != len(ms) {
		t.Fatalf("PublishBatch = %d, %v; want %d, nil", n, err, len(ms))
	}
	col.WaitFor(t, ids, 10*time.Second)

	bad := []bus.Message{
		{ID: "ok1", Subject: bus.EventSubject("task.created")},
		{ID: "", Subject: bus.EventSubject("task.created")}, // no id
		{ID: "never", Subject: bus.EventSubject("task.created")},
	}
	n, err = b.PublishBatch(ctx, bad)
	if err == nil || n != 1 {
		t.Fatalf("PublishBatch with a bad second message = %d, %v; want 1 and an error", n, err)
	}
}
