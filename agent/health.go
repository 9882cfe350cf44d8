package agent

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// healthInterval is how often apps' health URLs are probed.
const healthInterval = 2 * time.Second

// probeHealth GETs every registered health URL each interval, all at
// once, each bounded by a second. A failing app is withdrawn from the
// catalog (gossip tells the leader within a gossip round) and skipped by
// local dispatch until a probe succeeds again.
func (a *Agent) probeHealth(ctx context.Context) {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var wg sync.WaitGroup
		for id, u := range a.workers.probes() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := probe(ctx, client, u)
				if a.workers.setHealth(id, ok) {
					if ok {
						a.log.Info("app healthy again: its capabilities are back in the catalog", "worker", id, "health_url", u)
					} else {
						a.log.Warn("app failed its health check: its capabilities are withdrawn", "worker", id, "health_url", u)
					}
				}
			}()
		}
		wg.Wait()
	}
}

func probe(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
