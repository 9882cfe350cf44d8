package agent

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

type clusterAPI struct {
	taskerv1connect.UnimplementedClusterServiceHandler // until every operator call is served
	a *Agent
}

var _ taskerv1connect.ClusterServiceHandler = (*clusterAPI)(nil)

// version is the agent's version, set by the binary.
var version = "dev"

func (c *clusterAPI) Members(context.Context, *connect.Request[taskerv1.MembersRequest]) (*connect.Response[taskerv1.MembersResponse], error) {
	role := "client"
	if c.a.cfg.Server {
		role = "server"
	}
	// One agent today; gossip brings the others with the cluster.
	return connect.NewResponse(&taskerv1.MembersResponse{Members: []*taskerv1.Member{{
		Name: c.a.cfg.NodeName, Address: c.a.node.Addr(), Status: "alive", Role: role, Version: version,
		Capabilities: c.a.workers.capabilities(),
	}}}), nil
}

func (c *clusterAPI) RaftPeers(context.Context, *connect.Request[taskerv1.RaftPeersRequest]) (*connect.Response[taskerv1.RaftPeersResponse], error) {
	peers, err := c.a.node.Peers()
	if err != nil {
		return nil, toConnect(err)
	}
	st := c.a.node.Stats()
	leader, _ := c.a.node.Leader()
	out := &taskerv1.RaftPeersResponse{Leader: leader, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Term: st.Term}
	for _, p := range peers {
		out.Peers = append(out.Peers, &taskerv1.RaftPeer{Id: p.ID, Address: p.Address, Voter: p.Voter, Leader: p.Leader})
	}
	return connect.NewResponse(out), nil
}

func (c *clusterAPI) SnapshotSave(ctx context.Context, _ *connect.Request[taskerv1.SnapshotSaveRequest], stream *connect.ServerStream[taskerv1.SnapshotSaveResponse]) error {
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&taskerv1.SnapshotSaveResponse{Data: b}) }}
	if err := c.a.node.SaveSnapshot(ctx, w); err != nil {
		return toConnect(err)
	}
	return w.flush()
}

func (c *clusterAPI) SnapshotRestore(ctx context.Context, stream *connect.ClientStream[taskerv1.SnapshotRestoreRequest]) (*connect.Response[taskerv1.SnapshotRestoreResponse], error) {
	pr, pw := io.Pipe()
	go func() {
		for stream.Receive() {
			if _, err := pw.Write(stream.Msg().GetData()); err != nil {
				return
			}
		}
		pw.CloseWithError(stream.Err())
	}()
	err := c.a.node.RestoreSnapshot(ctx, pr)
	_ = pr.CloseWithError(errors.New("restore finished"))
	switch {
	case errors.Is(err, consensus.ErrCorruptSnapshot):
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, consensus.ErrNotLeader):
		return nil, toConnect(err)
	case err != nil:
		// Raft refuses a restore in some passing states (right after an
		// election, before the configuration entry applies): retry.
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	// The state was replaced: a leader reschedules from it.
	c.a.sched.reset()
	versions, tasks := c.a.state.Counts()
	c.a.log.Info("snapshot restored", "workflow_versions", versions, "tasks", tasks)
	return connect.NewResponse(&taskerv1.SnapshotRestoreResponse{Tasks: int64(tasks), Workflows: int64(versions)}), nil
}

// chunkWriter turns a byte stream into messages of at most 64 KiB.
type chunkWriter struct {
	send func([]byte) error
	buf  []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= 64<<10 {
		if err := w.send(w.buf[:64<<10]); err != nil {
			return 0, err
		}
		w.buf = append([]byte(nil), w.buf[64<<10:]...)
	}
	return len(p), nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = nil
	return err
}
