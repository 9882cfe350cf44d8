package consensus_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tasker-run/tasker/consensus"
)

// countFSM counts commands; the benchmark measures raft, not an FSM.
type countFSM struct{ n atomic.Uint64 }

func (f *countFSM) Apply(*raft.Log) any { return f.n.Add(1) }

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := json.Marshal(f.n.Load())
	return listSnapshot(b), err
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var n uint64
	if err := json.NewDecoder(rc).Decode(&n); err != nil {
		return err
	}
	f.n.Store(n)
	return nil
}

// BenchmarkApply measures a committed, fsynced 200-byte command on a
// one-server cluster: the floor of Tasker's write latency (a real cluster
// adds a network round trip to a follower, which fsyncs in parallel).
// "parallel" runs many writers at once; raft batches their entries into
// one BoltDB transaction and fsync (group commit), so ns/op there is the
// inverse of throughput, not a latency.
func BenchmarkApply(b *testing.B) {
	cfg := consensus.Config{
		NodeID:           "bench",
		DataDir:          b.TempDir(), // on the real disk: fsync is what we measure
		BindAddr:         "127.0.0.1:0",
		Bootstrap:        true,
		Logger:           slog.New(slog.DiscardHandler),
		HeartbeatTimeout: 200 * time.Millisecond,
	}
	n := openNode(b, cfg, &countFSM{})
	waitLeader(b, n)
	cmd := bytes.Repeat([]byte("x"), 200)

	b.Run("sequential", func(b *testing.B) {
		b.SetBytes(int64(len(cmd)))
		for b.Loop() {
			if _, err := n.Apply(b.Context(), cmd); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(cmd)))
		b.SetParallelism(16) // 16 writers per CPU
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := n.Apply(b.Context(), cmd); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkFsync is the disk's own floor for comparison with
// BenchmarkApply: append 200 bytes to a file and fsync it.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte("x"), 200)
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
