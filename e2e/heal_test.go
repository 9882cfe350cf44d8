package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// degradeManifest is one step whose timeout the degraded capability will
// outgrow.
const degradeManifest = `name: degrade
namespace: e2e
version: 1.0.0
steps:
  - name: work
    capability: work.slow
    timeout: 1s
    retry:
      max_attempts: 2
      backoff:
        initial: 100ms
`

// healPolicy lets the leader double a timeout by itself, at most twice an
// hour per workflow; everything else waits for a person.
const healPolicy = `enabled: true
rules:
  - action: change_timeout
    min_confidence: 0.5
    max_factor: 2
    max_per_hour: 2
cooldown: 1m
`

// healBreakers trips work.slow's breaker only after 100 failures in a row.
const healBreakers = `policies:
  circuitBreakers:
    outage:
      maxRequests: 1
      timeout: 5s
      trip: consecutiveFailures > 100
targets:
  capabilities:
    work.slow: {circuitBreaker: outage}
`

// Degradation scenario sizes: warm-up tasks at the normal latency, then
// waves of tasks after the capability slowed down past the timeout.
const (
	healWarmup   = 12
	healWaves    = 4
	healWaveSize = 6
	healFast     = 100 * time.Millisecond
	healDegraded = 1500 * time.Millisecond
)

// TestSelfHealing: a capability degrades (its latency grows from 100 ms to
// 1.5 s, past the step's 1 s timeout) while tasks keep coming, once with
// self-healing off and once on. Off, every task after the degradation
// fails. On, the leader diagnoses the first failures (timeouts, where the
// step used to complete in 100 ms), files a change_timeout proposal and,
// as its policy allows, applies it as a new workflow version with the
// timeout doubled: later tasks complete. The action is audited (a
// proposal by healing-policy, marked auto), visible in events, and
// reversible (rolling it back makes the old version active again).
func TestSelfHealing(t *testing.T) {
	shares := map[string]float64{}
	for _, mode := range []string{"off", "on"} {
		t.Run(mode, func(t *testing.T) {
			shares[mode] = healScenario(t, mode == "on")
		})
	}
	if t.Failed() {
		return
	}
	t.Logf("share of tasks that failed after the degradation: healing off %.0f%%, healing on %.0f%% (%d tasks each)",
		100*shares["off"], 100*shares["on"], healWaves*healWaveSize)
	if shares["off"] < 0.9 {
		t.Errorf("healing off: %.0f%% failed, want at least 90%%: the degradation did not bite", 100*shares["off"])
	}
	if shares["on"] > 0.5 {
		t.Errorf("healing on: %.0f%% failed, want at most 50%%", 100*shares["on"])
	}
}

// healScenario runs the degradation against a fresh agent and returns the
// share of the tasks started after it that failed.
func healScenario(t *testing.T, healing bool) float64 {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// A breaker that opened would turn the failures into waits (stuck
	// tasks, not failed ones); this one trips only on a real outage, so
	// what the degradation does to tasks is measured, in both modes alike.
	cfg := agentConfig{configFile: "breakers_file: " + write("breakers.yaml", healBreakers) + "\n"}
	if healing {
		cfg.configFile += "healing_file: " + write("healing.yaml", healPolicy) + "\n"
	}
	a := startAgent(t, cfg)
	var latency atomic.Int64
	latency.Store(int64(healFast))
	slowWorker(t, a.addr, &latency)
	cl := newClient(a.addr)
	eventually(t, 20*time.Second, "the workflow applies once work.slow is offered", func(ctx context.Context) (bool, error) {
		_, err := cl.ApplyWorkflow(ctx, []byte(degradeManifest))
		return err == nil, nil
	})
	if failed := runWave(t, cl, "warm", healWarmup); failed != 0 {
		t.Fatalf("%d of %d warm-up tasks failed at %v latency", failed, healWarmup, healFast)
	}

	latency.Store(int64(healDegraded))
	proposals := taskerv1connect.NewProposalServiceClient(h2cClient(), a.addr)
	failed := 0
	for w := range healWaves {
		failed += runWave(t, cl, fmt.Sprintf("w%d", w), healWaveSize)
		if healing && w == 0 {
			// The healer acts on the first failures; the next wave starts
			// once the new version is active (bounded), so the measure
			// does not depend on how fast this machine schedules it.
			eventually(t, 30*time.Second, "the healing policy applies a proposal", func(ctx context.Context) (bool, error) {
				resp, err := proposals.ListProposals(ctx, connect.NewRequest(&taskerv1.ListProposalsRequest{State: "applied"}))
				return err == nil && len(resp.Msg.GetProposals()) > 0, nil
			})
		}
	}
	share := float64(failed) / float64(healWaves*healWaveSize)

	resp, err := proposals.ListProposals(callCtx(t), connect.NewRequest(&taskerv1.ListProposalsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var applied []*taskerv1.Proposal
	for _, p := range resp.Msg.GetProposals() {
		if p.GetState() == "applied" {
			applied = append(applied, p)
		}
	}
	if !healing {
		if len(resp.Msg.GetProposals()) != 0 {
			t.Fatalf("healing off: %d proposals filed, want none", len(resp.Msg.GetProposals()))
		}
		return share
	}
	if len(applied) != 1 {
		t.Fatalf("healing on: %d applied proposals, want 1: %v", len(applied), resp.Msg.GetProposals())
	}
	p := applied[0]
	if p.GetAction() != "change_timeout" || !p.GetAuto() || p.GetCreatedBy() != "healing-policy" || p.GetParams()["timeout"] != "2s" || p.GetSource() != "healing" {
		t.Fatalf("the applied proposal = %v; want change_timeout to 2s, auto, by healing-policy", p)
	}
	var full taskerv1.GetProposalResponse
	tasker(t, a.addr, "ai", "proposals", "show", p.GetId(), "-o", "json").must(t, "tasker ai proposals show", 0).decode(t, &full)
	if d := full.GetProposal().GetDiff(); !strings.Contains(d, "+    timeout: 2s") || !strings.Contains(d, "-    timeout: 1s") {
		t.Fatalf("the proposal's diff does not double the timeout:\n%s", d)
	}
	tasker(t, a.addr, "events", "-type", "proposal.").must(t, "tasker events", 0, "proposal.created", "proposal.applied", "under the self-healing policy")
	// Reversible: rolling back makes the version it replaced active again.
	tasker(t, a.addr, "ai", "proposals", "rollback", p.GetId(), "-reason", "e2e").must(t, "tasker ai proposals rollback", 0)
	tasker(t, a.addr, "workflow", "get", "e2e/degrade").must(t, "tasker workflow get", 0, "1.0.0")
	task, _, err := cl.StartTask(callCtx(t), "degrade", map[string]any{}, client.Namespace("e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if task.GetVersion() != "1.0.0" {
		t.Fatalf("after the rollback a new task runs %s, want 1.0.0", task.GetVersion())
	}
	return share
}

// runWave starts n tasks at once and waits until each has completed or
// failed; it returns how many failed.
func runWave(t *testing.T, cl *client.Client, prefix string, n int) int {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		task, _, err := cl.StartTask(callCtx(t), "degrade", map[string]any{}, client.Namespace("e2e"), client.IdempotencyKey(fmt.Sprintf("%s-%d", prefix, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = task.GetId()
	}
	failed := 0
	eventually(t, 60*time.Second, "every task of wave "+prefix+" ends", func(ctx context.Context) (bool, error) {
		failed = 0
		for _, id := range ids {
			task, err := cl.GetTask(ctx, id)
			if err != nil {
				return false, nil
			}
			switch task.GetState() {
			case taskerv1.TaskState_TASK_STATE_ERROR:
				failed++
			case taskerv1.TaskState_TASK_STATE_COMPLETE:
			default:
				return false, nil
			}
		}
		return true, nil
	})
	return failed
}

// slowWorker serves work.slow in push mode from the test process: the
// sidecar POSTs each step and cuts the call at the step's timeout, as it
// does for an app in any language. (A worker that heartbeats, as the SDKs
// do, extends its lease instead and never times out while alive.) Each
// step takes as long as latency says.
func slowWorker(t *testing.T, addr string, latency *atomic.Int64) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Duration(latency.Load())):
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok": true}`)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	workers := taskerv1connect.NewWorkerServiceClient(h2cClient(), addr)
	if _, err := workers.RegisterCapabilities(callCtx(t), connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId:     "slow-" + strings.ReplaceAll(t.Name(), "/", "-"),
		Capabilities: []*taskerv1.Capability{{Name: "work.slow", MaxConcurrency: 32}},
		PushUrl:      srv.URL,
	})); err != nil {
		t.Fatal(err)
	}
}
