# Tasker — one binary, one Makefile. `make help` lists the targets.
GO       ?= go
BIN      := bin/tasker
# Code generators and linters, pinned in tools/go.mod.
TOOL     := $(GO) tool -modfile=$(CURDIR)/tools/go.mod
PKGS     := ./...
# Seconds each fuzz target runs inside `make test` (longer with `make fuzz`).
FUZZTIME ?= 5s

.PHONY: all build test unit fuzz-short fuzz bench lint fmt proto proto-check demo clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/tasker
	$(GO) build -trimpath -o $(BIN) ./cmd/tasker

test: build unit fuzz-short ## run every test (unit, race, fuzz seeds and a short fuzz)

unit: ## unit and scenario tests with the race detector
	$(GO) test -race -count=1 $(PKGS)

fuzz-short: ## each fuzz target for $(FUZZTIME)
	@for target in $$($(GO) test -list '^Fuzz' ./workflow | grep '^Fuzz'); do \
		echo "fuzz $$target ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) ./workflow || exit 1; \
	done

fuzz: ## each fuzz target for 2 minutes
	$(MAKE) fuzz-short FUZZTIME=2m

bench: ## benchmarks (readiness, incremental update, memory per task, validation)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./workflow

lint: ## gofmt check, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOL) staticcheck $(PKGS)
	cd proto && $(TOOL) buf lint

proto: ## regenerate the Go code of the API from proto/
	cd proto && $(TOOL) buf generate

proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto || { echo "generated code in proto/ is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { echo "make proto created files that are not committed:"; git status --porcelain -- proto; exit 1; }

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

demo: build ## validate the examples and run a sample workflow with a simulated clock
	./$(BIN) validate examples/*.yaml
	./$(BIN) demo examples/order-fulfilment.yaml

clean: ## remove build output
	rm -rf bin
