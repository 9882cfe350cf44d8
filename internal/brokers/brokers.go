// Package brokers starts real message brokers from the machine's binaries
// (Debian's redis-server and rabbitmq-server) on free loopback ports in a
// test's temporary directory, and can stop and restart them on the same port
// and data for outage tests.
package brokers

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

// missing skips the test for a broker that is not installed, or fails it
// when TASKER_REQUIRE_BROKERS is set (.ci/run sets it), so CI never passes
// by skipping.
func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("TASKER_REQUIRE_BROKERS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Redis starts redis-server with an append-only file in a temp directory,
// so a restart keeps the streams and consumer groups. It skips the test when
// the binary is missing (CI installs it and fails instead: see .ci/run).
func Redis(t testing.TB) *Server {
	t.Helper()
	bin := lookBin("redis-server")
	if bin == "" {
		missing(t, "redis-server not installed (apt-get install redis-server); .ci/run installs it")
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

// RabbitMQ starts Debian's rabbitmq-server as a node of its own (own node
// name, ports, Erlang cookie, Mnesia directory and epmd port) in a temp
// directory, so a restart keeps durable queues and persistent messages. It
// skips the test when the server is missing (CI installs it and fails
// instead: see .ci/run).
// Booting takes several seconds.
func RabbitMQ(t testing.TB) *Server {
	t.Helper()
	// The script under /usr/lib runs the node as the calling user; the
	// /usr/sbin wrapper would switch to the rabbitmq user, who cannot write
	// the test's directory.
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		bin = lookBin("rabbitmq-server")
	}
	if bin == "" {
		missing(t, "rabbitmq-server not installed (apt-get install rabbitmq-server); .ci/run installs it")
	}
	dir := t.TempDir()
	port, dist, epmd := FreePort(t), FreePort(t), FreePort(t)
	for name, body := range map[string]string{
		"enabled_plugins": "[].\n",
		// The test connects as guest over loopback.
		"rabbitmq.conf": "loopback_users = none\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{
		Name: "rabbitmq-server", Port: port, Dir: dir, bin: bin, wait: 60 * time.Second,
		args: func() []string { return nil },
		env: []string{
			"HOME=" + dir, // the Erlang cookie goes here
			fmt.Sprintf("RABBITMQ_NODENAME=tasker-test-%d@localhost", port),
			fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
			"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
			fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
			fmt.Sprintf("ERL_EPMD_PORT=%d", epmd),
			"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
			"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
			"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq"),
			"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
			"RABBITMQ_PID_FILE=" + filepath.Join(dir, "pid"),
		},
		ready: amqpReady(port),
	}
	s.Start(t)
	t.Cleanup(func() {
		s.Stop(t)
		// The node started an epmd daemon on its own port, outside the
		// process group: stop that one too.
		if epmdBin, err := exec.LookPath("epmd"); err == nil {
			cmd := exec.Command(epmdBin, "-kill")
			cmd.Env = append(os.Environ(), fmt.Sprintf("ERL_EPMD_PORT=%d", epmd))
			_ = cmd.Run()
		}
	})
	return s
}

// amqpReady sends the AMQP 0-9-1 protocol header and waits for the
// server's first frame (Connection.Start): the port opens before the broker
// can take connections.
func amqpReady(port int) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
			return err
		}
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if buf[0] != 1 {
			return fmt.Errorf("rabbitmq not ready: frame type %d", buf[0])
		}
		return nil
	}
}
