package consensus

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/tasker-run/tasker/acl"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
	"github.com/tasker-run/tasker/workflow"
)

// A token stored through the log resolves by its secret's hash on every
// replica, survives a snapshot, and stops resolving once deleted; the
// snapshot never holds the secret.
func TestACLTokensReplicateAndSnapshot(t *testing.T) {
	f := NewFSM(NewState(workflow.Limits{}), nil, nil)
	secret := "tasker_secret-for-the-test"
	h := acl.Hash(secret)
	put := &fsmv1.Command{Kind: &fsmv1.Command_PutAclToken{PutAclToken: &fsmv1.PutAclToken{Token: &fsmv1.AclToken{
		AccessorId: "acc_1", SecretHash: h[:], Policy: "app", Capabilities: []string{"payments.*"},
	}}}}
	if res := f.ApplyCommand(put); res.Err != nil || !res.Created {
		t.Fatalf("put: %+v", res)
	}
	if res := f.ApplyCommand(put); res.Err != nil || res.Created {
		t.Fatalf("a retried put must be acknowledged, not refused: %+v", res)
	}
	tok, ok := f.State().ACLToken(h)
	if !ok || tok.Policy != acl.App || tok.Capabilities[0] != "payments.*" {
		t.Fatalf("resolve: %+v %v", tok, ok)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b := snap.(snapshot)
	if bytes.Contains(b, []byte(secret)) {
		t.Fatal("the snapshot holds the secret")
	}
	g := NewFSM(NewState(workflow.Limits{}), nil, nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.State().ACLToken(h); !ok {
		t.Fatal("the token did not survive the snapshot")
	}
	del := &fsmv1.Command{Kind: &fsmv1.Command_DeleteAclToken{DeleteAclToken: &fsmv1.DeleteAclToken{AccessorId: "acc_1"}}}
	if res := g.ApplyCommand(del); res.Err != nil {
		t.Fatal(res.Err)
	}
	if _, ok := g.State().ACLToken(h); ok {
		t.Fatal("a deleted token still resolves")
	}
	if res := g.ApplyCommand(del); !errors.Is(res.Err, ErrNotFound) {
		t.Fatalf("deleting twice: %v, want not found", res.Err)
	}
	bad := &fsmv1.Command{Kind: &fsmv1.Command_PutAclToken{PutAclToken: &fsmv1.PutAclToken{Token: &fsmv1.AclToken{
		AccessorId: "acc_2", SecretHash: []byte("short"), Policy: "app",
	}}}}
	if res := g.ApplyCommand(bad); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("a malformed token: %v, want invalid", res.Err)
	}
}
