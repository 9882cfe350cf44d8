package main

import (
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const leaveUsage = `
Usage: tasker leave [-addr URL] [-o table|json]

Makes the agent at -addr leave the cluster gracefully and exit: a leader
hands leadership to another server first, a server leaves the Raft
configuration, and every agent leaves gossip, so that the others stop
dispatching to it. It answers once it has begun leaving, and exits
shortly after. Run it against the agent to stop, before taking it down.

With -o json it prints the agent's (empty) response, {}.
` + apiFlagsHelp + apiExit

func leaveCommand() command {
	return command{name: "leave", synopsis: "make an agent leave the cluster gracefully and exit", usage: leaveUsage, run: runLeave}
}

func runLeave(args []string, stdout, stderr io.Writer) int {
	c := leaveCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q; leave acts on the agent at -addr (use force-leave to remove another)", pos[0])
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.Leave(ctx, connect.NewRequest(&taskerv1.LeaveRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	fmt.Fprintf(stdout, "the agent at %s is leaving the cluster; it exits once it has left\n", cn.addr)
	return exitOK
}

const forceLeaveUsage = `
Usage: tasker force-leave NODE [-addr URL] [-o table|json]

Removes a failed agent, NODE (its name, as 'tasker members' lists it),
from the cluster without its help: from the Raft configuration if it was
a server, and from dispatch at once, so that no step waits for it. Use it
for an agent that is gone and cannot run 'tasker leave'. It prints
whether NODE was removed from Raft.

With -o json it prints the agent's response: {"removed_from_raft": true}
or false.
` + apiFlagsHelp + apiExit

func forceLeaveCommand() command {
	return command{name: "force-leave", synopsis: "remove a failed agent from the cluster", usage: forceLeaveUsage, run: runForceLeave}
}

func runForceLeave(args []string, stdout, stderr io.Writer) int {
	c := forceLeaveCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want the name of one agent (as 'tasker members' lists them), got %d arguments", len(pos))
	}
	node := pos[0]
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.ForceLeave(ctx, connect.NewRequest(&taskerv1.ForceLeaveRequest{Node: node}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	if resp.Msg.RemovedFromRaft {
		fmt.Fprintf(stdout, "%s left by force: removed from the Raft configuration and from dispatch\n", node)
	} else {
		fmt.Fprintf(stdout, "%s left by force: removed from dispatch; it was not in the Raft configuration\n", node)
	}
	return exitOK
}
