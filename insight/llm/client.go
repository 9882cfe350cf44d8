package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrNotConfigured is returned by New for an empty Config and by every
// method of a nil *Client: the language model is optional, so callers test
// for it with errors.Is and carry on with the rule-based findings alone.
var ErrNotConfigured = errors.New("language model not configured: set an endpoint " +
	"(an OpenAI-compatible base URL such as http://localhost:11434/v1) and a model to enable explanations")

// Defaults applied by New to zero fields.
const (
	DefaultTimeout       = 60 * time.Second
	DefaultConfidenceCap = 0.6
)

// Config says which OpenAI-compatible server to ask and how. The yaml
// tags follow the repository's configuration files, for an llm section.
type Config struct {
	// Endpoint is the API base URL: Ollama, llama.cpp server, vLLM and
	// OpenAI all serve POST {Endpoint}/chat/completions. Empty means off.
	Endpoint string `yaml:"endpoint"`
	// Model is the model name the server knows it by.
	Model string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the API key. The key
	// itself never appears in configuration files, logs or errors.
	APIKeyEnv string `yaml:"api_key_env,omitempty"`
	// Timeout bounds one HTTP attempt; 0 means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// MaxTokens caps the answer's length; 0 leaves it to the server.
	MaxTokens int `yaml:"max_tokens,omitempty"`
	// ConfidenceCap is the most confidence a model-only remediation may
	// claim; 0 means DefaultConfidenceCap.
	ConfidenceCap float64 `yaml:"confidence_cap,omitempty"`
	// Logger receives the repair rounds and retries; nil discards them.
	Logger *slog.Logger `yaml:"-"`
}

// Client talks to one model. It is safe for concurrent use.
type Client struct {
	cfg       Config
	url       string // {Endpoint}/chat/completions
	key       string
	http      *http.Client
	log       *slog.Logger
	validator *jsonschema.Schema // the local re-validation of Explain answers
	// backoff is the first wait between retries, doubled each time; a
	// field so that tests need not sleep for real backoffs.
	backoff  time.Duration
	attempts int
}

// New checks cfg, reads the API key through getenv (os.Getenv in
// production) and returns a client. An entirely empty endpoint returns
// ErrNotConfigured.
func New(cfg Config, getenv func(string) string) (*Client, error) {
	if strings.TrimSpace(cfg.Endpoint) == "" {
		if cfg.Model != "" {
			return nil, fmt.Errorf("llm: model %q is set but endpoint is empty: %w", cfg.Model, ErrNotConfigured)
		}
		return nil, ErrNotConfigured
	}
	u, err := url.Parse(strings.TrimSpace(cfg.Endpoint))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("llm: endpoint %q is not an http or https URL: use the API base, e.g. http://localhost:11434/v1", cfg.Endpoint)
	}
	if u.User != nil {
		return nil, errors.New("llm: endpoint must not carry credentials: put the key in an environment variable and name it in api_key_env")
	}
	base := strings.TrimRight(u.String(), "/")
	// People paste the full path from server docs; accept it rather than
	// posting to .../chat/completions/chat/completions.
	base = strings.TrimSuffix(base, "/chat/completions")
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("llm: model is required: set it to a model the endpoint serves (e.g. \"qwen2.5:7b\" for Ollama)")
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("llm: timeout %v is negative: use a positive duration or 0 for %v", cfg.Timeout, DefaultTimeout)
	case cfg.MaxTokens < 0:
		return nil, fmt.Errorf("llm: max_tokens %d is negative: use a positive number or 0 for the server's default", cfg.MaxTokens)
	case cfg.ConfidenceCap < 0 || cfg.ConfidenceCap > 1:
		return nil, fmt.Errorf("llm: confidence_cap %v is outside 0..1: use e.g. 0.6, or 0 for the default %v", cfg.ConfidenceCap, DefaultConfidenceCap)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ConfidenceCap == 0 {
		cfg.ConfidenceCap = DefaultConfidenceCap
	}
	var key string
	if cfg.APIKeyEnv != "" {
		if getenv == nil {
			return nil, errors.New("llm: api_key_env is set but no environment was given to read it from")
		}
		key = strings.TrimSpace(getenv(cfg.APIKeyEnv))
		if key == "" {
			return nil, fmt.Errorf("llm: api_key_env names %s but it is empty or unset: export it, or clear api_key_env for a server that needs no key", cfg.APIKeyEnv)
		}
	}
	validator, err := compileAnswerSchema()
	if err != nil {
		return nil, fmt.Errorf("llm: compiling the answer schema: %w", err)
	}
	return &Client{
		cfg:       cfg,
		url:       base + "/chat/completions",
		key:       key,
		http:      &http.Client{Timeout: cfg.Timeout},
		log:       logger(cfg.Logger).With("component", "llm", "model", cfg.Model),
		validator: validator,
		backoff:   500 * time.Millisecond,
		attempts:  3,
	}, nil
}

// Config returns the effective configuration, defaults filled in.
func (c *Client) Config() Config {
	if c == nil {
		return Config{}
	}
	return c.cfg
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"` // "system", "user" or "assistant"
	Content string `json:"content"`
}

type chatRequest struct {
	Model          string         `json:"model"`
	Messages       []Message      `json:"messages"`
	Temperature    float64        `json:"temperature"`
	MaxTokens      int            `json:"max_tokens,omitempty"`
	Stream         bool           `json:"stream"`
	ResponseFormat responseFormat `json:"response_format"`
}

type responseFormat struct {
	Type       string     `json:"type"`
	JSONSchema jsonSchema `json:"json_schema"`
}

type jsonSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict bool            `json:"strict"`
}

type chatResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
			Refusal string  `json:"refusal"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

// Complete sends messages and asks for a JSON answer matching schema
// (structured output, temperature 0) and returns the answer with any
// Markdown code fence removed. It checks only that an answer came back:
// parsing and validating it is the caller's job, since only the caller
// knows what to do about a bad one.
func (c *Client) Complete(ctx context.Context, messages []Message, schema json.RawMessage, schemaName string) (json.RawMessage, error) {
	out, _, err := c.complete(ctx, messages, schema, schemaName)
	return out, err
}

// complete is Complete that also returns the model name the server reported.
func (c *Client) complete(ctx context.Context, messages []Message, schema json.RawMessage, schemaName string) (json.RawMessage, string, error) {
	if c == nil {
		return nil, "", ErrNotConfigured
	}
	if !json.Valid(schema) {
		return nil, "", errors.New("llm: the response schema is not valid JSON")
	}
	body, err := json.Marshal(chatRequest{
		Model:       c.cfg.Model,
		Messages:    messages,
		Temperature: 0,
		MaxTokens:   c.cfg.MaxTokens,
		ResponseFormat: responseFormat{
			Type:       "json_schema",
			JSONSchema: jsonSchema{Name: schemaName, Schema: schema, Strict: strictable(schema)},
		},
	})
	if err != nil {
		return nil, "", fmt.Errorf("llm: encoding the request: %w", err)
	}
	var lastErr error
	for attempt := 1; attempt <= c.attempts; attempt++ {
		raw, model, retryAfter, err := c.post(ctx, body)
		if err == nil {
			return raw, model, nil
		}
		lastErr = err
		if retryAfter < 0 || attempt == c.attempts {
			break
		}
		wait := c.backoff << (attempt - 1)
		if retryAfter > 0 {
			wait = retryAfter
		}
		// A server asking for an hour's pause gets no more than one
		// attempt's timeout: we would rather fall back to the rules.
		wait = min(wait, c.cfg.Timeout)
		c.log.DebugContext(ctx, "retrying chat completion", "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, "", fmt.Errorf("llm: giving up after %d attempt(s): %w (last error: %v)", attempt, ctx.Err(), err)
		case <-t.C:
		}
	}
	return nil, "", lastErr
}

// post makes one attempt. retryAfter is negative when retrying cannot
// help, 0 when it may (use the backoff), and positive when the server said
// how long to wait.
func (c *Client) post(ctx context.Context, body []byte) (json.RawMessage, string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, "", -1, fmt.Errorf("llm: building the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", -1, fmt.Errorf("llm: request to %s: %w", c.url, ctx.Err())
		}
		// Errors from net/http may quote the URL but never the headers,
		// so the key cannot leak here; scrub anyway in case a proxy
		// put it in the URL.
		return nil, "", -1, fmt.Errorf("llm: cannot reach %s: %s", c.url, c.scrub(err.Error()))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", -1, fmt.Errorf("llm: reading the response: %w", ctx.Err())
		}
		return nil, "", 0, fmt.Errorf("llm: reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", c.retryAfter(resp), c.statusError(resp.StatusCode, data)
	}
	var cr chatResponse
	if err := json.Unmarshal(data, &cr); err != nil {
		return nil, "", -1, fmt.Errorf("llm: %s did not answer with a chat completion: %w", c.url, err)
	}
	if len(cr.Choices) == 0 {
		return nil, "", -1, errors.New("llm: the answer has no choices")
	}
	ch := cr.Choices[0]
	if ch.Message.Content == nil || strings.TrimSpace(*ch.Message.Content) == "" {
		if ch.Message.Refusal != "" {
			return nil, "", -1, fmt.Errorf("llm: the model refused: %s", c.scrub(ch.Message.Refusal))
		}
		return nil, "", -1, errors.New("llm: the answer is empty")
	}
	if ch.FinishReason == "length" {
		return nil, "", -1, errors.New("llm: the answer was cut off at the token limit: raise max_tokens")
	}
	model := cr.Model
	if model == "" {
		model = c.cfg.Model
	}
	return json.RawMessage(StripFence(*ch.Message.Content)), model, 0, nil
}

func (c *Client) retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500 {
		return -1
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func (c *Client) statusError(status int, body []byte) error {
	detail := c.scrub(errorDetail(body))
	if detail != "" {
		detail = ": " + detail
	}
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		if c.cfg.APIKeyEnv == "" {
			return fmt.Errorf("llm: %s refused the request (HTTP %d)%s: it needs an API key; put it in an environment variable and name that in api_key_env", c.url, status, detail)
		}
		return fmt.Errorf("llm: %s refused the API key (HTTP %d)%s: check the key in $%s", c.url, status, detail, c.cfg.APIKeyEnv)
	case http.StatusNotFound:
		return fmt.Errorf("llm: %s not found (HTTP 404)%s: check that endpoint is the API base (e.g. http://localhost:11434/v1) and that model %q exists there", c.url, detail, c.cfg.Model)
	case http.StatusTooManyRequests:
		return fmt.Errorf("llm: %s is rate limiting (HTTP 429)%s", c.url, detail)
	}
	return fmt.Errorf("llm: %s answered HTTP %d%s", c.url, status, detail)
}

// errorDetail pulls the message out of an OpenAI-style error body, or
// returns the start of whatever else the server sent.
func errorDetail(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var obj struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(e.Error, &obj) == nil && obj.Message != "":
			return truncate(obj.Message, 300)
		case json.Unmarshal(e.Error, &s) == nil:
			return truncate(s, 300)
		}
	}
	return truncate(strings.TrimSpace(string(body)), 300)
}

// scrub removes the API key (servers such as OpenAI quote part of a bad
// key back) and anything else secret-looking from text bound for an error.
func (c *Client) scrub(s string) string {
	if c.key != "" {
		s = strings.ReplaceAll(s, c.key, redacted)
	}
	return RedactText(s)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// StripFence removes a Markdown code fence (```json ... ```) around an
// answer: models asked for JSON often wrap it anyway.
func StripFence(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "```") {
		return t
	}
	nl := strings.IndexByte(t, '\n')
	if nl < 0 {
		return strings.TrimSpace(strings.Trim(t, "`"))
	}
	t = t[nl+1:]
	t = strings.TrimSpace(t)
	t = strings.TrimSuffix(t, "```")
	return strings.TrimSpace(t)
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// strictable reports whether a schema meets OpenAI's strict mode: every
// object closed (additionalProperties false) with every property
// required. Strict mode refuses any other schema outright, so an open one
// (a generated manifest is an open object) is sent non-strict; the answer
// is validated locally either way.
func strictable(schema json.RawMessage) bool {
	var doc any
	if err := json.Unmarshal(schema, &doc); err != nil {
		return false
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case map[string]any:
			if props, ok := x["properties"].(map[string]any); ok {
				if x["additionalProperties"] != false {
					return false
				}
				req, _ := x["required"].([]any)
				if len(req) != len(props) {
					return false
				}
			} else if t, _ := x["type"].(string); t == "object" {
				return false // an object with no declared properties is open
			}
			for _, e := range x {
				if !walk(e) {
					return false
				}
			}
		case []any:
			for _, e := range x {
				if !walk(e) {
					return false
				}
			}
		}
		return true
	}
	return walk(doc)
}
