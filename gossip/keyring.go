package gossip

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/memberlist"
)

// KeyringFile is the name of the keyring file in an agent's data dir.
const KeyringFile = "keyring.json"

// Errors of keyring changes that the state of the keyring refuses; the
// messages of the errors wrapping them name the key's role and the fix.
var (
	// ErrKeyNotInstalled: Use of a key the keyring does not hold.
	ErrKeyNotInstalled = errors.New("gossip: key is not installed")
	// ErrRemovePrimary: Remove of the key in use for sending.
	ErrRemovePrimary = errors.New("gossip: key is the primary key")
)

// Keyring is an agent's gossip encryption keys: the primary key encrypts
// everything this agent sends; every key decrypts what it receives. So a
// new key is installed on every agent first, then made primary everywhere,
// and the old one is removed last: at every step each agent can read what
// every other sends. (memberlist tries each key on every message: keep
// the keyring small.)
//
// A Keyring with a path persists every change to that file before it takes
// effect (0600, written to a temporary file and renamed), so that an agent
// restarted after a rotation comes back with the rotated keys. Its methods
// are safe for concurrent use.
type Keyring struct {
	mu   sync.Mutex
	ml   *memberlist.Keyring
	path string
}

// keyringJSON is the keyring file: the primary key and every key (the
// primary included), base64, as `tasker keygen` prints them.
type keyringJSON struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

// NewKeyring returns an in-memory keyring (not persisted) holding key as
// its primary key.
func NewKeyring(key []byte) (*Keyring, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	ml, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	return &Keyring{ml: ml}, nil
}

// OpenKeyring returns the keyring persisted at path when the file exists,
// and then ignores seed; otherwise, with a seed key, it creates the file
// holding seed alone as primary; with neither it returns nil, nil (gossip
// is not encrypted). loaded reports that the keyring came from the file.
//
// This is the precedence of an agent's keys: the keyring file in its data
// dir, once there is one, wins over -encrypt, which only seeds a new data
// dir — a rotation (Install, Use, Remove) changes the file, and a restart
// must not undo it.
func OpenKeyring(path string, seed []byte) (kr *Keyring, loaded bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		kr, err := parseKeyring(path, b)
		if err != nil {
			return nil, false, err
		}
		return kr, true, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("gossip: read keyring %s: %w", path, err)
	case len(seed) == 0:
		return nil, false, nil
	}
	if err := checkKey(seed); err != nil {
		return nil, false, err
	}
	ml, err := memberlist.NewKeyring(nil, seed)
	if err != nil {
		return nil, false, fmt.Errorf("gossip: keyring: %w", err)
	}
	kr = &Keyring{ml: ml, path: path}
	if err := kr.save(seed, [][]byte{seed}); err != nil {
		return nil, false, err
	}
	return kr, false, nil
}

// parseKeyring decodes and checks a keyring file's content.
func parseKeyring(path string, b []byte) (*Keyring, error) {
	fix := "fix the file, or remove it to start again from -encrypt"
	var f keyringJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("gossip: keyring %s is not valid JSON: %w; %s", path, err, fix)
	}
	if len(f.Keys) == 0 {
		return nil, fmt.Errorf("gossip: keyring %s: keys: is empty; %s", path, fix)
	}
	primary, err := DecodeKey(f.Primary)
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring %s: primary: %w; %s", path, err, fix)
	}
	keys := make([][]byte, 0, len(f.Keys))
	found := false
	for i, s := range f.Keys {
		k, err := DecodeKey(s)
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring %s: keys[%d]: %w; %s", path, i, err, fix)
		}
		found = found || bytes.Equal(k, primary)
		keys = append(keys, k)
	}
	if !found {
		return nil, fmt.Errorf("gossip: keyring %s: primary: is not one of keys; %s", path, fix)
	}
	ml, err := memberlist.NewKeyring(keys, primary)
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring %s: %w; %s", path, err, fix)
	}
	return &Keyring{ml: ml, path: path}, nil
}

// NewWithKeyring is New with the keys of kr instead of cfg.EncryptKey:
// gossip encrypts with kr's primary key and decrypts with any of its keys,
// and later changes to kr take effect at once.
func NewWithKeyring(cfg Config, kr *Keyring) (*Gossip, error) {
	if kr == nil {
		return New(cfg)
	}
	cfg.EncryptKey = kr.ml.GetPrimaryKey()
	tune := cfg.tune
	cfg.tune = func(mc *memberlist.Config) {
		mc.Keyring = kr.ml
		if tune != nil {
			tune(mc)
		}
	}
	return New(cfg)
}

// Path is the file the keyring is persisted to; empty for an in-memory one.
func (k *Keyring) Path() string { return k.path }

// Keys returns the primary key and every key (the primary first), base64.
func (k *Keyring) Keys() (primary string, keys []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, b := range k.ml.GetKeys() {
		keys = append(keys, base64.StdEncoding.EncodeToString(b))
	}
	return base64.StdEncoding.EncodeToString(k.ml.GetPrimaryKey()), keys
}

// Has reports whether the keyring holds key (base64).
func (k *Keyring) Has(key string) bool {
	b, err := DecodeKey(key)
	if err != nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.index(b) >= 0
}

func (k *Keyring) index(key []byte) int {
	for i, b := range k.ml.GetKeys() {
		if bytes.Equal(b, key) {
			return i
		}
	}
	return -1
}

// Install adds key (base64) to the keyring as a secondary key: this agent
// now decrypts what is encrypted with it, and still encrypts with the
// primary key. Installing a key the keyring holds changes nothing.
func (k *Keyring) Install(key string) error {
	b, err := DecodeKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.index(b) >= 0 {
		return nil
	}
	if err := k.save(k.ml.GetPrimaryKey(), append(k.ml.GetKeys(), b)); err != nil {
		return err
	}
	if err := k.ml.AddKey(b); err != nil {
		return fmt.Errorf("gossip: install key: %w", err)
	}
	return nil
}

// Use makes key (base64), which must be installed, the primary key: this
// agent encrypts everything it sends with it from now on. It fails with
// ErrKeyNotInstalled, changing nothing, when the keyring lacks it.
func (k *Keyring) Use(key string) error {
	b, err := DecodeKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.index(b) < 0 {
		return fmt.Errorf("%w: install it first (tasker keyring install KEY)", ErrKeyNotInstalled)
	}
	if bytes.Equal(k.ml.GetPrimaryKey(), b) {
		return nil
	}
	if err := k.save(b, k.ml.GetKeys()); err != nil {
		return err
	}
	if err := k.ml.UseKey(b); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	return nil
}

// Remove deletes key (base64) from the keyring. It refuses the primary key
// with ErrRemovePrimary, changing nothing: make another key primary first.
// Removing a key the keyring does not hold changes nothing.
func (k *Keyring) Remove(key string) error {
	b, err := DecodeKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if bytes.Equal(k.ml.GetPrimaryKey(), b) {
		return fmt.Errorf("%w and cannot be removed: make another key primary first (tasker keyring use OTHER-KEY)", ErrRemovePrimary)
	}
	i := k.index(b)
	if i < 0 {
		return nil
	}
	keys := k.ml.GetKeys()
	keys = append(keys[:i:i], keys[i+1:]...)
	if err := k.save(k.ml.GetPrimaryKey(), keys); err != nil {
		return err
	}
	if err := k.ml.RemoveKey(b); err != nil {
		return fmt.Errorf("gossip: remove key: %w", err)
	}
	return nil
}

// save writes the keyring file (when k has a path) as primary and keys:
// to a temporary file in the same directory, synced, then renamed over
// the old one, so that a crash leaves the old keyring or the new one,
// never a torn file. Callers hold k.mu, or own k alone.
func (k *Keyring) save(primary []byte, keys [][]byte) error {
	if k.path == "" {
		return nil
	}
	f := keyringJSON{Primary: base64.StdEncoding.EncodeToString(primary)}
	for _, b := range keys {
		f.Keys = append(f.Keys, base64.StdEncoding.EncodeToString(b))
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("gossip: encode keyring: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(k.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	tmp, err := os.CreateTemp(dir, KeyringFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("gossip: save keyring: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself; not every file system supports it
		d.Close()
	}
	return nil
}

// checkKey checks a raw key's length.
func checkKey(key []byte) error {
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("gossip: encryption key is %d bytes, it must be 16, 24 or 32", n)
	}
	return nil
}
