package mcpserver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tasker-run/tasker/internal/window"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// Options configure a server.
type Options struct {
	// Version is reported to clients as the server's version.
	Version string
	// ReadOnly offers only the tools that change nothing: no task is
	// started, no step retried or resolved, no proposal decided.
	ReadOnly bool
	// Logger receives the SDK's log of the protocol; nil for none.
	Logger *slog.Logger
}

// instructions tell a connected assistant how the tools fit together.
const instructions = `Tasker runs workflows: a workflow is a manifest of steps (each a capability some service offers) with dependencies; a task is one run of a workflow. ` +
	`Use list_failures or list_tasks to find tasks, get_task for one task's steps, diagnose_workflow_failure for a failed task's root cause with evidence, ` +
	`analyze_workflow_performance and optimize_workflow_dependencies for a workflow's timings. Changes to workflows go through proposals, which a person with an operator token approves: ` +
	`never guess or invent an operator_token; ask the operator to approve.`

// New builds the MCP server over the clients, which must come from
// NewClients.
func New(c Clients, opts Options) (*mcp.Server, error) {
	if !c.authed {
		return nil, errors.New("mcpserver: the clients were not built with NewClients, which sends each call's token; build them with it")
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "tasker", Title: "Tasker", Version: cmp.Or(opts.Version, "dev")}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       opts.Logger,
		// No logging capability: the server logs nothing to clients.
		Capabilities: &mcp.ServerCapabilities{},
	})
	h := &handlers{c: c}
	addTools(s, h, opts.ReadOnly)
	addResources(s, h)
	addPrompts(s)
	return s, nil
}

// handlers are the tools', resources' and prompts' handlers.
type handlers struct{ c Clients }

// callerContext is ctx with the token of the MCP request req carries.
func callerContext(ctx context.Context, req mcp.Request) context.Context {
	if req == nil || req.GetExtra() == nil {
		return ctx
	}
	return withCaller(ctx, req.GetExtra().Header)
}

// protoJSON is m as JSON, for structured content and resources, as
// `tasker -o json` writes it.
func protoJSON(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return b, nil
}

// result is a tool's answer: summary as text, m as structured content.
func result(summary string, m proto.Message) (*mcp.CallToolResult, any, error) {
	b, err := protoJSON(m)
	if err != nil {
		return nil, nil, err
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: summary}}}, b, nil
}

// apiError turns an error of call into a tool error an assistant can act
// on: the API's message, and what to do when the cause is not the input.
func apiError(call string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("%s: %w", call, err)
	}
	msg := ce.Message()
	if msg == "" {
		msg = ce.Code().String()
	}
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("%s: unauthenticated: %s (the agent has ACLs on: connect with a token, Authorization: Bearer over HTTP or -token for tasker mcp)", call, msg)
	case connect.CodePermissionDenied:
		return fmt.Errorf("%s: permission denied: %s", call, msg)
	case connect.CodeNotFound:
		if strings.HasPrefix(strings.ToLower(msg), "not found") {
			return fmt.Errorf("%s: %s", call, msg)
		}
		return fmt.Errorf("%s: not found: %s", call, msg)
	case connect.CodeUnimplemented:
		return fmt.Errorf("%s: this agent does not offer it yet: %s", call, msg)
	case connect.CodeUnavailable:
		return fmt.Errorf("%s: the agent is unavailable, retry shortly: %s", call, msg)
	case connect.CodeInvalidArgument:
		if d := details(ce); d != "" {
			return fmt.Errorf("%s: invalid: %s%s", call, msg, d)
		}
		return fmt.Errorf("%s: invalid: %s", call, msg)
	case connect.CodeFailedPrecondition:
		return fmt.Errorf("%s: refused: %s", call, msg)
	}
	return fmt.Errorf("%s: %s: %s", call, ce.Code(), msg)
}

// details lists a refused manifest's problems or a refused value's
// contract violations, one per line.
func details(ce *connect.Error) string {
	var b strings.Builder
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		switch v := v.(type) {
		case *taskerv1.ValidationFailure:
			for _, p := range v.Problems {
				fmt.Fprintf(&b, "\n- %s (line %d): %s", p.Path, p.Line, p.Message)
			}
		case *taskerv1.ContractFailure:
			for _, x := range v.Violations {
				fmt.Fprintf(&b, "\n- %s %s: %s", v.Contract, x.Pointer, x.Message)
			}
		}
	}
	return b.String()
}

// required is the error of a required argument left empty.
func required(field, fix string) error {
	return fmt.Errorf("%s is required: %s", field, fix)
}

// parseWindow reads a look-back window as `tasker ai` does.
func parseWindow(field, s string) (time.Duration, error) {
	d, err := window.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, nil
}

// jsonText encodes an object argument for a *_json field; nil is {}.
func jsonText(field string, v map[string]any) (string, error) {
	if v == nil {
		return "{}", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return string(b), nil
}
