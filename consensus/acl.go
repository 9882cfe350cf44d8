package consensus

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tasker-run/tasker/acl"
	fsmv1 "github.com/tasker-run/tasker/proto/tasker/fsm/v1"
)

// aclTokens are the ACL tokens stored in the cluster, by the SHA-256 hash
// of their secret (the secret itself is never stored) and by accessor id.
type aclTokens struct {
	byHash     map[[32]byte]*fsmv1.AclToken
	byAccessor map[string]*fsmv1.AclToken
}

func newACLTokens() aclTokens {
	return aclTokens{byHash: map[[32]byte]*fsmv1.AclToken{}, byAccessor: map[string]*fsmv1.AclToken{}}
}

// putACLToken stores a token. Tokens are immutable: storing the same token
// again is acknowledged (a retried command), another token under a used
// accessor id or secret hash is refused.
func (s *State) putACLToken(t *fsmv1.AclToken) *Result {
	if err := checkACLToken(t); err != nil {
		return &Result{Err: err}
	}
	h := [32]byte(t.GetSecretHash())
	if old, ok := s.acl.byAccessor[t.GetAccessorId()]; ok {
		if proto.Equal(old, t) {
			return &Result{}
		}
		return &Result{Err: fmt.Errorf("%w: token %s exists", ErrInvalid, t.GetAccessorId())}
	}
	if _, ok := s.acl.byHash[h]; ok {
		return &Result{Err: fmt.Errorf("%w: a token with this secret exists", ErrInvalid)}
	}
	t = proto.CloneOf(t)
	s.acl.byHash[h] = t
	s.acl.byAccessor[t.GetAccessorId()] = t
	return &Result{Created: true}
}

func checkACLToken(t *fsmv1.AclToken) error {
	switch {
	case t == nil || t.GetAccessorId() == "":
		return fmt.Errorf("%w: token has no accessor id", ErrInvalid)
	case len(t.GetSecretHash()) != 32:
		return fmt.Errorf("%w: token %s: secret hash is %d bytes, want 32 (SHA-256)", ErrInvalid, t.GetAccessorId(), len(t.GetSecretHash()))
	}
	p, err := acl.ParsePolicy(t.GetPolicy())
	if err != nil {
		return fmt.Errorf("%w: token %s: %w", ErrInvalid, t.GetAccessorId(), err)
	}
	if err := acl.CheckGrant(p, t.GetCapabilities(), t.GetWorkflows()); err != nil {
		return fmt.Errorf("%w: token %s: %w", ErrInvalid, t.GetAccessorId(), err)
	}
	return nil
}

// deleteACLToken removes a token; NotFound when there is none.
func (s *State) deleteACLToken(id string) *Result {
	t, ok := s.acl.byAccessor[id]
	if !ok {
		return &Result{Err: fmt.Errorf("%w: token %q", ErrNotFound, id)}
	}
	delete(s.acl.byAccessor, id)
	delete(s.acl.byHash, [32]byte(t.GetSecretHash()))
	return &Result{}
}

// ACLToken resolves a secret's SHA-256 hash to its token.
func (s *State) ACLToken(hash [32]byte) (*acl.Token, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.acl.byHash[hash]
	if !ok {
		return nil, false
	}
	return aclView(t), true
}

// ACLTokens lists the stored tokens, oldest first.
func (s *State) ACLTokens() []*acl.Token {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*acl.Token, 0, len(s.acl.byAccessor))
	for _, t := range s.acl.byAccessor {
		out = append(out, aclView(t))
	}
	slices.SortFunc(out, func(a, b *acl.Token) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.AccessorID, b.AccessorID))
	})
	return out
}

func aclView(t *fsmv1.AclToken) *acl.Token {
	var created time.Time
	if t.GetCreatedAt() != nil {
		created = t.GetCreatedAt().AsTime()
	}
	return &acl.Token{
		AccessorID: t.GetAccessorId(), Policy: acl.Policy(t.GetPolicy()), Description: t.GetDescription(),
		Capabilities: slices.Clone(t.GetCapabilities()), Workflows: slices.Clone(t.GetWorkflows()), CreatedAt: created,
	}
}

// sortedACLTokens is the snapshot order of the tokens.
func (s *State) sortedACLTokens() []*fsmv1.AclToken {
	out := make([]*fsmv1.AclToken, 0, len(s.acl.byAccessor))
	for _, t := range s.acl.byAccessor {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *fsmv1.AclToken) int { return cmp.Compare(a.GetAccessorId(), b.GetAccessorId()) })
	return out
}
