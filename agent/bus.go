package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/bus/natsbus"
	"github.com/tasker-run/tasker/consensus"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
)

// busURL is the bus this agent uses: -bus, with the embedded NATS server
// the default of a -dev agent. "" means none.
func (a *Agent) busURL() string {
	switch {
	case a.cfg.Bus == "off":
		return ""
	case a.cfg.Bus == "" && a.cfg.Dev:
		return "embedded"
	}
	return a.cfg.Bus
}

// openBus connects a server to its bus. Clients have none: only servers
// publish events and run bus steps.
func (a *Agent) openBus(ctx context.Context, dataDir string) error {
	url := a.busURL()
	if url == "" || !a.cfg.Server {
		return nil
	}
	log := a.log.With("component", "bus")
	var (
		b   bus.Bus
		err error
	)
	if url == "embedded" {
		b, err = natsbus.New(ctx, natsbus.Config{StoreDir: filepath.Join(dataDir, "nats"), Listen: a.cfg.BusListen, Logger: log})
	} else {
		b, err = busurl.Open(ctx, url, dataDir, log)
	}
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	a.bus = b
	if err := a.openPublisher(dataDir); err != nil {
		_ = b.Close()
		a.bus = nil
		return fmt.Errorf("bus outbox: %w", err)
	}
	return nil
}

// closeBus closes the bus after Raft stopped applying; errors are added to
// errs when it is not nil.
func (a *Agent) closeBus(errs *[]error) {
	if a.pub != nil {
		if err := a.pub.close(); err != nil && errs != nil {
			*errs = append(*errs, fmt.Errorf("outbox: %w", err))
		}
	}
	if a.bus == nil {
		return
	}
	if err := a.bus.Close(); err != nil && errs != nil {
		*errs = append(*errs, fmt.Errorf("bus: %w", err))
	}
}

// Outbox key positions. A task event keeps its place in the log, (index,
// position); its dead-letter copy on tasker.dlq sits beside it, and events
// this server observed itself (breakers, members, leadership) sort after
// the log's events of the index current when they happened. The replicated
// cursor trims the first two kinds only: the others exist on one server.
const (
	posDLQ   = uint64(1) << 61
	posLocal = uint64(1) << 62
)

// cursorEvery is how often a leader records how far its bus got. A new
// leader republishes at most this much (consumers de-duplicate on ids).
const cursorEvery = time.Second

// publisher feeds a server's outbox with every event it applies or
// observes, and drains the outbox to the bus while the server leads.
//
// Every server keeps the events the bus has not confirmed, not only the
// leader: a new leader then publishes what the old one could not, so no
// committed event is lost across leader changes. The leader records its
// progress in the log (BusCursor) and every server drops what it covers.
type publisher struct {
	a   *Agent
	ob  *bus.Outbox
	log *slog.Logger

	mu     sync.Mutex
	queue  []ringEvent
	trimTo uint64
	wake   chan struct{}
	// flushMu keeps one writer at a time, so appends and trims land in the
	// order they were observed.
	flushMu sync.Mutex

	published atomic.Uint64 // highest log index this server's drains confirmed
	count     atomic.Int64  // messages this server's drains confirmed
	localSeq  atomic.Uint64
}

// openPublisher opens the outbox of a server with a bus and taps the event
// ring. It must run before Raft opens: replaying the log feeds it.
func (a *Agent) openPublisher(dataDir string) error {
	if a.bus == nil {
		return nil
	}
	p := &publisher{a: a, log: a.log.With("component", "outbox"), wake: make(chan struct{}, 1)}
	// The first start of a server: Raft has not created the dir yet.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data-dir: %w", err)
	}
	ob, err := bus.OpenOutbox(filepath.Join(dataDir, "outbox.db"), a.bus, bus.OutboxOptions{
		MaxEvents: a.cfg.BusOutboxMax,
		// The Raft log is the events' durable copy: a crash replays it
		// into the outbox, and flush syncs before a snapshot lets Raft
		// drop entries. An fsync per append would only double Raft's.
		NoSync:      true,
		Logger:      p.log,
		OnPublished: p.onPublished,
	})
	if err != nil {
		return err
	}
	p.ob = ob
	if err := p.instrument(); err != nil {
		_ = ob.Close()
		return err
	}
	a.pub = p
	a.events.tap = p.tap
	a.fsm.SetBeforeSnapshot(p.flushSynced)
	return nil
}

// instrument registers the outbox's metrics, read when scraped.
func (p *publisher) instrument() error {
	m := p.a.tel.Meter
	backlog, err1 := m.Int64ObservableGauge("tasker.bus.outbox.backlog", metric.WithUnit("{event}"),
		metric.WithDescription("Events this server holds that the bus has not confirmed."))
	dropped, err2 := m.Int64ObservableCounter("tasker.bus.outbox.dropped", metric.WithUnit("{event}"),
		metric.WithDescription("Events refused because the outbox was full (bus-outbox-max): they never reach the bus."))
	published, err3 := m.Int64ObservableCounter("tasker.bus.published", metric.WithUnit("{message}"),
		metric.WithDescription("Messages the bus confirmed, published by this server while it led."))
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(backlog, int64(p.ob.Backlog()))
		o.ObserveInt64(dropped, int64(p.ob.Dropped()))
		o.ObserveInt64(published, p.count.Load())
		return nil
	}, backlog, dropped, published)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// tap queues events as the ring records them. It runs under the ring's
// lock, often on Raft's apply goroutine: it only appends to a slice.
func (p *publisher) tap(evs []ringEvent) {
	p.mu.Lock()
	for _, e := range evs {
		// What this server saw itself is the cluster's news only when it
		// leads: every server sees a member fail. (Such events come after
		// start, once a.node is set; the log's come from replay too.)
		if e.index == 0 && !p.a.node.IsLeader() {
			continue
		}
		p.queue = append(p.queue, e)
	}
	p.mu.Unlock()
	p.signal()
}

// observe takes a cursor the leader committed.
func (p *publisher) observe(fx *consensus.Effects) {
	if fx.BusCursor == 0 {
		return
	}
	p.mu.Lock()
	p.trimTo = max(p.trimTo, fx.BusCursor)
	p.mu.Unlock()
	p.signal()
}

func (p *publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run writes queued events to the outbox until ctx ends, then once more.
func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			if err := p.flush(); err != nil {
				p.log.Warn("outbox flush at shutdown", "err", err)
			}
			return
		case <-p.wake:
		}
		if err := p.flush(); err != nil {
			p.log.Warn("outbox append failed", "err", err)
		}
	}
}

// flush appends the queued events in one transaction and applies the
// latest cursor. Before a snapshot it runs on Raft's apply goroutine, so
// everything applied so far is on disk before the log can be compacted.
func (p *publisher) flush() error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	evs, trimTo := p.queue, p.trimTo
	p.queue, p.trimTo = nil, 0
	p.mu.Unlock()
	if len(evs) > 0 {
		cursor, cluster := p.a.state.BusCursor(), p.a.state.ClusterID()
		ms := make([]bus.KeyedMessage, 0, len(evs))
		for i := range evs {
			e := &evs[i]
			if e.index != 0 && e.index <= cursor {
				continue // replayed after a restart, and already on the bus
			}
			ms = append(ms, p.messages(e, cluster)...)
		}
		if err := p.ob.AppendKeyed(context.Background(), ms); err != nil {
			// Full: Dropped counts them (tasker.bus.dropped). Anything else
			// is a disk error the next flush may not have.
			if !errors.Is(err, bus.ErrOutboxFull) {
				return err
			}
			p.log.Warn("outbox full: events dropped; is the bus reachable?", "err", err, "backlog", p.ob.Backlog())
		}
	}
	if trimTo > 0 {
		if _, err := p.ob.TrimThrough(trimTo, posLocal); err != nil {
			return err
		}
	}
	return nil
}

// flushSynced is flush for a snapshot: what it wrote must survive a
// machine crash, since Raft may drop the log entries it came from.
func (p *publisher) flushSynced() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.ob.Sync()
}

// envelope is the body of an event on the bus (docs/events.md).
type envelope struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Time          time.Time `json:"time"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	TraceID       string    `json:"trace_id,omitempty"`
	Cluster       string    `json:"cluster,omitempty"`
	Payload       any       `json:"payload"`
}

// messages are the bus messages of one event: itself, and for a dead
// letter a copy on tasker.dlq.
func (p *publisher) messages(e *ringEvent, cluster string) []bus.KeyedMessage {
	key := bus.MakeKey(e.index, uint64(e.pos))
	if e.index == 0 {
		key = bus.MakeKey(p.a.node.AppliedIndex(), posLocal+p.localSeq.Add(1))
	}
	body, err := json.Marshal(envelope{
		ID: e.id, Type: e.typ, Time: e.at, CorrelationID: e.task, TraceID: e.trace,
		Cluster: cluster, Payload: e.payload,
	})
	if err != nil {
		p.log.Error("event not encodable; not published", "event", e.id, "type", e.typ, "err", err)
		return nil
	}
	headers := map[string]string{"type": e.typ}
	if e.task != "" {
		headers["correlation_id"] = e.task
	}
	if e.trace != "" {
		headers["trace_id"] = e.trace
	}
	out := []bus.KeyedMessage{{Key: key, Message: bus.Message{ID: e.id, Subject: bus.EventSubject(e.typ), Data: body, Headers: headers}}}
	if e.typ == consensus.EventStepDeadLettered && e.index != 0 {
		// Its own id: a stream that de-duplicates across subjects (NATS
		// JetStream) would otherwise drop one of the two. The dead letter's
		// id (tasker dlq show) is the event's, in the body and headers.
		dh := maps.Clone(headers)
		dh["dead_letter_id"] = e.id
		out = append(out, bus.KeyedMessage{Key: bus.MakeKey(e.index, posDLQ+uint64(e.pos)), Message: bus.Message{
			ID: e.id + ".dlq", Subject: bus.DLQSubject, Data: body, Headers: dh,
		}})
	}
	return out
}

// onPublished notes how far the log's events are on the bus.
func (p *publisher) onPublished(keys [][]byte) {
	p.count.Add(int64(len(keys)))
	for _, b := range keys {
		k, ok := bus.KeyOf(b)
		if !ok || k.Pos() >= posLocal {
			continue
		}
		for {
			cur := p.published.Load()
			if k.Index() <= cur || p.published.CompareAndSwap(cur, k.Index()) {
				break
			}
		}
	}
}

// lead drains the outbox to the bus and records the cursor while this
// server leads.
func (p *publisher) lead(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = p.ob.Run(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(cursorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pub := p.published.Load()
		if pub <= p.a.state.BusCursor() {
			continue
		}
		cmd := &fsmv1.Command{Kind: &fsmv1.Command_BusCursor{BusCursor: &fsmv1.BusCursor{Index: pub}}}
		if _, err := p.a.proposeLocal(ctx, cmd); err != nil && ctx.Err() == nil {
			p.log.Warn("bus cursor not recorded; a new leader would republish more", "index", pub, "err", err)
		}
	}
}

func (p *publisher) close() error {
	if err := p.flush(); err != nil {
		p.log.Warn("outbox flush at close", "err", err)
	}
	return p.ob.Close()
}

// BusAddr says where this server's bus is, for the start-up log line and
// for consumers: the embedded NATS server's client URL, or the configured
// URL without its password. "" when there is none.
func (a *Agent) BusAddr() string {
	if a.bus == nil {
		return ""
	}
	if nb, ok := a.bus.(*natsbus.Bus); ok && a.busURL() == "embedded" {
		return nb.ClientURL()
	}
	u, err := url.Parse(a.busURL())
	if err != nil {
		return ""
	}
	return u.Redacted()
}
