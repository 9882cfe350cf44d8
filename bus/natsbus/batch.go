package natsbus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tasker-run/tasker/bus"
)

var _ bus.BatchPublisher = (*Bus)(nil)

// PublishBatch publishes ms with every ack awaited at once instead of one
// round trip each: the outbox drains a backlog this way.
func (b *Bus) PublishBatch(ctx context.Context, ms []bus.Message) (int, error) {
	if b.isClosed() {
		return 0, bus.ErrClosed
	}
	futures := make([]jetstream.PubAckFuture, 0, len(ms))
	var sendErr error
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			sendErr = err
			break
		}
		msg := nats.NewMsg(m.Subject)
		msg.Data = m.Data
		for k, v := range m.Headers {
			msg.Header.Set(k, v)
		}
		msg.Header.Set(idHeader, m.ID)
		f, err := b.js.PublishMsgAsync(msg, jetstream.WithMsgID(m.Subject+" "+m.ID))
		if err != nil {
			sendErr = fmt.Errorf("natsbus: publish %s to %s: %w", m.ID, m.Subject, err)
			break
		}
		futures = append(futures, f)
	}
	// The confirmed prefix counts: the outbox keeps the rest, in order.
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, fmt.Errorf("natsbus: publish %s to %s: %w", ms[i].ID, ms[i].Subject, err)
		case <-ctx.Done():
			return i, fmt.Errorf("natsbus: publish %s: %w", ms[i].ID, ctx.Err())
		}
	}
	return len(futures), sendErr
}
