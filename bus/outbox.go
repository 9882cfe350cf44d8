package bus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tasker-run/tasker/internal/sleep"
)

// ErrOutboxFull is returned by Append when the outbox holds MaxEvents
// undelivered events: the event is refused (and counted by Dropped and
// OnDrop) rather than evicting an older one, so what was accepted is never
// lost.
var ErrOutboxFull = errors.New("bus: outbox full")

var outboxBucket = []byte("outbox")

// OutboxOptions tune an Outbox. The zero value is usable.
type OutboxOptions struct {
	// MaxEvents bounds the backlog (default 100000). At about 1 KiB an
	// event the default is some 100 MiB of disk.
	MaxEvents int
	// BatchSize is how many events one drain pass publishes before it
	// deletes them in a single transaction (default 64).
	BatchSize int
	// MinBackoff and MaxBackoff bound the retry delay after a failed
	// publish (defaults 100ms and 5s); it doubles with jitter in between.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one Publish so a backend that hangs is retried
	// like one that fails (default 10s).
	PublishTimeout time.Duration
	// NoSync skips fsync on Append: faster, but a machine crash can lose
	// the last events unless the caller can append them again (the agent
	// replays them from the Raft log, and calls Sync before a snapshot).
	NoSync bool
	// OnDrop, if set, is called for each event Append refuses (a metric hook).
	OnDrop func(Message)
	// OnPublished, if set, is called after the bus confirmed a batch and it
	// was deleted, with the keys of its events in order.
	OnPublished func(keys [][]byte)
	Logger      *slog.Logger
}

// Outbox is a bounded, durable queue of events in a bbolt file, drained to a
// Publisher by Run. Append only writes the local file, so a bus outage never
// blocks the caller; events stay on disk until the bus confirmed them.
type Outbox struct {
	db      *bolt.DB
	pub     Publisher
	opts    OutboxOptions
	log     *slog.Logger
	wake    chan struct{}
	backlog atomic.Int64
	dropped atomic.Uint64
	running sync.Mutex // one Run at a time keeps the order of the queue
}

type storedMessage struct {
	ID      string            `json:"id"`
	Subject string            `json:"subject"`
	Data    []byte            `json:"data,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// OpenOutbox opens (or creates) the outbox file at path, draining to pub.
func OpenOutbox(path string, pub Publisher, opts OutboxOptions) (*Outbox, error) {
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = 100000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 64
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	// Batch waits this long for more appends to share an fsync; bbolt's
	// 10ms default would be the latency of every lone append.
	db.MaxBatchDelay = time.Millisecond
	o := &Outbox{db: db, pub: pub, opts: opts, log: log.With("component", "outbox"), wake: make(chan struct{}, 1)}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(outboxBucket)
		if err != nil {
			return err
		}
		o.backlog.Store(int64(b.Stats().KeyN))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	return o, nil
}

// Append stores m durably for publication. It fails with ErrOutboxFull when
// the backlog is at MaxEvents.
func (o *Outbox) Append(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	val, err := json.Marshal(storedMessage(m))
	if err != nil {
		return fmt.Errorf("outbox: encode %s: %w", m.ID, err)
	}
	// The slot is reserved before the write so that concurrent appends
	// cannot overshoot the bound together.
	if o.backlog.Add(1) > int64(o.opts.MaxEvents) {
		o.backlog.Add(-1)
		o.dropped.Add(1)
		if o.opts.OnDrop != nil {
			o.opts.OnDrop(m)
		}
		return fmt.Errorf("append %s (backlog %d): %w", m.ID, o.opts.MaxEvents, ErrOutboxFull)
	}
	// Batch coalesces concurrent appends into one fsync.
	err = o.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(outboxBucket)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], seq)
		if err := b.Put(key[:], val); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		o.backlog.Add(-1)
		return fmt.Errorf("outbox: append %s: %w", m.ID, err)
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// KeyedMessage is a message with the caller's key: the outbox publishes in
// key order, and appending a key it holds again changes nothing.
type KeyedMessage struct {
	Key Key
	Message
}

// Key orders keyed messages: a log index, then a position within it.
type Key [16]byte

// MakeKey is the key of the message at (index, pos).
func MakeKey(index, pos uint64) Key {
	var k Key
	binary.BigEndian.PutUint64(k[:8], index)
	binary.BigEndian.PutUint64(k[8:], pos)
	return k
}

// KeyOf reads a key given to OnPublished; ok is false for a key Append
// chose.
func KeyOf(b []byte) (k Key, ok bool) {
	if len(b) != len(k) {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

// Index is the key's log index.
func (k Key) Index() uint64 { return binary.BigEndian.Uint64(k[:8]) }

// Pos is the key's position within its index.
func (k Key) Pos() uint64 { return binary.BigEndian.Uint64(k[8:]) }

// AppendKeyed stores messages under their keys in one transaction (one
// fsync). Keys already held are skipped, so replaying the same log appends
// nothing twice. Messages beyond MaxEvents are refused and counted as
// dropped; the rest are stored, and the error says how many were refused.
func (o *Outbox) AppendKeyed(ctx context.Context, ms []KeyedMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	vals := make([][]byte, len(ms))
	for i, m := range ms {
		if err := m.Validate(); err != nil {
			return err
		}
		v, err := json.Marshal(storedMessage(m.Message))
		if err != nil {
			return fmt.Errorf("outbox: encode %s: %w", m.ID, err)
		}
		vals[i] = v
	}
	var (
		added   int
		refused []int
	)
	err := o.db.Update(func(tx *bolt.Tx) error {
		added, refused = 0, refused[:0]
		b := tx.Bucket(outboxBucket)
		for i, m := range ms {
			if b.Get(m.Key[:]) != nil {
				continue
			}
			if o.backlog.Load()+int64(added) >= int64(o.opts.MaxEvents) {
				refused = append(refused, i)
				continue
			}
			if err := b.Put(m.Key[:], vals[i]); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: append %d events: %w", len(ms), err)
	}
	o.backlog.Add(int64(added))
	if len(refused) > 0 {
		o.dropped.Add(uint64(len(refused)))
		if o.opts.OnDrop != nil {
			for _, i := range refused {
				o.opts.OnDrop(ms[i].Message)
			}
		}
	}
	if added > 0 {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("append: %d of %d events refused (backlog %d): %w", len(refused), len(ms), o.opts.MaxEvents, ErrOutboxFull)
	}
	return nil
}

// TrimThrough deletes the keyed messages with an index up to index and a
// position below posLimit, published or not: another publisher confirmed
// them. It returns how many it deleted.
func (o *Outbox) TrimThrough(index, posLimit uint64) (int, error) {
	n := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(outboxBucket)
		// Deleting under a bbolt cursor skips the next key: collect first.
		var doomed [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			key, ok := KeyOf(k)
			if !ok {
				continue
			}
			if key.Index() > index {
				break
			}
			if key.Pos() < posLimit {
				doomed = append(doomed, append([]byte(nil), k...))
			}
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: trim through %d: %w", index, err)
	}
	o.backlog.Add(-int64(n))
	return n, nil
}

// Sync forces what NoSync appends left in the page cache to disk.
func (o *Outbox) Sync() error {
	if err := o.db.Sync(); err != nil {
		return fmt.Errorf("outbox: sync: %w", err)
	}
	return nil
}

// Backlog is the number of events not yet confirmed by the bus (a gauge).
func (o *Outbox) Backlog() int { return int(o.backlog.Load()) }

// Dropped is the number of events Append refused because the outbox was full.
func (o *Outbox) Dropped() uint64 { return o.dropped.Load() }

// Run drains the outbox to the publisher in order until ctx is cancelled,
// retrying failed publishes with exponential backoff. It returns ctx's error.
func (o *Outbox) Run(ctx context.Context) error {
	o.running.Lock()
	defer o.running.Unlock()
	backoff := o.opts.MinBackoff
	for {
		n, err := o.drainOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// Full jitter keeps many agents from hammering a recovering bus
			// in step.
			d := backoff/2 + rand.N(backoff/2+1)
			o.log.Warn("publish failed, retrying", "err", err, "backlog", o.Backlog(), "retry_in", d)
			if !sleep.For(ctx, d) {
				return ctx.Err()
			}
			backoff = min(2*backoff, o.opts.MaxBackoff)
			continue
		}
		backoff = o.opts.MinBackoff
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.wake:
		}
	}
}

// drainOnce publishes up to BatchSize events from the head of the queue and
// deletes those the bus confirmed. It stops at the first failure so that the
// order of the queue is kept.
func (o *Outbox) drainOnce(ctx context.Context) (int, error) {
	type item struct {
		key []byte
		msg Message
	}
	var batch []item
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(outboxBucket).Cursor()
		for k, v := c.First(); k != nil && len(batch) < o.opts.BatchSize; k, v = c.Next() {
			var sm storedMessage
			if err := json.Unmarshal(v, &sm); err != nil {
				return fmt.Errorf("decode outbox entry %x: %w", k, err)
			}
			batch = append(batch, item{key: append([]byte(nil), k...), msg: Message(sm)})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	done := 0
	var pubErr error
	if bp, ok := o.pub.(BatchPublisher); ok && len(batch) > 1 {
		ms := make([]Message, len(batch))
		for i, it := range batch {
			ms[i] = it.msg
		}
		pctx, cancel := context.WithTimeout(ctx, o.opts.PublishTimeout)
		done, pubErr = bp.PublishBatch(pctx, ms)
		cancel()
	} else {
		for _, it := range batch {
			pctx, cancel := context.WithTimeout(ctx, o.opts.PublishTimeout)
			pubErr = o.pub.Publish(pctx, it.msg)
			cancel()
			if pubErr != nil {
				pubErr = fmt.Errorf("publish %s: %w", it.msg.ID, pubErr)
				break
			}
			done++
		}
	}
	if done > 0 {
		// A crash before this commit republishes the batch: consumers
		// de-duplicate on the ID.
		deleted := 0
		err := o.db.Update(func(tx *bolt.Tx) error {
			deleted = 0
			b := tx.Bucket(outboxBucket)
			for _, it := range batch[:done] {
				if b.Get(it.key) == nil {
					continue // trimmed meanwhile (TrimThrough)
				}
				if err := b.Delete(it.key); err != nil {
					return err
				}
				deleted++
			}
			return nil
		})
		if err != nil {
			return done, fmt.Errorf("outbox: delete published: %w", err)
		}
		o.backlog.Add(-int64(deleted))
		if o.opts.OnPublished != nil {
			keys := make([][]byte, done)
			for i, it := range batch[:done] {
				keys[i] = it.key
			}
			o.opts.OnPublished(keys)
		}
	}
	return done, pubErr
}

// Close closes the file. Undelivered events stay in it for the next open.
func (o *Outbox) Close() error {
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("close outbox: %w", err)
	}
	return nil
}
