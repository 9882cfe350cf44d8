package mtls

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// handshakeTimeout bounds a connection's TLS handshake: a peer that
// connects and says nothing holds no more than a goroutine for this long.
const handshakeTimeout = 10 * time.Second

// recordHandshake is the first byte of a TLS connection (a handshake
// record); plaintext HTTP/2, HTTP/1 and Raft start otherwise.
const recordHandshake = 0x16

// Listener accepts TLS connections on an inner listener. Each handshake
// runs on its own goroutine, off the accept loop, so a slow or silent
// peer delays no one; a refused one is logged with the peer's address and
// the reason, and never reaches the caller of Accept. Accept returns
// *tls.Conn values whose handshake is done (http.Server then picks the
// protocol by ALPN), or, when plaintext is allowed, connections that do
// not start with a TLS handshake, as they are: the migration mode of
// verify_incoming = false.
type Listener struct {
	inner     net.Listener
	cfg       *tls.Config
	plaintext bool
	log       *slog.Logger

	// refusedAt rate-limits the refusal lines: a misconfigured agent
	// retries every few hundred milliseconds, and one line per peer and
	// reason per refusalEvery says as much (with how many were not logged).
	refusedMu sync.Mutex
	refusedAt map[string]refusal

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
}

// NewListener starts accepting on inner.
func NewListener(inner net.Listener, cfg *tls.Config, allowPlaintext bool, log *slog.Logger) *Listener {
	l := &Listener{inner: inner, cfg: cfg, plaintext: allowPlaintext, log: log, refusedAt: map[string]refusal{}, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *Listener) acceptLoop() {
	var wait time.Duration
	for {
		c, err := l.inner.Accept()
		if err == nil {
			wait = 0
			go l.handshake(c)
			continue
		}
		select {
		case <-l.done:
			return
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			l.errMu.Lock()
			l.err = err
			l.errMu.Unlock()
			l.Close()
			return
		}
		// Out of file descriptors, say: wait and try again, as
		// http.Server does, rather than stop serving for good.
		wait = min(max(2*wait, 5*time.Millisecond), time.Second)
		l.log.Warn("accept failed; retrying", "err", err, "in", wait)
		select {
		case <-l.done:
			return
		case <-time.After(wait):
		}
	}
}

func (l *Listener) handshake(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	var conn net.Conn = c
	if l.plaintext {
		br := bufio.NewReader(c)
		first, err := br.Peek(1)
		if err != nil {
			c.Close()
			return
		}
		conn = &peeked{Conn: c, r: br}
		if first[0] != recordHandshake {
			_ = c.SetDeadline(time.Time{})
			l.deliver(conn)
			return
		}
	}
	tc := tls.Server(conn, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.refused(c.RemoteAddr(), err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	l.deliver(tc)
}

// refused logs a failed handshake with what to do about it.
func (l *Listener) refused(from net.Addr, err error) {
	if errors.Is(err, io.EOF) {
		// A port probe, or a peer that gave up: nothing to fix here.
		l.log.Debug("TLS handshake abandoned", "from", from.String(), "err", err)
		return
	}
	hint := Hint(err)
	host := from.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host += " " + hint // each reason of one peer once
	now := time.Now()
	l.refusedMu.Lock()
	last, seen := l.refusedAt[host]
	if seen && now.Sub(last.at) < refusalEvery {
		last.suppressed++
		l.refusedAt[host] = last
		l.refusedMu.Unlock()
		return
	}
	if len(l.refusedAt) > 4096 { // many peers: forget them rather than grow
		clear(l.refusedAt)
	}
	l.refusedAt[host] = refusal{at: now}
	l.refusedMu.Unlock()
	l.log.Warn("refused a connection: TLS handshake failed", "from", from.String(), "err", err, "hint", hint, "not_logged_since_last", last.suppressed)
}

// refusalEvery is how often refusals of one peer are logged.
const refusalEvery = 30 * time.Second

// refusal is when a peer's refusal was last logged, and how many since
// were not.
type refusal struct {
	at         time.Time
	suppressed int
}

// Hint says what usually causes a failed handshake, for log lines.
func Hint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "does not look like a TLS handshake"):
		return "the peer speaks plaintext: give it tls-ca-file, tls-cert-file, tls-key-file and verify-outgoing"
	case strings.Contains(msg, "unknown authority") || strings.Contains(msg, "not from this cluster's CA"):
		return "the peer's certificate is not signed by this agent's CA (tls-ca-file): is it from another cluster?"
	case strings.Contains(msg, "not a server's"):
		return "only server certificates (tasker tls cert create -server) may join Raft or answer as a server"
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "presented no certificate"):
		return "the peer presented no certificate: give it tls-cert-file and tls-key-file"
	case strings.Contains(msg, "expired"):
		return "a certificate has expired: create a new one with tasker tls cert create"
	case strings.Contains(msg, "remote error"):
		return "the peer refused this agent's certificate: see the peer's log"
	}
	return "check both agents' tls-ca-file, tls-cert-file and tls-key-file"
}

func (l *Listener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection that passed its handshake.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.errMu.Lock()
		defer l.errMu.Unlock()
		if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting; handshakes in progress are dropped.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// peeked is a connection whose first bytes were read ahead.
type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (p *peeked) Read(b []byte) (int, error) { return p.r.Read(b) }
