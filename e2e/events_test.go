package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestCLIEvents: 'tasker events' against a real agent and the example
// services: a task's events with their Raft-derived ids, filters, and
// -follow printing the events of a task started while it runs.
func TestCLIEvents(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{})
	startServices(t, a.addr, nil)
	dir := t.TempDir()
	tasker(t, a.addr, "workflow", "apply", "-f", filepath.Join(repoRoot, "examples", "order-fulfilment.yaml")).must(t, "workflow apply", 0)

	// A follower, started before the second task.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, taskerBin, "events", "-follow", "-type", "task.", "-addr", a.addr)
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	input := writeJSON(t, dir, "order.json", orderInput("ord_ev1", "tok_visa", "BOOK-GO"))
	var started taskerv1.StartTaskResponse
	tasker(t, a.addr, "task", "start", "shop/order-fulfilment", "-input", "@"+input, "-o", "json").must(t, "task start", 0).decode(t, &started)
	id := started.GetTask().GetId()
	tasker(t, a.addr, "task", "watch", id).must(t, "task watch", 0, "complete after")

	// The task's events, one JSON object a line, ids from the Raft log.
	r := tasker(t, a.addr, "events", "-task", id, "-o", "json").must(t, "events -o json", 0)
	var types []string
	raftID := regexp.MustCompile(`^[0-9]+-[0-9]+$`)
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e taskerv1.ClusterEvent
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events -o json line %q: %v", line, err)
		}
		if !raftID.MatchString(e.GetId()) || e.GetCorrelationId() != id {
			t.Errorf("event %s of %s: want a Raft id and the task", e.GetId(), e.GetCorrelationId())
		}
		types = append(types, e.GetType())
	}
	if len(types) < 12 || types[0] != "task.created" || types[len(types)-1] != "task.completed" {
		t.Errorf("events of the task: %v", types)
	}
	r = tasker(t, a.addr, "events", "-task", id, "-type", "step.completed").must(t, "events -type step.completed", 0)
	if n := strings.Count(r.stdout, "step.completed"); n != 5 || strings.Count(r.stdout, "\n") != 5 {
		t.Errorf("events -type step.completed printed:\n%s", r.stdout)
	}
	if r := tasker(t, a.addr, "events", "-type", "step.complete"); r.code != 1 || !strings.Contains(r.stderr, "no event type") {
		t.Errorf("a misspelt type: exit %d, stderr %q", r.code, r.stderr)
	}

	// The follower printed the task's start and end as they happened.
	var seen []string
	deadline := time.After(30 * time.Second)
	for !strings.Contains(strings.Join(seen, "\n"), "task.completed") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("events -follow ended after:\n%s", strings.Join(seen, "\n"))
			}
			if strings.Contains(l, id) {
				seen = append(seen, l)
			}
		case <-deadline:
			t.Fatalf("events -follow printed no task.completed of %s; printed:\n%s", id, strings.Join(seen, "\n"))
		}
	}
	if !strings.Contains(seen[0], "task.created") {
		t.Errorf("events -follow printed first %q, want task.created", seen[0])
	}
}
