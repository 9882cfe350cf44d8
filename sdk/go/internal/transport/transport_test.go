package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestBaseURL(t *testing.T) {
	t.Setenv(AddrEnv, "")
	if got := BaseURL(""); got != DefaultAddr {
		t.Errorf("BaseURL(\"\") = %q, want %q", got, DefaultAddr)
	}
	t.Setenv(AddrEnv, "http://10.0.0.1:9000/")
	if got := BaseURL(""); got != "http://10.0.0.1:9000" {
		t.Errorf("with %s set: BaseURL(\"\") = %q", AddrEnv, got)
	}
	if got := BaseURL("127.0.0.1:7999"); got != "http://127.0.0.1:7999" {
		t.Errorf("explicit address without scheme: %q", got)
	}
	if got := BaseURL("https://sidecar:7420"); got != "https://sidecar:7420" {
		t.Errorf("explicit address: %q", got)
	}
}

func TestHTTPClientSpeaksH2C(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	}))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // no HTTP/1: a client that falls back fails
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()

	res, err := HTTPClient().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Errorf("response over %s, want HTTP/2", res.Proto)
	}
	if a, b := HTTPClient(), HTTPClient(); a != b {
		t.Error("HTTPClient is not shared")
	}
}

func TestTransient(t *testing.T) {
	wire := func(c connect.Code) error {
		// An error decoded from a response, as a client sees the server's.
		return connect.NewWireError(c, errors.New("from the server"))
	}
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{wire(connect.CodeUnavailable), true},
		{fmt.Errorf("wrapped: %w", wire(connect.CodeUnavailable)), true},
		{wire(connect.CodeDeadlineExceeded), true},
		{wire(connect.CodeInvalidArgument), false},
		{wire(connect.CodeFailedPrecondition), false},
		{wire(connect.CodeNotFound), false},
		{connect.NewError(connect.CodeInvalidArgument, errors.New("protocol error: incomplete envelope")), true},
		{connect.NewError(connect.CodeCanceled, context.Canceled), false},
	}
	for _, c := range cases {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	for i, max := range []time.Duration{100, 200, 400, 400, 400} {
		max *= time.Millisecond
		if d := b.Next(); d < max/2 || d > max {
			t.Errorf("delay %d = %v, want in [%v, %v]", i, d, max/2, max)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after Reset: %v, want at most Min", d)
	}
}

// TestRetryAfter: a retry loop waits at least as long as a throttled call
// was told to, from the RetryInfo detail or else the Retry-After header.
func TestRetryAfter(t *testing.T) {
	withInfo := func(d time.Duration) error {
		e := connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
		detail, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		e.AddDetail(detail)
		e.Meta().Set("Retry-After", "9") // the detail is exact and wins
		return e
	}
	withHeader := func(v string) error {
		e := connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
		e.Meta().Set("Retry-After", v)
		return e
	}
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"RetryInfo detail", withInfo(1500 * time.Millisecond), 1500 * time.Millisecond},
		{"wrapped", fmt.Errorf("start task: %w", withInfo(40*time.Millisecond)), 40 * time.Millisecond},
		{"Retry-After header", withHeader("2"), 2 * time.Second},
		{"bad header", withHeader("soon"), 0},
		{"bounded", withInfo(time.Hour), 5 * time.Minute},
		{"no hint", connect.NewError(connect.CodeUnavailable, errors.New("down")), 0},
		{"not a Connect error", errors.New("boom"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAfter(tt.err); got != tt.want {
				t.Fatalf("RetryAfter = %v, want %v", got, tt.want)
			}
			b := Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond}
			if got := b.After(tt.err); got < tt.want || got > max(tt.want, 10*time.Millisecond) {
				t.Fatalf("After = %v, want the hint %v or the backoff, whichever is longer", got, tt.want)
			}
		})
	}
}
