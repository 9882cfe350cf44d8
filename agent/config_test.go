package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasker-run/tasker/consensus"
)

// TestSystemSetting: -system (TASKER_SYSTEM, config key system) is empty or
// a name a manifest could declare under systems; anything else stops the
// agent with a message naming the setting and the rule.
func TestSystemSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("system: inventory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := "p" + strings.Repeat("a", 63) // 64 bytes: one over a system name's limit
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the System loaded, when err is empty
		err  string
	}{
		{name: "none", args: []string{"-dev"}},
		{name: "flag", args: []string{"-dev", "-system", "payments"}, want: "payments"},
		{name: "env", args: []string{"-dev"}, env: map[string]string{"TASKER_SYSTEM": "order-svc_2"}, want: "order-svc_2"},
		{name: "config file", args: []string{"-dev", "-config", file}, want: "inventory"},
		{name: "flag beats env and file", args: []string{"-dev", "-config", file, "-system", "payments"}, env: map[string]string{"TASKER_SYSTEM": "shipping"}, want: "payments"},
		{name: "longest", args: []string{"-dev", "-system", long[:63]}, want: long[:63]},
		{name: "upper case", args: []string{"-dev", "-system", "Payments"}, err: `system: "Payments" is not a system name: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter`},
		{name: "leading digit", args: []string{"-dev", "-system", "2pay"}, err: `system: "2pay" is not a system name`},
		{name: "a capability, not a system", args: []string{"-dev", "-system", "payments.charge"}, err: `system: "payments.charge" is not a system name`},
		{name: "space", args: []string{"-dev"}, env: map[string]string{"TASKER_SYSTEM": "pay ments"}, err: `system: "pay ments" is not a system name`},
		{name: "too long", args: []string{"-dev", "-system", long}, err: `system: "` + long + `" is not a system name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil || cfg.System != tt.want {
				t.Fatalf("Load(%v) = system %q, %v; want %q", tt.args, cfg.System, err, tt.want)
			}
		})
	}
}

// TestConfigRaftSnapshot: -raft-snapshot-threshold, -raft-snapshot-interval
// and -raft-trailing-logs (TASKER_RAFT_*, config keys raft_*) default to
// the production values and take values within their limits; anything
// else stops the agent with a message naming the setting and its range.
func TestConfigRaftSnapshot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("raft_snapshot_threshold: 500\nraft_snapshot_interval: 2s\nraft_trailing_logs: 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type want struct {
		threshold, trailing int
		interval            time.Duration
	}
	defaults := want{16384, 10240, 30 * time.Second}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want want
		err  string
	}{
		{name: "defaults", args: []string{"-dev"}, want: defaults},
		{name: "flags", args: []string{"-dev", "-raft-snapshot-threshold", "64", "-raft-snapshot-interval", "200ms", "-raft-trailing-logs", "32"},
			want: want{64, 32, 200 * time.Millisecond}},
		{name: "env", args: []string{"-dev"}, env: map[string]string{"TASKER_RAFT_SNAPSHOT_THRESHOLD": "1000", "TASKER_RAFT_SNAPSHOT_INTERVAL": "1m", "TASKER_RAFT_TRAILING_LOGS": "16"},
			want: want{1000, 16, time.Minute}},
		{name: "config file", args: []string{"-dev", "-config", file}, want: want{500, 100, 2 * time.Second}},
		{name: "flag beats env and file", args: []string{"-dev", "-config", file, "-raft-trailing-logs", "200"}, env: map[string]string{"TASKER_RAFT_TRAILING_LOGS": "300"},
			want: want{500, 200, 2 * time.Second}},
		{name: "smallest", args: []string{"-dev", "-raft-snapshot-threshold", "16", "-raft-snapshot-interval", "100ms", "-raft-trailing-logs", "16"},
			want: want{16, 16, 100 * time.Millisecond}},
		{name: "threshold too small", args: []string{"-dev", "-raft-snapshot-threshold", "15"},
			err: "raft-snapshot-threshold: 15 is out of range: use 16 to 10000000 entries (default 16384)"},
		{name: "threshold zero", args: []string{"-dev", "-raft-snapshot-threshold", "0"}, err: "raft-snapshot-threshold: 0 is out of range"},
		{name: "threshold too large", args: []string{"-dev", "-raft-snapshot-threshold", "10000001"}, err: "raft-snapshot-threshold: 10000001 is out of range"},
		{name: "threshold not a number", args: []string{"-dev", "-raft-snapshot-threshold", "lots"}, err: `-raft-snapshot-threshold: "lots" is not a whole number`},
		{name: "trailing too small", args: []string{"-dev", "-raft-trailing-logs", "-1"},
			err: "raft-trailing-logs: -1 is out of range: use 16 to 10000000 entries (default 10240)"},
		{name: "interval too short", args: []string{"-dev", "-raft-snapshot-interval", "10ms"},
			err: "raft-snapshot-interval: 10ms is out of range: use 100ms to 24h (default 30s)"},
		{name: "interval too long", args: []string{"-dev", "-raft-snapshot-interval", "25h"}, err: "raft-snapshot-interval: 25h0m0s is out of range"},
		{name: "interval without a unit", args: []string{"-dev", "-raft-snapshot-interval", "30"}, err: `-raft-snapshot-interval: "30" is not a duration (such as 500ms or 30s)`},
		{name: "interval from env", args: []string{"-dev"}, env: map[string]string{"TASKER_RAFT_SNAPSHOT_INTERVAL": "soon"}, err: `TASKER_RAFT_SNAPSHOT_INTERVAL: "soon" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			got := want{cfg.RaftSnapshotThreshold, cfg.RaftTrailingLogs, cfg.RaftSnapshotInterval}
			if err != nil || got != tt.want {
				t.Fatalf("Load(%v) = %+v, %v; want %+v", tt.args, got, err, tt.want)
			}
		})
	}
}

// TestListSettingsPrecedence: a list setting (-retry-join, -join) from a
// later source replaces the earlier one's, as a scalar does: the file,
// then TASKER_*, then flags. A flag given twice adds.
func TestListSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("retry_join: [file-1:7422, file-2:7422]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"file", []string{"-config", file}, "", "file-1:7422,file-2:7422"},
		{"env replaces the file", []string{"-config", file}, "env-1:7422, env-2:7422", "env-1:7422,env-2:7422"},
		{"flag replaces env and file", []string{"-config", file, "-retry-join", "flag-1:7422"}, "env-1:7422", "flag-1:7422"},
		{"a repeated flag adds", []string{"-retry-join", "a:7422", "-retry-join", "b:7422,c:7422"}, "", "a:7422,b:7422,c:7422"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-data-dir", t.TempDir()}, tt.args...)
			cfg, err := Load(args, func(k string) string {
				if k == "TASKER_RETRY_JOIN" {
					return tt.env
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cfg.RetryJoin, ","); got != tt.want {
				t.Fatalf("retry_join %q, want %q", got, tt.want)
			}
		})
	}
}

// TestConfigHistory: -history-max-records and -history-max-age
// (TASKER_HISTORY_*, config keys history_*) default to the consensus
// package's retention and take values within their limits; anything else
// stops the agent with a message naming the setting, its range and default.
func TestConfigHistory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("history_max_records: 5000\nhistory_max_age: 48h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type want struct {
		records int
		age     time.Duration
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want want
		err  string
	}{
		{name: "defaults", args: []string{"-dev"}, want: want{100000, 7 * 24 * time.Hour}},
		{name: "flags", args: []string{"-dev", "-history-max-records", "10", "-history-max-age", "1h"}, want: want{10, time.Hour}},
		{name: "env", args: []string{"-dev"}, env: map[string]string{"TASKER_HISTORY_MAX_RECORDS": "1", "TASKER_HISTORY_MAX_AGE": "1m"}, want: want{1, time.Minute}},
		{name: "config file", args: []string{"-dev", "-config", file}, want: want{5000, 48 * time.Hour}},
		{name: "flag beats env and file", args: []string{"-dev", "-config", file, "-history-max-records", "7"}, env: map[string]string{"TASKER_HISTORY_MAX_RECORDS": "8"},
			want: want{7, 48 * time.Hour}},
		{name: "largest", args: []string{"-dev", "-history-max-records", "10000000", "-history-max-age", "8784h"}, want: want{10_000_000, 8784 * time.Hour}},
		{name: "records zero", args: []string{"-dev", "-history-max-records", "0"},
			err: "history-max-records: 0 is out of range: use 1 to 10000000 records (default 100000)"},
		{name: "records too many", args: []string{"-dev", "-history-max-records", "10000001"}, err: "history-max-records: 10000001 is out of range"},
		{name: "records not a number", args: []string{"-dev", "-history-max-records", "lots"}, err: `-history-max-records: "lots" is not a whole number`},
		{name: "age too short", args: []string{"-dev", "-history-max-age", "30s"},
			err: "history-max-age: 30s is out of range: use 1m0s to 8784h0m0s (default 168h0m0s)"},
		{name: "age too long", args: []string{"-dev", "-history-max-age", "8785h"}, err: "history-max-age: 8785h0m0s is out of range"},
		{name: "age without a unit", args: []string{"-dev", "-history-max-age", "7"}, err: `-history-max-age: "7" is not a duration`},
		{name: "age from env", args: []string{"-dev"}, env: map[string]string{"TASKER_HISTORY_MAX_AGE": "a week"}, err: `TASKER_HISTORY_MAX_AGE: "a week" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Load(%v) = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			got := want{cfg.HistoryMaxRecords, cfg.HistoryMaxAge}
			if err != nil || got != tt.want {
				t.Fatalf("Load(%v) = %+v, %v; want %+v", tt.args, got, err, tt.want)
			}
		})
	}
}

// TestHistoryRetentionReachesTheState: the agent's history settings are
// the retention of the state its FSM applies to.
func TestHistoryRetentionReachesTheState(t *testing.T) {
	cfg, err := Load([]string{"-dev", "-history-max-records", "42", "-history-max-age", "90m"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.state.HistoryRetention(), (consensus.HistoryRetention{MaxRecords: 42, MaxAge: 90 * time.Minute}); got != want {
		t.Fatalf("state retention %+v, want %+v", got, want)
	}
}
