package consensus_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/consensus"
)

// The child process of TestAcknowledgedWritesSurviveKill9 runs when this
// variable names its DataDir.
const kill9ChildEnv = "TASKER_CONSENSUS_KILL9_DATADIR"

// TestAcknowledgedWritesSurviveKill9 runs a node in a child process that
// prints every command Apply acknowledged, kills it with SIGKILL in the
// middle of writing, and reopens its DataDir: every acknowledged command
// must be there.
func TestAcknowledgedWritesSurviveKill9(t *testing.T) {
	if dir := os.Getenv(kill9ChildEnv); dir != "" {
		kill9Child(t, dir)
		return
	}
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")

	cmd := exec.Command(os.Args[0], "-test.run=^TestAcknowledgedWritesSurviveKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), kill9ChildEnv+"="+cfg.DataDir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// Kill once the child is well into writing; then read what it printed
	// before dying: each line was printed only after Apply returned.
	var addr string
	acked := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if a, ok := strings.CutPrefix(line, "addr "); ok {
			addr = a
		}
		if v, ok := strings.CutPrefix(line, "acked "); ok {
			acked, _ = strconv.Atoi(v)
			if acked == 100 && !killed {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
	}
	_ = cmd.Wait()
	if !killed || addr == "" {
		t.Fatalf("the child stopped before it was killed (acked %d, addr %q)", acked, addr)
	}

	cfg.BindAddr = addr
	fsm := newListFSM()
	n := openNode(t, cfg, fsm)
	waitLeader(t, n)
	if err := n.Barrier(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := fsm.Items()
	if len(got) < acked || !slices.Equal(got[:acked], cmds("k", acked)) {
		t.Fatalf("after kill -9: %d commands in the FSM, %d acknowledged; FSM = %v", len(got), acked, got)
	}
	t.Logf("%d commands acknowledged before kill -9, %d recovered", acked, len(got))
}

// kill9Child writes until it is killed (or for ten seconds, so that it
// never outlives a broken parent).
func kill9Child(t *testing.T, dataDir string) {
	cfg := consensus.Config{ // not testConfig: its TempDir would outlive the kill
		NodeID:           "s1",
		DataDir:          dataDir,
		BindAddr:         "127.0.0.1:0",
		Bootstrap:        true,
		Logger:           slog.New(slog.DiscardHandler),
		HeartbeatTimeout: 200 * time.Millisecond,
	}
	n, err := consensus.Open(cfg, newListFSM())
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	fmt.Printf("addr %s\n", n.Addr())
	stop := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		if _, err := n.Apply(t.Context(), []byte(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("acked %d\n", i+1)
	}
	t.Fatal("not killed within 10s")
}
