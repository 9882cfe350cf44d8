package agent

import (
	"sort"
	"sync"
	"time"

	"github.com/tasker-run/tasker/consensus"
)

// defaultConcurrency applies when a capability does not say.
const defaultConcurrency = 16

// workers is the registry of the apps attached to this agent: what each
// offers, how to reach it (an open PollSteps stream or a push URL) and how
// many steps it holds. The scheduler picks from it; handlers update it.
type workers struct {
	mu      sync.Mutex
	byID    map[string]*worker
	changed chan struct{} // signalled when capacity or membership changes
	// catalogChanged is signalled when what the apps offer may have
	// changed: a registration, a stream opened or closed.
	catalogChanged chan struct{}
	// linger is claimLinger; tests shorten it.
	linger time.Duration
}

type worker struct {
	id      string
	caps    map[string]*capability
	pushURL string
	stream  chan *consensus.Assignment // non-nil while a PollSteps stream is open or a claimer lingers
	streams int                        // open streams (an app may poll twice during a reconnect), claimer included
	// queue is stream's buffer, kept while the worker is away so that a
	// quick reconnect receives what was assigned but not yet sent; reclaim
	// empties it once the worker stayed away past the grace.
	queue chan *consensus.Assignment
	// claimer is set while the worker pulls with ClaimSteps: it holds one
	// of streams until claimLinger after its last call ended.
	claimer  bool
	claiming int // ClaimSteps calls in progress
	claimEnd time.Time
	// expiring is set while a linger check is scheduled: one per worker,
	// however often it claims.
	expiring bool
	inflight map[leaseKey]string // attempt → capability
	seen     time.Time
	// healthURL, when set, is probed; while the probe fails the worker is
	// unhealthy: withdrawn from the catalog and skipped by dispatch.
	healthURL string
	unhealthy bool
}

// reachable reports whether steps can be sent to the worker now.
func (w *worker) reachable() bool {
	return (w.stream != nil || w.pushURL != "") && !w.unhealthy
}

type capability struct {
	name        string
	version     string
	description string
	inputSchema string
	outSchema   string
	max         int
}

// leaseKey names one attempt of one step.
type leaseKey struct {
	task    string
	step    string
	attempt int
}

func newWorkers() *workers {
	return &workers{byID: map[string]*worker{}, changed: make(chan struct{}, 1), catalogChanged: make(chan struct{}, 1), linger: claimLinger}
}

func (ws *workers) signal() {
	select {
	case ws.changed <- struct{}{}:
	default:
	}
}

func (ws *workers) signalCatalog() {
	select {
	case ws.catalogChanged <- struct{}{}:
	default:
	}
}

// register adds or replaces a worker's capabilities, keeping its stream
// and in-flight attempts.
func (ws *workers) register(id, pushURL, healthURL string, caps []*capability, now time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil {
		w = &worker{id: id, inflight: map[leaseKey]string{}}
		ws.byID[id] = w
	}
	w.caps = map[string]*capability{}
	for _, c := range caps {
		w.caps[c.name] = c
	}
	w.pushURL, w.seen = pushURL, now
	if w.healthURL != healthURL {
		w.healthURL, w.unhealthy = healthURL, false
	}
	ws.signal()
	ws.signalCatalog()
}

// attach opens a worker's stream; the returned function detaches it.
func (ws *workers) attach(id string) (<-chan *consensus.Assignment, func(), bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil {
		return nil, nil, false
	}
	ch := w.open()
	ws.signal()
	ws.signalCatalog()
	return ch, func() {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		w.close()
		ws.signalCatalog()
	}, true
}

// open counts one more stream and returns the worker's queue.
func (w *worker) open() chan *consensus.Assignment {
	if w.queue == nil {
		w.queue = make(chan *consensus.Assignment, 64)
	}
	w.stream = w.queue
	w.streams++
	return w.queue
}

// close counts one stream less; with none left, nothing is delivered.
func (w *worker) close() {
	w.streams--
	if w.streams == 0 {
		w.stream = nil
	}
}

// claimLinger is how long a worker pulling with ClaimSteps stays
// connected after its last call ended: steps assigned meanwhile wait in
// its queue for the next call. Longer than a client's pause between two
// long polls; short enough that a vanished app's steps move on soon (its
// held steps go back after a further reclaim grace).
const claimLinger = 15 * time.Second

// claim begins a ClaimSteps call: the worker is connected (if it was not)
// until claimLinger after the call's end, which unclaim records.
func (ws *workers) claim(id string) (<-chan *consensus.Assignment, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil {
		return nil, false
	}
	if !w.claimer {
		w.claimer = true
		w.open()
		ws.signal()
		ws.signalCatalog()
	}
	w.claiming++
	return w.queue, true
}

// unclaim ends a ClaimSteps call. It reports whether the caller must
// schedule the linger check (expireClaim): none is pending yet.
func (ws *workers) unclaim(id string, now time.Time) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil || w.claiming == 0 {
		return false
	}
	w.claiming--
	w.claimEnd = now
	if w.expiring {
		return false
	}
	w.expiring = true
	return true
}

// expireClaim is the linger check. It disconnects a claimer whose linger
// has passed with no call in progress and reports expired; when the
// worker claimed since, it returns how long to wait before checking again
// (again > 0); else the check is over.
func (ws *workers) expireClaim(id string, now time.Time) (expired bool, again time.Duration) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil || !w.claimer {
		if w != nil {
			w.expiring = false
		}
		return false, 0
	}
	if left := ws.linger - now.Sub(w.claimEnd); w.claiming > 0 || left > 0 {
		// Claimed again: check once the new linger has passed (a call in
		// progress schedules nothing when it ends, so keep checking).
		return false, max(left, ws.linger/4)
	}
	w.expiring = false
	w.claimer = false
	w.close()
	ws.signalCatalog()
	return true, 0
}

// discardQueue empties the queue of a worker that stayed away: its
// attempts are being handed back, so a later reconnect must not run them.
func (ws *workers) discardQueue(id string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil || w.queue == nil {
		return
	}
	for {
		select {
		case <-w.queue:
		default:
			return
		}
	}
}

// pick chooses the worker for a capability: reachable, under its limit,
// least loaded (ties by id, so the choice is stable). It reserves the slot.
func (ws *workers) pick(capName string) (id string, push string, ok bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var best *worker
	for _, w := range ws.byID {
		c := w.caps[capName]
		if c == nil || !w.reachable() || w.load(capName) >= c.max {
			continue
		}
		if best == nil || w.load(capName) < best.load(capName) || w.load(capName) == best.load(capName) && w.id < best.id {
			best = w
		}
	}
	if best == nil {
		return "", "", false
	}
	return best.id, best.pushURL, true
}

func (w *worker) load(capName string) int {
	n := 0
	for _, c := range w.inflight {
		if c == capName {
			n++
		}
	}
	return n
}

// hold records an attempt a worker holds.
func (ws *workers) hold(id string, k leaseKey, capName string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w := ws.byID[id]; w != nil {
		w.inflight[k] = capName
	}
}

// drop forgets an attempt wherever it is held, freeing its slot.
func (ws *workers) drop(k leaseKey) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byID {
		if _, ok := w.inflight[k]; ok {
			delete(w.inflight, k)
			ws.signal()
		}
	}
}

// deliver hands an assignment to a worker's stream without blocking.
func (ws *workers) deliver(id string, a *consensus.Assignment) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil || w.stream == nil {
		return false
	}
	select {
	case w.stream <- a:
		return true
	default:
		return false
	}
}

// held lists the attempts a worker holds.
func (ws *workers) held(id string) []leaseKey {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil {
		return nil
	}
	out := make([]leaseKey, 0, len(w.inflight))
	for k := range w.inflight {
		out = append(out, k)
	}
	return out
}

// connected reports whether a worker has an open stream or a push URL.
func (ws *workers) connected(id string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	return w != nil && w.reachable()
}

// capabilities lists every capability offered here, sorted.
func (ws *workers) capabilities() []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	set := map[string]bool{}
	for _, w := range ws.byID {
		if !w.reachable() {
			continue
		}
		for n := range w.caps {
			set[n] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// holds reports whether some worker here holds the attempt.
func (ws *workers) holds(k leaseKey) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byID {
		if _, ok := w.inflight[k]; ok {
			return true
		}
	}
	return false
}

// probes lists the workers with a health URL, by id.
func (ws *workers) probes() map[string]string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := map[string]string{}
	for id, w := range ws.byID {
		if w.healthURL != "" {
			out[id] = w.healthURL
		}
	}
	return out
}

// setHealth records a probe's verdict; it reports whether it changed.
func (ws *workers) setHealth(id string, healthy bool) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.byID[id]
	if w == nil || w.unhealthy == !healthy {
		return false
	}
	w.unhealthy = !healthy
	ws.signal()
	ws.signalCatalog()
	return true
}
