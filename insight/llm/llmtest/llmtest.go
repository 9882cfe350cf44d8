// Package llmtest is a scripted, local OpenAI-compatible chat completions
// server for tests: each request is answered with the next scripted Reply,
// and every request is recorded so that tests can assert what was sent
// (and, as importantly, what was not).
//
// When the script runs out, the last Reply is repeated: retry and repair
// loops then see a steady answer, and tests assert the number of calls with
// len(Requests()). An empty script fails the test on the first request.
//
// The same handler runs outside tests as cmd/fakellm, for end-to-end tests
// of binaries.
package llmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Reply is one scripted answer.
type Reply struct {
	// Content is the assistant message's content for a 200, or the raw
	// response body for any other status (an OpenAI-style error body
	// is made up when it is empty).
	Content string `json:"content"`
	// Status is the HTTP status; 0 means 200.
	Status int `json:"status,omitempty"`
	// Header is set on the response, e.g. {"Retry-After": "1"}.
	Header map[string]string `json:"header,omitempty"`
	// Delay holds the answer back, to test timeouts. The wait ends early
	// when the client goes away.
	Delay time.Duration `json:"delay,omitempty"`
	// FinishReason is the choice's finish_reason; "" means "stop".
	FinishReason string `json:"finish_reason,omitempty"`
}

// Message is one chat message as received.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one request as received.
type Request struct {
	Method string
	Path   string
	Header http.Header
	// Body is the raw request body: assert on it to prove that something
	// was never sent.
	Body           []byte
	Model          string
	Messages       []Message
	ResponseFormat json.RawMessage
	Temperature    *float64
	MaxTokens      int
}

// Handler serves POST /v1/chat/completions from a script. It is safe for
// concurrent use.
type Handler struct {
	mu     sync.Mutex
	script []Reply
	next   int
	reqs   []Request
	// fail reports a misuse: the test's Errorf, or a log line standalone.
	fail func(format string, args ...any)
}

// NewHandler returns a handler answering with script. fail is called on
// misuse (an empty script, a request that is not a chat completion); nil
// ignores it.
func NewHandler(fail func(format string, args ...any), script ...Reply) *Handler {
	if fail == nil {
		fail = func(string, ...any) {}
	}
	return &Handler{script: script, fail: fail}
}

// Path is where the handler serves chat completions.
const Path = "/v1/chat/completions"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	var parsed struct {
		Model          string          `json:"model"`
		Messages       []Message       `json:"messages"`
		ResponseFormat json.RawMessage `json:"response_format"`
		Temperature    *float64        `json:"temperature"`
		MaxTokens      int             `json:"max_tokens"`
	}
	if err := json.Unmarshal(body, &parsed); err == nil {
		req.Model, req.Messages, req.ResponseFormat = parsed.Model, parsed.Messages, parsed.ResponseFormat
		req.Temperature, req.MaxTokens = parsed.Temperature, parsed.MaxTokens
	}

	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	if r.Method != http.MethodPost || r.URL.Path != Path {
		h.mu.Unlock()
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
		return
	}
	if len(h.script) == 0 {
		h.mu.Unlock()
		h.fail("llmtest: request %d arrived but the script is empty", len(h.reqs))
		writeError(w, http.StatusInternalServerError, "llmtest: empty script")
		return
	}
	reply := h.script[min(h.next, len(h.script)-1)]
	h.next++
	model := req.Model
	h.mu.Unlock()

	if reply.Delay > 0 {
		t := time.NewTimer(reply.Delay)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	for k, v := range reply.Header {
		w.Header().Set(k, v)
	}
	if reply.Status != 0 && reply.Status != http.StatusOK {
		if reply.Content == "" {
			writeError(w, reply.Status, http.StatusText(reply.Status))
			return
		}
		w.WriteHeader(reply.Status)
		_, _ = io.WriteString(w, reply.Content)
		return
	}
	finish := reply.FinishReason
	if finish == "" {
		finish = "stop"
	}
	resp := map[string]any{
		"id":      "chatcmpl-llmtest",
		"object":  "chat.completion",
		"created": 0,
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": reply.Content},
			"finish_reason": finish,
		}},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "llmtest"}})
}

// Requests returns a copy of the requests received so far.
func (h *Handler) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Request, len(h.reqs))
	copy(out, h.reqs)
	return out
}

// Server is a Handler on a local httptest server, closed with the test.
type Server struct {
	*Handler
	srv *httptest.Server
}

// New starts a server answering with script. Misuse fails t.
func New(t testing.TB, script ...Reply) *Server {
	t.Helper()
	h := NewHandler(t.Errorf, script...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Server{Handler: h, srv: srv}
}

// URL is the API base to configure clients with (http://127.0.0.1:port/v1).
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// Contains reports whether any request body contains needle.
func (s *Server) Contains(needle string) bool {
	for _, r := range s.Requests() {
		if bytes.Contains(r.Body, []byte(needle)) {
			return true
		}
	}
	return false
}
