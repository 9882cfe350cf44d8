package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const breakersUsage = `
Usage: tasker breakers [-addr URL] [-o table|json]

Lists the leader's circuit breakers, one per agent and capability it has
dispatched to (TARGET, agent/capability), after a line naming the leader
that answered and how many are not closed: STATE (closed; open: calls
to the target are refused; half-open: a few trial calls go through) IN
FLIGHT (attempts the leader has there now) REQUESTS FAILURES CONSECUTIVE
(failures in a row), counted since the counts were last cleared, SINCE
(when it last changed state) and OPEN UNTIL (when an open breaker lets a
trial call through), both relative to now.
` + apiFlagsHelp + apiExit

func breakersCommand() command {
	return command{name: "breakers", synopsis: "list the leader's circuit breakers", usage: breakersUsage, run: runBreakers}
}

func runBreakers(args []string, stdout, stderr io.Writer) int {
	c := breakersCommand()
	cn, code, ok := connectNoArgs(c, args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.Breakers(ctx, connect.NewRequest(&taskerv1.BreakersRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	r := resp.Msg
	fmt.Fprintf(stdout, "leader %s: %s\n", dash(r.Leader), breakerSummary(r.Breakers))
	if len(r.Breakers) == 0 {
		return exitOK
	}
	at := now()
	fmt.Fprintln(stdout)
	tw := table(stdout)
	row(tw, "TARGET", "STATE", "IN FLIGHT", "REQUESTS", "FAILURES", "CONSECUTIVE", "SINCE", "OPEN UNTIL")
	for _, b := range r.Breakers {
		row(tw, b.Target, dash(b.State), fmt.Sprint(b.InFlight), fmt.Sprint(b.Requests), fmt.Sprint(b.Failures),
			fmt.Sprint(b.ConsecutiveFailures), relative(b.Since, at), relative(b.OpenUntil, at))
	}
	tw.Flush()
	return exitOK
}

// breakerSummary counts the breakers and those that are not closed: "3
// breakers, 1 open, 1 half-open", or "2 breakers, all closed".
func breakerSummary(bs []*taskerv1.Breaker) string {
	s := plural(len(bs), "breaker")
	if len(bs) == 0 {
		return s + ": it has dispatched to no agent yet"
	}
	var open, half, other int
	for _, b := range bs {
		switch strings.ReplaceAll(b.State, "_", "-") {
		case "closed":
		case "open":
			open++
		case "half-open":
			half++
		default:
			other++
		}
	}
	if open+half+other == 0 {
		return s + ", all closed"
	}
	for _, n := range []struct {
		count int
		what  string
	}{{open, "open"}, {half, "half-open"}, {other, "in another state"}} {
		if n.count > 0 {
			s += fmt.Sprintf(", %d %s", n.count, n.what)
		}
	}
	return s
}

// relative renders a time for people as how long before or after at it
// is: to the second under an hour ("2m5s ago", "in 25s"), to the minute
// above ("1h ago"); "now" within half a second, "-" when unset.
func relative(ts *timestamppb.Timestamp, at time.Time) string {
	if ts == nil {
		return "-"
	}
	d := at.Sub(ts.AsTime())
	if d >= time.Hour || d <= -time.Hour {
		d = d.Round(time.Minute)
	} else {
		d = d.Round(time.Second)
	}
	switch {
	case d > 0:
		return duration(d) + " ago"
	case d < 0:
		return "in " + duration(-d)
	}
	return "now"
}
