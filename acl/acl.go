package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Policy is what a token may do; one per token.
type Policy string

// The policies. They are fixed sets, not rule documents: five are enough
// to separate operators, automation, dashboards, apps and agents, and a
// fixed set cannot be misconfigured into a hole.
const (
	// Management may do everything, including cluster operations and
	// managing tokens.
	Management Policy = "management"
	// Writer applies workflows, starts, cancels and repairs tasks, and reads.
	Writer Policy = "writer"
	// Reader reads workflows, tasks, events, dead letters and membership.
	Reader Policy = "reader"
	// App serves its own capabilities, reads, and starts the workflows it
	// lists.
	App Policy = "app"
	// Agent is the identity agents use with each other: applying
	// commands, delivering steps, resolving tokens, forwarding reports,
	// reading. It can commit any command through AgentService.Apply, so
	// it is as sensitive as a management token.
	Agent Policy = "agent"
)

// Policies lists every policy, most powerful first.
var Policies = []Policy{Management, Writer, Reader, App, Agent}

// ParsePolicy checks a policy's name.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown policy %q: use management, writer, reader, app or agent", s)
}

// Need is the kind of access a call needs.
type Need int

// The kinds of access, from the weakest.
const (
	// Read covers every call that only reads.
	Read Need = iota + 1
	// Write covers ApplyWorkflow, CancelTask, RetryStep and ResolveStep.
	Write
	// Start covers StartTask of Request.Workflow.
	Start
	// Worker covers WorkerService calls for Request.Capability; an empty
	// Capability asks only whether the token may serve some capability.
	Worker
	// Operator covers cluster operations, dead-letter replay and tokens.
	Operator
	// AgentRPC covers AgentService, the agent-to-agent API.
	AgentRPC
)

func (n Need) String() string {
	switch n {
	case Read:
		return "read access (reader, writer, app or management)"
	case Write:
		return "write access (writer or management)"
	case Start:
		return "to start the workflow (writer, management, or an app token listing it)"
	case Worker:
		return "to serve the capability (an app token listing it, or management)"
	case Operator:
		return "operator access (management)"
	case AgentRPC:
		return "agent access (an agent token, or management)"
	}
	return "unknown access"
}

// Request is what one call needs.
type Request struct {
	Need Need
	// Capability is the capability a Worker call acts for.
	Capability string
	// Workflow is "namespace/name" for Start.
	Workflow string
}

// Token is a resolved token: its grant, without the secret.
type Token struct {
	AccessorID   string
	Policy       Policy
	Capabilities []string
	Workflows    []string
	Description  string
	CreatedAt    time.Time
	// FromConfig marks the tokens from agent configuration.
	FromConfig bool
}

// DeniedError is a refusal: the token is valid but its policy does not
// cover the call.
type DeniedError struct {
	Token *Token
	Req   Request
}

func (e *DeniedError) Error() string {
	var what string
	switch e.Req.Need {
	case Worker:
		what = fmt.Sprintf("; this call acts for capability %q", e.Req.Capability)
	case Start:
		what = fmt.Sprintf("; this call starts workflow %q", e.Req.Workflow)
	}
	return fmt.Sprintf("token %s has policy %s%s; the call needs %s%s", e.Token.AccessorID, e.Token.Policy, e.Token.scope(), e.Req.Need, what)
}

func (t *Token) scope() string {
	if t.Policy != App {
		return ""
	}
	s := " (capabilities " + strings.Join(t.Capabilities, ", ")
	if len(t.Workflows) > 0 {
		s += "; may start " + strings.Join(t.Workflows, ", ")
	}
	return s + ")"
}

// Allow returns nil when the token's policy covers r, else a *DeniedError.
func (t *Token) Allow(r Request) error {
	if t.allows(r) {
		return nil
	}
	return &DeniedError{Token: t, Req: r}
}

func (t *Token) allows(r Request) bool {
	switch t.Policy {
	case Management:
		return true
	case Writer:
		return r.Need == Read || r.Need == Write || r.Need == Start
	case Reader:
		return r.Need == Read
	case App:
		switch r.Need {
		case Read:
			return true
		case Start:
			return matchAny(t.Workflows, r.Workflow)
		case Worker:
			return r.Capability == "" || matchAny(t.Capabilities, r.Capability)
		}
	case Agent:
		// Agents forward their apps' reports (push results, lease
		// timeouts) with their own identity, the app's token having been
		// checked where the app called; they read the Raft configuration
		// when a server leaves.
		return r.Need == AgentRPC || r.Need == Worker || r.Need == Read
	}
	return false
}

// Match reports whether name matches pattern: "*" matches everything,
// otherwise path.Match's rules ("payments.*", "shop/order-*").
func Match(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}

// CheckGrant validates a token's policy, capabilities and workflows, as
// CreateToken receives them.
func CheckGrant(p Policy, capabilities, workflows []string) error {
	var errs []error
	if p == App && len(capabilities) == 0 {
		errs = append(errs, errors.New("an app token needs at least one capability pattern (-capability 'payments.*')"))
	}
	if p != App && (len(capabilities) > 0 || len(workflows) > 0) {
		errs = append(errs, fmt.Errorf("only app tokens are bound to capabilities and workflows; policy %s covers all of them", p))
	}
	for _, l := range []struct {
		name     string
		patterns []string
	}{{"capability", capabilities}, {"workflow", workflows}} {
		for _, pat := range l.patterns {
			if _, err := path.Match(pat, ""); err != nil || strings.TrimSpace(pat) == "" {
				errs = append(errs, fmt.Errorf("%s pattern %q is not a pattern: use names with * and ? wildcards", l.name, pat))
			}
		}
	}
	return errors.Join(errs...)
}

// SecretPrefix starts every secret, so that secret scanners and people
// recognise a leaked Tasker token.
const SecretPrefix = "tasker_"

// NewSecret returns a new random secret: 256 bits from crypto/rand.
func NewSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// NewAccessorID returns a new public token id.
func NewAccessorID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token accessor id: %w", err)
	}
	return "acc_" + hex.EncodeToString(b[:]), nil
}

// Hash is what the cluster stores of a secret. Secrets carry 256 random
// bits, so an unsalted SHA-256 cannot be reversed by guessing.
func Hash(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }
