package main

import (
	"strings"
	"testing"
)

// TestMCPUsage: a wrong command line stops before any protocol starts,
// naming what is wrong.
func TestMCPUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"mcp", "extra"}, `unexpected argument "extra"`},
		{[]string{"mcp", "-addr", "https://127.0.0.1:7420"}, "only http://"},
		{[]string{"mcp", "-bogus"}, "run 'tasker help mcp'"},
	} {
		code, _, stderr := tasker(t, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 saying %q", c.args, code, stderr, c.want)
		}
	}
}
