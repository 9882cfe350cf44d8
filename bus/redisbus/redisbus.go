// Package redisbus is the Redis Streams adapter of the bus: every subject
// goes to one stream (XADD), each subscription group is a consumer group
// (XREADGROUP) that filters subjects by pattern, and a handler's success is
// an XACK.
package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/internal/sleep"
)

// Config configures the Redis Streams bus.
type Config struct {
	// Addr is host:port of the Redis server.
	Addr     string
	Username string
	Password string
	DB       int
	// Stream is the key of the stream that holds every subject (default
	// "tasker").
	Stream string
	// MaxLen trims the stream approximately to this many entries on each
	// XADD (default 1000000; negative keeps everything). Trimming drops
	// entries a slow group has not read yet, so size it for the longest
	// consumer outage.
	MaxLen int64
	// RetryDelay is how long a message a handler failed waits before it is
	// delivered again (default 1s).
	RetryDelay time.Duration
	// ClaimIdle is how long a message may stay unacknowledged by a consumer
	// before another member of its group claims it (default 30s): that is
	// how the messages of a crashed consumer are redelivered.
	ClaimIdle time.Duration
	Logger    *slog.Logger
}

// Bus is a bus.Bus on Redis Streams.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	rdb    *redis.Client
	ctx    context.Context // cancelled by Close, stops the consumers
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// New connects to the server. It does not fail when the server is down: the
// client dials on each command, so publishes fail (and the outbox retries)
// until it is back.
func New(_ context.Context, cfg Config) (*Bus, error) {
	if cfg.Addr == "" {
		return nil, errors.New("redisbus: no address")
	}
	if cfg.Stream == "" {
		cfg.Stream = "tasker"
	}
	if cfg.MaxLen == 0 {
		cfg.MaxLen = 1000000
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.ClaimIdle <= 0 {
		cfg.ClaimIdle = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
		// Fail fast while the server is down: the outbox and the consumer
		// loops do their own retrying with backoff.
		MaxRetries:  1,
		DialTimeout: 2 * time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	return &Bus{cfg: cfg, log: log.With("bus", "redis"), rdb: rdb, ctx: ctx, cancel: cancel}, nil
}

// Publish appends m to the stream; the XADD reply is the confirmation.
func (b *Bus) Publish(ctx context.Context, m bus.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	vals := []any{"id", m.ID, "subject", m.Subject, "data", m.Data}
	for k, v := range m.Headers {
		vals = append(vals, "h:"+k, v)
	}
	args := &redis.XAddArgs{Stream: b.cfg.Stream, Values: vals}
	if b.cfg.MaxLen > 0 {
		args.MaxLen, args.Approx = b.cfg.MaxLen, true
	}
	if err := b.rdb.XAdd(ctx, args).Err(); err != nil {
		return fmt.Errorf("redisbus: publish %s to %s: %w", m.ID, m.Subject, err)
	}
	return nil
}

// Subscribe joins consumer group group (created from the start of the
// stream if new) and delivers the messages matching pattern to h.
func (b *Bus) Subscribe(ctx context.Context, pattern, group string, h bus.Handler) error {
	if err := bus.ValidSubscription(pattern, group); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return bus.ErrClosed
	}
	if err := b.createGroup(ctx, group); err != nil {
		return err
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	c := &consumer{b: b, pattern: pattern, group: group, name: group + "-" + hex.EncodeToString(suffix[:]), h: h}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer stop()
		defer cancel()
		c.run(cctx)
	}()
	return nil
}

// createGroup creates the group at the start of the stream ("0"), so that a
// group created after a server lost its data still reads everything
// published since.
func (b *Bus) createGroup(ctx context.Context, group string) error {
	err := b.rdb.XGroupCreateMkStream(ctx, b.cfg.Stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("redisbus: create group %s: %w", group, err)
	}
	return nil
}

// Close stops the consumers and closes the client.
func (b *Bus) Close() error {
	if b.ctx.Err() != nil {
		return nil
	}
	b.cancel()
	b.wg.Wait()
	if err := b.rdb.Close(); err != nil {
		return fmt.Errorf("redisbus: close: %w", err)
	}
	return nil
}

type consumer struct {
	b       *Bus
	pattern string
	group   string
	name    string
	h       bus.Handler
}

func (c *consumer) run(ctx context.Context) {
	b := c.b
	backoff := 100 * time.Millisecond
	// Reading from "0" returns this consumer's own pending entries: the
	// ones its handler failed. ">" returns new ones.
	readPending := false
	lastClaim := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastClaim) > b.cfg.ClaimIdle/2 {
			lastClaim = time.Now()
			c.claim(ctx)
		}
		start := ">"
		if readPending {
			start = "0"
		}
		res, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: c.group, Consumer: c.name, Streams: []string{b.cfg.Stream, start},
			Count: 64, Block: time.Second,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				// The server came back without our group (no persistence).
				_ = b.createGroup(ctx, c.group)
			}
			b.log.Debug("read failed", "group", c.group, "err", err, "retry_in", backoff)
			sleep.For(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		failed := false
		n := 0
		for _, s := range res {
			for _, xm := range s.Messages {
				n++
				if !c.handle(ctx, xm) {
					failed = true
				}
			}
		}
		switch {
		case failed:
			readPending = true
			sleep.For(ctx, b.cfg.RetryDelay)
		case readPending && n == 0:
			readPending = false
		}
	}
}

// handle delivers one entry and acknowledges it unless the handler failed.
// Entries of other subjects are acknowledged without delivery.
func (c *consumer) handle(ctx context.Context, xm redis.XMessage) bool {
	m := decode(xm)
	if bus.Match(c.pattern, m.Subject) {
		if err := c.h(ctx, m); err != nil {
			c.b.log.Debug("handler failed, redelivering", "id", m.ID, "err", err)
			return false
		}
	}
	if err := c.b.rdb.XAck(ctx, c.b.cfg.Stream, c.group, xm.ID).Err(); err != nil {
		// Still pending: delivered again by the pending read or a claim.
		c.b.log.Warn("ack failed", "id", m.ID, "err", err)
		return false
	}
	return true
}

// claim takes over entries other consumers of the group left pending for
// longer than ClaimIdle (a crashed agent's) and handles them.
func (c *consumer) claim(ctx context.Context) {
	msgs, _, err := c.b.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: c.b.cfg.Stream, Group: c.group, Consumer: c.name,
		MinIdle: c.b.cfg.ClaimIdle, Start: "0", Count: 64,
	}).Result()
	if err != nil {
		return
	}
	for _, xm := range msgs {
		c.handle(ctx, xm)
	}
}

func decode(xm redis.XMessage) bus.Message {
	var m bus.Message
	for k, v := range xm.Values {
		s, _ := v.(string)
		switch {
		case k == "id":
			m.ID = s
		case k == "subject":
			m.Subject = s
		case k == "data":
			m.Data = []byte(s)
		case strings.HasPrefix(k, "h:"):
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[k[2:]] = s
		}
	}
	return m
}
