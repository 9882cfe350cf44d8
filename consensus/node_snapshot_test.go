package consensus_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type archiveEntry struct {
	name string
	data []byte
}

func readArchiveEntries(t *testing.T, archive []byte) []archiveEntry {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []archiveEntry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, archiveEntry{hdr.Name, b})
	}
}

func writeArchiveEntries(t *testing.T, entries []archiveEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rebuild rewrites a valid archive with edit applied to its entries: a
// well-formed gzip and tar stream whose content is wrong.
func rebuild(t *testing.T, archive []byte, edit func([]archiveEntry) []archiveEntry) []byte {
	t.Helper()
	return writeArchiveEntries(t, edit(readArchiveEntries(t, archive)))
}

func sha256sums(entries []archiveEntry) []byte {
	var b strings.Builder
	for _, e := range entries[:2] {
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(e.data), e.name)
	}
	return []byte(b.String())
}

func TestSnapshotArchiveRoundTripsIntoAFreshCluster(t *testing.T) {
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// Cluster A: the source of the backup.
	cfgA := testConfig(t, log, "a1")
	cfgA.Bootstrap = true
	fsmA := newListFSM()
	a := openNode(t, cfgA, fsmA)
	waitLeader(t, a)
	want := cmds("a", 50)
	for _, c := range want {
		if _, err := a.Apply(ctx, []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := a.SaveSnapshot(ctx, &buf); err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	archive := buf.Bytes()

	// The archive is self-describing and checkable with standard tools.
	entries := readArchiveEntries(t, archive)
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
	}
	if !slices.Equal(names, []string{"meta.json", "state.bin", "SHA256SUMS"}) {
		t.Fatalf("archive entries = %v", names)
	}
	var meta struct {
		Format        string `json:"format"`
		FormatVersion int    `json:"format_version"`
		NodeID        string `json:"node_id"`
		Raft          struct {
			Index         uint64 `json:"index"`
			Term          uint64 `json:"term"`
			Size          int64  `json:"size"`
			Configuration []struct {
				ID, Address, Suffrage string
			} `json:"configuration"`
		} `json:"raft"`
	}
	if err := json.Unmarshal(entries[0].data, &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Format != "tasker-raft-snapshot" || meta.FormatVersion != 1 || meta.NodeID != "a1" ||
		meta.Raft.Index < uint64(len(want)) || meta.Raft.Term == 0 || meta.Raft.Size != int64(len(entries[1].data)) ||
		len(meta.Raft.Configuration) != 1 || meta.Raft.Configuration[0].ID != "a1" {
		t.Errorf("meta.json = %s", entries[0].data)
	}
	if got := string(entries[2].data); got != string(sha256sums(entries)) {
		t.Errorf("SHA256SUMS = %q, want %q", got, sha256sums(entries))
	}

	// Cluster B: a fresh cluster with a little state of its own.
	cfgB := testConfig(t, log, "b1")
	cfgB.Bootstrap = true
	fsmB := newListFSM()
	b := openNode(t, cfgB, fsmB)
	waitLeader(t, b)
	if _, err := b.Apply(ctx, []byte("b0")); err != nil {
		t.Fatal(err)
	}

	flip := func(i int) []byte {
		c := slices.Clone(archive)
		c[i] ^= 0x10
		return c
	}
	bad := []struct {
		name    string
		archive []byte
		want    string // in the error
	}{
		{"empty", nil, "empty input"},
		{"not gzip", []byte("definitely not a snapshot"), "not a snapshot archive"},
		{"truncated to half", archive[:len(archive)/2], "corrupt or truncated"},
		{"last byte missing", archive[:len(archive)-1], "corrupt or truncated"},
		{"bit flipped in the middle", flip(len(archive) / 2), ""},
		{"bit flipped in the gzip checksum", flip(len(archive) - 6), "corrupt or truncated"},
		{"trailing garbage", append(slices.Clone(archive), "junk"...), "corrupt or truncated"},
		{"state altered, checksums kept", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			es[1].data = bytes.Replace(es[1].data, []byte("a7"), []byte("x7"), 1)
			return es
		}), "SHA-256 of state.bin"},
		{"meta altered, checksums kept", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			es[0].data = bytes.Replace(es[0].data, []byte(`"a1"`), []byte(`"zz"`), 1)
			return es
		}), "SHA-256 of meta.json"},
		{"unknown format version", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			es[0].data = bytes.Replace(es[0].data, []byte(`"format_version": 1`), []byte(`"format_version": 99`), 1)
			es[2].data = sha256sums(es)
			return es
		}), "format version 99 is not supported"},
		{"size disagrees with meta", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			es[1].data = append(es[1].data, ' ')
			es[2].data = sha256sums(es)
			return es
		}), "state.bin holds"},
		{"checksums missing", rebuild(t, archive, func(es []archiveEntry) []archiveEntry { return es[:2] }), "expected SHA256SUMS"},
		{"entries out of order", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			return []archiveEntry{es[1], es[0], es[2]}
		}), "expected meta.json"},
		{"extra entry", rebuild(t, archive, func(es []archiveEntry) []archiveEntry {
			return append(es, archiveEntry{"evil.sh", []byte("rm -rf /")})
		}), `unexpected entry "evil.sh"`},
	}
	before := b.Stats()
	for _, tt := range bad {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			err := b.RestoreSnapshot(ctx, bytes.NewReader(tt.archive))
			if err == nil {
				t.Fatal("RestoreSnapshot accepted a bad archive")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			t.Logf("rejected: %v", err)
			if got := fsmB.Items(); !slices.Equal(got, []string{"b0"}) {
				t.Fatalf("FSM changed to %v", got)
			}
			if s := b.Stats(); s.LastSnapshotIndex != before.LastSnapshotIndex || s.LastIndex != before.LastIndex {
				t.Errorf("raft state changed: %+v, was %+v", s, before)
			}
			if spooled, _ := filepath.Glob(filepath.Join(cfgB.DataDir, "restore-*")); len(spooled) > 0 {
				t.Errorf("spool files left behind: %v", spooled)
			}
		})
	}

	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := b.RestoreSnapshot(canceled, bytes.NewReader(archive)); !errors.Is(err, context.Canceled) {
		t.Errorf("RestoreSnapshot with a cancelled ctx: err = %v, want context.Canceled", err)
	}

	if err := b.RestoreSnapshot(ctx, bytes.NewReader(archive)); err != nil {
		t.Fatalf("RestoreSnapshot: %v", err)
	}
	if got := fsmB.Items(); !slices.Equal(got, want) {
		t.Fatalf("FSM after restore = %v, want %v", got, want)
	}
	// B keeps its own configuration and goes on taking writes.
	if peers, err := b.Peers(); err != nil || len(peers) != 1 || peers[0].ID != "b1" {
		t.Errorf("Peers after restore = %+v, %v; want b1 alone", peers, err)
	}
	if _, err := b.Apply(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "after")

	// The restore is durable: a restart comes back with it.
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfgB.BindAddr = b.Addr()
	fsmB2 := newListFSM()
	b2 := openNode(t, cfgB, fsmB2)
	waitLeader(t, b2)
	if err := b2.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fsmB2.Items(); !slices.Equal(got, want) {
		t.Fatalf("FSM after restore and restart = %v, want %v", got, want)
	}
}

func TestSaveSnapshotOfAnEmptyCluster(t *testing.T) {
	log := testLogger(t)
	cfg := testConfig(t, log, "s1")
	cfg.Bootstrap = true
	n := openNode(t, cfg, newListFSM())
	waitLeader(t, n)
	// No command applied yet: the barrier gives raft something to snapshot.
	var buf bytes.Buffer
	if err := n.SaveSnapshot(t.Context(), &buf); err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	if err := n.RestoreSnapshot(t.Context(), &buf); err != nil {
		t.Fatalf("RestoreSnapshot of its own empty snapshot: %v", err)
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := n.SaveSnapshot(canceled, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("SaveSnapshot with a cancelled ctx: err = %v, want context.Canceled", err)
	}
}
