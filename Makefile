# xspace-mesh: on-demand service-mesh control plane.
# `make run` starts meshd on its embedded defaults; `make test` runs every test.

GO        ?= go
BIN       := bin
PKGS      := ./...
BENCHCOUNT ?= 5
# Tools the Makefile installs itself, cached outside the clone so a fresh
# clone on the same machine reuses them.
TOOLS_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xspace-mesh/tools
BENCHSTAT := $(TOOLS_DIR)/benchstat
# golangci-lint is pinned in tools/lint/go.mod, a module of its own so its
# dependencies stay out of the project's; the binary is named by version.
LINT_VERSION := $(shell awk '/golangci-lint\/v2 v/ {print $$2}' tools/lint/go.mod)
GOLANGCI  := $(TOOLS_DIR)/golangci-lint-$(LINT_VERSION)

export GOTOOLCHAIN := local

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build meshd and meshctl into bin/
	$(GO) build -o $(BIN)/meshd ./cmd/meshd
	$(GO) build -o $(BIN)/meshctl ./cmd/meshctl

.PHONY: run
run: build ## build and start meshd on its embedded defaults (Ctrl-C stops it)
	@echo "meshd: xDS gRPC on 127.0.0.1:18000, REST API/metrics/health/debug on http://127.0.0.1:18080, data in ./data"
	@echo "try:   $(BIN)/meshctl instance register payments --id p1 --address 10.0.0.1 --port 8080"
	$(BIN)/meshd

.PHONY: test
test: ## run the whole test suite (race detector on)
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: lint
lint: $(GOLANGCI) ## run golangci-lint (.golangci.yml: vet, staticcheck, errorlint, revive, importas, depguard, gofumpt, gci)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	@echo "building golangci-lint $(LINT_VERSION) into $(TOOLS_DIR) (once; about 2 minutes)"
	cd tools/lint && $(GO) build -o $(GOLANGCI) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: golden
golden: ## rewrite the golden Envoy resources under xds/translate/testdata/out
	$(GO) test ./xds/translate/ -update

.PHONY: bench
bench: $(BENCHSTAT) ## run the xDS benchmarks of BENCHMARKS.md (about 5 minutes) and summarize them with benchstat
	$(GO) test -run '^$$' -bench 'OnDemandResolve|NotFound' -benchtime=2000x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee bench.out
	$(GO) test -run '^$$' -bench 'StreamMemory' -benchtime=1x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee -a bench.out
	$(GO) test -run '^$$' -bench 'Fanout' -benchtime=100x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee -a bench.out
	$(BENCHSTAT) bench.out

$(BENCHSTAT):
	GOBIN=$(TOOLS_DIR) $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: check
check: lint test ## lint, test, and verify the golden files are up to date
	$(GO) test ./xds/translate/ -update
	git diff --exit-code -- xds/translate/testdata

.PHONY: clean
clean: ## remove build outputs (not ./data)
	rm -rf $(BIN) bench.out
