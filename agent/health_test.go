package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestFailingHealthCheckWithdrawsCapabilities: a push app whose health URL
// fails is withdrawn from the catalog other agents see, and comes back
// with its first passing check.
func TestFailingHealthCheckWithdrawsCapabilities(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer app.Close()
	srv := startAgent(t, t.TempDir(), func(c *Config) { c.NodeName = "s1" })
	cli := startClientAgent(t, "c1", srv)
	_, err := cli.wk.RegisterCapabilities(context.Background(), connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		WorkerId: "pusher", PushUrl: app.URL + "/steps", HealthUrl: app.URL + "/health",
		Capabilities: []*taskerv1.Capability{{Name: "inventory.reserve"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	offered := func() bool {
		return slices.ContainsFunc(srv.gossip.Registry().Providers("inventory.reserve"), func(p gossip.Provider) bool { return p.Agent == "c1" })
	}
	waitFor(t, 10*time.Second, "the server to see c1 offer inventory.reserve", offered)
	healthy.Store(false)
	waitFor(t, 10*time.Second, "the failing app to be withdrawn", func() bool { return !offered() })
	healthy.Store(true)
	waitFor(t, 10*time.Second, "the recovered app to be offered again", offered)
}

// TestRegisterRefusesBadHealthURL names the field.
func TestRegisterRefusesBadHealthURL(t *testing.T) {
	srv := startAgent(t, t.TempDir())
	_, err := srv.wk.RegisterCapabilities(context.Background(), connect.NewRequest(&taskerv1.RegisterCapabilitiesRequest{
		HealthUrl: "ftp://x", Capabilities: []*taskerv1.Capability{{Name: "a.b"}},
	}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "health_url") {
		t.Fatalf("register with a bad health_url = %v, want InvalidArgument naming health_url", err)
	}
}
