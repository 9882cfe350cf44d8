package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/tasker-run/tasker/bus"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/bus/natsbus"
)

// busURL is the bus this agent uses: -bus, with the embedded NATS server
// the default of a -dev agent. "" means none.
func (a *Agent) busURL() string {
	switch {
	case a.cfg.Bus == "off":
		return ""
	case a.cfg.Bus == "" && a.cfg.Dev:
		return "embedded"
	}
	return a.cfg.Bus
}

// openBus connects a server to its bus. Clients have none: only servers
// publish events and run bus steps.
func (a *Agent) openBus(ctx context.Context, dataDir string) error {
	url := a.busURL()
	if url == "" || !a.cfg.Server {
		return nil
	}
	log := a.log.With("component", "bus")
	var (
		b   bus.Bus
		err error
	)
	if url == "embedded" {
		b, err = natsbus.New(ctx, natsbus.Config{StoreDir: filepath.Join(dataDir, "nats"), Listen: a.cfg.BusListen, Logger: log})
	} else {
		b, err = busurl.Open(ctx, url, dataDir, log)
	}
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	a.bus = b
	return nil
}

// closeBus closes the bus after Raft stopped applying; errors are added to
// errs when it is not nil.
func (a *Agent) closeBus(errs *[]error) {
	if a.bus == nil {
		return
	}
	if err := a.bus.Close(); err != nil && errs != nil {
		*errs = append(*errs, fmt.Errorf("bus: %w", err))
	}
}
