package consensus

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tasker-run/tasker/mtls"
)

// TLS makes Raft's transport speak TLS (see package mtls): servers only
// let in peers that show a server's certificate from the cluster's CA.
type TLS struct {
	// Incoming is the listening side's configuration (mtls
	// Config.IncomingRaft): it requires a server's certificate.
	Incoming *tls.Config
	// Outgoing is the dialling side's (mtls Config.OutgoingRaft); nil
	// dials plaintext, for a cluster moving to TLS (verify_outgoing off).
	Outgoing *tls.Config
	// AllowPlaintext lets in peers that do not start a TLS handshake, for
	// the same move (verify_incoming off). A peer that does start one
	// must still show a server's certificate.
	AllowPlaintext bool
}

// tlsStream is a raft.StreamLayer over TCP and TLS.
type tlsStream struct {
	*mtls.Listener
	advertise net.Addr
	out       *tls.Config
}

var _ raft.StreamLayer = (*tlsStream)(nil)

func newTLSStream(bind string, advertise net.Addr, t *TLS, log *slog.Logger) (*tlsStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("%s is not an address other servers can reach", advertise)
	}
	return &tlsStream{Listener: mtls.NewListener(ln, t.Incoming, t.AllowPlaintext, log), advertise: advertise, out: t.Outgoing}, nil
}

// Dial connects to another server, over TLS unless outgoing TLS is off.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.out == nil {
		return d.Dial("tcp", string(addr))
	}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), s.out)
	if err != nil {
		return nil, fmt.Errorf("raft TLS to %s: %w (%s)", addr, err, mtls.Hint(err))
	}
	return c, nil
}

// Addr is the address other servers reach this one at.
func (s *tlsStream) Addr() net.Addr { return s.advertise }
