package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const eventsUsage = `
Usage: tasker events [-follow] [-type T]... [-task ID] [-after ID] [-addr URL] [-o table|json]

Prints the cluster's recent events, as the leader keeps them (the last
4096; older task events are in 'tasker task watch ID'), one line each:
time (UTC), type, task, step, attempt and what happened. The types are
listed in docs/events.md: task.*, step.*, breaker.*, member.* and
leader.elected.

-follow goes on printing events as they happen, until ^C. When the
stream breaks (the leader changed or restarted) it reconnects and
resumes after the last event printed; if the new leader no longer holds
that event, it says so on stderr and prints what it holds, skipping
events already printed.

-type keeps only events of a type (step.failed) or of types that start
with a prefix ending in a dot (step.); repeat it or separate types with
commas. -task keeps only the events of one task. -after resumes after an
event id printed before (with -o json).

With -o json it prints one JSON object per event, with its id, sequence,
type, time, correlation id (the task), trace id and payload.
` + apiFlagsHelp + `
Exit status: 0 when the events are printed (or -follow is stopped by ^C),
1 when the agent refused or could not be reached, 2 on a usage error.
`

// reconnectFor is how long -follow keeps trying to reconnect after the
// stream broke, without receiving anything: long enough for an election.
const reconnectFor = 30 * time.Second

func eventsCommand() command {
	return command{name: "events", synopsis: "print the cluster's events, or follow them", usage: eventsUsage, run: runEvents}
}

// typeList is a repeatable, comma-separated -type.
type typeList []string

func (l *typeList) String() string { return strings.Join(*l, ",") }

func (l *typeList) Set(s string) error {
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			*l = append(*l, t)
		}
	}
	return nil
}

func runEvents(args []string, stdout, stderr io.Writer) int {
	c := eventsCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	follow := fs.Bool("follow", false, "go on printing events as they happen, until ^C")
	var types typeList
	fs.Var(&types, "type", "only events of this `type`, or prefix ending in a dot (step.); repeatable")
	task := fs.String("task", "", "only the events of the task `ID`")
	after := fs.String("after", "", "resume after the event `ID`")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError(stderr, c, "unexpected argument %q: filter with -type and -task", pos[0])
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.context()
	defer cancel()
	w := &eventWriter{conn: cn, seen: map[string]bool{}}
	req := &taskerv1.WatchEventsRequest{Types: types, TaskId: *task, AfterId: *after, IncludeHistory: *after == "", Follow: *follow}
	return w.watch(ctx, req)
}

// eventWriter prints the events of one `tasker events`, across reconnects.
type eventWriter struct {
	*conn
	last string          // the id of the last event printed
	seen map[string]bool // ids printed, to skip them after a resume with a gap
}

// watch prints the stream's events; with follow it reconnects after a
// break until reconnectFor passes without an answer.
func (w *eventWriter) watch(ctx context.Context, req *taskerv1.WatchEventsRequest) int {
	var brokeAt time.Time
	for {
		err := w.stream(ctx, req, &brokeAt)
		if err == nil || ctx.Err() != nil {
			return exitOK // the history is printed, or ^C
		}
		if code := connect.CodeOf(err); !req.Follow || (code != connect.CodeUnavailable && code != connect.CodeUnknown && code != connect.CodeInternal) {
			return w.fail(err)
		}
		if brokeAt.IsZero() {
			brokeAt = time.Now()
		}
		if time.Since(brokeAt) > reconnectFor {
			return w.fail(fmt.Errorf("gave up reconnecting after %s: %w", reconnectFor, err))
		}
		// Resume after the last event printed; with none yet, from the
		// history again (what was printed is skipped).
		if w.last != "" {
			req.AfterId, req.IncludeHistory = w.last, false
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stream runs one WatchEvents call and prints what it sends; it clears
// brokeAt once the agent answers.
func (w *eventWriter) stream(ctx context.Context, req *taskerv1.WatchEventsRequest, brokeAt *time.Time) error {
	stream, err := w.workflows.WatchEvents(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	*brokeAt = time.Time{}
	for stream.Receive() {
		m := stream.Msg()
		e := m.GetEvent()
		if e == nil {
			continue
		}
		if m.GetGap() && w.last != "" {
			fmt.Fprintf(w.stderr, "tasker %s: events may be missing after %s: the leader no longer holds it (a new leader, or more events than it keeps); printing what it holds\n", w.cmd.name, w.last)
		}
		if w.seen[e.GetId()] {
			continue
		}
		if len(w.seen) > 1<<16 {
			clear(w.seen) // a bound: only a resume with a gap repeats events, and only the ring's
		}
		w.seen[e.GetId()] = true
		w.last = e.GetId()
		if w.json() {
			if code := w.writeProto(e, true); code != exitOK {
				return errors.New("stdout is closed")
			}
			continue
		}
		w.line(e)
	}
	return stream.Err()
}

// eventFields are the payload fields a line shows.
type eventFields struct {
	Step    string `json:"step"`
	Attempt int    `json:"attempt"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// taskWidth fits a task id (tsk_ and 26 characters).
const taskWidth = 30

func (w *eventWriter) line(e *taskerv1.ClusterEvent) {
	var f eventFields
	// A payload that is no JSON object still prints its line, without details.
	_ = json.Unmarshal([]byte(e.GetPayloadJson()), &f)
	attempt := "-"
	if f.Attempt > 0 {
		attempt = fmt.Sprint(f.Attempt)
	}
	msg := f.Message
	if f.Code != "" && !strings.HasPrefix(msg, f.Code) {
		msg = f.Code + ": " + msg
	}
	fmt.Fprintf(w.stdout, "%-12s  %-*s  %-*s  %-12s  %2s  %s\n", clock(e.GetTime()), eventTypeWidth, e.GetType(),
		taskWidth, dash(e.GetCorrelationId()), dash(f.Step), attempt, msg)
}
