// Package busurl opens a bus from one URL, so that the agent can take the
// backend as a single flag or config value. It lives apart from package bus
// so that importing the interface does not pull in every client library.
package busurl

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/amqpbus"
	"github.com/tasker-run/tasker/bus/kafkabus"
	"github.com/tasker-run/tasker/bus/natsbus"
	"github.com/tasker-run/tasker/bus/redisbus"
)

// Check reports whether rawURL names a bus Open knows, without connecting:
// for validating configuration. "" and "off" (no bus) pass.
func Check(rawURL string) error {
	switch rawURL {
	case "", "off", "embedded":
		return nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", rawURL, err)
	}
	switch u.Scheme {
	case "nats", "tls", "redis", "amqp", "amqps", "kafka":
	default:
		return fmt.Errorf("unknown scheme %q in %q: use embedded, off, or a nats://, redis://, amqp://, amqps:// or kafka:// URL", u.Scheme, rawURL)
	}
	if u.Host == "" {
		return fmt.Errorf("%q names no host: write %s://host:port", rawURL, u.Scheme)
	}
	return nil
}

// Open opens the bus that rawURL names:
//
//	"" or "embedded"                 NATS, embedded server storing under dataDir/nats
//	nats://host:4222                  external NATS with JetStream
//	redis://[:pass@]host:6379[/db]   Redis Streams (?stream=tasker)
//	amqp://user:pass@host:5672/vhost  RabbitMQ (amqps:// for TLS; ?exchange=tasker)
//	kafka://host1:9092,host2:9092     Kafka (?topic=tasker&partitions=1)
func Open(ctx context.Context, rawURL, dataDir string, log *slog.Logger) (bus.Bus, error) {
	if rawURL == "" || rawURL == "embedded" {
		if dataDir == "" {
			return nil, fmt.Errorf("busurl: the embedded NATS server needs a data directory")
		}
		return natsbus.New(ctx, natsbus.Config{StoreDir: filepath.Join(dataDir, "nats"), Logger: log})
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("busurl: %w", err)
	}
	q := u.Query()
	switch u.Scheme {
	case "nats", "tls":
		return natsbus.New(ctx, natsbus.Config{URL: rawURL, Stream: q.Get("stream"), Logger: log})
	case "redis":
		cfg := redisbus.Config{Addr: u.Host, Stream: q.Get("stream"), Logger: log}
		if u.User != nil {
			cfg.Username = u.User.Username()
			cfg.Password, _ = u.User.Password()
		}
		if db := strings.Trim(u.Path, "/"); db != "" {
			if cfg.DB, err = strconv.Atoi(db); err != nil {
				return nil, fmt.Errorf("busurl: redis database %q: %w", db, err)
			}
		}
		return redisbus.New(ctx, cfg)
	case "amqp", "amqps":
		exchange := q.Get("exchange")
		q.Del("exchange")
		u.RawQuery = q.Encode()
		return amqpbus.New(ctx, amqpbus.Config{URL: u.String(), Exchange: exchange, Logger: log})
	case "kafka":
		cfg := kafkabus.Config{Brokers: strings.Split(u.Host, ","), Topic: q.Get("topic"), Logger: log}
		if p := q.Get("partitions"); p != "" {
			n, err := strconv.ParseInt(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("busurl: partitions %q: %w", p, err)
			}
			cfg.Partitions = int32(n)
		}
		return kafkabus.New(ctx, cfg)
	default:
		return nil, fmt.Errorf("busurl: unknown scheme %q in %q (nats, redis, amqp, amqps, kafka or embedded)", u.Scheme, rawURL)
	}
}
