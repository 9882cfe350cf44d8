// Package amqpbus is the RabbitMQ adapter of the bus (AMQP 0-9-1,
// amqp091-go): messages go to a durable topic exchange with the subject as
// routing key, persistent and with publisher confirms; each subscription
// group is a durable queue bound with the pattern, consumed with manual
// acks. The library does not reconnect, so this package does: a publish
// redials after a broken connection and a consumer redials with backoff.
package amqpbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/internal/sleep"
)

// Config configures the RabbitMQ bus.
type Config struct {
	// URL is amqp://user:pass@host:5672/vhost.
	URL string
	// Exchange is the topic exchange (default "tasker").
	Exchange string
	// Prefetch bounds the unacknowledged deliveries per consumer (default 64).
	Prefetch int
	// RetryDelay is how long a message a handler failed waits before it is
	// requeued (default 1s).
	RetryDelay time.Duration
	// Publishers is the number of confirm channels, each on a connection of
	// its own, that concurrent publishes spread over (default 4): a channel
	// has one publish in flight at a time.
	Publishers int
	Logger     *slog.Logger
}

// Bus is a bus.Bus on RabbitMQ.
type Bus struct {
	cfg Config
	log *slog.Logger

	pubs []*publisher
	next atomic.Uint32

	ctx    context.Context // cancelled by Close, stops the consumers
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// publisher is one confirm channel. Its lock is held from publish to
// confirm, which keeps the confirm of a publish unambiguous.
type publisher struct {
	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

func (p *publisher) resetLocked() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.conn, p.ch = nil, nil
}

// New returns a bus for cfg.URL. It dials lazily, so it succeeds while the
// broker is down.
func New(_ context.Context, cfg Config) (*Bus, error) {
	if cfg.URL == "" {
		return nil, errors.New("amqpbus: no URL")
	}
	if cfg.Exchange == "" {
		cfg.Exchange = "tasker"
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 64
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Publishers <= 0 {
		cfg.Publishers = 4
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{cfg: cfg, log: log.With("bus", "amqp"), ctx: ctx, cancel: cancel}
	for range cfg.Publishers {
		b.pubs = append(b.pubs, &publisher{})
	}
	return b, nil
}

func (b *Bus) dial() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(b.cfg.URL, amqp.Config{
		Dial:      amqp.DefaultDial(2 * time.Second),
		Heartbeat: 5 * time.Second,
		Properties: amqp.Table{
			"connection_name": "tasker",
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("amqpbus: dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("amqpbus: channel: %w", err)
	}
	if err := ch.ExchangeDeclare(b.cfg.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("amqpbus: declare exchange %s: %w", b.cfg.Exchange, err)
	}
	return conn, ch, nil
}

// Publish publishes m as a persistent message and waits for the broker's
// confirm. A broken connection is dropped and the next publish redials.
func (b *Bus) Publish(ctx context.Context, m bus.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	p := b.pubs[int(b.next.Add(1))%len(b.pubs)]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil || p.ch.IsClosed() {
		p.resetLocked()
		conn, ch, err := b.dial()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			conn.Close()
			return fmt.Errorf("amqpbus: confirm mode: %w", err)
		}
		p.conn, p.ch = conn, ch
	}
	headers := amqp.Table{}
	for k, v := range m.Headers {
		headers[k] = v
	}
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, b.cfg.Exchange, m.Subject, false, false, amqp.Publishing{
		MessageId:    m.ID,
		Headers:      headers,
		Body:         m.Data,
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
	})
	if err != nil {
		p.resetLocked()
		return fmt.Errorf("amqpbus: publish %s to %s: %w", m.ID, m.Subject, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		// A confirm that never came leaves the channel's sequence in an
		// unknown state: start over on a new one.
		p.resetLocked()
		return fmt.Errorf("amqpbus: confirm %s: %w", m.ID, err)
	}
	if !ok {
		return fmt.Errorf("amqpbus: broker nacked %s", m.ID)
	}
	return nil
}

// Subscribe declares the durable queue of group, binds it with pattern and
// consumes it on a connection of its own. It returns once the queue is bound,
// so what is published after it returns is kept for the group.
func (b *Bus) Subscribe(ctx context.Context, pattern, group string, h bus.Handler) error {
	if err := bus.ValidSubscription(pattern, group); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	key := routingPattern(pattern)
	conn, deliveries, err := b.setupConsumer(group, key)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer stop()
		defer cancel()
		backoff := 100 * time.Millisecond
		for {
			b.consume(cctx, conn, deliveries, h)
			conn.Close()
			if cctx.Err() != nil {
				return
			}
			for {
				if !sleep.For(cctx, backoff) {
					return
				}
				backoff = min(2*backoff, 2*time.Second)
				conn, deliveries, err = b.setupConsumer(group, key)
				if err == nil {
					b.log.Info("consumer reconnected", "group", group)
					backoff = 100 * time.Millisecond
					break
				}
				b.log.Debug("consumer redial failed", "group", group, "err", err)
			}
		}
	}()
	return nil
}

func (b *Bus) setupConsumer(group, key string) (*amqp.Connection, <-chan amqp.Delivery, error) {
	conn, ch, err := b.dial()
	if err != nil {
		return nil, nil, err
	}
	fail := func(what string, err error) (*amqp.Connection, <-chan amqp.Delivery, error) {
		conn.Close()
		return nil, nil, fmt.Errorf("amqpbus: %s for %s: %w", what, group, err)
	}
	if err := ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return fail("qos", err)
	}
	q := queueName(group)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return fail("declare queue", err)
	}
	if err := ch.QueueBind(q, key, b.cfg.Exchange, false, nil); err != nil {
		return fail("bind queue", err)
	}
	deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	return conn, deliveries, nil
}

// consume handles deliveries until the channel closes or ctx ends.
func (b *Bus) consume(ctx context.Context, conn *amqp.Connection, deliveries <-chan amqp.Delivery, h bus.Handler) {
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			m := bus.Message{ID: d.MessageId, Subject: d.RoutingKey, Data: d.Body}
			for k, v := range d.Headers {
				if m.Headers == nil {
					m.Headers = map[string]string{}
				}
				m.Headers[k] = fmt.Sprint(v)
			}
			if err := h(ctx, m); err != nil {
				b.log.Debug("handler failed, requeueing", "id", m.ID, "err", err)
				// The delay keeps a message that keeps failing from
				// spinning; an unacknowledged delivery is requeued by the
				// broker anyway if the connection drops meanwhile.
				sleep.For(ctx, b.cfg.RetryDelay)
				_ = d.Nack(false, true)
				continue
			}
			if err := d.Ack(false); err != nil {
				b.log.Warn("ack failed; the broker delivers it again", "id", m.ID, "err", err)
			}
		}
	}
}

// Close stops the consumers and the publishing connection.
func (b *Bus) Close() error {
	if b.ctx.Err() != nil {
		return nil
	}
	b.cancel()
	b.wg.Wait()
	for _, p := range b.pubs {
		p.mu.Lock()
		p.resetLocked()
		p.mu.Unlock()
	}
	return nil
}

// routingPattern turns a NATS-style pattern into an AMQP topic binding key:
// "*" is the same, ">" (one or more tokens) becomes "#" (zero or more), which
// differs only for the bare prefix, never a subject of its own here.
func routingPattern(p string) string {
	if strings.HasSuffix(p, ".>") {
		return strings.TrimSuffix(p, ">") + "#"
	}
	if p == ">" {
		return "#"
	}
	return p
}

// queueName is the durable queue of a group.
func queueName(group string) string { return "tasker." + group }
