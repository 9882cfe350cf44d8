package agent

import "sync"

// hub wakes WatchTask streams when their task changes. It carries no data:
// a woken watcher reads the task's history from the state, so a slow
// watcher never blocks Raft and never misses an event.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func newHub() *hub { return &hub{subs: map[string]map[chan struct{}]struct{}{}} }

func (h *hub) subscribe(task string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[task] == nil {
		h.subs[task] = map[chan struct{}]struct{}{}
	}
	h.subs[task][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[task], ch)
		if len(h.subs[task]) == 0 {
			delete(h.subs, task)
		}
		h.mu.Unlock()
	}
}

func (h *hub) wake(task string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[task] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
