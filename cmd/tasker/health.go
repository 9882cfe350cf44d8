package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/grpchealth"
)

const healthUsage = `
Usage: tasker health [-addr URL] [-live] [-timeout D]

Asks the agent at -addr for its gRPC health (grpc.health.v1 on the local
API), as a probe does, and prints the answer. The agent is SERVING once it
has a leader to write through and is not shutting down.

Exit status: 0 when the agent is SERVING; 1 when it answers NOT_SERVING or
does not answer within -timeout; 2 on a usage error.

With -live, any answer is enough: the process is up and its API serves,
leader or not. Use it for liveness probes, which must not restart a server
that waits for a quorum (restarting it would not bring one back); use the
default for readiness, so that no traffic goes to an agent that cannot
write. The Kubernetes manifests and the container image's HEALTHCHECK run
this command (the API stays on loopback, where the kubelet cannot probe
it).

-addr defaults to $TASKER_ADDR, else http://127.0.0.1:7420. The health
service needs no ACL token.
`

// defaultHealthTimeout fits a probe's usual 1-5 s timeout.
const defaultHealthTimeout = 2 * time.Second

func healthCommand() command {
	return command{name: "health", synopsis: "check an agent's health, as a readiness or liveness probe", usage: healthUsage, run: runHealth}
}

func runHealth(args []string, stdout, stderr io.Writer) int {
	c := healthCommand()
	fs := flags(c, stderr)
	addrFlag := fs.String("addr", "", "the agent's local API `URL` (default $TASKER_ADDR, else http://127.0.0.1:7420)")
	live := fs.Bool("live", false, "succeed on any answer, SERVING or not (liveness)")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "how `long` to wait for the answer")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	if *timeout <= 0 {
		return usageError(stderr, c, "-timeout %v: want a positive duration", *timeout)
	}
	addr, err := agentAddr(*addrFlag)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := grpchealth.NewClient(httpClient(), addr).Check(ctx, &grpchealth.CheckRequest{})
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		fmt.Fprintf(stderr, "tasker health: no answer from the agent at %s within %v\n", addr, *timeout)
		return exitFail
	case err != nil:
		fmt.Fprintf(stderr, "tasker health: cannot reach the agent at %s: %v\n", addr, err)
		return exitFail
	}
	fmt.Fprintf(stdout, "%s: %s\n", addr, strings.ToUpper(res.Status.String()))
	if res.Status == grpchealth.StatusServing || *live {
		return exitOK
	}
	return exitFail
}
