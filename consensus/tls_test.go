package consensus

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tasker-run/tasker/mtls"
)

// lockedBuf collects log lines written from the listener's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRaftTLSAdmitsOnlyServers: over the TLS stream layer, a server's
// Raft port answers another server of its CA, and refuses, with a log
// line that says why, a client agent's certificate posing as a server, a
// server of another CA, and plaintext.
func TestRaftTLSAdmitsOnlyServers(t *testing.T) {
	dir := t.TempDir()
	issue := func(caCert, caKey []byte, role mtls.Role) *mtls.Config {
		t.Helper()
		cert, key, err := mtls.CreateCert(mtls.CertOptions{CACert: caCert, CAKey: caKey, Role: role, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.CreateTemp(dir, "*")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		files := mtls.Files{CA: f.Name() + "-ca.pem", Cert: f.Name() + ".pem", Key: f.Name() + "-key.pem"}
		for path, b := range map[string][]byte{files.CA: caCert, files.Cert: cert, files.Key: key} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c, err := mtls.Load(files, time.Now(), true, true)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, caKey, err := mtls.CreateCA(mtls.CAOptions{Days: 2})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, otherKey, err := mtls.CreateCA(mtls.CAOptions{Days: 2})
	if err != nil {
		t.Fatal(err)
	}
	server := issue(ca, caKey, mtls.RoleServer)

	logs := &lockedBuf{}
	stream, err := newTLSStream("127.0.0.1:0", nil, &TLS{Incoming: server.IncomingRaft(), Outgoing: server.OutgoingRaft()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 1, Timeout: 2 * time.Second})
	defer trans.Close()
	go func() {
		for rpc := range trans.Consumer() {
			rpc.Respond(&raft.RequestVoteResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 1}, nil)
		}
	}()

	for _, tc := range []struct {
		name string
		tls  *TLS
		log  string // why it is refused, in the log or the dialler's error; empty: admitted
	}{
		{"another server of the CA", func() *TLS {
			c := issue(ca, caKey, mtls.RoleServer)
			return &TLS{Incoming: c.IncomingRaft(), Outgoing: c.OutgoingRaft()}
		}(), ""},
		{"a client agent's certificate", func() *TLS {
			c := issue(ca, caKey, mtls.RoleClient)
			return &TLS{Incoming: c.IncomingRaft(), Outgoing: c.OutgoingRaft()}
		}(), "not a server's"},
		{"a server of another CA", func() *TLS {
			c := issue(otherCA, otherKey, mtls.RoleServer)
			return &TLS{Incoming: c.IncomingRaft(), Outgoing: c.OutgoingRaft()}
		}(), "unknown authority"},
		{"plaintext", &TLS{Incoming: server.IncomingRaft()}, "does not look like a TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newTLSStream("127.0.0.1:0", nil, tc.tls, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			dt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: d, MaxPool: 1, Timeout: 2 * time.Second})
			defer dt.Close()
			var resp raft.RequestVoteResponse
			err = dt.RequestVote("s1", raft.ServerAddress(stream.Addr().String()), &raft.RequestVoteRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(d.Addr().String())}, Term: 1,
			}, &resp)
			if tc.log == "" {
				if err != nil || resp.Term != 1 {
					t.Fatalf("a server of the CA: RequestVote = %v (term %d), want an answer", err, resp.Term)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s reached Raft", tc.name)
			}
			deadline := time.Now().Add(2 * time.Second)
			// The dialler may be the one that refuses: then its error says why.
			for !strings.Contains(err.Error()+logs.String(), tc.log) {
				if time.Now().After(deadline) {
					t.Fatalf("refused (%v), but no log line says %q:\n%s", err, tc.log, logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}

	// While a cluster moves to TLS (verify_incoming off), a server's Raft
	// port lets in a server still dialling plaintext.
	mixed, err := newTLSStream("127.0.0.1:0", nil, &TLS{Incoming: server.IncomingRaft(), AllowPlaintext: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: mixed, MaxPool: 1, Timeout: 2 * time.Second})
	defer mt.Close()
	go func() {
		for rpc := range mt.Consumer() {
			rpc.Respond(&raft.RequestVoteResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 2}, nil)
		}
	}()
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var resp raft.RequestVoteResponse
	if err := plain.RequestVote("s1", raft.ServerAddress(mixed.Addr().String()), &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("p"), Addr: []byte(plain.LocalAddr())}, Term: 2,
	}, &resp); err != nil || resp.Term != 2 {
		t.Fatalf("plaintext Raft while moving to TLS: %v (term %d), want an answer", err, resp.Term)
	}
}
