package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// fakeServer answers RaftPeers with what the test sets.
type fakeServer struct {
	taskerv1connect.UnimplementedClusterServiceHandler
	mu     sync.Mutex
	leader string
	term   uint64
}

func (f *fakeServer) set(leader string, term uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader, f.term = leader, term
}

func (f *fakeServer) RaftPeers(context.Context, *connect.Request[taskerv1.RaftPeersRequest]) (*connect.Response[taskerv1.RaftPeersResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return connect.NewResponse(&taskerv1.RaftPeersResponse{Leader: f.leader, Term: f.term}), nil
}

// TestLeaderWatchTimesFailover checks what counts as a new leader after
// the kill: not a survivor that still names the killed leader, not "no
// leader", but the first survivor that names another.
func TestLeaderWatchTimesFailover(t *testing.T) {
	ctx := context.Background()
	fakes := map[string]*fakeServer{}
	var servers []*agentProc
	for _, name := range []string{"s1", "s2", "s3"} {
		f := &fakeServer{}
		f.set("s1", 2)
		fakes[name] = f
		_, h := taskerv1connect.NewClusterServiceHandler(f)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		servers = append(servers, &agentProc{
			proc:    &proc{name: name, done: make(chan struct{})},
			server:  true,
			cluster: taskerv1connect.NewClusterServiceClient(srv.Client(), srv.URL),
		})
	}
	w := newLeaderWatch(servers)
	w.poll(ctx)
	if l, term := w.current(); l != "s1" || term != 2 {
		t.Fatalf("before the kill: leader %q term %d, want s1 term 2", l, term)
	}

	// s1 is killed: s2 has noticed, s3 still names it.
	servers[0].killed.Store(true)
	f := &failover{killed: "s1", at: time.Now(), electedChan: make(chan struct{})}
	w.mu.Lock()
	w.failover = f
	w.mu.Unlock()
	fakes["s2"].set("", 2)
	w.poll(ctx)
	if l, _ := w.current(); l != "" {
		t.Fatalf("during the election: leader %q, want none", l)
	}
	select {
	case <-f.electedChan:
		t.Fatal("a new leader was reported during the election")
	default:
	}

	fakes["s3"].set("s3", 3)
	w.poll(ctx)
	select {
	case <-f.electedChan:
	default:
		t.Fatal("no new leader reported after s3 named itself")
	}
	if f.leader != "s3" || f.newTerm != 3 || f.took() <= 0 {
		t.Fatalf("failover: leader %q term %d took %v, want s3, term 3, a positive time", f.leader, f.newTerm, f.took())
	}
	if l, _ := w.current(); l != "s3" {
		t.Fatalf("after the election: leader %q, want s3", l)
	}
	w.poll(ctx) // a second report must not close electedChan again
}

func TestReadJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.jsonl")
	lines := `{"task_id":"t1","step":"validate","capability":"orders.validate","outcome":"ok"}
{"task_id":"t1","step":"notify","capability":"notifications.email","outcome":"ok"}
{"task_id":"t2","step":"validate","capability":"orders.validate","outcome":"interrupted"}
{"task_id":"t2","step":"validate","capability":"orders.validate","outcome":"ok"}
{"task_id":"t1","step":"validate","capability":"orders.validate","outcome":"ok"}
`
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	e := readJournal("orders", path)
	want := "orders 5 (1 notifications.email, 4 orders.validate, 1 interrupted)"
	if got := e.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if e.duplicates != 1 {
		t.Errorf("duplicates %d, want 1 (t1/validate)", e.duplicates)
	}
	if got := readJournal("idle", filepath.Join(t.TempDir(), "none.jsonl")).String(); got != "idle 0" {
		t.Errorf("no journal: got %q, want \"idle 0\"", got)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.5); p != 50*time.Millisecond {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(d, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 %v", p)
	}
}
