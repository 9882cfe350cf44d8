package gossip

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func genKey(t *testing.T) (string, []byte) {
	t.Helper()
	s, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func wantKeys(t *testing.T, kr *Keyring, primary string, keys ...string) {
	t.Helper()
	p, got := kr.Keys()
	slices.Sort(got)
	keys = slices.Clone(keys)
	slices.Sort(keys)
	if p != primary || !slices.Equal(got, keys) {
		t.Fatalf("keyring: primary %s keys %v, want primary %s keys %v", p, got, primary, keys)
	}
}

func TestKeyringOps(t *testing.T) {
	a, araw := genKey(t)
	b, _ := genKey(t)
	kr, err := NewKeyring(araw)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, kr, a, a)
	if err := kr.Use(b); !errors.Is(err, ErrKeyNotInstalled) || !strings.Contains(err.Error(), "tasker keyring install") {
		t.Fatalf("Use of a key not installed: %v, want ErrKeyNotInstalled naming the fix", err)
	}
	wantKeys(t, kr, a, a)
	for range 2 { // installing twice changes nothing
		if err := kr.Install(b); err != nil {
			t.Fatal(err)
		}
		wantKeys(t, kr, a, a, b)
	}
	if !kr.Has(b) || kr.Has("nope") {
		t.Fatal("Has")
	}
	if err := kr.Use(b); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, kr, b, a, b)
	if err := kr.Remove(b); !errors.Is(err, ErrRemovePrimary) || !strings.Contains(err.Error(), "tasker keyring use") {
		t.Fatalf("Remove of the primary: %v, want ErrRemovePrimary naming the fix", err)
	}
	wantKeys(t, kr, b, a, b)
	for range 2 { // removing a key not held changes nothing
		if err := kr.Remove(a); err != nil {
			t.Fatal(err)
		}
		wantKeys(t, kr, b, b)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ="} {
		for name, op := range map[string]func(string) error{"Install": kr.Install, "Use": kr.Use, "Remove": kr.Remove} {
			if err := op(bad); err == nil || !strings.Contains(err.Error(), "encryption key") {
				t.Errorf("%s(%q) = %v, want a key error", name, bad, err)
			}
		}
	}
	wantKeys(t, kr, b, b)
	if _, err := NewKeyring([]byte("short")); err == nil {
		t.Fatal("NewKeyring of a 5-byte key")
	}
}

func TestKeyringPersistence(t *testing.T) {
	a, araw := genKey(t)
	b, _ := genKey(t)
	path := filepath.Join(t.TempDir(), "data", KeyringFile)

	// No file and no seed: no encryption, and no file.
	kr, loaded, err := OpenKeyring(path, nil)
	if kr != nil || loaded || err != nil {
		t.Fatalf("OpenKeyring without file or seed = %v, %v, %v; want nil, false, nil", kr, loaded, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a keyring file was written without a key: %v", err)
	}

	// A seed creates the file, 0600.
	kr, loaded, err = OpenKeyring(path, araw)
	if err != nil || loaded {
		t.Fatalf("OpenKeyring with a seed: loaded %v, err %v", loaded, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := kr.Install(b); err != nil {
		t.Fatal(err)
	}
	if err := kr.Use(b); err != nil {
		t.Fatal(err)
	}

	// Reopened, with the old seed (-encrypt unchanged): the file wins.
	kr2, loaded, err := OpenKeyring(path, araw)
	if err != nil || !loaded {
		t.Fatalf("reopen: loaded %v, err %v", loaded, err)
	}
	wantKeys(t, kr2, b, a, b)
	if err := kr2.Remove(a); err != nil {
		t.Fatal(err)
	}
	kr3, _, err := OpenKeyring(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, kr3, b, b)
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp-*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// A broken file stops the agent with its path, the field and the fix.
	for _, tc := range []struct{ content, want string }{
		{"{", "not valid JSON"},
		{`{"primary":"` + a + `","keys":[]}`, "keys: is empty"},
		{`{"primary":"zz","keys":["` + a + `"]}`, "primary: gossip: encryption key is not base64"},
		{`{"primary":"` + a + `","keys":["` + a + `","c2hvcnQ="]}`, "keys[1]: gossip: encryption key is 5 bytes"},
		{`{"primary":"` + b + `","keys":["` + a + `"]}`, "primary: is not one of keys"},
	} {
		bad := filepath.Join(t.TempDir(), KeyringFile)
		if err := os.WriteFile(bad, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := OpenKeyring(bad, araw)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "remove it") {
			t.Errorf("OpenKeyring(%s) = %v, want an error naming the file, %q and the fix", tc.content, err, tc.want)
		}
	}

	// A failed save changes nothing in memory (the keyring's directory is
	// a file: this fails as root too).
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	kr4, err := NewKeyring(araw)
	if err != nil {
		t.Fatal(err)
	}
	kr4.path = filepath.Join(notDir, KeyringFile)
	if err := kr4.Install(b); err == nil || !strings.Contains(err.Error(), "save keyring") {
		t.Fatalf("Install with an unwritable file: %v, want a save error", err)
	}
	wantKeys(t, kr4, a, a)
}

// TestKeyringRotation rotates a running cluster's key: install B, use B,
// remove A; then a node with only B joins and one with only A cannot.
func TestKeyringRotation(t *testing.T) {
	a, araw := genKey(t)
	b, braw := genKey(t)
	krs := make([]*Keyring, 3)
	nodes := make([]*Gossip, 3)
	for i := range nodes {
		kr, err := NewKeyring(araw)
		if err != nil {
			t.Fatal(err)
		}
		krs[i] = kr
		g, err := NewWithKeyring(testConfig(i), kr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		nodes[i] = g
		if i > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := g.Join(ctx, []string{nodes[0].LocalAddr()})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 10*time.Second, "members converge", func() string {
		for _, g := range nodes {
			if got := aliveNames(g); len(got) != 3 {
				return g.cfg.Name + " sees " + strings.Join(got, ",")
			}
		}
		return ""
	})
	for _, step := range []func(*Keyring) error{
		func(k *Keyring) error { return k.Install(b) },
		func(k *Keyring) error { return k.Use(b) },
		func(k *Keyring) error { return k.Remove(a) },
	} {
		for _, kr := range krs {
			if err := step(kr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := nodes[1].SetCatalog(bigCatalog("rotated", 2, 100)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "catalog over the rotated key", func() string {
		return sameEverywhere(nodes, "rotated.cap001", []string{"agent-01"})
	})

	join := func(i int, key []byte) error {
		kr, err := NewKeyring(key)
		if err != nil {
			t.Fatal(err)
		}
		g, err := NewWithKeyring(testConfig(i), kr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = g.Join(ctx, []string{nodes[0].LocalAddr()})
		return err
	}
	if err := join(10, araw); err == nil {
		t.Fatal("a node with only the removed key joined")
	}
	if err := join(11, braw); err != nil {
		t.Fatalf("a node with only the new key: %v", err)
	}
	eventually(t, 10*time.Second, "the new node is seen", func() string {
		if got := aliveNames(nodes[2]); !slices.Contains(got, "agent-11") || slices.Contains(got, "agent-10") {
			return strings.Join(got, ",")
		}
		return ""
	})
}
