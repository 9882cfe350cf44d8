// Package servers starts real message brokers from the machine's binaries
// (Debian's redis-server and rabbitmq-server) on free loopback ports in a
// test's temporary directory, and can stop and restart them on the same port
// and data for outage tests.
package servers

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one broker process.
type Server struct {
	Name string
	Port int
	Dir  string

	args   func() []string
	env    []string
	bin    string
	ready  func(ctx context.Context) error
	wait   time.Duration
	stopFn func(s *Server) // optional graceful stop before the signal

	mu  sync.Mutex
	cmd *exec.Cmd
	out *bytes.Buffer
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lookBin finds a broker binary on PATH or in the sbin directories Debian
// installs servers into, which a non-root PATH may lack.
func lookBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/lib/rabbitmq/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start starts the process and waits until it is ready.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatalf("%s already running", s.Name)
	}
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), s.env...)
	// Its own process group, so that stopping it also stops the helpers it
	// spawns (RabbitMQ's Erlang VM) and nothing outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &bytes.Buffer{}
	cmd.Stdout = &lockedWriter{w: out}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.Name, err)
	}
	s.cmd, s.out = cmd, out
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	for {
		err := s.ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-exited:
			s.cmd = nil
			t.Fatalf("%s exited before it was ready: %v\n%s", s.Name, err, s.output())
		case <-ctx.Done():
			s.killLocked()
			t.Fatalf("%s not ready after %v: %v\n%s", s.Name, s.wait, err, s.output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the process (gracefully, then by force) and waits for it.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.stopFn != nil {
		s.stopFn(s)
	}
	s.killLocked()
}

func (s *Server) killLocked() {
	cmd := s.cmd
	s.cmd = nil
	if cmd == nil || cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (s *Server) output() string {
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// dialReady is a readiness check that waits for the port to accept.
func dialReady(port int) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Redis starts redis-server with an append-only file in a temp directory,
// so a restart keeps the streams and consumer groups. It skips the test when
// the binary is missing (CI installs it: see .ci/run).
func Redis(t testing.TB) *Server {
	t.Helper()
	bin := lookBin("redis-server")
	if bin == "" {
		t.Skip("redis-server not installed (apt-get install redis-server); .ci/run installs it")
	}
	port := FreePort(t)
	dir := t.TempDir()
	s := &Server{
		Name: "redis-server", Port: port, Dir: dir, bin: bin, wait: 15 * time.Second,
		args: func() []string {
			return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
				"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
				"--protected-mode", "no", "--logfile", ""}
		},
		ready: func(ctx context.Context) error {
			if err := dialReady(port)(ctx); err != nil {
				return err
			}
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte("PING\r\n")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(buf[:n], []byte("+PONG")) {
				return fmt.Errorf("redis not ready: %q", buf[:n])
			}
			return nil
		},
	}
	s.Start(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}
