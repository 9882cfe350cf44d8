package agent

import "context"

// runBusSteps runs, while this server leads and a bus is configured, the
// reply side of transport: bus steps. (Filled in by the bus-steps work.)
func (a *Agent) runBusSteps(ctx context.Context) { <-ctx.Done() }
