package main

import (
	"fmt"
	"io"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func raftCommand() command {
	return group("raft", "inspect the Raft servers that hold the workflow state", `
Shows the Raft group of the cluster's servers, which holds all workflow
state; its leader schedules and dispatches the steps.
`, raftPeersCommand())
}

const raftPeersUsage = `
Usage: tasker raft peers [-addr URL] [-o table|json]

Lists the Raft servers: ID ADDRESS STATE (leader or follower) VOTER, then
the leader, the current term, and the commit and applied indexes. A
cluster with no leader cannot accept writes; the command says so on
standard error.
` + apiFlagsHelp + apiExit

func raftPeersCommand() command {
	return command{name: "raft peers", synopsis: "list the Raft servers and the leader", usage: raftPeersUsage, run: runRaftPeers}
}

func runRaftPeers(args []string, stdout, stderr io.Writer) int {
	c := raftPeersCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	cn, code, ok := api.connect(c, stdout, stderr)
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
	row(tw, "ID", "ADDRESS", "STATE", "VOTER")
	for _, p := range r.Peers {
		state := "follower"
		if p.Leader {
			state = "leader"
		}
		row(tw, p.Id, p.Address, state, fmt.Sprint(p.Voter))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nleader %s, term %d, commit index %d, applied index %d\n", dash(r.Leader), r.Term, r.CommitIndex, r.AppliedIndex)
	if r.Leader == "" {
		fmt.Fprintln(stderr, "no leader: the cluster cannot accept writes until one is elected")
	}
	return exitOK
}
