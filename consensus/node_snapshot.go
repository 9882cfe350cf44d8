package consensus

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// An operator snapshot archive is a gzip-compressed tar file, so that
// standard tools can inspect it (tar xzf, then sha256sum -c SHA256SUMS):
//
//	meta.json   archiveMeta: format version, raft index/term, configuration
//	state.bin   the FSM snapshot, exactly as the FSM's Persist wrote it
//	SHA256SUMS  sha256sum lines for meta.json and state.bin
//
// The entries come in that order and nothing else may follow.
const (
	archiveFormat        = "tasker-raft-snapshot"
	archiveFormatVersion = 1
	archiveMetaName      = "meta.json"
	archiveStateName     = "state.bin"
	archiveSumsName      = "SHA256SUMS"
	archiveSmallMax      = 1 << 20 // bound on meta.json and SHA256SUMS: both are tiny
)

// archiveMeta is meta.json.
type archiveMeta struct {
	Format        string    `json:"format"`
	FormatVersion int       `json:"format_version"`
	NodeID        string    `json:"node_id"` // the server that took the snapshot
	CreatedAt     time.Time `json:"created_at"`
	Raft          raftMeta  `json:"raft"`
}

// raftMeta is the raft.SnapshotMeta of the FSM snapshot in state.bin.
type raftMeta struct {
	SnapshotVersion    int             `json:"snapshot_version"`
	Index              uint64          `json:"index"`
	Term               uint64          `json:"term"`
	ConfigurationIndex uint64          `json:"configuration_index"`
	Configuration      []archiveServer `json:"configuration"`
	Size               int64           `json:"size"` // of state.bin
}

type archiveServer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // "Voter", "Nonvoter" or "Staging"
}

// SaveSnapshot writes an operator snapshot of the FSM to w: a gzipped tar
// archive holding a header (format version, raft index and term, cluster
// configuration), the FSM's snapshot bytes and their SHA-256 checksums.
//
// On the leader it first waits for every committed command to be applied
// (a barrier), so the snapshot holds every write acknowledged before the
// call. On a follower it holds what this node has applied, which may lag.
// The snapshot is also kept in DataDir/snapshots like any other.
func (n *Node) SaveSnapshot(ctx context.Context, w io.Writer) error {
	if err := n.saveSnapshot(ctx, w); err != nil {
		return fmt.Errorf("consensus: save snapshot: %w", err)
	}
	return nil
}

func (n *Node) saveSnapshot(ctx context.Context, w io.Writer) error {
	if n.IsLeader() {
		// The barrier also gives the FSM an applied entry newer than any
		// configuration change, without which raft refuses to snapshot.
		if err := n.barrier(ctx); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f := n.raft.Snapshot()
	if err := n.wait(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return fmt.Errorf("this node has applied no commands yet: %w", err)
		}
		return err
	}
	meta, rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("open raft snapshot: %w", err)
	}
	defer rc.Close()

	am := archiveMeta{
		Format:        archiveFormat,
		FormatVersion: archiveFormatVersion,
		NodeID:        n.id,
		CreatedAt:     time.Now().UTC(),
		Raft: raftMeta{
			SnapshotVersion:    int(meta.Version),
			Index:              meta.Index,
			Term:               meta.Term,
			ConfigurationIndex: meta.ConfigurationIndex,
			Size:               meta.Size,
		},
	}
	for _, s := range meta.Configuration.Servers {
		am.Raft.Configuration = append(am.Raft.Configuration, archiveServer{
			ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String(),
		})
	}
	if err := writeArchive(ctxWriter{ctx, w}, am, rc); err != nil {
		return err
	}
	n.log.Info("raft snapshot saved", "index", meta.Index, "term", meta.Term, "bytes", meta.Size)
	return nil
}

// writeArchive writes meta, the meta.Raft.Size bytes of state and their
// checksums as an archive.
func writeArchive(w io.Writer, meta archiveMeta, state io.Reader) error {
	metaJSON, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", archiveMetaName, err)
	}
	metaJSON = append(metaJSON, '\n')
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := meta.CreatedAt

	if err := writeArchiveEntry(tw, archiveMetaName, int64(len(metaJSON)), now); err != nil {
		return err
	}
	if _, err := tw.Write(metaJSON); err != nil {
		return fmt.Errorf("write %s: %w", archiveMetaName, err)
	}

	if err := writeArchiveEntry(tw, archiveStateName, meta.Raft.Size, now); err != nil {
		return err
	}
	h := sha256.New()
	copied, err := io.Copy(io.MultiWriter(tw, h), state)
	if err != nil {
		return fmt.Errorf("write %s: %w", archiveStateName, err)
	}
	if copied != meta.Raft.Size {
		return fmt.Errorf("write %s: raft's snapshot held %d bytes, its metadata says %d", archiveStateName, copied, meta.Raft.Size)
	}

	metaSum := sha256.Sum256(metaJSON)
	sums := fmt.Sprintf("%x  %s\n%x  %s\n", metaSum, archiveMetaName, h.Sum(nil), archiveStateName)
	if err := writeArchiveEntry(tw, archiveSumsName, int64(len(sums)), now); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, sums); err != nil {
		return fmt.Errorf("write %s: %w", archiveSumsName, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	return nil
}

func writeArchiveEntry(tw *tar.Writer, name string, size int64, mod time.Time) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: mod.Truncate(time.Second), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s header: %w", name, err)
	}
	return nil
}

// RestoreSnapshot replaces the cluster's state with an archive written by
// SaveSnapshot. It runs on the leader only, and is meant for disaster
// recovery into a fresh cluster: the cluster keeps its own configuration,
// not the one recorded in the archive.
//
// The whole archive is read and verified first (format version, sizes,
// SHA-256 checksums, gzip integrity), spooled to a private file in
// DataDir; a truncated, corrupt or unknown archive is rejected with an
// error and nothing changes. Only then is it handed to raft, which installs
// it on the leader and sends it to the followers.
//
// ctx bounds reading and verifying the archive; once it is handed to raft
// the restore runs to completion. raft panics if
// the FSM's Restore fails at that point (its state would be unknown), so
// the FSM must be able to restore anything its own Snapshot wrote.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) error {
	if err := n.restoreSnapshot(ctx, r); err != nil {
		return fmt.Errorf("consensus: restore snapshot: %w", err)
	}
	return nil
}

func (n *Node) restoreSnapshot(ctx context.Context, r io.Reader) error {
	// Fail fast before reading a large archive; raft checks again.
	if !n.IsLeader() {
		return n.notLeader("")
	}
	tmp, err := os.CreateTemp(n.dataDir, restoreTempPattern)
	if err != nil {
		return fmt.Errorf("spool file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()

	spool := bufio.NewWriter(tmp)
	meta, err := readArchive(ctxReader{ctx, r}, spool)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("reading the archive: %w", ctxErr)
		}
		return err
	}
	if err := spool.Flush(); err != nil {
		return fmt.Errorf("spool file: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	rm := &raft.SnapshotMeta{
		Version:            raft.SnapshotVersion(meta.Raft.SnapshotVersion),
		Index:              meta.Raft.Index,
		Term:               meta.Raft.Term,
		ConfigurationIndex: meta.Raft.ConfigurationIndex,
		Size:               meta.Raft.Size,
	}
	for _, s := range meta.Raft.Configuration {
		rm.Configuration.Servers = append(rm.Configuration.Servers, raft.Server{
			ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address), Suffrage: parseSuffrage(s.Suffrage),
		})
	}
	// No timeout: raft's timer spans both handing over the restore and the
	// no-op after it, so on expiry we could not tell whether the state was
	// replaced. Once verified, the restore runs to completion.
	if err := n.raft.Restore(rm, bufio.NewReader(tmp), 0); err != nil {
		return n.translate(err)
	}
	n.log.Info("raft snapshot restored", "from_node", meta.NodeID, "created_at", meta.CreatedAt,
		"snapshot_index", meta.Raft.Index, "bytes", meta.Raft.Size)
	return nil
}

func parseSuffrage(s string) raft.ServerSuffrage {
	switch s {
	case raft.Nonvoter.String():
		return raft.Nonvoter
	case raft.Staging.String():
		return raft.Staging
	default:
		return raft.Voter
	}
}

// ErrCorruptSnapshot marks an archive that fails its checks (truncated,
// altered, wrong format): restoring it changes nothing.
var ErrCorruptSnapshot = errors.New("snapshot archive is corrupt or truncated")

// readArchive verifies an archive and copies its state.bin to state. It
// returns an error, and no meta, unless every check passes.
func readArchive(r io.Reader, state io.Writer) (*archiveMeta, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty input", ErrCorruptSnapshot)
		}
		return nil, fmt.Errorf("not a snapshot archive (gzip): %w", err)
	}
	tr := tar.NewReader(gz)

	// meta.json
	metaJSON, err := readSmallEntry(tr, archiveMetaName)
	if err != nil {
		return nil, err
	}
	var meta archiveMeta
	if err := json.Unmarshal(metaJSON, &meta); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptSnapshot, archiveMetaName, err)
	}
	if meta.Format != archiveFormat {
		return nil, fmt.Errorf("not a snapshot archive: %s says format %q, want %q", archiveMetaName, meta.Format, archiveFormat)
	}
	if meta.FormatVersion != archiveFormatVersion {
		return nil, fmt.Errorf("snapshot archive format version %d is not supported (this build reads version %d)", meta.FormatVersion, archiveFormatVersion)
	}
	if v := raft.SnapshotVersion(meta.Raft.SnapshotVersion); v < raft.SnapshotVersionMin || v > raft.SnapshotVersionMax {
		return nil, fmt.Errorf("raft snapshot version %d is not supported (this build reads %d to %d)", v, raft.SnapshotVersionMin, raft.SnapshotVersionMax)
	}

	// state.bin
	hdr, err := nextEntry(tr, archiveStateName)
	if err != nil {
		return nil, err
	}
	if hdr.Size != meta.Raft.Size {
		return nil, fmt.Errorf("%w: %s holds %d bytes, %s says %d", ErrCorruptSnapshot, archiveStateName, hdr.Size, archiveMetaName, meta.Raft.Size)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(state, h), tr); err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrCorruptSnapshot, archiveStateName, err)
	}
	stateSum := h.Sum(nil)

	// SHA256SUMS
	sums, err := readSmallEntry(tr, archiveSumsName)
	if err != nil {
		return nil, err
	}
	want, err := parseSums(sums)
	if err != nil {
		return nil, err
	}
	metaSum := sha256.Sum256(metaJSON)
	for _, c := range []struct {
		name string
		got  []byte
	}{{archiveMetaName, metaSum[:]}, {archiveStateName, stateSum}} {
		w, ok := want[c.name]
		if !ok {
			return nil, fmt.Errorf("%w: %s has no checksum for %s", ErrCorruptSnapshot, archiveSumsName, c.name)
		}
		if got := hex.EncodeToString(c.got); got != w {
			return nil, fmt.Errorf("%w: SHA-256 of %s is %s, %s says %s", ErrCorruptSnapshot, c.name, got, archiveSumsName, w)
		}
	}

	// Nothing may follow, and the gzip stream must end cleanly: reading
	// to its end checks its CRC and rejects trailing bytes.
	if hdr, err := tr.Next(); err == nil {
		return nil, fmt.Errorf("%w: unexpected entry %q after %s", ErrCorruptSnapshot, hdr.Name, archiveSumsName)
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	return &meta, nil
}

// nextEntry advances to the next entry, which must be a regular file
// called name.
func nextEntry(tr *tar.Reader, name string) (*tar.Header, error) {
	hdr, err := tr.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: expected %s: %w", ErrCorruptSnapshot, name, err)
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: expected %s, found %q", ErrCorruptSnapshot, name, hdr.Name)
	}
	if hdr.Size < 0 {
		return nil, fmt.Errorf("%w: %s has a negative size", ErrCorruptSnapshot, name)
	}
	return hdr, nil
}

func readSmallEntry(tr *tar.Reader, name string) ([]byte, error) {
	hdr, err := nextEntry(tr, name)
	if err != nil {
		return nil, err
	}
	if hdr.Size > archiveSmallMax {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrCorruptSnapshot, name, hdr.Size, archiveSmallMax)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrCorruptSnapshot, name, err)
	}
	return b, nil
}

// parseSums reads sha256sum output: "<hex>  <name>" per line.
func parseSums(b []byte) (map[string]string, error) {
	sums := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != sha256.Size*2 {
			return nil, fmt.Errorf("%w: %s: malformed line %q", ErrCorruptSnapshot, archiveSumsName, line)
		}
		sums[name] = strings.ToLower(sum)
	}
	return sums, nil
}

// ctxReader and ctxWriter stop a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
