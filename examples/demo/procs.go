package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is a child process the demo started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // the file its output goes to
	done chan struct{}
	err  error // how it exited; set before done is closed
	// killed is set when the demo killed the process on purpose, so that
	// its exit does not abort the run.
	killed atomic.Bool
}

// startProc starts path with args, its standard output and standard
// error appended to logFile and, if watch is not nil, also written to
// watch (which sees both). The child runs in
// its own process group, so that a Ctrl-C in the terminal reaches only the
// demo, which then stops its children in order; on Linux it is also killed
// if the demo dies without stopping it.
func startProc(name, path string, args []string, logFile string, watch io.Writer) (*proc, error) {
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	var out io.Writer = f
	if watch != nil {
		out = io.MultiWriter(f, watch)
	}
	// The same writer for both: exec then writes to it from one goroutine.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the child's process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end with SIGTERM and waits up to grace for it,
// then kills it. It returns how the process ended: nil for exit status 0.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return p.err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.cmd.Process.Kill()
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s and was killed", p.name, grace)
}

// kill kills the process with SIGKILL, as a crash would, and waits until
// it is gone.
func (p *proc) kill() {
	p.killed.Store(true)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tail returns the last n lines of the process's log, indented.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "  (cannot read " + p.log + ": " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// lineWatcher is an io.Writer that hands each complete line written to it
// to match until match returns true; it sends that line on found.
type lineWatcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	match func(string) bool
	found chan string
	done  bool
}

func newLineWatcher(match func(string) bool) *lineWatcher {
	return &lineWatcher{match: match, found: make(chan string, 1)}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimSuffix(string(w.buf.Next(i+1)), "\n")
		if w.match(line) {
			w.done = true
			w.buf.Reset()
			w.found <- line
			return len(p), nil
		}
	}
}
