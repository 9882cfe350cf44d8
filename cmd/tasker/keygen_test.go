package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tasker-run/tasker/gossip"
)

func TestKeygenPrintsUsableKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		var out, errOut bytes.Buffer
		if code := run([]string{"keygen"}, &out, &errOut); code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		key := strings.TrimSpace(out.String())
		b, err := gossip.DecodeKey(key)
		if err != nil || len(b) != 32 {
			t.Fatalf("key %q: %v (%d bytes)", key, err, len(b))
		}
		if seen[key] {
			t.Fatal("keygen printed the same key twice")
		}
		seen[key] = true
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen", "extra"}, &out, &errOut); code != exitUsage {
		t.Fatalf("an extra argument: exit %d", code)
	}
}
