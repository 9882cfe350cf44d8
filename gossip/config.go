package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role says whether an agent is a Raft server or a client.
type Role string

const (
	// RoleServer is an agent that is a member of the Raft group.
	RoleServer Role = "server"
	// RoleClient is an agent that only runs its app's steps.
	RoleClient Role = "client"
)

// Limits on the fields that travel in the node metadata. With them the
// encoded metadata stays well under memberlist's 512-byte limit (see
// maxMetaSize and TestMetaSizeLimit).
const (
	// MaxNameLen is the longest agent name accepted.
	MaxNameLen = 128
	// MaxRPCAddrLen is the longest RPC address accepted.
	MaxRPCAddrLen = 255
	// MaxVersionLen is the longest agent version string accepted.
	MaxVersionLen = 64
	// MaxSystemLen is the longest system label accepted: a manifest's
	// system names are at most 63 bytes, and a longer label could never
	// equal one.
	MaxSystemLen = 63
)

// Config configures one agent's gossip membership. Name, Role and RPCAddr
// are required; everything else has a default.
type Config struct {
	// Name is the agent's unique name in the cluster (at most MaxNameLen bytes).
	Name string
	// BindAddr is the IP address gossip listens on (TCP and UDP); empty means 0.0.0.0.
	BindAddr string
	// BindPort is the gossip port (7422 in the agent's defaults). 0 lets
	// the operating system pick a free port, which LocalAddr then reports.
	BindPort int
	// AdvertiseAddr is the IP address other agents reach this one at; empty
	// means the bind address (or the first private address when binding to 0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port other agents reach this one at; 0 means the bound port.
	AdvertisePort int
	// Role is RoleServer or RoleClient.
	Role Role
	// RPCAddr is the host:port of this agent's agent-to-agent RPC endpoint
	// (at most MaxRPCAddrLen bytes).
	RPCAddr string
	// Version is the agent's software version (at most MaxVersionLen bytes).
	Version string
	// System is the agent's system label: the name of the system (as a
	// workflow manifest declares it under systems) whose apps this agent is
	// the sidecar of; empty for none. It travels with the catalog, so that
	// every provider of a capability is known together with its system
	// (Provider.System). At most MaxSystemLen bytes of lowercase letters,
	// digits, '-' and '_', starting with a letter.
	System string
	// EncryptKey, when set, encrypts and authenticates all gossip with
	// AES-GCM; it must be 16, 24 or 32 bytes (AES-128/192/256). Every agent
	// of a cluster needs the same key. See GenerateKey and DecodeKey.
	EncryptKey []byte
	// Logger receives this package's and memberlist's logs; nil discards them.
	Logger *slog.Logger
	// Fast shortens memberlist's LAN timings for clusters on one machine
	// (tests, demos): a dead agent is detected in about a second instead
	// of about five. Not for real networks, where it raises false alarms.
	Fast bool

	// tune adjusts memberlist's configuration; tests use it to shorten the
	// LAN timings. Nil in production.
	tune func(*memberlist.Config)
	// syncInterval is how often every member's catalog digest is checked
	// against the catalog held for it (anti-entropy); 0 means defaultSyncInterval.
	syncInterval time.Duration
}

// defaultSyncInterval is the period of the catalog anti-entropy check, and
// the time after which an unanswered catalog pull is retried.
const defaultSyncInterval = time.Second

// validate checks every field and reports all problems at once, each
// message naming its field.
func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("gossip: config %s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Name == "":
		bad("Name", "must not be empty")
	case len(c.Name) > MaxNameLen:
		bad("Name", "is %d bytes, the limit is %d", len(c.Name), MaxNameLen)
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		bad("BindAddr", "%q is not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		bad("BindPort", "%d is not a port (0-65535)", c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		bad("AdvertiseAddr", "%q is not an IP address", c.AdvertiseAddr)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		bad("AdvertisePort", "%d is not a port (0-65535)", c.AdvertisePort)
	}
	if c.Role != RoleServer && c.Role != RoleClient {
		bad("Role", "%q must be %q or %q", c.Role, RoleServer, RoleClient)
	}
	switch {
	case c.RPCAddr == "":
		bad("RPCAddr", "must not be empty")
	case len(c.RPCAddr) > MaxRPCAddrLen:
		bad("RPCAddr", "is %d bytes, the limit is %d", len(c.RPCAddr), MaxRPCAddrLen)
	default:
		if _, port, err := net.SplitHostPort(c.RPCAddr); err != nil {
			bad("RPCAddr", "%q is not host:port: %v", c.RPCAddr, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad("RPCAddr", "%q has no valid port", c.RPCAddr)
		}
	}
	if len(c.Version) > MaxVersionLen {
		bad("Version", "is %d bytes, the limit is %d", len(c.Version), MaxVersionLen)
	}
	if err := checkSystem(c.System); err != nil {
		bad("System", "%v", err)
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		bad("EncryptKey", "is %d bytes, it must be 16, 24 or 32", n)
	}
	return errors.Join(errs...)
}

// GenerateKey returns a new random 32-byte gossip encryption key, base64
// encoded (standard encoding), as `tasker keygen` prints it.
func GenerateKey() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("gossip: generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// DecodeKey decodes a base64 key (as GenerateKey makes) for Config.EncryptKey
// and checks its length.
func DecodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip: encryption key is not base64: %w", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip: encryption key is %d bytes, it must be 16, 24 or 32", n)
	}
	return key, nil
}

// checkSystem validates a system label, this agent's or one received in a
// catalog. The rule is a manifest's system-name rule (this package does not
// depend on workflow): a label that breaks it could never equal a step's
// owner, and the label is printed in tables and logs.
func checkSystem(s string) error {
	if len(s) > MaxSystemLen {
		return fmt.Errorf("is %d bytes, the limit is %d", len(s), MaxSystemLen)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_'):
		default:
			return fmt.Errorf("%q is not a system name: use lowercase letters, digits, '-' or '_', starting with a letter", s)
		}
	}
	return nil
}
