// Package e2e holds Tasker's end-to-end tests: they build the real
// binaries (bin/tasker and the example order services) into a temporary
// directory, start agents and services as processes on loopback with free
// ports, and drive them through the Go SDK and the tasker CLI, the way
// users do. They run in `make test` (and alone with `make e2e`).
//
// The tests cover the order workflow end to end, the operator CLI, an
// agent killed with SIGKILL mid-run and restarted on its data dir (no
// result lost, no completed step run again, idempotency keys kept), a
// graceful shutdown with steps running, and the health and reflection
// endpoints. The any-language tests (anylang_test.go) run apps with no
// SDK — Python with the standard library, bash with curl and jq — and
// every curl example of docs/sdk.md; they skip when python3, curl or jq
// is missing, unless TASKER_REQUIRE_TOOLS=1 (CI sets it).
package e2e
