package main

// The operator commands (workflow, task, step, snapshot, members, raft,
// capabilities, breakers, leave, force-leave) are clients of an agent's
// local API, like any app: this file is how they reach it and how its
// errors read.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	sdkclient "github.com/tasker-run/tasker/sdk/go/client"
	"github.com/tasker-run/tasker/workflow"
)

// defaultAddr is the agent's local API (see ARCHITECTURE.md, ports).
const defaultAddr = "http://127.0.0.1:7420"

// addrEnv names the environment variable that replaces defaultAddr.
const addrEnv = "TASKER_ADDR"

// callTimeout bounds each request-response call; streams (watch, snapshot)
// run until they end or the user interrupts.
const callTimeout = 30 * time.Second

// apiFlags are the flags every operator command shares, and the read
// commands' -stale and -consistent.
type apiFlags struct {
	addr   *string
	token  *string // the ACL token (acl.go); "" means $TASKER_TOKEN
	format *outputFormat
	// stale and consistent are nil for a command that does not read
	// workflow state.
	stale, consistent *bool
}

// consistencyHeader is the HTTP request header by which a read asks who
// may answer it: consistencyStale lets any server answer from its own
// state, consistencyConsistent has the leader confirm it still leads
// before answering. Without it the leader answers.
const (
	consistencyHeader     = "Tasker-Consistency"
	consistencyStale      = "stale"
	consistencyConsistent = "consistent"
)

// consistencyHelp describes -stale and -consistent, once for every read
// command.
const consistencyHelp = `
By default the leader answers. -stale lets any server answer from its own
copy of the state: it answers even while there is no leader, but may lag
behind the leader. -consistent has the leader confirm with a quorum of
servers that it still leads before answering, so the answer never comes
from a leader that has just been replaced. They do not combine.
`

// addAPIFlags adds --addr and -o (table or json) to fs.
func addAPIFlags(fs *flag.FlagSet) apiFlags {
	addr := fs.String("addr", "", "agent `URL`; default $"+addrEnv+", else "+defaultAddr)
	token := fs.String("token", "", "ACL `token` when the agent has ACLs on; default $"+tokenEnv)
	f := formatTable
	fs.Var(&tableOrJSON{&f}, "o", "output `format`: table for people, json for scripts")
	return apiFlags{addr: addr, token: token, format: &f}
}

// addReadFlags adds the API flags and -stale and -consistent to fs, for a
// command that only reads workflow state.
func addReadFlags(fs *flag.FlagSet) apiFlags {
	f := addAPIFlags(fs)
	f.stale = fs.Bool("stale", false, "let any server answer from its own state, which may lag the leader")
	f.consistent = fs.Bool("consistent", false, "have the leader confirm it still leads before answering")
	return f
}

// consistency is the value of the Tasker-Consistency header the flags ask
// for; "" for none.
func (f apiFlags) consistency() (string, error) {
	stale, consistent := f.stale != nil && *f.stale, f.consistent != nil && *f.consistent
	switch {
	case stale && consistent:
		return "", errors.New("-stale and -consistent do not combine: pick one")
	case stale:
		return consistencyStale, nil
	case consistent:
		return consistencyConsistent, nil
	}
	return "", nil
}

// consistencyInterceptor sets the Tasker-Consistency header on every call
// a client makes, streams included.
type consistencyInterceptor string

func (v consistencyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(consistencyHeader, string(v))
		return next(ctx, req)
	}
}

func (v consistencyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set(consistencyHeader, string(v))
		return conn
	}
}

func (v consistencyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// tableOrJSON is the value of an operator command's -o.
type tableOrJSON struct{ f *outputFormat }

func (v *tableOrJSON) String() string {
	if v == nil || v.f == nil {
		return string(formatTable)
	}
	return string(*v.f)
}

func (v *tableOrJSON) Set(s string) error {
	switch outputFormat(s) {
	case formatTable, formatJSON:
		*v.f = outputFormat(s)
		return nil
	}
	return fmt.Errorf("want table or json")
}

// agentAddr resolves the agent's base URL: the flag, else $TASKER_ADDR,
// else the default. A bare host:port means http.
func agentAddr(flagValue string) (string, error) {
	addr := flagValue
	if addr == "" {
		addr = os.Getenv(addrEnv)
	}
	if addr == "" {
		addr = defaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	switch {
	case err != nil:
		return "", fmt.Errorf("agent address %q is not a URL", addr)
	case u.Scheme != "http":
		return "", fmt.Errorf("agent address %q: only http:// is supported (the local API is HTTP/2 without TLS)", addr)
	case u.Host == "":
		return "", fmt.Errorf("agent address %q has no host", addr)
	}
	return strings.TrimRight(addr, "/"), nil
}

// conn is one operator command talking to one agent.
type conn struct {
	cmd            command
	addr           string
	format         outputFormat
	stdout, stderr io.Writer
	workflows      taskerv1connect.WorkflowServiceClient
	cluster        taskerv1connect.ClusterServiceClient
	acl            taskerv1connect.AclServiceClient
	insight        taskerv1connect.InsightServiceClient
	proposals      taskerv1connect.ProposalServiceClient
}

// connect makes the clients. It returns an exit code when the address is
// unusable or the flags contradict each other (a usage error).
// connectNoArgs parses the flags of a command that takes no arguments
// (only the API flags) and connects to the agent.
func connectNoArgs(c command, args []string, stdout, stderr io.Writer) (*conn, int, bool) {
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return nil, code, false
	}
	if len(pos) > 0 {
		return nil, usageError(stderr, c, "unexpected argument %q", pos[0]), false
	}
	return api.connect(c, stdout, stderr)
}

func (f apiFlags) connect(c command, stdout, stderr io.Writer) (*conn, int, bool) {
	consistency, err := f.consistency()
	if err != nil {
		return nil, usageError(stderr, c, "%v", err), false
	}
	addr, err := agentAddr(*f.addr)
	if err != nil {
		return nil, usageError(stderr, c, "%v", err), false
	}
	hc := httpClient()
	var opts []connect.ClientOption
	if consistency != "" {
		opts = append(opts, connect.WithInterceptors(consistencyInterceptor(consistency)))
	}
	if t := f.tokenValue(); t != "" {
		opts = append(opts, connect.WithInterceptors(sdkclient.BearerToken(t)))
	}
	return &conn{
		cmd: c, addr: addr, format: *f.format, stdout: stdout, stderr: stderr,
		workflows: taskerv1connect.NewWorkflowServiceClient(hc, addr, opts...),
		cluster:   taskerv1connect.NewClusterServiceClient(hc, addr, opts...),
		acl:       taskerv1connect.NewAclServiceClient(hc, addr, opts...),
		insight:   taskerv1connect.NewInsightServiceClient(hc, addr, opts...),
		proposals: taskerv1connect.NewProposalServiceClient(hc, addr, opts...),
	}, exitOK, true
}

// httpClient speaks HTTP/2 without TLS (h2c, prior knowledge), which
// server and client streams need, and ignores proxy settings: the agent is
// local.
func httpClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:   &p,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// json reports whether the output is for scripts.
func (c *conn) json() bool { return c.format == formatJSON }

// context is for streams and for several calls: an interrupt (^C)
// cancels it.
func (c *conn) context() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// call is for one request-response call: an interrupt cancels it, and it
// ends after callTimeout.
func (c *conn) call() (context.Context, context.CancelFunc) {
	ctx, stop := c.context()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	return ctx, func() { cancel(); stop() }
}

// fail prints err in one line (or, for a refused manifest or value, one
// line and then one per problem) and returns exitFail. source names the
// manifest in problem lines, as `tasker validate` does.
func (c *conn) fail(err error) int { return c.failSource("manifest", err) }

func (c *conn) failSource(source string, err error) int {
	prefix := "tasker " + c.cmd.name + ": "
	var ce *connect.Error
	if !errors.As(err, &ce) {
		fmt.Fprintf(c.stderr, "%s%v\n", prefix, err)
		return exitFail
	}
	msg := ce.Message()
	if msg == "" {
		msg = ce.Code().String()
	}
	var line string
	switch ce.Code() {
	case connect.CodeUnavailable:
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			line = fmt.Sprintf("cannot reach the agent at %s: is `tasker agent` running?", c.addr)
		} else {
			// The agent answered: it has no leader, or is shutting down.
			line = fmt.Sprintf("the agent at %s is unavailable: %s", c.addr, msg)
		}
	case connect.CodeNotFound:
		line = msg
		if !strings.HasPrefix(strings.ToLower(msg), "not found") {
			line = "not found: " + msg
		}
	case connect.CodeInvalidArgument:
		if c.writeDetails(prefix, source, ce) {
			return exitFail
		}
		line = "invalid: " + msg
	case connect.CodeFailedPrecondition:
		line = "refused: " + msg
	case connect.CodeDeadlineExceeded:
		line = fmt.Sprintf("no answer from the agent at %s in time: %s", c.addr, msg)
	case connect.CodeCanceled:
		line = "interrupted"
	case connect.CodeUnimplemented:
		line = fmt.Sprintf("the agent at %s does not offer this call; is it an older version? (%s)", c.addr, msg)
	default:
		line = fmt.Sprintf("%s (%s)", msg, ce.Code())
	}
	fmt.Fprintln(c.stderr, prefix+line)
	return exitFail
}

// writeDetails prints the problems of a refused manifest or the
// violations of a refused value, from the error's details, one per line
// after a summary line. It reports whether there were any.
func (c *conn) writeDetails(prefix, source string, ce *connect.Error) bool {
	var lines []string
	var summary string
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		switch v := v.(type) {
		case *taskerv1.ValidationFailure:
			summary = cmp.Or(summary, fmt.Sprintf("%s: the agent refused it, %s", source, plural(len(v.Problems), "problem")))
			for _, p := range v.Problems {
				lines = append(lines, source+": "+workflow.Problem{Path: p.Path, Line: int(p.Line), Message: p.Message}.String())
			}
		case *taskerv1.ContractFailure:
			summary = cmp.Or(summary, fmt.Sprintf("%s violates its contract, %s", v.Contract, plural(len(v.Violations), "violation")))
			for _, x := range v.Violations {
				lines = append(lines, v.Contract+": "+workflow.Violation{Pointer: x.Pointer, Message: x.Message}.String())
			}
		}
	}
	if len(lines) == 0 {
		return false
	}
	fmt.Fprintln(c.stderr, prefix+summary)
	for _, l := range lines {
		fmt.Fprintln(c.stderr, l)
	}
	return true
}
