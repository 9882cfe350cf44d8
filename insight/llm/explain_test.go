package llm

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/insight"
	"github.com/tasker-run/tasker/insight/llm/llmtest"
)

const testKeyEnv = "TASKER_TEST_LLM_KEY"
const testKey = "sk-test-0123456789abcdef"

// newTestClient returns a client for srv with fast backoffs.
func newTestClient(t *testing.T, srv *llmtest.Server, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{Endpoint: srv.URL(), Model: "test-model", APIKeyEnv: testKeyEnv, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg, func(k string) string {
		if k == testKeyEnv {
			return testKey
		}
		return ""
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.backoff = time.Millisecond
	c.log = slog.New(slog.DiscardHandler)
	return c
}

func testInput() ExplainInput {
	at := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	return ExplainInput{
		Findings: []insight.Finding{{
			Step: "charge", Role: insight.RoleRootCause, Class: insight.ClassTimeout,
			Summary: "charge timed out on every attempt", Confidence: 0.8, Evidence: []string{"e1", "e2"},
		}},
		Evidence: []insight.Evidence{
			{ID: "e1", Kind: "error", At: at, Step: "charge", Text: "deadline exceeded after 30s"},
			{ID: "e2", Kind: "attempt", At: at, Step: "charge", Text: "3 of 3 attempts timed out on agent a1"},
		},
		Allowed: []insight.Remediation{{
			Action: insight.ActionChangeTimeout, Params: map[string]string{"step": "charge", "timeout": "60s"},
			Rationale: "every attempt ran out of time", Cites: []string{"e1", "e2"}, Confidence: 0.7, Source: "rules",
		}},
		Context: map[string]any{"task": "t-42", "workflow": "payments", "version": 3},
	}
}

// rem is one model remediation as JSON.
type rem struct {
	Action     string         `json:"action"`
	Params     map[string]any `json:"params"`
	Rationale  string         `json:"rationale"`
	Cites      []string       `json:"cites"`
	Confidence float64        `json:"confidence"`
}

func answerJSON(t *testing.T, rems ...rem) string {
	t.Helper()
	if rems == nil {
		rems = []rem{}
	}
	data, err := json.Marshal(map[string]any{
		"summary":      "The charge step timed out.",
		"explanation":  "Every attempt of charge hit its 30s timeout on agent a1.",
		"remediations": rems,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

var goodRem = rem{Action: "change_timeout", Params: map[string]any{"step": "charge", "timeout": "60s", "task": nil}, Rationale: "attempts ran out of time", Cites: []string{"e1", "e2"}, Confidence: 0.8}

func TestExplain(t *testing.T) {
	tests := []struct {
		name     string
		script   func(t *testing.T) []llmtest.Reply
		wantErr  error // errors.Is target; nil means success
		requests int
		check    func(t *testing.T, ex *Explanation)
	}{
		{
			name:     "good answer",
			script:   func(t *testing.T) []llmtest.Reply { return []llmtest.Reply{{Content: answerJSON(t, goodRem)}} },
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if ex.Summary != "The charge step timed out." || ex.Explanation == "" {
					t.Errorf("summary/explanation = %q / %q", ex.Summary, ex.Explanation)
				}
				if len(ex.Remediations) != 1 || len(ex.Rejected) != 0 || ex.Repaired {
					t.Fatalf("got %+v", ex)
				}
				r := ex.Remediations[0]
				if r.Action != insight.ActionChangeTimeout || r.Source != "model" || r.Params["timeout"] != "60s" || len(r.Params) != 2 || r.Confidence != 0.8 {
					t.Errorf("remediation = %+v", r)
				}
				if ex.Capped[0] {
					t.Errorf("capped a remediation a rule agrees with")
				}
				if ex.Model != "test-model" {
					t.Errorf("model = %q", ex.Model)
				}
			},
		},
		{
			name: "malformed then repaired",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: `{"summary": "oops",`}, {Content: answerJSON(t, goodRem)}}
			},
			requests: 2,
			check: func(t *testing.T, ex *Explanation) {
				if !ex.Repaired || len(ex.Remediations) != 1 {
					t.Errorf("got %+v", ex)
				}
			},
		},
		{
			name: "schema violation then repaired",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: `{"summary": "s", "explanation": "e", "remediations": [{"action": "cancel", "rationale": "r", "confidence": 7}]}`}, {Content: answerJSON(t, goodRem)}}
			},
			requests: 2,
			check: func(t *testing.T, ex *Explanation) {
				if !ex.Repaired {
					t.Errorf("not repaired")
				}
			},
		},
		{
			name: "malformed twice",
			script: func(*testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: "I think the charge step timed out."}}
			},
			wantErr:  ErrInvalidAnswer,
			requests: 2,
		},
		{
			name: "unknown action rejected, others kept",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t,
					rem{Action: "restart_database", Rationale: "why not", Cites: []string{"e1"}, Confidence: 0.5},
					goodRem)}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 || ex.Remediations[0].Action != insight.ActionChangeTimeout {
					t.Errorf("kept %+v", ex.Remediations)
				}
				wantRejected(t, ex, "restart_database", "not in the vocabulary")
			},
		},
		{
			name: "missing citation rejected",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t, rem{Action: "escalate", Rationale: "ask a human", Confidence: 0.3}, goodRem)}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 {
					t.Errorf("kept %+v", ex.Remediations)
				}
				wantRejected(t, ex, "escalate", "cites no evidence")
			},
		},
		{
			name: "citation of unknown evidence rejected",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t, rem{Action: "cancel", Params: map[string]any{"task": "t-42"}, Rationale: "r", Cites: []string{"e1", "e9"}, Confidence: 0.3})}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 0 {
					t.Errorf("kept %+v", ex.Remediations)
				}
				wantRejected(t, ex, "cancel", "cites unknown evidence e9")
			},
		},
		{
			name: "confidence capped without an agreeing rule",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t, rem{Action: "reroute", Params: map[string]any{"task": "t-42", "step": "charge", "avoid_agent": "a1"}, Rationale: "a1 is slow", Cites: []string{"e2"}, Confidence: 0.95})}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 || ex.Remediations[0].Confidence != 0.6 || !ex.Capped[0] {
					t.Errorf("got %+v capped %v", ex.Remediations, ex.Capped)
				}
			},
		},
		{
			name: "confidence kept with an agreeing rule",
			script: func(t *testing.T) []llmtest.Reply {
				r := goodRem
				r.Confidence = 0.95
				return []llmtest.Reply{{Content: answerJSON(t, r)}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 || ex.Remediations[0].Confidence != 0.95 || ex.Capped[0] {
					t.Errorf("got %+v capped %v", ex.Remediations, ex.Capped)
				}
			},
		},
		{
			name: "rule for another step does not agree",
			script: func(t *testing.T) []llmtest.Reply {
				r := goodRem
				r.Confidence = 0.95
				r.Params = map[string]any{"step": "ship", "timeout": "60s"}
				return []llmtest.Reply{{Content: answerJSON(t, r)}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 || ex.Remediations[0].Confidence != 0.6 || !ex.Capped[0] {
					t.Errorf("got %+v capped %v", ex.Remediations, ex.Capped)
				}
			},
		},
		{
			name: "fenced json accepted",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: "```json\n" + answerJSON(t, goodRem) + "\n```\n"}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if ex.Repaired || len(ex.Remediations) != 1 {
					t.Errorf("got %+v", ex)
				}
			},
		},
		{
			name: "params: unknown and non-string dropped with notes",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t, rem{
					Action: "change_retry_policy", Rationale: "r", Cites: []string{"e2"}, Confidence: 0.4,
					Params: map[string]any{"step": "charge", "max_attempts": 5, "timeout": "60s", "shell": "rm -rf /"},
				})}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 1 {
					t.Fatalf("got %+v", ex)
				}
				if p := ex.Remediations[0].Params; len(p) != 1 || p["step"] != "charge" {
					t.Errorf("params = %v", p)
				}
				notes := strings.Join(ex.Notes, "\n")
				for _, want := range []string{`"max_attempts", which is not a string`, `"shell", which the action does not take`, `"timeout", which the action does not take`} {
					if !strings.Contains(notes, want) {
						t.Errorf("notes %q lack %q", notes, want)
					}
				}
			},
		},
		{
			name: "ranked by checked confidence",
			script: func(t *testing.T) []llmtest.Reply {
				return []llmtest.Reply{{Content: answerJSON(t,
					rem{Action: "escalate", Rationale: "r", Cites: []string{"e1"}, Confidence: 0.9},
					goodRem)}}
			},
			requests: 1,
			check: func(t *testing.T, ex *Explanation) {
				if len(ex.Remediations) != 2 || ex.Remediations[0].Action != insight.ActionChangeTimeout || !ex.Capped[1] || ex.Capped[0] {
					t.Errorf("got %+v capped %v", ex.Remediations, ex.Capped)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.New(t, tt.script(t)...)
			c := newTestClient(t, srv, nil)
			ex, err := c.Explain(context.Background(), testInput())
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Explain: %v", err)
			}
			if got := len(srv.Requests()); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
			if tt.check != nil {
				tt.check(t, ex)
			}
		})
	}
}

func wantRejected(t *testing.T, ex *Explanation, action, reason string) {
	t.Helper()
	for _, r := range ex.Rejected {
		if r.Action == action && strings.Contains(r.Reason, reason) {
			return
		}
	}
	t.Errorf("rejected = %+v, want %s: %s", ex.Rejected, action, reason)
}

func TestExplainRepairTellsTheError(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: `{"summary": 1}`}, llmtest.Reply{Content: answerJSON(t, goodRem)})
	c := newTestClient(t, srv, nil)
	if _, err := c.Explain(context.Background(), testInput()); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	msgs := reqs[1].Messages
	if len(msgs) != 4 || msgs[2].Role != "assistant" || msgs[2].Content != `{"summary": 1}` {
		t.Fatalf("repair messages = %+v", msgs)
	}
	if last := msgs[3]; last.Role != "user" || !strings.Contains(last.Content, "does not match the schema") {
		t.Errorf("repair prompt = %q", last.Content)
	}
}

func TestExplainRequestShape(t *testing.T) {
	srv := llmtest.New(t, llmtest.Reply{Content: answerJSON(t, goodRem)})
	c := newTestClient(t, srv, func(c *Config) { c.MaxTokens = 900 })
	if _, err := c.Explain(context.Background(), testInput()); err != nil {
		t.Fatal(err)
	}
	r := srv.Requests()[0]
	if r.Method != "POST" || r.Path != llmtest.Path || r.Model != "test-model" || r.MaxTokens != 900 {
		t.Errorf("request = %s %s model %q max_tokens %d", r.Method, r.Path, r.Model, r.MaxTokens)
	}
	if r.Temperature == nil || *r.Temperature != 0 {
		t.Errorf("temperature = %v, want 0", r.Temperature)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
		t.Errorf("Authorization = %q", got)
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name   string         `json:"name"`
			Strict bool           `json:"strict"`
			Schema map[string]any `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(r.ResponseFormat, &rf); err != nil {
		t.Fatal(err)
	}
	if rf.Type != "json_schema" || rf.JSONSchema.Name != answerSchemaName || !rf.JSONSchema.Strict || rf.JSONSchema.Schema["type"] != "object" {
		t.Errorf("response_format = %s", r.ResponseFormat)
	}
	// The vocabulary and the evidence ids constrain the answer.
	for _, want := range []string{`"enum":["retry_step","reroute"`, `"enum":["e1","e2"]`} {
		if !strings.Contains(string(r.ResponseFormat), want) {
			t.Errorf("schema lacks %s: %s", want, r.ResponseFormat)
		}
	}
	if len(r.Messages) != 2 || r.Messages[0].Role != "system" || r.Messages[1].Role != "user" {
		t.Fatalf("messages = %+v", r.Messages)
	}
	for _, want := range []string{"deadline exceeded after 30s", `"candidates"`, `"payments"`, `"e2"`} {
		if !strings.Contains(r.Messages[1].Content, want) {
			t.Errorf("user message lacks %s:\n%s", want, r.Messages[1].Content)
		}
	}
}

func TestExplainRedaction(t *testing.T) {
	const (
		schemaSecret = "4242-secret-pin"
		keySecret    = "hunter2-password"
		card         = "4111 1111 1111 1111"
		bearer       = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
		inline       = "s3cr3t-inline"
	)
	in := testInput()
	in.Evidence[0].Text = "charge failed: card " + card + " declined; retried with Authorization: Bearer " + bearer
	in.Evidence[1].Text = "connecting to db with password=" + inline + " failed"
	in.Findings[0].Summary = "charge failed for card " + card
	in.Context = map[string]any{
		"input": map[string]any{
			"customer": map[string]any{"name": "Ada", "pin": schemaSecret},
			"db":       map[string]any{"Password": keySecret},
		},
	}
	in.ContextSchema = map[string]any{
		"type": "object",
		"properties": map[string]any{"input": map[string]any{
			"type": "object",
			"properties": map[string]any{"customer": map[string]any{
				"type":       "object",
				"properties": map[string]any{"pin": map[string]any{"type": "string", "x-sensitive": true}},
			}},
		}},
	}
	srv := llmtest.New(t, llmtest.Reply{Content: "not json"})
	c := newTestClient(t, srv, nil)
	_, err := c.Explain(context.Background(), in) // two rounds: both must be clean
	if !errors.Is(err, ErrInvalidAnswer) {
		t.Fatalf("err = %v", err)
	}
	if n := len(srv.Requests()); n != 2 {
		t.Fatalf("%d requests", n)
	}
	for _, secret := range []string{schemaSecret, keySecret, card, strings.ReplaceAll(card, " ", ""), bearer, inline} {
		if srv.Contains(secret) {
			t.Errorf("%q reached the server", secret)
		}
	}
	if !srv.Contains("Ada") || !srv.Contains(redacted) {
		t.Errorf("redaction removed too much or nothing:\n%s", srv.Requests()[0].Body)
	}
}

func TestCompleteHTTP(t *testing.T) {
	tests := []struct {
		name     string
		script   []llmtest.Reply
		requests int
		wantErr  []string // substrings; nil means success
	}{
		{
			name:     "401 names the key env var",
			script:   []llmtest.Reply{{Status: 401, Content: `{"error": {"message": "Incorrect API key provided: ` + testKey + `"}}`}},
			requests: 1,
			wantErr:  []string{"HTTP 401", "$" + testKeyEnv},
		},
		{
			name:     "403 names the key env var",
			script:   []llmtest.Reply{{Status: 403}},
			requests: 1,
			wantErr:  []string{"HTTP 403", "$" + testKeyEnv},
		},
		{
			name:     "404 points at endpoint and model",
			script:   []llmtest.Reply{{Status: 404, Content: `{"error": "model 'test-model' not found"}`}},
			requests: 1,
			wantErr:  []string{"HTTP 404", "endpoint", `model "test-model"`, "not found"},
		},
		{
			name:     "429 with Retry-After then success",
			script:   []llmtest.Reply{{Status: 429, Header: map[string]string{"Retry-After": "1"}}, {Content: `{"ok": true}`}},
			requests: 2,
		},
		{
			name:     "503 twice then success",
			script:   []llmtest.Reply{{Status: 503}, {Status: 502}, {Content: `{"ok": true}`}},
			requests: 3,
		},
		{
			name:     "500 gives up after 3 attempts",
			script:   []llmtest.Reply{{Status: 500, Content: "boom"}},
			requests: 3,
			wantErr:  []string{"HTTP 500", "boom"},
		},
		{
			name:     "400 is not retried",
			script:   []llmtest.Reply{{Status: 400, Content: `{"error": {"message": "response_format not supported"}}`}},
			requests: 1,
			wantErr:  []string{"HTTP 400", "response_format not supported"},
		},
		{
			name:     "truncated answer",
			script:   []llmtest.Reply{{Content: `{"ok": tr`, FinishReason: "length"}},
			requests: 1,
			wantErr:  []string{"max_tokens"},
		},
		{
			name:     "empty answer",
			script:   []llmtest.Reply{{Content: "  "}},
			requests: 1,
			wantErr:  []string{"empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.New(t, tt.script...)
			c := newTestClient(t, srv, nil)
			start := time.Now()
			out, err := c.Complete(context.Background(), []Message{{Role: "user", Content: "hi"}}, json.RawMessage(`{"type": "object"}`), "t")
			if got := len(srv.Requests()); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Complete: %v", err)
				}
				if string(out) != `{"ok": true}` {
					t.Errorf("out = %s", out)
				}
				if ra := tt.script[0].Header["Retry-After"]; ra == "1" && time.Since(start) < time.Second {
					t.Errorf("retried after %v, before Retry-After", time.Since(start))
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, out = %s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error quotes the API key: %v", err)
			}
		})
	}
}

func TestCompleteContextTimeout(t *testing.T) {
	tests := []struct {
		name   string
		script []llmtest.Reply
	}{
		{"slow answer", []llmtest.Reply{{Content: `{}`, Delay: 5 * time.Second}}},
		{"long Retry-After", []llmtest.Reply{{Status: 429, Header: map[string]string{"Retry-After": "30"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.New(t, tt.script...)
			c := newTestClient(t, srv, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.Complete(ctx, []Message{{Role: "user", Content: "hi"}}, json.RawMessage(`{}`), "t")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want deadline exceeded", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v: the context did not bound it", d)
			}
		})
	}
}

func TestNotConfigured(t *testing.T) {
	c, err := New(Config{}, nil)
	if c != nil || !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("New(Config{}) = %v, %v", c, err)
	}
	if !strings.Contains(err.Error(), "endpoint") {
		t.Errorf("error does not say how to configure: %v", err)
	}
	var nilc *Client
	if _, err := nilc.Explain(context.Background(), testInput()); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("nil Explain: %v", err)
	}
	if _, err := nilc.Complete(context.Background(), nil, json.RawMessage(`{}`), "t"); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("nil Complete: %v", err)
	}
}

func TestNew(t *testing.T) {
	env := func(k string) string {
		if k == "SET" {
			return "key"
		}
		return ""
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means success
		check   func(t *testing.T, c *Client)
	}{
		{name: "defaults", cfg: Config{Endpoint: "http://localhost:11434/v1/", Model: "m"}, check: func(t *testing.T, c *Client) {
			if c.url != "http://localhost:11434/v1/chat/completions" || c.cfg.Timeout != DefaultTimeout || c.cfg.ConfidenceCap != DefaultConfidenceCap || c.key != "" {
				t.Errorf("client = %+v", c)
			}
		}},
		{name: "full path accepted", cfg: Config{Endpoint: "https://api.example.com/v1/chat/completions", Model: "m"}, check: func(t *testing.T, c *Client) {
			if c.url != "https://api.example.com/v1/chat/completions" {
				t.Errorf("url = %s", c.url)
			}
		}},
		{name: "key read", cfg: Config{Endpoint: "http://h/v1", Model: "m", APIKeyEnv: "SET"}, check: func(t *testing.T, c *Client) {
			if c.key != "key" {
				t.Errorf("key not read")
			}
		}},
		{name: "model without endpoint", cfg: Config{Model: "m"}, wantErr: "endpoint is empty"},
		{name: "not a URL", cfg: Config{Endpoint: "localhost:11434", Model: "m"}, wantErr: "endpoint \"localhost:11434\" is not an http or https URL"},
		{name: "ftp", cfg: Config{Endpoint: "ftp://h/v1", Model: "m"}, wantErr: "not an http or https URL"},
		{name: "credentials in URL", cfg: Config{Endpoint: "http://u:p@h/v1", Model: "m"}, wantErr: "api_key_env"},
		{name: "no model", cfg: Config{Endpoint: "http://h/v1"}, wantErr: "model is required"},
		{name: "negative timeout", cfg: Config{Endpoint: "http://h/v1", Model: "m", Timeout: -1}, wantErr: "timeout"},
		{name: "negative max tokens", cfg: Config{Endpoint: "http://h/v1", Model: "m", MaxTokens: -1}, wantErr: "max_tokens"},
		{name: "cap above 1", cfg: Config{Endpoint: "http://h/v1", Model: "m", ConfidenceCap: 1.5}, wantErr: "confidence_cap"},
		{name: "key env unset", cfg: Config{Endpoint: "http://h/v1", Model: "m", APIKeyEnv: "UNSET"}, wantErr: "api_key_env names UNSET but it is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg, env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestStripFence(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":1}`, `{"a":1}`},
		{"  {\"a\":1}\n", `{"a":1}`},
		{"```json\n{\"a\":1}\n```", `{"a":1}`},
		{"```\n{\"a\":1}\n```\n", `{"a":1}`},
		{"```JSON\n{\"a\":1}```", `{"a":1}`},
		{"```{\"a\":1}```", `{"a":1}`},
	}
	for _, tt := range tests {
		if got := StripFence(tt.in); got != tt.want {
			t.Errorf("StripFence(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
