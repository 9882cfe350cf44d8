# Tasker — one binary, one Makefile. `make help` lists the targets.
GO       ?= go
BIN      := bin/tasker
# The example apps of examples/order-fulfilment.yaml, and the live demo's driver.
SERVICES := bin/order-services
DEMO     := bin/order-demo
# Code generators and linters, pinned in tools/go.mod.
TOOL     := $(GO) tool -modfile=$(CURDIR)/tools/go.mod
PKGS     := ./...
# The npm workspace (package.json): the TypeScript SDK in sdk/ts and the
# TypeScript example services, with one package-lock.json. npm ci stamps
# node_modules/.package-lock.json, so it runs again only when the lock or a
# package.json changes.
NPM      ?= npm
NODE_MODULES := node_modules/.package-lock.json
# The web UI (ui/): a Vite app with its own package.json and lock, outside
# the workspace; its build is committed in ui/dist and embedded by ui/embed.go,
# so go build never needs Node.
UI_MODULES := ui/node_modules/.package-lock.json
# How long each fuzz target runs inside `make test`: a count of inputs, not
# a duration. Go 1.26's fuzz coordinator can fail a duration-bound run with
# a bare "context deadline exceeded" when the deadline lands while a worker
# is mid-input on a loaded machine (go.dev/issue/75804, fixed in Go 1.27); a
# count has no deadline to race. 5000 inputs take 0.5-12 s per target here.
FUZZTIME ?= 5000x
# Minimizing new inputs can outlive a short -fuzztime, and Go then fails the
# run with "context deadline exceeded"; short runs skip it (a crasher is
# still saved), `make fuzz` minimizes.
FUZZMIN  ?= 0s
# Packages with fuzz targets: manifests, the Raft FSM and its snapshots,
# the agent's API, the sidecar injector (docs/testing.md).
FUZZPKGS := ./workflow ./consensus ./agent ./inject
# How long `make chaos` injects faults, and where it keeps its report and
# every process's log (make test runs a short chaos run too).
CHAOS_DURATION  ?= 10m
CHAOS_ARTIFACTS ?= $(CURDIR)/chaos-artifacts

.PHONY: all build services ts ts-test ui ui-test test unit e2e deploy-test chaos fuzz-short fuzz bench eval lint fmt proto proto-check demo demo-sim clean help

all: build

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/tasker
	$(GO) build -trimpath -o $(BIN) ./cmd/tasker

services: ## build bin/order-services, the example apps of the order workflow
	$(GO) build -trimpath -o $(SERVICES) ./examples/services

$(NODE_MODULES): package-lock.json package.json sdk/ts/package.json examples/polyglot/payments/package.json
	$(NPM) ci
	@touch $@

ts: $(NODE_MODULES) ## build the TypeScript SDK (sdk/ts) and the TypeScript example services
	$(NPM) run build --workspaces

ts-test: build ts ## the TypeScript tests: the SDK against a real bin/tasker agent -dev, the payments example's unit tests
	$(NPM) test --workspaces

$(UI_MODULES): ui/package-lock.json ui/package.json
	cd ui && $(NPM) ci --no-audit --no-fund
	@touch $@

ui: $(UI_MODULES) ## build the web UI into ui/dist (commit it: the binary embeds it; ui/embed_test.go fails when it is stale)
	cd ui && $(NPM) run build

ui-test: $(UI_MODULES) ## the web UI's component tests (Vitest, jsdom)
	cd ui && $(NPM) test

test: build ts unit fuzz-short ts-test ui-test deploy-test ## run every test (unit, race, e2e, fuzz seeds and a short fuzz, TypeScript, the web UI, deploy manifests)

unit: $(UI_MODULES) ## unit and scenario tests with the race detector (e2e's TestWebUI needs ui/node_modules)
	$(GO) test -race -count=1 $(PKGS)

e2e: $(UI_MODULES) ## only the end-to-end tests: real agents and services over loopback (make test runs them too)
	$(GO) test -race -count=1 ./e2e/

deploy-test: ## the Kubernetes manifests and the Helm chart: helm lint, render, strict decoding, the agent's own config loader (deploy/, a module of its own)
	cd deploy && $(GO) test -count=1 ./...

chaos: ## randomized faults (leader/follower kill, pause and partition, client and service kill, client partition; partitions need root) against a steady workload for $(CHAOS_DURATION), then the invariants; report in $(CHAOS_ARTIFACTS)
	TASKER_CHAOS_DURATION=$(CHAOS_DURATION) TASKER_ARTIFACTS=$(CHAOS_ARTIFACTS) TASKER_E2E_LOGS=$(CHAOS_ARTIFACTS)/logs \
		$(GO) test -count=1 -v -timeout 0 -run '^TestChaos$$' ./e2e/

fuzz-short: ## each fuzz target for $(FUZZTIME) (docs/testing.md lists them)
	@for pkg in $(FUZZPKGS); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) $$pkg || exit 1; \
		done; \
	done

fuzz: ## each fuzz target for 2 minutes
	$(MAKE) fuzz-short FUZZTIME=2m FUZZMIN=60s

bench: ## benchmarks: readiness, memory per task, validation, Raft commit, end-to-end latency and throughput (one agent and a 3-server cluster), breakers, gossip convergence
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./workflow ./consensus ./breaker
	$(GO) test -run '^$$' -bench . -benchtime 300x -count=1 ./agent
	$(GO) test -run '^$$' -bench . -benchtime 20x -count=1 ./gossip

eval: ## replay the insight evaluation set (insight/testdata/eval): root-cause accuracy and optimizer scenarios; fails on a regression
	$(GO) run ./insight/cmd/eval

lint: $(NODE_MODULES) ## gofmt check, go vet and staticcheck (the main module and deploy/), buf lint, and tsc on the TypeScript SDK and its tests
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOL) staticcheck $(PKGS)
	cd deploy && $(GO) vet ./... && $(TOOL) staticcheck ./...
	cd proto && $(TOOL) buf lint
	cd sdk/ts && ../../node_modules/.bin/tsc --noEmit -p tsconfig.test.json

proto: $(NODE_MODULES) ## regenerate the Go and TypeScript code of the API from proto/
	cd proto && $(TOOL) buf generate
	rm -rf sdk/ts/src/gen
	cd proto && $(TOOL) buf generate --template buf.gen.ts.yaml

proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto sdk/ts/src/gen || { echo "generated code in proto/ or sdk/ts/src/gen is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto sdk/ts/src/gen)" || { echo "make proto created or removed files that are not committed:"; git status --porcelain -- proto sdk/ts/src/gen; exit 1; }

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

demo: build services ts ## validate the examples, then run 50 orders through a live 3-server cluster (a sidecar per service: inventory in Go, payments in TypeScript, shipping in Python) and kill the leader mid-run
	./$(BIN) validate examples/*.yaml
	$(GO) build -trimpath -o $(DEMO) ./examples/demo
	./$(DEMO) -tasker ./$(BIN) -services ./$(SERVICES) -workflow examples/order-fulfilment.yaml

demo-sim: build ## run the order workflow through the engine with a simulated clock and simulated services
	./$(BIN) demo examples/order-fulfilment.yaml

clean: ## remove build output (node_modules stays)
	rm -rf bin sdk/ts/dist sdk/ts/dist-test examples/polyglot/payments/dist
