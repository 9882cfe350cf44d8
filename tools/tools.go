// Package tools pins the code generators and linters Tasker builds with, in
// a module of their own so that their dependencies stay out of Tasker's.
// Run them with `go tool -modfile=tools/go.mod NAME`.
package tools
