package ui

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// sourceHash is scripts/source-hash.mjs in Go: the SHA-256 over every
// input of the build, each as its path relative to ui/ (forward slashes),
// a NUL, its content and a NUL, in sorted path order.
func sourceHash(t *testing.T) string {
	t.Helper()
	var files []string
	for _, dir := range []string{"src", filepath.Join("..", "sdk", "ts", "src", "gen")} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				files = append(files, filepath.ToSlash(p))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("walking %s: %v", dir, err)
		}
	}
	files = append(files, "index.html", "package-lock.json", "vite.config.ts")
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.FromSlash(f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(f + "\x00"))
		h.Write(b)
		h.Write([]byte("\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestDistIsFresh fails when ui/dist was built from other sources than
// those committed: the binary would serve an app that is not the code.
func TestDistIsFresh(t *testing.T) {
	b, err := fs.ReadFile(Assets(), ".source-hash")
	if err != nil {
		t.Fatalf("ui/dist has no .source-hash: run make ui and commit ui/dist (%v)", err)
	}
	if got, want := strings.TrimSpace(string(b)), sourceHash(t); got != want {
		t.Fatalf("ui/dist is stale: built from sources hashing %s, the sources now hash %s; run make ui and commit ui/dist", got, want)
	}
}

func TestHandler(t *testing.T) {
	var asset string
	entries, err := fs.ReadDir(Assets(), "assets")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".js") {
			asset = "/ui/assets/" + e.Name()
		}
	}
	if asset == "" {
		t.Fatal("no JavaScript bundle in ui/dist/assets")
	}
	tests := []struct {
		name, method, path string
		code               int
		contentType, cache string
		body               string
	}{
		{"root", "GET", "/ui/", 200, "text/html", "no-cache", `<div id="root">`},
		{"index", "GET", "/ui/index.html", 200, "text/html", "no-cache", `<div id="root">`},
		{"spa route", "GET", "/ui/watch/t1", 200, "text/html", "no-cache", `<div id="root">`},
		{"bundle", "GET", asset, 200, "javascript", "max-age=31536000", ""},
		{"head", "HEAD", asset, 200, "javascript", "immutable", ""},
		{"missing asset", "GET", "/ui/assets/gone-1234.js", 404, "", "", ""},
		{"hash file hidden", "GET", "/ui/.source-hash", 200, "text/html", "no-cache", `<div id="root">`},
		{"escape", "GET", "/ui/../embed.go", 200, "text/html", "", `<div id="root">`},
		{"no slash", "GET", "/ui", 301, "", "", ""},
		{"post", "POST", "/ui/", 405, "", "", ""},
	}
	h := Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tt.method, "http://127.0.0.1:7420/", nil)
			req.URL.Path = tt.path
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("%s %s: %d, want %d", tt.method, tt.path, rec.Code, tt.code)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, tt.contentType) {
				t.Errorf("Content-Type %q, want %q", ct, tt.contentType)
			}
			if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, tt.cache) {
				t.Errorf("Cache-Control %q, want %q", cc, tt.cache)
			}
			if tt.code == 200 && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") {
				t.Errorf("no Content-Security-Policy forbidding framing: %q", rec.Header().Get("Content-Security-Policy"))
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body does not contain %q", tt.body)
			}
			if tt.code == 200 && tt.method == "GET" && rec.Body.Len() == 0 {
				t.Error("empty body")
			}
		})
	}
	if loc := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui", nil))
		return rec.Header().Get("Location")
	}(); loc != "/ui/" {
		t.Errorf("redirect to %q, want /ui/", loc)
	}
}
