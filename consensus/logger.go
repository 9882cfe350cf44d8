package consensus

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// levelTrace is where hclog's Trace lands in slog. slog has no trace level;
// its documentation suggests steps of 4 below Debug for finer levels.
const levelTrace = slog.LevelDebug - 4

// hclogAdapter implements hclog.Logger on top of an *slog.Logger, so raft's
// output goes wherever the agent's structured log goes, with levels mapped
// (Trace→Debug-4, Debug, Info, Warn, Error) and the slog handler deciding
// what is enabled.
type hclogAdapter struct {
	base    *slog.Logger // carries the With attributes, not the name
	l       *slog.Logger // base plus the "logger" attribute
	name    string
	implied []any
}

// newHCLogger adapts l for hclog users. name, when not empty, is recorded in
// every record as the "logger" attribute.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	return newHCLogAdapter(l, name, nil)
}

func newHCLogAdapter(base *slog.Logger, name string, implied []any) *hclogAdapter {
	l := base
	if name != "" {
		l = base.With("logger", name)
	}
	return &hclogAdapter{base: base, l: l, name: name, implied: implied}
}

// slogLevel maps an hclog level. ok is false for hclog.Off, which never logs.
func slogLevel(level hclog.Level) (lvl slog.Level, ok bool) {
	switch level {
	case hclog.Trace:
		return levelTrace, true
	case hclog.Debug:
		return slog.LevelDebug, true
	case hclog.NoLevel, hclog.Info:
		return slog.LevelInfo, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	default:
		return 0, false
	}
}

// emit writes one record. It must be called directly by the exported hclog
// method (never through another helper) so that skipping three frames lands
// the record's source on the caller inside raft, not on this file.
func (a *hclogAdapter) emit(level hclog.Level, msg string, args []any) {
	lvl, ok := slogLevel(level)
	ctx := context.Background()
	if !ok || !a.l.Enabled(ctx, lvl) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // runtime.Callers, emit, the hclog method
	r := slog.NewRecord(time.Now(), lvl, msg, pcs[0])
	r.Add(args...)
	_ = a.l.Handler().Handle(ctx, r)
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) { a.emit(level, msg, args) }
func (a *hclogAdapter) Trace(msg string, args ...any)                  { a.emit(hclog.Trace, msg, args) }
func (a *hclogAdapter) Debug(msg string, args ...any)                  { a.emit(hclog.Debug, msg, args) }
func (a *hclogAdapter) Info(msg string, args ...any)                   { a.emit(hclog.Info, msg, args) }
func (a *hclogAdapter) Warn(msg string, args ...any)                   { a.emit(hclog.Warn, msg, args) }
func (a *hclogAdapter) Error(msg string, args ...any)                  { a.emit(hclog.Error, msg, args) }

func (a *hclogAdapter) enabled(level hclog.Level) bool {
	lvl, ok := slogLevel(level)
	return ok && a.l.Enabled(context.Background(), lvl)
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	implied := append(append([]any(nil), a.implied...), args...)
	return newHCLogAdapter(a.base.With(args...), a.name, implied)
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return newHCLogAdapter(a.base, name, a.implied)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return newHCLogAdapter(a.base, name, a.implied)
}

// SetLevel does nothing: the slog handler owns the level, so that one
// setting (the agent's log level) governs raft too.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel reports the lowest hclog level the slog handler lets through.
func (a *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &stdlogWriter{a: a, level: hclog.Info}
	if opts != nil {
		w.infer = opts.InferLevels || opts.InferLevelsWithTimestamp
		if opts.ForceLevel != hclog.NoLevel {
			w.level, w.infer = opts.ForceLevel, false
		}
	}
	return w
}

// stdlogWriter turns lines written by a standard library logger into
// records, reading a "[LEVEL]" prefix when asked to, as hclog does.
type stdlogWriter struct {
	a     *hclogAdapter
	level hclog.Level
	infer bool
}

func (w *stdlogWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimRight(p, "\r\n"))
	level := w.level
	if w.infer {
		level, msg = inferLevel(msg, level)
	}
	w.a.Log(level, msg)
	return len(p), nil
}

// inferLevel reads a leading "[TRACE]", "[DEBUG]", "[INFO]", "[WARN]" or
// "[ERROR]" (after an optional timestamp) and strips it from msg.
func inferLevel(msg string, def hclog.Level) (hclog.Level, string) {
	open := strings.IndexByte(msg, '[')
	end := strings.IndexByte(msg, ']')
	if open < 0 || end < open {
		return def, msg
	}
	var level hclog.Level
	switch msg[open+1 : end] {
	case "TRACE":
		level = hclog.Trace
	case "DEBUG":
		level = hclog.Debug
	case "INFO":
		level = hclog.Info
	case "WARN":
		level = hclog.Warn
	case "ERR", "ERROR":
		level = hclog.Error
	default:
		return def, msg
	}
	return level, strings.TrimSpace(msg[end+1:])
}
