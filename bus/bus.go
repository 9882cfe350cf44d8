// Package bus is Tasker's service bus: a small publish/subscribe interface
// with adapters for NATS (bus/natsbus), Redis Streams (bus/redisbus),
// RabbitMQ (bus/amqpbus) and Kafka (bus/kafkabus), and a durable on-disk
// Outbox that drains events to any of them.
//
// Delivery is at least once end to end: Publish returns only after the
// backend confirmed the message, a subscriber's handler acknowledges by
// returning nil, and every message carries a stable ID so consumers can
// de-duplicate redeliveries.
package bus

import (
	"context"
	"errors"
	"strings"
)

// Subject prefixes. Events go to EventPrefix+<type> (tasker.events.step.failed),
// dead letters to DLQSubject.
const (
	EventPrefix = "tasker.events."
	DLQSubject  = "tasker.dlq"
)

// EventSubject is the subject an event of the given type is published on.
func EventSubject(eventType string) string { return EventPrefix + eventType }

// Message is one message on the bus.
type Message struct {
	// ID is the event's stable id: a redelivery carries the same ID, so
	// consumers de-duplicate on it.
	ID      string
	Subject string
	Data    []byte
	Headers map[string]string
}

// Handler processes one delivered message. Returning nil acknowledges it;
// returning an error leaves it unacknowledged so the backend delivers it
// again (at least once).
type Handler func(ctx context.Context, m Message) error

// Publisher publishes messages.
type Publisher interface {
	// Publish returns once the backend has confirmed the message (JetStream
	// ack, XADD reply, publisher confirm, Kafka produce ack), or an error.
	Publish(ctx context.Context, m Message) error
}

// BatchPublisher is a Publisher that can have many messages in flight and
// await their confirmations together. The outbox uses it when the bus has
// it: a backlog drains at the backend's speed, not one round trip each.
type BatchPublisher interface {
	// PublishBatch publishes ms in order and returns how many of the first
	// ones the backend confirmed; an error says why the next one was not.
	PublishBatch(ctx context.Context, ms []Message) (int, error)
}

// Subscriber consumes messages.
type Subscriber interface {
	// Subscribe starts delivering messages whose subject matches pattern to h
	// and returns once the subscription is in place. Subscriptions that share
	// a group share the work (each message goes to one of them); the group is
	// durable, so messages published while no member runs are delivered
	// later. Delivery stops when ctx is cancelled or the bus is closed.
	//
	// Patterns use NATS syntax on dot-separated tokens: "*" matches one
	// token, a trailing ">" matches one or more (tasker.events.>).
	Subscribe(ctx context.Context, pattern, group string, h Handler) error
}

// Bus is a connection to one backend.
type Bus interface {
	Publisher
	Subscriber
	// Close stops the subscriptions and releases the connection.
	Close() error
}

// ErrClosed is returned by a bus that has been closed.
var ErrClosed = errors.New("bus: closed")

// Validate checks the fields every adapter relies on.
func (m Message) Validate() error {
	if m.ID == "" {
		return errors.New("bus: message has no ID")
	}
	if err := ValidSubject(m.Subject); err != nil {
		return err
	}
	return nil
}

// ValidSubject rejects subjects that no pattern could match reliably on every
// backend: empty tokens, wildcards and white space.
func ValidSubject(s string) error {
	if s == "" {
		return errors.New("bus: empty subject")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>#") {
			return errors.New("bus: invalid subject " + strconvQuote(s))
		}
	}
	return nil
}

// ValidSubscription checks Subscribe's arguments, the same for every
// adapter: a valid pattern and a group (groups are what make a
// subscription durable and shared).
func ValidSubscription(pattern, group string) error {
	if err := ValidPattern(pattern); err != nil {
		return err
	}
	if group == "" {
		return errors.New("bus: subscribe needs a group: name the consumers that share these messages")
	}
	return nil
}

// ValidPattern checks a subscription pattern.
func ValidPattern(p string) error {
	if p == "" {
		return errors.New("bus: empty pattern")
	}
	toks := strings.Split(p, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return errors.New("bus: invalid pattern " + strconvQuote(p))
		case tok == ">" && i != len(toks)-1:
			return errors.New("bus: '>' must be the last token of " + strconvQuote(p))
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, " \t\r\n*>#"):
			return errors.New("bus: invalid pattern " + strconvQuote(p))
		}
	}
	return nil
}

// Match reports whether subject matches pattern (NATS semantics). Backends
// without native wildcards (Redis Streams, Kafka) filter with it.
func Match(pattern, subject string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) {
			return false
		}
		if p != "*" && p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}

func strconvQuote(s string) string { return `"` + s + `"` }
