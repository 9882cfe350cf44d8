package main

import (
	"cmp"
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const membersUsage = `
Usage: tasker members [-addr URL] [-o table|json]

Lists the agents the agent at -addr knows through gossip: NAME ADDRESS
(its gossip address, host:port; its agent-to-agent address when it
reports none) STATUS (alive, suspect, dead or left) ROLE (server or
client) SYSTEM (its -system label: steps owned by another system never
run there; '-' for none, and such an agent serves every system)
CAPABILITIES (how many its apps offer; 'tasker capabilities' lists them)
VERSION. An agent that has joined no cluster knows only itself.
` + apiFlagsHelp + apiExit

func membersCommand() command {
	return command{name: "members", synopsis: "list the agents of the cluster", usage: membersUsage, run: runMembers}
}

func runMembers(args []string, stdout, stderr io.Writer) int {
	c := membersCommand()
	cn, code, ok := connectNoArgs(c, args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	tw := table(stdout)
	row(tw, "NAME", "ADDRESS", "STATUS", "ROLE", "SYSTEM", "CAPABILITIES", "VERSION")
	for _, m := range resp.Msg.Members {
		row(tw, m.Name, dash(cmp.Or(m.GossipAddress, m.Address)), m.Status, m.Role, dash(m.System), fmt.Sprint(len(m.Capabilities)), dash(m.Version))
	}
	tw.Flush()
	if len(resp.Msg.Members) == 0 {
		fmt.Fprintln(stderr, "no members")
	}
	return exitOK
}
