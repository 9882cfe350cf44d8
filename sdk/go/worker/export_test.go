package worker

import "time"

// SetDelays shortens a worker's retry delays and drain grace for tests.
func SetDelays(w *Worker, retryMin, retryMax, drainGrace time.Duration) {
	w.retryMin, w.retryMax, w.drainGrace = retryMin, retryMax, drainGrace
}
