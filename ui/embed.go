// Package ui serves the agent's web UI: the Vite build of ui/src, embedded
// in the binary so that it needs no files, no Node and no network at run
// time. `make ui` rebuilds ui/dist; go build only embeds what is committed.
package ui

import (
	"bytes"
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

// Prefix is where the agent mounts the UI; the build's asset URLs carry it
// (base in vite.config.ts).
const Prefix = "/ui/"

// Assets is the built app, rooted at dist.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// fs.Sub fails only on an invalid name, and "dist" is valid.
		panic(err)
	}
	return sub
}

// Handler serves the app under Prefix. A path that names no file gets
// index.html, so that a reload on any route under /ui/ still opens the
// app. Assets under assets/ have a content hash in their names and never
// change, so clients may keep them for a year; index.html must be checked
// every time, since it names the current assets.
func Handler() http.Handler {
	root := Assets()
	index, err := fs.ReadFile(root, "index.html")
	if err != nil {
		index = []byte("<!doctype html><title>Tasker</title><p>The web UI was not built into this binary: run make ui.</p>")
	}
	// One time for every file: the embedded files have none, and a fixed
	// one lets If-Modified-Since work across requests of one binary.
	started := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		name := strings.TrimPrefix(path.Clean(r.URL.Path), Prefix)
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		// The app loads only its own files and talks only to its own
		// origin: a policy that says so blunts an injected script, and
		// no framing keeps its buttons (Cancel, Resolve) from being
		// clicked through another site's page. React Flow sets inline
		// styles, hence 'unsafe-inline' for styles only.
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if name != "" && name != "index.html" && !strings.HasPrefix(path.Base(name), ".") {
			if b, err := fs.ReadFile(root, name); err == nil {
				if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
					h.Set("Content-Type", ct)
				}
				if strings.HasPrefix(name, "assets/") {
					h.Set("Cache-Control", "public, max-age=31536000, immutable")
				} else {
					h.Set("Cache-Control", "no-cache")
				}
				http.ServeContent(w, r, name, started, bytes.NewReader(b))
				return
			}
			// A missing asset is a 404, not the app: a stale index.html
			// asking for an old bundle must fail visibly, not parse HTML
			// as JavaScript.
			if strings.HasPrefix(name, "assets/") {
				http.NotFound(w, r)
				return
			}
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", started, bytes.NewReader(index))
	})
}
