package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tasker-run/tasker/mcpserver"
)

const mcpUsage = `
Usage: tasker mcp [-addr URL] [-token T] [-read-only]

Serves the Model Context Protocol (MCP) over stdio, for an AI assistant
that starts it as a local server (Claude Desktop, an IDE): its tools read
and operate the agent at -addr as the other commands do, through the
local API, under -token's ACL policy.

The tools list and get workflows and tasks, list failures and dead
letters, start tasks, retry and resolve steps, list members and
capabilities, analyze, diagnose and optimize workflows, write a workflow
from a description, and list and decide proposals. Approving, rejecting
or rolling back a proposal always needs an operator's token passed in the
call itself (operator_token): the assistant's own token never decides a
proposal. -read-only offers only the tools that change nothing. The
resources tasker://workflows/{namespace}/{name} (a manifest) and
tasker://tasks/{id} (a task) and the prompt diagnose_failed_task come
with them. docs/cli.md lists the tools.

The protocol is on stdin and stdout; logs go to stderr. It stops when
stdin closes.

An agent also serves MCP itself at /mcp on its local API port
(streamable HTTP), unless it runs with -mcp=false.

-addr defaults to $TASKER_ADDR, else http://127.0.0.1:7420; -token to
$TASKER_TOKEN.

Exit status: 0 when stdin closes; 1 when serving fails; 2 on a usage
error.

Example, in an assistant's MCP configuration:

  {"mcpServers": {"tasker": {"command": "tasker", "args": ["mcp", "-read-only"],
    "env": {"TASKER_TOKEN": "<a reader token>"}}}}
`

func mcpCommand() command {
	return command{name: "mcp", synopsis: "serve the Model Context Protocol over stdio, for AI assistants", usage: mcpUsage, run: runMCP}
}

func runMCP(args []string, stdout, stderr io.Writer) int {
	c := mcpCommand()
	fs := flags(c, stderr)
	addrFlag := fs.String("addr", "", "agent `URL`; default $"+addrEnv+", else "+defaultAddr)
	token := fs.String("token", "", "ACL `token` when the agent has ACLs on; default $"+tokenEnv)
	readOnly := fs.Bool("read-only", false, "offer only the tools that change nothing")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	addr, err := agentAddr(*addrFlag)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	// stdout is the protocol: everything else goes to stderr.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	checkAgent(ctx, log, addr)

	tok := *token
	if tok == "" {
		tok = os.Getenv(tokenEnv)
	}
	srv, err := mcpserver.New(mcpserver.NewClients(httpClient(), addr, tok), mcpserver.Options{Version: currentVersion().Version, ReadOnly: *readOnly, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "tasker mcp: %v\n", err)
		return exitFail
	}
	if err := srv.Run(ctx, &mcp.StdioTransport{}); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "tasker mcp: %v\n", err)
		return exitFail
	}
	return exitOK
}

// checkAgent warns, without stopping, when the agent does not answer:
// the assistant may start before the agent does, and each tool call
// says so again.
func checkAgent(ctx context.Context, log *slog.Logger, addr string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := grpchealth.NewClient(httpClient(), addr).Check(ctx, &grpchealth.CheckRequest{}); err != nil {
		log.Warn("the agent does not answer yet; tools will fail until it does: is `tasker agent` running?", "addr", addr, "err", err)
	}
}
