package main

import (
	"strings"
	"testing"
)

// TestAIProposalsUsage: bad command lines are refused before any call,
// with exit 2 and a message naming the flag or argument and the fix.
func TestAIProposalsUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ai", "proposals", "reject", "p-1"}, "no reason given: use -reason R"},
		{[]string{"ai", "proposals", "approve"}, "want one proposal ID, got 0"},
		{[]string{"ai", "proposals", "show", "p-1", "p-2"}, "want one proposal ID, got 2"},
		{[]string{"ai", "proposals", "rollback"}, "want one proposal ID, got 0"},
		{[]string{"ai", "proposals", "list", "-limit", "0"}, "-limit 0 is out of range: use 1 to 1000"},
		{[]string{"ai", "proposals", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"ai", "proposals", "approve", "p-1", "-result", "{nope"}, "-result is not JSON"},
		{[]string{"ai", "optimize", "shop/order-fulfilment", "-propose", "-stale"}, "does not combine with -stale"},
		{[]string{"ai", "proposals", "nope"}, `unknown subcommand "nope"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := tasker(t, append(tt.args, "-addr", "http://127.0.0.1:1")...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
	// The group lists its subcommands.
	code, stdout, _ := tasker(t, "help", "ai", "proposals")
	for _, sub := range []string{"list", "show", "approve", "reject", "rollback"} {
		if code != exitOK || !strings.Contains(stdout, "\n  "+sub+" ") {
			t.Errorf("help ai proposals (exit %d) does not list %s:\n%s", code, sub, stdout)
		}
	}
}
