// Package kafkabus is the Kafka adapter of the bus (franz-go): every subject
// goes to one topic, keyed by subject so that the events of one type keep
// their order; each subscription group is a Kafka consumer group that
// filters subjects by pattern and commits an offset only after the handler
// succeeded.
package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/internal/sleep"
)

// Config configures the Kafka bus.
type Config struct {
	Brokers []string
	// Topic holds every subject (default "tasker").
	Topic string
	// Partitions of the topic when the bus creates it (default 1: one
	// consumer per group does the work, in publish order).
	Partitions int32
	// RetryDelay is how long a consumer waits before it runs a failed
	// handler again (default 1s). Kafka has no per-message redelivery: the
	// partition waits until the handler succeeds, so a handler should
	// dead-letter what it can never process.
	RetryDelay time.Duration
	// Opts are added to every client (TLS, SASL...).
	Opts   []kgo.Opt
	Logger *slog.Logger
}

// Bus is a bus.Bus on Kafka.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	prod   *kgo.Client
	ctx    context.Context // cancelled by Close, stops the consumers
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// New creates the producer and the topic (if missing).
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafkabus: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = "tasker"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 1
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		// acks=all with the idempotent producer (the default): a confirmed
		// record is on every in-sync replica and a retried batch is not
		// written twice.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	}, cfg.Opts...)
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: client: %w", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	b := &Bus{cfg: cfg, log: log.With("bus", "kafka"), prod: prod, ctx: cctx, cancel: cancel}
	if err := b.createTopic(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// createTopic creates the topic up front: a consumer group subscribed to a
// topic that does not exist yet only notices it on a later metadata refresh.
func (b *Bus) createTopic(ctx context.Context) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = b.cfg.Topic
	t.NumPartitions = b.cfg.Partitions
	t.ReplicationFactor = -1 // the broker's default
	req.Topics = append(req.Topics, t)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(ctx, b.prod)
	if err != nil {
		return fmt.Errorf("kafkabus: create topic %s: %w", b.cfg.Topic, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("kafkabus: create topic %s: %w", b.cfg.Topic, err)
		}
	}
	return nil
}

// Publish produces m and waits for the brokers' ack.
func (b *Bus) Publish(ctx context.Context, m bus.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	r := &kgo.Record{Key: []byte(m.Subject), Value: m.Data, Headers: []kgo.RecordHeader{
		{Key: "tasker-id", Value: []byte(m.ID)},
		{Key: "tasker-subject", Value: []byte(m.Subject)},
	}}
	for k, v := range m.Headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "h:" + k, Value: []byte(v)})
	}
	if err := b.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("kafkabus: publish %s to %s: %w", m.ID, m.Subject, err)
	}
	return nil
}

// Subscribe joins consumer group group (from the start of the topic if it
// has no committed offset) with a client of its own.
func (b *Bus) Subscribe(ctx context.Context, pattern, group string, h bus.Handler) error {
	if err := bus.ValidSubscription(pattern, group); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(b.cfg.Brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(b.cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Offsets are committed by hand after the handler succeeded, and a
		// rebalance waits for the records in hand to be finished.
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, b.cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkabus: consumer %s: %w", group, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer stop()
		defer cancel()
		defer cl.Close()
		b.consume(cctx, cl, pattern, group, h)
	}()
	return nil
}

func (b *Bus) consume(ctx context.Context, cl *kgo.Client, pattern, group string, h bus.Handler) {
	// With BlockRebalanceOnPoll, leaving the group on Close waits for the
	// rebalance the last poll blocked: allow it on every way out.
	defer cl.AllowRebalance()
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			b.log.Debug("fetch", "group", group, "topic", topic, "partition", p, "err", err)
		})
		var done []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			if ctx.Err() != nil {
				return
			}
			m := decode(r)
			if bus.Match(pattern, m.Subject) {
				for {
					err := h(ctx, m)
					if err == nil {
						break
					}
					b.log.Debug("handler failed, retrying", "id", m.ID, "err", err)
					if !sleep.For(ctx, b.cfg.RetryDelay) {
						return
					}
				}
			}
			done = append(done, r)
		})
		if len(done) > 0 {
			// Commit even when ctx ended, for what was handled: the
			// uncommitted rest is delivered again to the next member.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := cl.CommitRecords(cctx, done...); err != nil {
				b.log.Warn("commit failed; records will be delivered again", "group", group, "err", err)
			}
			cancel()
		}
		cl.AllowRebalance()
	}
}

func decode(r *kgo.Record) bus.Message {
	m := bus.Message{Data: r.Value}
	for _, hd := range r.Headers {
		switch {
		case hd.Key == "tasker-id":
			m.ID = string(hd.Value)
		case hd.Key == "tasker-subject":
			m.Subject = string(hd.Value)
		case strings.HasPrefix(hd.Key, "h:"):
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[hd.Key[2:]] = string(hd.Value)
		}
	}
	return m
}

// Close stops the consumers and the producer.
func (b *Bus) Close() error {
	if b.ctx.Err() != nil {
		return nil
	}
	b.cancel()
	b.wg.Wait()
	b.prod.Close()
	return nil
}
