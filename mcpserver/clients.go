package mcpserver

import (
	"context"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// Clients are the API clients the tools call. Build them with NewClients:
// its interceptor is what sends each call's token (see the package
// documentation, Tokens).
type Clients struct {
	Workflows taskerv1connect.WorkflowServiceClient
	Cluster   taskerv1connect.ClusterServiceClient
	Insight   taskerv1connect.InsightServiceClient
	Proposals taskerv1connect.ProposalServiceClient
	// authed is set by NewClients: New refuses clients without the token
	// interceptor, which would send an approval under the wrong token.
	authed bool
}

// NewClients makes the clients of the local API at baseURL (such as
// http://127.0.0.1:7420) over hc. token is the ACL token to send when the
// MCP request carries none; "" for none. opts are added to every client.
func NewClients(hc connect.HTTPClient, baseURL, token string, opts ...connect.ClientOption) Clients {
	opts = append([]connect.ClientOption{connect.WithInterceptors(bearer{fallback: token})}, opts...)
	return Clients{
		Workflows: taskerv1connect.NewWorkflowServiceClient(hc, baseURL, opts...),
		Cluster:   taskerv1connect.NewClusterServiceClient(hc, baseURL, opts...),
		Insight:   taskerv1connect.NewInsightServiceClient(hc, baseURL, opts...),
		Proposals: taskerv1connect.NewProposalServiceClient(hc, baseURL, opts...),
		authed:    true,
	}
}

// tokenKey holds, in a call's context, the token its API calls carry.
type tokenKey struct{}

// withToken makes the API calls under ctx carry token.
func withToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// withCaller makes the API calls under ctx carry the token of the MCP
// request whose header h is (nil over stdio); without one, the clients'
// own token.
func withCaller(ctx context.Context, h http.Header) context.Context {
	if t := tokenOf(h); t != "" {
		return withToken(ctx, t)
	}
	return ctx
}

// tokenOf reads a token the way the agent's ACL does: Authorization:
// Bearer, else X-Tasker-Token.
func tokenOf(h http.Header) string {
	if h == nil {
		return ""
	}
	if v := h.Get("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return strings.TrimSpace(h.Get("X-Tasker-Token"))
}

// bearer sends the context's token, else the fallback, as Authorization:
// Bearer on every call.
type bearer struct{ fallback string }

func (b bearer) token(ctx context.Context) string {
	if t, ok := ctx.Value(tokenKey{}).(string); ok && t != "" {
		return t
	}
	return b.fallback
}

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if t := b.token(ctx); t != "" {
			req.Header().Set("Authorization", "Bearer "+t)
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if t := b.token(ctx); t != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+t)
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
