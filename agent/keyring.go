package agent

// Gossip key rotation (tasker keyring): every agent keeps its gossip keys
// in <data-dir>/keyring.json; the agent an operator asks fans each
// operation out to every alive member over AgentService.Keyring and
// reports each member's answer.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	agentv1 "github.com/tasker-run/tasker/proto/tasker/agent/v1"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// keyringCallTimeout bounds each member's answer to a fanned-out keyring
// operation.
const keyringCallTimeout = 5 * time.Second

// errNoEncryption answers keyring operations on an agent whose gossip is
// not encrypted: a keyring cannot be added to a running memberlist.
var errNoEncryption = errors.New("gossip encryption is not enabled on this agent: keyring operations need every agent started with -encrypt KEY (tasker keygen); a cluster without encryption cannot turn it on by rotation, restart its agents with -encrypt instead")

// keyringPath is this agent's keyring file: in its data dir, or in the
// temporary data dir of -dev (gone at exit).
func (a *Agent) keyringPath() string {
	return filepath.Join(cmp.Or(a.cfg.DataDir, a.tmpDir), gossip.KeyringFile)
}

// openKeyring loads the keyring file of the data dir, or creates it from
// -encrypt. The file wins over -encrypt: a rotation changes the file, and
// a restart with the -encrypt of the agent's first start must not undo it.
// It returns nil when gossip is not encrypted (no file, no -encrypt).
func (a *Agent) openKeyring() (*gossip.Keyring, error) {
	var seed []byte
	if a.cfg.Encrypt != "" {
		k, err := gossip.DecodeKey(a.cfg.Encrypt)
		if err != nil {
			return nil, fmt.Errorf("encrypt: %w; generate one with 'tasker keygen'", err)
		}
		seed = k
	}
	path := a.keyringPath()
	kr, loaded, err := gossip.OpenKeyring(path, seed)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	switch {
	case kr == nil:
	case !loaded:
		a.log.Info("gossip keyring created from -encrypt", "keyring", path)
	case a.cfg.Encrypt != "" && !kr.Has(a.cfg.Encrypt):
		a.log.Warn("-encrypt ignored: the keyring file takes precedence, and its keys were rotated since; drop -encrypt, or give the current primary key", "keyring", path)
	default:
		_, keys := kr.Keys()
		a.log.Info("gossip keyring loaded", "keyring", path, "keys", len(keys))
	}
	return kr, nil
}

// keyFingerprint names a key in logs without revealing it.
func keyFingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}

// opName is a keyring operation as the CLI names it.
func opName(op taskerv1.KeyringOp) string {
	return strings.ToLower(strings.TrimPrefix(op.String(), "KEYRING_OP_"))
}

// checkKeyringRequest validates an operation and its key; the errors name
// the field and the fix.
func checkKeyringRequest(op taskerv1.KeyringOp, key string) error {
	switch op {
	case taskerv1.KeyringOp_KEYRING_OP_LIST:
		if key != "" {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("key: list takes no key; leave it empty"))
		}
		return nil
	case taskerv1.KeyringOp_KEYRING_OP_INSTALL, taskerv1.KeyringOp_KEYRING_OP_USE, taskerv1.KeyringOp_KEYRING_OP_REMOVE:
	default:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("op: %v is not an operation: use list, install, use or remove", op))
	}
	if key == "" {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("key: is required to %s a key: the base64 key, as 'tasker keygen' prints it", opName(op)))
	}
	if _, err := gossip.DecodeKey(key); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("key: %w; generate one with 'tasker keygen'", err))
	}
	return nil
}

// Keyring lists or changes this agent's gossip keys (AgentService).
func (s *agentRPC) Keyring(_ context.Context, req *connect.Request[agentv1.KeyringRequest]) (*connect.Response[agentv1.KeyringResponse], error) {
	a := s.a
	op, key := req.Msg.GetOp(), req.Msg.GetKey()
	if err := checkKeyringRequest(op, key); err != nil {
		return nil, err
	}
	kr := a.keyring
	if kr == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errNoEncryption)
	}
	var err error
	switch op {
	case taskerv1.KeyringOp_KEYRING_OP_INSTALL:
		err = kr.Install(key)
	case taskerv1.KeyringOp_KEYRING_OP_USE:
		err = kr.Use(key)
	case taskerv1.KeyringOp_KEYRING_OP_REMOVE:
		err = kr.Remove(key)
	}
	switch {
	case errors.Is(err, gossip.ErrKeyNotInstalled), errors.Is(err, gossip.ErrRemovePrimary):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		a.log.Error("gossip keyring not changed", "op", opName(op), "key", keyFingerprint(key), "err", err)
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("keyring %s: %w", opName(op), err))
	case op != taskerv1.KeyringOp_KEYRING_OP_LIST:
		a.log.Info("gossip keyring changed", "op", opName(op), "key", keyFingerprint(key), "keyring", kr.Path())
	}
	primary, keys := kr.Keys()
	return connect.NewResponse(&agentv1.KeyringResponse{Node: a.cfg.NodeName, Keys: keys, Primary: primary}), nil
}

// keyringAnswer is one member's answer to a fanned-out operation.
type keyringAnswer struct {
	node string
	resp *agentv1.KeyringResponse
	err  error
}

// keyringOn runs op on every member in ms at once (this agent without an
// RPC); the answers are in ms's order.
func (a *Agent) keyringOn(ctx context.Context, ms []gossip.Member, op taskerv1.KeyringOp, key string) []keyringAnswer {
	out := make([]keyringAnswer, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			req := connect.NewRequest(&agentv1.KeyringRequest{Op: op, Key: key})
			var resp *connect.Response[agentv1.KeyringResponse]
			var err error
			if m.Name == a.cfg.NodeName {
				resp, err = (&agentRPC{a}).Keyring(ctx, req)
			} else {
				cctx, cancel := context.WithTimeout(ctx, keyringCallTimeout)
				resp, err = a.fwd.peerClient(a.rpcURL(m.RPCAddr)).Keyring(cctx, req)
				cancel()
			}
			out[i] = keyringAnswer{node: m.Name, err: err}
			if err == nil {
				out[i].resp = resp.Msg
			}
		})
	}
	wg.Wait()
	return out
}

// errText is an error as one table cell: a Connect error's message
// without its code prefix, and the code when it says more.
func errText(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeFailedPrecondition, connect.CodeInvalidArgument, connect.CodeInternal:
			return ce.Message()
		}
		return fmt.Sprintf("%s (%s)", cmp.Or(ce.Message(), ce.Code().String()), ce.Code())
	}
	return err.Error()
}

// Keyring lists or changes the gossip keys of every alive member
// (ClusterService): INSTALL, USE and REMOVE first check every member's
// keyring and change nothing when one lacks the key to use, uses the key
// to remove as its primary, or cannot be asked.
func (c *clusterAPI) Keyring(ctx context.Context, req *connect.Request[taskerv1.KeyringRequest]) (*connect.Response[taskerv1.KeyringResponse], error) {
	a := c.a
	op, key := req.Msg.GetOp(), req.Msg.GetKey()
	if err := checkKeyringRequest(op, key); err != nil {
		return nil, err
	}
	if a.keyring == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errNoEncryption)
	}
	var alive []gossip.Member
	var notAsked []string
	for _, m := range a.gossip.Members() {
		if m.Status == gossip.StatusAlive {
			alive = append(alive, m)
		} else {
			notAsked = append(notAsked, fmt.Sprintf("%s (%s)", m.Name, m.Status))
		}
	}
	slices.SortFunc(alive, func(x, y gossip.Member) int { return strings.Compare(x.Name, y.Name) })
	slices.Sort(notAsked)

	if op == taskerv1.KeyringOp_KEYRING_OP_USE || op == taskerv1.KeyringOp_KEYRING_OP_REMOVE {
		if err := a.keyringPreflight(ctx, alive, op, key); err != nil {
			return nil, err
		}
	}
	answers := a.keyringOn(ctx, alive, op, key)
	out := &taskerv1.KeyringResponse{Op: op, Total: int32(len(answers)), NotAsked: notAsked, Agent: a.cfg.NodeName}
	type count struct{ members, primary int32 }
	counts := map[string]*count{}
	var failed []string
	for _, r := range answers {
		n := &taskerv1.KeyringNode{Node: r.node, Ok: r.err == nil}
		if r.err != nil {
			n.Error = errText(r.err)
			out.Failed++
			failed = append(failed, r.node)
		} else {
			n.Keys, n.Primary = r.resp.Keys, r.resp.Primary
			for _, k := range r.resp.Keys {
				ct := counts[k]
				if ct == nil {
					ct = &count{}
					counts[k] = ct
				}
				ct.members++
				if k == r.resp.Primary {
					ct.primary++
				}
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	for k, ct := range counts {
		out.Keys = append(out.Keys, &taskerv1.KeyringKey{Key: k, Members: ct.members, Primary: ct.primary})
	}
	slices.SortFunc(out.Keys, func(x, y *taskerv1.KeyringKey) int { return strings.Compare(x.Key, y.Key) })
	if op != taskerv1.KeyringOp_KEYRING_OP_LIST {
		if len(failed) > 0 {
			a.log.Warn("gossip keyring: the operation failed on some members", "op", opName(op), "key", keyFingerprint(key),
				"members", out.Total, "failed", failed)
		} else {
			a.log.Info("gossip keyring: the operation succeeded on every alive member", "op", opName(op), "key", keyFingerprint(key), "members", out.Total)
		}
	}
	return connect.NewResponse(out), nil
}

// keyringPreflight asks every member for its keys before USE or REMOVE,
// and refuses (FAILED_PRECONDITION, nothing changed) when a member could
// not be asked, lacks the key to use, or uses the key to remove as its
// primary: going ahead would cut those members off from the others' gossip.
func (a *Agent) keyringPreflight(ctx context.Context, ms []gossip.Member, op taskerv1.KeyringOp, key string) error {
	var unreachable, blocked []string
	for _, r := range a.keyringOn(ctx, ms, taskerv1.KeyringOp_KEYRING_OP_LIST, "") {
		switch {
		case r.err != nil:
			unreachable = append(unreachable, fmt.Sprintf("%s (%s)", r.node, errText(r.err)))
		case op == taskerv1.KeyringOp_KEYRING_OP_USE && !slices.Contains(r.resp.Keys, key):
			blocked = append(blocked, r.node)
		case op == taskerv1.KeyringOp_KEYRING_OP_REMOVE && r.resp.Primary == key:
			blocked = append(blocked, r.node)
		}
	}
	var msgs []string
	if len(blocked) > 0 {
		if op == taskerv1.KeyringOp_KEYRING_OP_USE {
			msgs = append(msgs, fmt.Sprintf("the key is not installed on %d of %d members: %s; install it everywhere first: tasker keyring install KEY",
				len(blocked), len(ms), strings.Join(blocked, ", ")))
		} else {
			msgs = append(msgs, fmt.Sprintf("the key is the primary key of %d of %d members: %s; make another key primary first: tasker keyring use OTHER-KEY",
				len(blocked), len(ms), strings.Join(blocked, ", ")))
		}
	}
	if len(unreachable) > 0 {
		msgs = append(msgs, fmt.Sprintf("%d of %d members could not be asked for their keys: %s; retry once they answer (or 'tasker force-leave' the ones that are gone)",
			len(unreachable), len(ms), strings.Join(unreachable, "; ")))
	}
	if len(msgs) == 0 {
		return nil
	}
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s; no member changed", strings.Join(msgs, "; ")))
}
