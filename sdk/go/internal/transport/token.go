package transport

import (
	"context"
	"os"

	"connectrpc.com/connect"
)

// TokenEnv names the environment variable an app's ACL token comes from
// when its options set none, as the tasker CLI reads it.
const TokenEnv = "TASKER_TOKEN"

// Token returns token when it is not empty, else the value of TokenEnv.
func Token(token string) string {
	if token != "" {
		return token
	}
	return os.Getenv(TokenEnv)
}

// bearer sends the ACL token in the standard Authorization header on
// every call, streams included.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Bearer is the interceptor that sends token as "Authorization: Bearer".
func Bearer(token string) connect.Interceptor { return bearer(token) }
