package agent

import (
	"context"

	"connectrpc.com/connect"
	"errors"
)

// bootstrapLoop forms the Raft cluster once -bootstrap-expect servers have
// found each other through gossip. (Being built.)
func (a *Agent) bootstrapLoop(ctx context.Context) {}

// autopilot runs on the leader: it stages servers that join later as
// non-voters and promotes them once caught up, and removes dead servers
// while quorum stays safe. (Being built.)
func (a *Agent) autopilot(ctx context.Context) {}

// removePeer removes a server from the Raft configuration (leader only).
func (a *Agent) removePeer(ctx context.Context, id string) error {
	return connect.NewError(connect.CodeUnimplemented, errors.New("not yet"))
}
