package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestServer(t *testing.T) {
	srv := New(t, Reply{Status: 429, Header: map[string]string{"Retry-After": "1"}}, Reply{Content: `{"a":1}`})
	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"first reply", "/chat/completions", 429, "Too Many Requests"},
		{"second reply", "/chat/completions", 200, `"content":"{\"a\":1}"`},
		{"last reply repeats", "/chat/completions", 200, `"content":"{\"a\":1}"`},
		{"wrong path", "/completions", 404, "no route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, srv.URL()+tt.path, `{"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}, "temperature": 0}`)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %s, want %d %s", status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
	reqs := srv.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests recorded", len(reqs))
	}
	r := reqs[0]
	if r.Model != "m" || len(r.Messages) != 1 || r.Messages[0].Content != "hi" || string(r.ResponseFormat) != `{"type": "json_object"}` || r.Temperature == nil {
		t.Errorf("recorded %+v", r)
	}
	if !srv.Contains(`"hi"`) || srv.Contains("secret") {
		t.Errorf("Contains is wrong")
	}
}

func TestEmptyScriptFails(t *testing.T) {
	var failures []string
	h := NewHandler(func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) })
	srv := httptest.NewServer(h)
	defer srv.Close()
	status, body := post(t, srv.URL+Path, `{}`)
	if status != 500 || len(failures) != 1 {
		t.Errorf("status %d body %s failures %v", status, body, failures)
	}
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
		t.Errorf("error body %s: %v", body, err)
	}
}
