package gossip

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's standard-library log lines ("[DEBUG]
// memberlist: text") into slog records at the matching level, so the slog
// handler of the agent decides what is kept.
type logWriter struct {
	l *slog.Logger
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(p))
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

// parseLogLine reads the "[LEVEL]" prefix and drops the "memberlist: "
// one. Lines without a level are Info.
func parseLogLine(line string) (slog.Level, string) {
	msg := strings.TrimSpace(line)
	level := slog.LevelInfo
	if strings.HasPrefix(msg, "[") {
		if end := strings.IndexByte(msg, ']'); end > 0 {
			switch msg[1:end] {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			msg = strings.TrimSpace(msg[end+1:])
		}
	}
	return level, strings.TrimPrefix(msg, "memberlist: ")
}
