package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func snapshotCommand() command {
	return group("snapshot", "save or restore all workflow state", `
Saves all workflow state (definitions, tasks, steps, results) of the
cluster to a file, or replaces it with a saved one: for backups and for
moving a cluster.
`, snapshotSaveCommand(), snapshotRestoreCommand())
}

const snapshotSaveUsage = `
Usage: tasker snapshot save FILE [-addr URL] [-o table|json]

Streams a point-in-time snapshot of all workflow state from the cluster
into FILE (mode 0600). The snapshot is written to a temporary file in
FILE's directory, flushed to disk and renamed to FILE only once complete:
a save that fails leaves FILE as it was, never a partial snapshot.

With -o json it prints {"file": ..., "bytes": ...}.
` + apiFlagsHelp + apiExit

func snapshotSaveCommand() command {
	return command{name: "snapshot save", synopsis: "save a snapshot of all workflow state to a file", usage: snapshotSaveUsage, run: runSnapshotSave}
}

func runSnapshotSave(args []string, stdout, stderr io.Writer) int {
	c := snapshotSaveCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one file, got %d", len(pos))
	}
	file := pos[0]
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.context()
	defer cancel()
	stream, err := cn.cluster.SnapshotSave(ctx, connect.NewRequest(&taskerv1.SnapshotSaveRequest{}))
	if err != nil {
		return cn.fail(err)
	}
	defer stream.Close()
	n, err := writeAtomically(file, func(w io.Writer) (int64, error) {
		var n int64
		for stream.Receive() {
			m, err := w.Write(stream.Msg().Data)
			n += int64(m)
			if err != nil {
				return n, err
			}
		}
		if err := stream.Err(); err != nil {
			return n, err
		}
		if n == 0 {
			return 0, errors.New("the agent sent an empty snapshot")
		}
		return n, nil
	})
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return writeJSON(stdout, stderr, struct {
			File  string `json:"file"`
			Bytes int64  `json:"bytes"`
		}{file, n})
	}
	fmt.Fprintf(stdout, "saved snapshot to %s (%d bytes)\n", file, n)
	return exitOK
}

// writeAtomically writes file through fill: into a temporary file in the
// same directory, synced and then renamed over file, so that file is
// either as it was or complete. On any error the temporary file is
// removed.
func writeAtomically(file string, fill func(io.Writer) (int64, error)) (n int64, err error) {
	dir, base := filepath.Split(file)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.partial")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if n, err = fill(tmp); err != nil {
		return n, err
	}
	if err = tmp.Sync(); err != nil {
		return n, err
	}
	if err = tmp.Close(); err != nil {
		return n, err
	}
	if err = os.Rename(tmp.Name(), file); err != nil {
		return n, err
	}
	// Make the rename itself durable; not every platform can sync a
	// directory, and the snapshot is complete either way.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return n, nil
}

const snapshotRestoreUsage = `
Usage: tasker snapshot restore FILE [-addr URL] [-o table|json]

Replaces all workflow state of the cluster with a snapshot saved by
'tasker snapshot save', streamed to the agent in chunks of 64 KiB. What
the cluster held before is gone: save a snapshot first.
` + apiFlagsHelp + apiExit

func snapshotRestoreCommand() command {
	return command{name: "snapshot restore", synopsis: "replace all workflow state with a saved snapshot", usage: snapshotRestoreUsage, run: runSnapshotRestore}
}

// restoreChunk is the size of each message of a restore.
const restoreChunk = 64 << 10

func runSnapshotRestore(args []string, stdout, stderr io.Writer) int {
	c := snapshotRestoreCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one file, got %d", len(pos))
	}
	file := pos[0]
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %s: %s\n", c.name, file, readError(err))
		return exitFail
	}
	defer f.Close()
	buf := make([]byte, restoreChunk)
	n, rerr := io.ReadFull(f, buf)
	if n == 0 && (rerr == io.EOF || rerr == nil) {
		// An empty stream would restore an empty state: refuse here.
		fmt.Fprintf(stderr, "tasker %s: %s is empty\n", c.name, file)
		return exitFail
	}
	ctx, cancel := cn.context()
	defer cancel()
	stream := cn.cluster.SnapshotRestore(ctx)
	var sent int64
	for n > 0 {
		// Send reports io.EOF when the agent has stopped reading;
		// CloseAndReceive then says why.
		if err := stream.Send(&taskerv1.SnapshotRestoreRequest{Data: buf[:n]}); err != nil {
			break
		}
		sent += int64(n)
		if rerr != nil {
			break
		}
		n, rerr = io.ReadFull(f, buf)
	}
	if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
		// Abandon the stream, so that the agent restores nothing of a
		// snapshot it got only part of.
		cancel()
		fmt.Fprintf(stderr, "tasker %s: %s: %v\n", c.name, file, rerr)
		return exitFail
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	fmt.Fprintf(stdout, "restored %s (%d bytes): %s, %s\n", file, sent, plural(int(resp.Msg.Tasks), "task"), plural(int(resp.Msg.Workflows), "workflow version"))
	return exitOK
}
