package e2e

// The web UI in a real browser: Debian's Chromium driven by playwright-core
// (ui/e2e/ui.e2e.mjs) against a real agent that runs the example services.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestWebUI builds a workflow on the Build canvas with real mouse drags,
// saves it, round-trips its YAML, starts a task of it and watches every
// step turn complete, then starts a declined order and waits for the
// diagnosis to name charge as the root cause (ui/e2e/ui.e2e.mjs). With
// UPDATE_SCREENSHOTS=1 it writes the screenshots of docs/ui.md into
// docs/img.
func TestWebUI(t *testing.T) {
	requireTools(t, "node", "chromium")
	chromium, _ := exec.LookPath("chromium")
	if _, err := os.Stat(filepath.Join(repoRoot, "ui", "node_modules", "playwright-core", "package.json")); err != nil {
		if os.Getenv(requireToolsEnv) == "1" {
			t.Fatalf("ui/node_modules has no playwright-core (%s=1): run `cd ui && npm ci`: %v", requireToolsEnv, err)
		}
		t.Skipf("ui/node_modules has no playwright-core: run `cd ui && npm ci` (or make ui-test); set %s=1 to fail instead of skipping", requireToolsEnv)
	}

	a := startAgent(t, agentConfig{})
	startServices(t, a.addr, []string{"-delay", "1ms-5ms"})
	if _, err := newClient(a.addr).ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	declined, err := json.Marshal(orderInput("ord_uideclined", "tok_declined", "TEE-M"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join("e2e", "ui.e2e.mjs"), a.addr)
	cmd.Dir = filepath.Join(repoRoot, "ui")
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium, "DECLINED_ORDER="+string(declined))
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		cmd.Env = append(cmd.Env, "SCREENSHOTS_DIR="+filepath.Join(repoRoot, "docs", "img"))
	}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("ui.e2e.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("ui.e2e.mjs did not finish in 3 minutes")
	}
	if err != nil {
		t.Fatalf("ui.e2e.mjs: %v", err)
	}
}
