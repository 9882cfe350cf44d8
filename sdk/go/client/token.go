package client

import (
	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/sdk/go/internal/transport"
)

// BearerToken returns a Connect interceptor that sends an ACL token as
// "Authorization: Bearer <token>" on every call, streams included: for
// apps that call the sidecar with the generated clients in
// proto/tasker/v1/taskerv1connect directly. Client and worker send
// Options.Token themselves.
func BearerToken(token string) connect.Interceptor { return transport.Bearer(token) }
