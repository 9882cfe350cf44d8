// Package transport is the connection from an app to its local Tasker
// sidecar, shared by the worker and client packages: where the sidecar is,
// one HTTP client that speaks HTTP/2 without TLS (h2c) to it, the Connect
// options every generated client uses, and the retry rules for calls that
// may succeed when repeated.
package transport

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// DefaultAddr is the sidecar's local API when neither an explicit address
// nor AddrEnv is set.
const DefaultAddr = "http://127.0.0.1:7420"

// AddrEnv names the environment variable that overrides DefaultAddr.
const AddrEnv = "TASKER_ADDR"

// BaseURL returns the sidecar's base URL: addr when it is not empty, else
// the value of AddrEnv, else DefaultAddr. An address without a scheme, such
// as "127.0.0.1:7420", is taken to be http://.
func BaseURL(addr string) string {
	if addr == "" {
		addr = os.Getenv(AddrEnv)
	}
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

var shared = sync.OnceValue(func() *http.Client { return &http.Client{Transport: NewTransport()} })

// HTTPClient returns the process-wide HTTP client for the sidecar. It has
// no overall timeout, because streams (PollSteps, WatchTask) stay open for
// as long as the caller wants; callers bound unary calls with their context.
func HTTPClient() *http.Client { return shared() }

// NewTransport returns an HTTP transport that speaks only unencrypted
// HTTP/2 with prior knowledge (h2c), so that Connect, gRPC and
// server-streaming calls all share one multiplexed connection to the
// sidecar. It never uses a proxy: the sidecar is local.
func NewTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols: &protocols,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		HTTP2: &http.HTTP2Config{
			// Detect a sidecar that hangs without closing the connection,
			// so a poll stream on it fails and is re-opened.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     10 * time.Second,
		},
		IdleConnTimeout: 90 * time.Second,
	}
}

// ClientOptions are the Connect options of every generated client: the
// Connect protocol with binary Protobuf (connect-go's default), and no
// gzip, which costs CPU and saves nothing on a loopback connection.
func ClientOptions(token string) []connect.ClientOption {
	opts := []connect.ClientOption{
		connect.WithAcceptCompression("gzip", nil, nil),
	}
	if token = Token(token); token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	return opts
}

// Transient reports whether a failed call may succeed when repeated: the
// sidecar is unreachable or restarting, the connection broke (which the
// client reports as its own error, for example a stream cut off mid
// message), or one call timed out. Callers check their own context
// separately: a call that failed because the caller gave up is not worth
// repeating.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	code := connect.CodeOf(err)
	switch code {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeUnknown,
		connect.CodeResourceExhausted, connect.CodeDeadlineExceeded:
		return true
	}
	return !connect.IsWireError(err) && code != connect.CodeCanceled
}

// Backoff yields exponentially growing delays with jitter: each delay is
// drawn from [d/2, d], where d doubles from Min up to Max. The zero value
// is not usable; set Min and Max.
type Backoff struct {
	// Min is the first delay, and Max the longest.
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the delay to wait before the next try.
func (b *Backoff) Next() time.Duration {
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	b.next = min(2*b.next, b.Max)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}

// After returns the delay before retrying a call that failed with err:
// the next backoff delay, or the wait the sidecar asked for (RetryAfter)
// when that is longer, so that a throttled app slows down to the rate it
// is allowed instead of spending its retries inside the refusal window.
func (b *Backoff) After(err error) time.Duration {
	return max(b.Next(), RetryAfter(err))
}

// maxRetryAfter bounds the wait a refusal can impose on a retry loop.
const maxRetryAfter = 5 * time.Minute

// RetryAfter is the wait a refusal asks for: the google.rpc.RetryInfo
// detail a sidecar attaches when a rate limit refuses a call (exact), else
// its Retry-After header (whole seconds); 0 when it names none. It is
// bounded by five minutes.
func RetryAfter(err error) time.Duration {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0
	}
	for _, d := range ce.Details() {
		v, verr := d.Value()
		if ri, ok := v.(*errdetails.RetryInfo); verr == nil && ok && ri.GetRetryDelay().IsValid() {
			return min(max(ri.GetRetryDelay().AsDuration(), 0), maxRetryAfter)
		}
	}
	if s, perr := strconv.Atoi(ce.Meta().Get("Retry-After")); perr == nil && s > 0 {
		return min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	return 0
}

// Reset starts the delays from Min again.
func (b *Backoff) Reset() { b.next = 0 }
