package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tasker-run/tasker/agent"
)

func agentCommand() command {
	return command{
		name:     "agent",
		synopsis: "run a Tasker agent (the sidecar; -dev for a whole dev cluster)",
		usage: `Usage: tasker agent [flags]

Runs the agent next to your app. A server agent (-server) holds workflow
state in Raft; -dev runs a one-server cluster on loopback with a temporary
data dir: a developer's whole cluster in one command.

Settings come from defaults, then -config FILE, then TASKER_* environment
variables, then flags. The agent stops gracefully on SIGINT or SIGTERM:
apps finish the steps they hold (up to the shutdown timeout), the rest are
handed back, and Raft closes cleanly.

Flags:
` + agent.Usage(),
		run: runAgent,
	}
}

func runAgent(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, agentCommand().usage)
			return exitOK
		}
	}
	cfg, err := agent.Load(args, os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "tasker agent: %v\n", err)
		return exitUsage
	}
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[cfg.LogLevel]
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(h)
	a, err := agent.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "tasker agent: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "tasker agent: %v\n", err)
		return exitFail
	}
	if cfg.Dev {
		fmt.Fprintf(stdout, "tasker dev agent ready: API on %s (Ctrl-C to stop)\n", a.Addr())
	}
	select {
	case <-ctx.Done():
	case <-a.Left():
		log.Info("left the cluster")
		return exitOK
	}
	stop()
	if a.Leaving() {
		// 'tasker leave' in a preStop hook (Kubernetes) or ExecStop returns
		// once the leave has begun, and the stop signal follows at once: a
		// shutdown now would race the leave and cut a leader's handoff
		// short. The leave shuts the agent down itself, within its own
		// bounds; a second signal still ends the process at once.
		log.Info("stop signal while leaving the cluster: finishing the leave first")
		<-a.Left()
		log.Info("left the cluster")
		return exitOK
	}
	log.Info("shutting down")
	if err := a.Shutdown(context.Background()); err != nil {
		fmt.Fprintf(stderr, "tasker agent: shutdown: %v\n", err)
		return exitFail
	}
	return exitOK
}
