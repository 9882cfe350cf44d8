// Package natsbus is the NATS adapter of the bus, on JetStream so that
// messages are stored, confirmed on publish and acknowledged by consumers.
// With no URL it starts an embedded nats-server in the process, so a dev
// agent needs nothing else.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tasker-run/tasker/bus"
)

// Config configures the NATS bus.
type Config struct {
	// URL of an external NATS server with JetStream enabled
	// (nats://host:4222). Empty starts an embedded server.
	URL string
	// StoreDir is where the embedded server keeps its JetStream data.
	// Required when URL is empty.
	StoreDir string
	// Listen is the embedded server's client address (default
	// 127.0.0.1 on a free port).
	Listen string
	// Stream is the JetStream stream that holds subjects tasker.> (default
	// TASKER).
	Stream string
	// AckWait is how long a delivered, unacknowledged message waits before
	// it is delivered again (default 30s).
	AckWait time.Duration
	// NakDelay is how long a message a handler failed waits before it is
	// delivered again (default 1s).
	NakDelay time.Duration
	Logger   *slog.Logger
}

// streamDuplicates is the stream's de-duplication window: publishes of
// one ID inside it are dropped by the server, which absorbs most outbox
// retries.
const streamDuplicates = 2 * time.Minute

// idHeader carries Message.ID.
const idHeader = "Tasker-Id"

// Bus is a bus.Bus on NATS JetStream.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server // nil when connected to an external server
	nc     *nats.Conn
	js     jetstream.JetStream
	mu     sync.Mutex
	closed bool
	subs   []jetstream.ConsumeContext
	stream jetstream.Stream
	addMu  sync.Mutex // serializes AddSubjects' read-modify-write of the stream
}

var _ bus.Bus = (*Bus)(nil)

// RunServer starts a nats-server with JetStream in the process, storing in
// dir, listening on addr (host:port; port 0 picks a free one).
func RunServer(dir, addr string) (*server.Server, error) {
	if dir == "" {
		return nil, errors.New("natsbus: embedded server needs a StoreDir")
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("natsbus: listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsbus: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true, // the agent owns the process's signals
		NoLog:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsbus: embedded server not ready after 10s")
	}
	return s, nil
}

// New connects to cfg.URL, or starts an embedded server when it is empty.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Stream == "" {
		cfg.Stream = "TASKER"
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.NakDelay <= 0 {
		cfg.NakDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{cfg: cfg, log: log.With("bus", "nats")}
	url := cfg.URL
	if url == "" {
		s, err := RunServer(cfg.StoreDir, cfg.Listen)
		if err != nil {
			return nil, err
		}
		b.srv = s
		url = s.ClientURL()
	}
	nc, err := nats.Connect(url,
		nats.Name("tasker"),
		// Reconnect forever: the outbox retries publishes, and consumers
		// resume where their durable consumer stopped.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { b.log.Info("reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("natsbus: connect %s: %w", url, err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	b.js = js
	// Keep the subjects AddSubjects gave an existing stream: another
	// client connecting must not cut off the steps published to them.
	subjects := []string{"tasker.>"}
	if old, err := js.Stream(ctx, cfg.Stream); err == nil {
		oc := old.CachedInfo().Config
		if slices.Contains(oc.Subjects, subjects[0]) && oc.Storage == jetstream.FileStorage && oc.Duplicates == streamDuplicates {
			// Already as wanted. Updating it anyway would race the
			// consumers others create meanwhile: nats-server 2.15 reads
			// the store's config unlocked while an update writes it (the
			// race detector caught it in e2e).
			b.stream = old
			return b, nil
		}
		for _, s := range oc.Subjects {
			if s != subjects[0] {
				subjects = append(subjects, s)
			}
		}
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Stream,
		Subjects:   subjects,
		Storage:    jetstream.FileStorage,
		Duplicates: streamDuplicates,
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("natsbus: stream %s: %w", cfg.Stream, err)
	}
	b.stream = st
	return b, nil
}

// AddSubjects makes the stream also store subjects outside tasker.>: the
// subjects of event-driven steps (transport: bus), which each workflow
// chooses. JetStream refuses a publish to a subject no stream stores, and
// a consumer filtering on one. Subjects the stream stores already are left
// as they are, so calling it again is cheap and safe.
func (b *Bus) AddSubjects(ctx context.Context, subjects ...string) error {
	for _, s := range subjects {
		if err := bus.ValidSubject(s); err != nil {
			return err
		}
	}
	b.addMu.Lock()
	defer b.addMu.Unlock()
	info, err := b.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("natsbus: stream %s: %w", b.cfg.Stream, err)
	}
	cfg := info.Config
	changed := false
	for _, s := range subjects {
		covered := false
		for _, have := range cfg.Subjects {
			covered = covered || bus.Match(have, s)
		}
		if !covered {
			cfg.Subjects = append(cfg.Subjects, s)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("natsbus: add subjects %v to stream %s: %w", subjects, b.cfg.Stream, err)
	}
	return nil
}

// ClientURL is the URL the bus is connected to (the embedded server's when
// it runs one), for other processes to connect.
func (b *Bus) ClientURL() string { return b.nc.ConnectedUrl() }

// Publish publishes m and waits for JetStream's ack.
func (b *Bus) Publish(ctx context.Context, m bus.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if b.isClosed() {
		return bus.ErrClosed
	}
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	for k, v := range m.Headers {
		msg.Header.Set(k, v)
	}
	msg.Header.Set(idHeader, m.ID)
	// The server drops a repeated Nats-Msg-Id inside the stream's duplicate
	// window; it is keyed by subject too because a dead letter keeps the ID
	// of the event it carries.
	if _, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.Subject+" "+m.ID)); err != nil {
		return fmt.Errorf("natsbus: publish %s to %s: %w", m.ID, m.Subject, err)
	}
	return nil
}

// Subscribe consumes through a durable pull consumer named after group.
func (b *Bus) Subscribe(ctx context.Context, pattern, group string, h bus.Handler) error {
	if err := bus.ValidSubscription(pattern, group); err != nil {
		return err
	}
	if b.isClosed() {
		return bus.ErrClosed
	}
	cons, err := b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       durableName(group),
		FilterSubject: pattern,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("natsbus: consumer %s: %w", group, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		m := bus.Message{Subject: msg.Subject(), Data: msg.Data()}
		for k := range msg.Headers() {
			switch k {
			case idHeader:
				m.ID = msg.Headers().Get(k)
				continue
			case jetstream.MsgIDHeader:
				continue
			}
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[k] = msg.Headers().Get(k)
		}
		if err := h(ctx, m); err != nil {
			b.log.Debug("handler failed, redelivering", "id", m.ID, "err", err)
			_ = msg.NakWithDelay(b.cfg.NakDelay)
			return
		}
		if err := msg.Ack(); err != nil {
			// Unacknowledged means delivered again after AckWait.
			b.log.Warn("ack failed", "id", m.ID, "err", err)
		}
	},
		// Short pulls with heartbeats notice a restarted server quickly.
		jetstream.PullExpiry(5*time.Second),
		jetstream.PullHeartbeat(time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			b.log.Debug("consume", "group", group, "err", err)
		}),
	)
	if err != nil {
		return fmt.Errorf("natsbus: consume %s: %w", group, err)
	}
	b.mu.Lock()
	b.subs = append(b.subs, cc)
	b.mu.Unlock()
	context.AfterFunc(ctx, cc.Stop)
	return nil
}

// Close stops the subscriptions, drains the connection and stops the
// embedded server if there is one.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := b.subs
	b.mu.Unlock()
	for _, cc := range subs {
		cc.Stop()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	b.shutdownServer()
	return nil
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// durableName maps a group to a consumer name JetStream accepts.
func durableName(group string) string {
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(group)
}
