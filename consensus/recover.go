package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// PeersFile is the name, in a server's Raft data directory, of the file an
// operator writes to recover from an outage that lost quorum (the same
// procedure and format as Consul's and Nomad's peers.json): a JSON list of
// {"id", "address", "non_voter"} naming the servers that are left. At its
// next start the server rewrites its Raft configuration to exactly that
// list, keeping its log and snapshots, then deletes the file. Every listed
// server must be given the same file while all of them are stopped.
const PeersFile = "peers.json"

// recoverFromPeersFile performs manual outage recovery when PeersFile is
// present. Raft cannot shrink a configuration without a quorum, so after
// losing a majority of servers for good this is the only way back short of
// restoring a snapshot into a new cluster; raft.RecoverCluster does the
// rewrite, this checks that it is what the operator meant.
func recoverFromPeersFile(dataDir string, rc *raft.Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore,
	snaps raft.SnapshotStore, trans raft.Transport, hasState bool, log *slog.Logger) error {
	path := filepath.Join(dataDir, PeersFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("outage recovery: %w", err)
	}
	if !hasState {
		return fmt.Errorf("outage recovery: %s is present but this server has no Raft state to recover; "+
			"remove the file and join the server to the cluster instead", path)
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("outage recovery: %s: %w (fix the file: a JSON list of {\"id\", \"address\", \"non_voter\"})", path, err)
	}
	self := false
	for _, s := range conf.Servers {
		if s.ID == rc.LocalID {
			self = s.Suffrage == raft.Voter
		}
	}
	if !self {
		return fmt.Errorf("outage recovery: %s does not list this server (id %q) as a voter; "+
			"the file must name every surviving server, this one included", path, rc.LocalID)
	}
	if err := raft.RecoverCluster(rc, fsm, logs, stable, snaps, trans, conf); err != nil {
		return fmt.Errorf("outage recovery from %s: %w", path, err)
	}
	// Left in place, the file would rewrite the configuration again at
	// every start, undoing any server added since.
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("outage recovery done, but remove %s before the next start: %w", path, err)
	}
	ids := make([]string, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		ids = append(ids, string(s.ID))
	}
	log.Warn("recovered the raft configuration from "+PeersFile+"; the file is deleted", "servers", ids)
	return nil
}
