package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sort"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/consensus"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

type clusterAPI struct {
	taskerv1connect.UnimplementedClusterServiceHandler // until every operator call is served
	a                                                  *Agent
}

var _ taskerv1connect.ClusterServiceHandler = (*clusterAPI)(nil)

// version is the agent's version, set by the binary.
var version = "dev"

// Members lists the agents gossip knows, this one included.
func (c *clusterAPI) Members(context.Context, *connect.Request[taskerv1.MembersRequest]) (*connect.Response[taskerv1.MembersResponse], error) {
	caps := map[string][]string{}
	for name, ps := range c.a.gossip.Registry().Catalog() {
		for _, p := range ps {
			caps[p.Agent] = append(caps[p.Agent], name)
		}
	}
	out := &taskerv1.MembersResponse{}
	for _, m := range c.a.gossip.Members() {
		names, system := caps[m.Name], m.System
		if m.Name == c.a.cfg.NodeName {
			// No gossip delay for our own.
			names, system = c.a.workers.capabilities(), c.a.cfg.System
		}
		sort.Strings(names)
		out.Members = append(out.Members, &taskerv1.Member{
			Name: m.Name, Address: m.RPCAddr, GossipAddress: m.Addr, Status: string(m.Status),
			Role: string(m.Role), Version: m.Version, Capabilities: names, System: system,
		})
	}
	return connect.NewResponse(out), nil
}

// Capabilities lists what the cluster offers, as gossip tells this agent.
func (c *clusterAPI) Capabilities(context.Context, *connect.Request[taskerv1.CapabilitiesRequest]) (*connect.Response[taskerv1.CapabilitiesResponse], error) {
	cat := c.a.gossip.Registry().Catalog()
	names := make([]string, 0, len(cat))
	for n := range cat {
		names = append(names, n)
	}
	sort.Strings(names)
	out := &taskerv1.CapabilitiesResponse{}
	for _, n := range names {
		cp := &taskerv1.CapabilityProviders{Name: n}
		for _, p := range cat[n] {
			cp.Providers = append(cp.Providers, &taskerv1.CapabilityProvider{
				Agent: p.Agent, RpcAddress: p.RPCAddr, Version: p.Version, MaxConcurrency: int32(p.MaxConcurrency),
				SchemaDigest: schemaDigest(p.InputSchema, p.OutputSchema), Description: p.Description,
				InputSchemaJson: string(p.InputSchema), OutputSchemaJson: string(p.OutputSchema),
			})
		}
		out.Capabilities = append(out.Capabilities, cp)
	}
	return connect.NewResponse(out), nil
}

// schemaDigest is a short fingerprint of a capability's contracts: equal
// digests mean identical (compacted) schemas.
func schemaDigest(in, out []byte) string {
	if len(in) == 0 && len(out) == 0 {
		return ""
	}
	h := sha256.New()
	h.Write(in)
	h.Write([]byte{0})
	h.Write(out)
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func (c *clusterAPI) RaftPeers(ctx context.Context, _ *connect.Request[taskerv1.RaftPeersRequest]) (*connect.Response[taskerv1.RaftPeersResponse], error) {
	peers, err := c.a.node.Peers()
	if err != nil {
		return nil, toConnect(err)
	}
	st := c.a.node.Stats()
	leader, _ := c.a.node.Leader()
	out := &taskerv1.RaftPeersResponse{Leader: leader, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Term: st.Term}
	last := c.a.peerLastIndexes(ctx, peers)
	for _, p := range peers {
		out.Peers = append(out.Peers, &taskerv1.RaftPeer{Id: p.ID, Address: p.Address, Voter: p.Voter, Leader: p.Leader, LastIndex: last[p.ID]})
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
