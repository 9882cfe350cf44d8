package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const capabilitiesUsage = `
Usage: tasker capabilities [-addr URL] [-o table|json]

Lists every capability offered in the cluster, as gossip tells the agent
at -addr, one row per capability and agent offering it: CAPABILITY AGENT
VERSION (as the app declares it) CONCURRENCY (how many steps of it the
agent runs at once; - for no declared limit) SCHEMA (a short digest of
its input and result schemas). Providers of one capability with
different digests advertise different contracts, as during a rolling
upgrade; the command says so on standard error.
` + apiFlagsHelp + apiExit

func capabilitiesCommand() command {
	return command{name: "capabilities", synopsis: "list the capabilities offered and the agents offering them", usage: capabilitiesUsage, run: runCapabilities}
}

func runCapabilities(args []string, stdout, stderr io.Writer) int {
	c := capabilitiesCommand()
	cn, code, ok := connectNoArgs(c, args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.Capabilities(ctx, connect.NewRequest(&taskerv1.CapabilitiesRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	caps := resp.Msg.Capabilities
	if len(caps) == 0 {
		fmt.Fprintln(stderr, "no capabilities: no app has registered with an agent of the cluster")
		return exitOK
	}
	tw := table(stdout)
	row(tw, "CAPABILITY", "AGENT", "VERSION", "CONCURRENCY", "SCHEMA")
	var mixed []string
	for _, cp := range caps {
		if len(cp.Providers) == 0 {
			row(tw, cp.Name, "-", "-", "-", "-")
			continue
		}
		digests := map[string]bool{}
		for _, p := range cp.Providers {
			concurrency := "-"
			if p.MaxConcurrency > 0 {
				concurrency = fmt.Sprint(p.MaxConcurrency)
			}
			row(tw, cp.Name, p.Agent, dash(p.Version), concurrency, dash(p.SchemaDigest))
			digests[p.SchemaDigest] = true
		}
		if len(digests) > 1 {
			mixed = append(mixed, cp.Name)
		}
	}
	tw.Flush()
	if len(mixed) > 0 {
		fmt.Fprintf(stderr, "providers advertise different contracts (schema digests) for %s\n", strings.Join(mixed, ", "))
	}
	return exitOK
}
