package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Capability is one thing an agent's app can do, as the app declared it.
type Capability struct {
	// Name identifies the capability cluster-wide, e.g. "payments.charge".
	Name string `json:"name"`
	// Version is the capability's version as the app declares it.
	Version string `json:"version,omitempty"`
	// Description says what the capability does, for people.
	Description string `json:"description,omitempty"`
	// InputSchema is the JSON Schema of the step input (JSON text; empty means any).
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	// OutputSchema is the JSON Schema of the step result (JSON text; empty means any).
	OutputSchema json.RawMessage `json:"output_schema,omitempty"`
	// MaxConcurrency is how many steps of this capability the agent runs at
	// once; 0 means no declared limit.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Healthy is false while the app reports it cannot serve the
	// capability; unhealthy capabilities are not offered by Registry.Providers.
	Healthy bool `json:"healthy"`
}

// ErrInvalidCatalog is returned (wrapped) by SetCatalog for a catalog that
// cannot be published.
var ErrInvalidCatalog = errors.New("gossip: invalid catalog")

// normalizeCatalog validates caps and returns a sorted deep copy, so that
// the same catalog always encodes (and hashes) the same way.
func normalizeCatalog(caps []Capability) ([]Capability, error) {
	out := make([]Capability, len(caps))
	for i, c := range caps {
		if strings.TrimSpace(c.Name) == "" {
			return nil, fmt.Errorf("%w: capability %d: Name must not be empty", ErrInvalidCatalog, i)
		}
		if c.MaxConcurrency < 0 {
			return nil, fmt.Errorf("%w: capability %q: MaxConcurrency must not be negative", ErrInvalidCatalog, c.Name)
		}
		for field, s := range map[string]json.RawMessage{"InputSchema": c.InputSchema, "OutputSchema": c.OutputSchema} {
			if len(s) > 0 && !json.Valid(s) {
				return nil, fmt.Errorf("%w: capability %q: %s is not valid JSON", ErrInvalidCatalog, c.Name, field)
			}
		}
		c.InputSchema = compactJSON(c.InputSchema)
		c.OutputSchema = compactJSON(c.OutputSchema)
		out[i] = c
	}
	slices.SortFunc(out, func(a, b Capability) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("%w: capability %q is listed twice", ErrInvalidCatalog, out[i].Name)
		}
	}
	return out, nil
}

func compactJSON(s json.RawMessage) json.RawMessage {
	if len(s) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, s); err != nil {
		return slices.Clone(s) // already checked valid; unreachable
	}
	return b.Bytes()
}

// catalogHash is the digest of a normalized catalog carried in the node
// metadata: the first 8 bytes of SHA-256 over its JSON encoding.
func catalogHash(caps []Capability) uint64 {
	b, err := json.Marshal(caps)
	if err != nil {
		return 0 // Capability always marshals
	}
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// Message types, the first byte of every user message and of the push/pull
// state.
const (
	msgNotice  byte = 1 // "node N has catalog version V, hash H" (broadcast, UDP)
	msgPull    byte = 2 // "send me your catalog" (reliable, TCP)
	msgCatalog byte = 3 // a node's whole catalog (reliable, TCP; and push/pull)
	msgLeave   byte = 4 // "node N is leaving" (broadcast, UDP)
)

// catalogMsg is the body of a msgCatalog message.
type catalogMsg struct {
	Node    string `json:"node"`
	Version uint64 `json:"version"`
	// System is the owner's system label (Config.System). Omitted when
	// empty, so an agent without one sends what agents before labels
	// sent; their catalogs, without it, decode as unlabeled.
	System string       `json:"system,omitempty"`
	Caps   []Capability `json:"caps"`
}

func encodeCatalog(m catalogMsg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte{msgCatalog}, b...), nil
}

func decodeCatalog(b []byte) (catalogMsg, error) {
	var m catalogMsg
	if len(b) == 0 || b[0] != msgCatalog {
		return m, errors.New("not a catalog message")
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m, fmt.Errorf("decode catalog: %w", err)
	}
	if m.Node == "" {
		return m, errors.New("decode catalog: no node name")
	}
	return m, nil
}

// notice is the body of a msgNotice message: small enough for any UDP packet.
type notice struct {
	node    string
	version uint64
	hash    uint64
}

func encodeNotice(n notice) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+8+len(n.node))
	b = append(b, msgNotice)
	b = binary.AppendUvarint(b, n.version)
	b = binary.BigEndian.AppendUint64(b, n.hash)
	return append(b, n.node...)
}

func decodeNotice(b []byte) (notice, error) {
	var n notice
	if len(b) == 0 || b[0] != msgNotice {
		return n, errors.New("not a notice")
	}
	v, k := binary.Uvarint(b[1:])
	if k <= 0 || len(b) < 1+k+8+1 {
		return n, errors.New("short notice")
	}
	n.version = v
	n.hash = binary.BigEndian.Uint64(b[1+k:])
	n.node = string(b[1+k+8:])
	return n, nil
}

// nodeMeta is what every agent advertises in memberlist's node metadata.
type nodeMeta struct {
	role       Role
	rpcAddr    string
	version    string
	catVersion uint64 // 0: no catalog published yet
	catHash    uint64
	capCount   int
}

// metaFormat is the first byte of the encoding, so a later agent version
// can change it and still read this one.
const metaFormat = 1

// maxMetaSize is the largest encoding encodeMeta can produce for a valid
// Config: format, role, two length-prefixed strings, two integers and the
// hash. It must stay at most memberlist.MetaMaxSize (512).
const maxMetaSize = 1 + 1 + 2 + MaxRPCAddrLen + 1 + MaxVersionLen + binary.MaxVarintLen64 + 8 + binary.MaxVarintLen64

// encodeMeta encodes m compactly:
//
//	format(1) role(1) len+rpcAddr len+version uvarint(catVersion) hash(8) uvarint(capCount)
func encodeMeta(m nodeMeta) []byte {
	b := make([]byte, 0, 32+len(m.rpcAddr)+len(m.version))
	role := byte(0)
	if m.role == RoleServer {
		role = 1
	}
	b = append(b, metaFormat, role)
	b = binary.AppendUvarint(b, uint64(len(m.rpcAddr)))
	b = append(b, m.rpcAddr...)
	b = binary.AppendUvarint(b, uint64(len(m.version)))
	b = append(b, m.version...)
	b = binary.AppendUvarint(b, m.catVersion)
	b = binary.BigEndian.AppendUint64(b, m.catHash)
	return binary.AppendUvarint(b, uint64(m.capCount))
}

var errBadMeta = errors.New("gossip: malformed node metadata")

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) < 2 || b[0] != metaFormat {
		return m, errBadMeta
	}
	m.role = RoleClient
	if b[1] == 1 {
		m.role = RoleServer
	}
	b = b[2:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	var ok bool
	if m.rpcAddr, ok = str(); !ok {
		return m, errBadMeta
	}
	if m.version, ok = str(); !ok {
		return m, errBadMeta
	}
	v, k := binary.Uvarint(b)
	if k <= 0 || len(b) < k+8 {
		return m, errBadMeta
	}
	m.catVersion = v
	m.catHash = binary.BigEndian.Uint64(b[k:])
	b = b[k+8:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return m, errBadMeta
	}
	m.capCount = int(n)
	return m, nil
}
