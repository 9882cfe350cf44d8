package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
