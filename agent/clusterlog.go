package agent

import (
	"sync"
	"time"

	"github.com/tasker-run/tasker/insight"
)

// clusterLogSize bounds the breaker and member events a server keeps for
// diagnoses. They are kept apart from the event ring, where a busy
// cluster's task events would push them out within seconds.
const clusterLogSize = 1024

// clusterLog is a ring of the breaker and member changes this agent saw,
// in the analyzers' form.
type clusterLog struct {
	mu   sync.Mutex
	buf  []insight.ClusterEvent
	next int // where the next event goes once buf is full
}

func (l *clusterLog) add(e insight.ClusterEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) < clusterLogSize {
		l.buf = append(l.buf, e)
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % clusterLogSize
}

// between returns the events from from to to, oldest first.
func (l *clusterLog) between(from, to time.Time) []insight.ClusterEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []insight.ClusterEvent
	for i := range len(l.buf) {
		e := l.buf[(l.next+i)%len(l.buf)]
		if !e.At.Before(from) && !e.At.After(to) {
			out = append(out, e)
		}
	}
	return out
}

// clusterKind maps an event type of the ring to the analyzers' kind.
func clusterKind(typ string) string {
	switch typ {
	case eventBreakerOpened:
		return "breaker_open"
	case eventBreakerHalfOpened:
		return "breaker_half_open"
	case eventBreakerClosed:
		return "breaker_closed"
	case eventMemberJoined:
		return "member_joined"
	case eventMemberFailed:
		return "member_failed"
	case eventMemberLeft:
		return "member_left"
	}
	return typ
}
