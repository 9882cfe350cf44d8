package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
)

// nameCluster gives the cluster its id, once, as its first leader: a
// server whose state carries another id belongs to another history and is
// never added to this cluster (see autopilot).
func (a *Agent) nameCluster(ctx context.Context) {
	if err := a.node.Barrier(ctx); err != nil {
		if ctx.Err() == nil {
			// Until the next leader names it, the autopilot refuses every
			// server that has state: say why.
			a.log.Warn("cluster not named: barrier failed; servers with state cannot join until a leader names it", "err", err)
		}
		return
	}
	if a.state.ClusterID() != "" {
		return
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	for attempt := 0; ctx.Err() == nil && a.state.ClusterID() == "" && attempt < 20; attempt++ {
		_, err := a.proposeLocal(ctx, &fsmv1.Command{Kind: &fsmv1.Command_InitCluster{InitCluster: &fsmv1.InitCluster{ClusterId: id}}})
		if err == nil {
			a.log.Info("cluster named", "cluster_id", id)
			return
		}
		a.log.Warn("cluster not named yet; trying again", "err", err, "attempt", attempt+1)
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}
