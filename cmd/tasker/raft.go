package main

import (
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func raftCommand() command {
	return group("raft", "list the Raft servers that hold the workflow state, or remove one", `
Shows the Raft group of the cluster's servers, which holds all workflow
state; its leader schedules and dispatches the steps. Removes a server
from it for good.
`, raftPeersCommand(), raftRemovePeerCommand())
}

const raftPeersUsage = `
Usage: tasker raft peers [-addr URL] [-o table|json]

Lists the Raft servers: ID ADDRESS VOTER LEADER (* for the leader) LAST
INDEX (the last log index the server reports; - when it could not be
reached), then the leader, the current term, and the commit and applied
indexes. A server whose last index stays behind the commit index is
lagging. A cluster with no leader cannot accept writes; the command says
so on standard error.
` + apiFlagsHelp + apiExit

func raftPeersCommand() command {
	return command{name: "raft peers", synopsis: "list the Raft servers and the leader", usage: raftPeersUsage, run: runRaftPeers}
}

func runRaftPeers(args []string, stdout, stderr io.Writer) int {
	c := raftPeersCommand()
	cn, code, ok := connectNoArgs(c, args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	r := resp.Msg
	tw := table(stdout)
	row(tw, "ID", "ADDRESS", "VOTER", "LEADER", "LAST INDEX")
	for _, p := range r.Peers {
		leader := "-"
		if p.Leader {
			leader = "*"
		}
		last := "-"
		if p.LastIndex > 0 {
			last = fmt.Sprint(p.LastIndex)
		}
		row(tw, p.Id, p.Address, fmt.Sprint(p.Voter), leader, last)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nleader %s, term %d, commit index %d, applied index %d\n", dash(r.Leader), r.Term, r.CommitIndex, r.AppliedIndex)
	if r.Leader == "" {
		fmt.Fprintln(stderr, "no leader: the cluster cannot accept writes until one is elected")
	}
	return exitOK
}

const raftRemovePeerUsage = `
Usage: tasker raft remove-peer ID [-addr URL] [-o table|json]

Removes the Raft server ID (its agent name, as 'tasker raft peers' lists
it) from the Raft configuration, for good: for a server that is gone and
will not come back. The leader does it; any agent passes the call on.
A server that is still running should leave instead ('tasker leave'
against it); 'tasker force-leave' also takes a failed agent out of
dispatch.

With -o json it prints the agent's (empty) response, {}.
` + apiFlagsHelp + apiExit

func raftRemovePeerCommand() command {
	return command{name: "raft remove-peer", synopsis: "remove a server from the Raft configuration", usage: raftRemovePeerUsage, run: runRaftRemovePeer}
}

func runRaftRemovePeer(args []string, stdout, stderr io.Writer) int {
	c := raftRemovePeerCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want the ID of one Raft server (as 'tasker raft peers' lists them), got %d arguments", len(pos))
	}
	id := pos[0]
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.RemovePeer(ctx, connect.NewRequest(&taskerv1.RemovePeerRequest{Id: id}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	fmt.Fprintf(stdout, "removed %s from the Raft configuration\n", id)
	return exitOK
}
