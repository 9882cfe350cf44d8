package consensus

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// hclCapture is an slog JSON handler at level min whose records the test
// reads back.
type hclCapture struct {
	buf bytes.Buffer
}

func newHCLCapture(min slog.Level) (*hclCapture, *slog.Logger) {
	c := &hclCapture{}
	return c, slog.New(slog.NewJSONHandler(&c.buf, &slog.HandlerOptions{Level: min, AddSource: true}))
}

func (c *hclCapture) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(c.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	c.buf.Reset()
	return out
}

func TestHCLogAdapterMapsLevels(t *testing.T) {
	tests := []struct {
		level hclog.Level
		call  func(hclog.Logger, string, ...any)
		want  string // slog's name for the level; "" = not logged
	}{
		{hclog.Trace, hclog.Logger.Trace, "DEBUG-4"},
		{hclog.Debug, hclog.Logger.Debug, "DEBUG"},
		{hclog.Info, hclog.Logger.Info, "INFO"},
		{hclog.Warn, hclog.Logger.Warn, "WARN"},
		{hclog.Error, hclog.Logger.Error, "ERROR"},
		{hclog.NoLevel, nil, "INFO"},
		{hclog.Off, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			c, l := newHCLCapture(levelTrace)
			h := newHCLogger(l, "raft")
			h.Log(tt.level, "via Log", "k", 1)
			if tt.call != nil {
				tt.call(h, "via method", "k", 1)
			}
			recs := c.records(t)
			if tt.want == "" {
				if len(recs) != 0 {
					t.Fatalf("logged %v, want nothing", recs)
				}
				return
			}
			want := 1
			if tt.call != nil {
				want = 2
			}
			if len(recs) != want {
				t.Fatalf("got %d records, want %d", len(recs), want)
			}
			for _, r := range recs {
				if r["level"] != tt.want || r["logger"] != "raft" || r["k"] != 1.0 {
					t.Errorf("record %v: want level %s, logger raft, k=1", r, tt.want)
				}
				// The source is the caller, not the adapter.
				src, _ := r["source"].(map[string]any)
				if file, _ := src["file"].(string); filepath.Base(file) != "logger_test.go" {
					t.Errorf("source file = %v, want logger_test.go", src["file"])
				}
			}
		})
	}
}

func TestHCLogAdapterFollowsTheHandlersLevel(t *testing.T) {
	c, l := newHCLCapture(slog.LevelInfo)
	h := newHCLogger(l, "")
	got := []bool{h.IsTrace(), h.IsDebug(), h.IsInfo(), h.IsWarn(), h.IsError()}
	if want := []bool{false, false, true, true, true}; !slices.Equal(got, want) {
		t.Errorf("Is* = %v, want %v", got, want)
	}
	if h.GetLevel() != hclog.Info {
		t.Errorf("GetLevel() = %v, want info", h.GetLevel())
	}
	h.SetLevel(hclog.Trace) // the slog handler decides, not raft
	h.Debug("dropped")
	h.Info("kept")
	if recs := c.records(t); len(recs) != 1 || recs[0]["msg"] != "kept" {
		t.Errorf("records = %v, want only the info one", recs)
	}
	_, off := newHCLCapture(slog.LevelError + 1)
	if lvl := newHCLogger(off, "").GetLevel(); lvl != hclog.Off {
		t.Errorf("GetLevel() with everything disabled = %v, want off", lvl)
	}
}

func TestHCLogAdapterNamesAndImpliedArgs(t *testing.T) {
	c, l := newHCLCapture(slog.LevelDebug)
	h := newHCLogger(l, "raft").With("node", "s1")
	net := h.Named("net")
	if net.Name() != "raft.net" {
		t.Errorf("Name() = %q, want raft.net", net.Name())
	}
	if got := net.ImpliedArgs(); !slices.Equal(got, []any{"node", "s1"}) {
		t.Errorf("ImpliedArgs() = %v", got)
	}
	net.Info("hello")
	h.ResetNamed("other").Warn("bye")
	recs := c.records(t)
	if len(recs) != 2 {
		t.Fatalf("records = %v", recs)
	}
	if recs[0]["logger"] != "raft.net" || recs[0]["node"] != "s1" {
		t.Errorf("named record = %v", recs[0])
	}
	if recs[1]["logger"] != "other" || recs[1]["node"] != "s1" {
		t.Errorf("reset record = %v", recs[1])
	}
}

func TestHCLogAdapterStandardLogger(t *testing.T) {
	c, l := newHCLCapture(slog.LevelDebug)
	h := newHCLogger(l, "raft")

	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] disk is slow")
	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("no level here")
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("[DEBUG] forced")
	h.StandardLogger(nil).Print("plain")

	want := []struct{ level, msg string }{
		{"WARN", "disk is slow"},
		{"INFO", "no level here"},
		{"ERROR", "[DEBUG] forced"},
		{"INFO", "plain"},
	}
	recs := c.records(t)
	if len(recs) != len(want) {
		t.Fatalf("records = %v", recs)
	}
	for i, w := range want {
		if recs[i]["level"] != w.level || recs[i]["msg"] != w.msg {
			t.Errorf("record %d = %v, want %s %q", i, recs[i], w.level, w.msg)
		}
	}
}
