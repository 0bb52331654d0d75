# xspace-mesh: on-demand service-mesh control plane.
# `make run` starts meshd on its embedded defaults; `make test` runs every test.

GO        ?= go
BIN       := bin
PKGS      := ./...
# The build both binaries print with --version and meshd exports as xspace_build_info.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X github.com/prisma-systems/xspace-mesh/internal/buildinfo.version=$(VERSION) -X github.com/prisma-systems/xspace-mesh/internal/buildinfo.revision=$(REVISION)
BENCHCOUNT ?= 5
# Tools the Makefile installs itself, cached outside the clone so a fresh
# clone on the same machine reuses them.
TOOLS_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xspace-mesh/tools
BENCHSTAT := $(TOOLS_DIR)/benchstat
# golangci-lint is pinned in tools/lint/go.mod, a module of its own so its
# dependencies stay out of the project's; the binary is named by version.
LINT_VERSION := $(shell awk '/golangci-lint\/v2 v/ {print $$2}' tools/lint/go.mod)
GOLANGCI  := $(TOOLS_DIR)/golangci-lint-$(LINT_VERSION)

# Consul, built from its Go module (tools/consul) once per machine into the
# cache, in a folder named by version. The Consul tests find it through
# CONSUL_BIN; without it (plain `go test`) they skip, saying so in one line.
CONSUL_VERSION := $(shell awk '$$1 == "github.com/hashicorp/consul" {print $$2}' tools/consul/go.mod)
CONSUL_BIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xspace-mesh/consul-$(CONSUL_VERSION)/consul
# Vault, built the same way from tools/vault; the Vault PKI tests find it
# through VAULT_BIN and skip in one line without it.
VAULT_VERSION := $(shell awk '$$1 == "github.com/hashicorp/vault" {print $$2}' tools/vault/go.mod)
VAULT_BIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xspace-mesh/vault-$(VAULT_VERSION)/vault

# Node's gRPC xDS client (@grpc/grpc-js-xds), which the proxyless gRPC tests
# run next to grpc-go's: installed with npm ci from the committed lockfile,
# once per machine, into the cache, in a folder named by the lockfile's hash.
# The tests find the modules through GRPCJS_NODE_MODULES; without them, or
# without node, those tests skip, saying so in one line.
GRPCJS_SRC := xds/server/testdata/grpcjs
GRPCJS_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xspace-mesh/grpcjs-$(shell sha256sum $(GRPCJS_SRC)/package-lock.json | cut -c1-12)
GRPCJS_NODE_MODULES ?= $(GRPCJS_DIR)/node_modules
# npm writes this file last, once the modules are all in place.
GRPCJS_STAMP := $(GRPCJS_DIR)/node_modules/.package-lock.json

export GOTOOLCHAIN := local

# A recipe that pipes into tee fails when the command before the pipe does.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export CONSUL_BIN
export VAULT_BIN
export GRPCJS_NODE_MODULES

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build meshd and meshctl into bin/
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/meshd ./cmd/meshd
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/meshctl ./cmd/meshctl

.PHONY: run
run: build ## build and start meshd on its embedded defaults (Ctrl-C stops it)
	@echo "meshd: xDS gRPC on 127.0.0.1:18000, REST API/metrics/health/debug on http://127.0.0.1:18080, data in ./data"
	@echo "try:   $(BIN)/meshctl instance register payments --id p1 --address 10.0.0.1 --port 8080"
	$(BIN)/meshd

.PHONY: test
test: $(CONSUL_BIN) $(VAULT_BIN) $(GRPCJS_STAMP) ## run the whole test suite (race detector on; builds Consul and Vault, installs grpc-js-xds once, see `consul`, `vault`, `grpcjs`)
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./e2e/...
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: e2e
e2e: ## run the Envoy e2e suite: docker compose (e2e/docker-compose.yaml), or processes with ENVOY_BIN=/path/to/envoy
	$(GO) test -tags e2e -count=1 -v -timeout 30m -run TestE2E ./e2e/

.PHONY: consul
consul: $(CONSUL_BIN) ## build the Consul agent the Consul tests run against (once; about 12 minutes)

$(CONSUL_BIN):
	@echo "building Consul $(CONSUL_VERSION) from its Go module (tools/consul) into $(CONSUL_BIN)"
	@echo "  why: the Consul registry's tests run against a real consul agent; none is installed here"
	@echo "  how long: about 12 minutes on 2 cores (plus module downloads), once per machine; later runs reuse it"
	@mkdir -p $(dir $(CONSUL_BIN))
	cd tools/consul && $(GO) build -trimpath -ldflags='-s -w' -o $(CONSUL_BIN).tmp github.com/hashicorp/consul
	mv $(CONSUL_BIN).tmp $(CONSUL_BIN)

.PHONY: vault
vault: $(VAULT_BIN) ## build the Vault server the Vault PKI tests run against (once; 11-25 minutes)

$(VAULT_BIN):
	@echo "building Vault $(VAULT_VERSION) from its Go module (tools/vault) into $(VAULT_BIN)"
	@echo "  why: the Vault PKI issuer's tests run against a real vault server; none is installed here"
	@echo "  how long: 11-25 minutes on 2 cores (plus module downloads), once per machine; later runs reuse it"
	@mkdir -p $(dir $(VAULT_BIN))
	cd tools/vault && $(GO) build -trimpath -ldflags='-s -w' -o $(VAULT_BIN).tmp github.com/hashicorp/vault
	mv $(VAULT_BIN).tmp $(VAULT_BIN)

.PHONY: grpcjs
grpcjs: $(GRPCJS_STAMP) ## install the Node gRPC xDS client the proxyless gRPC tests run (once; npm ci, about 10 seconds)

$(GRPCJS_STAMP):
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: @grpc/grpc-js-xds is not installed and its proxyless gRPC tests will skip (install Node 20 with npm)"; \
		exit 0; \
	fi; \
	echo "installing @grpc/grpc-js-xds (pinned in $(GRPCJS_SRC)/package-lock.json) with npm ci into $(GRPCJS_DIR)"; \
	rm -rf $(GRPCJS_DIR).tmp && mkdir -p $(GRPCJS_DIR).tmp && \
	cp $(GRPCJS_SRC)/package.json $(GRPCJS_SRC)/package-lock.json $(GRPCJS_DIR).tmp/ && \
	(cd $(GRPCJS_DIR).tmp && npm ci --ignore-scripts --no-audit --no-fund) && \
	rm -rf $(GRPCJS_DIR) && mv $(GRPCJS_DIR).tmp $(GRPCJS_DIR)

.PHONY: bench-consul
bench-consul: $(CONSUL_BIN) ## run the Consul registry benchmarks (change -> CLA, on-demand resolve)
	$(GO) test -run '^$$' -bench . -benchtime 200x -count 1 -timeout 30m ./registry/consul/

.PHONY: lint
lint: $(GOLANGCI) ## run golangci-lint (.golangci.yml: vet, staticcheck, errorlint, revive, importas, depguard, gofumpt, gci)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	@echo "building golangci-lint $(LINT_VERSION) into $(TOOLS_DIR) (once; about 2 minutes)"
	cd tools/lint && $(GO) build -o $(GOLANGCI) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: golden
golden: ## rewrite the golden Envoy resources (xds/translate/testdata/out) and reference bootstraps (envoy-configs/)
	$(GO) test ./xds/translate/ -update
	$(GO) test ./cmd/meshctl/ -run TestReferenceBootstraps -update

.PHONY: bench
bench: $(BENCHSTAT) ## run the xDS benchmarks of BENCHMARKS.md (about 5 minutes) and summarize them with benchstat
	$(GO) test -run '^$$' -bench 'OnDemandResolve|NotFound' -benchtime=2000x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee bench.out
	$(GO) test -run '^$$' -bench '^BenchmarkStreamMemory$$' -benchtime=1x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee -a bench.out
	$(GO) test -run '^$$' -bench '^BenchmarkFanout$$' -benchtime=100x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee -a bench.out
	$(BENCHSTAT) bench.out

.PHONY: bench-peers
bench-peers: $(BENCHSTAT) ## compare meshd with stock go-control-plane and a bare gRPC floor, side by side (issue 15; about 10 minutes)
	@echo "load average at the start: $$(cut -d' ' -f1-3 /proc/loadavg)"
	$(GO) test -run '^$$' -bench 'PeersCDS|PeersResolve' -benchtime=2000x -count=$(BENCHCOUNT) -timeout 60m ./xds/server/ | tee bench-peers.out
	$(GO) test -run '^$$' -bench 'PeersFanout' -benchtime=50x -count=$(BENCHCOUNT) -timeout 60m ./xds/server/ | tee -a bench-peers.out
	$(GO) test -run '^$$' -bench 'PeersStreamMemory' -benchtime=1x -count=$(BENCHCOUNT) -timeout 60m ./xds/server/ | tee -a bench-peers.out
	@echo "load average at the end: $$(cut -d' ' -f1-3 /proc/loadavg)"
	$(BENCHSTAT) bench-peers.out

.PHONY: bench-limits
bench-limits: $(BENCHSTAT) ## run the hostile-client benchmarks of BENCHMARKS.md (unknown-name flood, admission under flood, reconnect storm; about 5 minutes)
	$(GO) test -run '^$$' -bench 'UnknownNameFlood' -benchtime=1x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee bench-limits.out
	$(GO) test -run '^$$' -bench 'AdmissionUnderFlood' -benchtime=200x -count=$(BENCHCOUNT) -timeout 30m ./xds/server/ | tee -a bench-limits.out
	$(GO) test -run '^$$' -bench 'ReconnectStorm' -benchtime=1x -count=3 -timeout 30m ./xds/server/ | tee -a bench-limits.out
	$(BENCHSTAT) bench-limits.out

$(BENCHSTAT):
	GOBIN=$(TOOLS_DIR) $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: check
check: lint test golden-check ## lint, test, and verify the golden files are up to date

.PHONY: golden-check
golden-check: golden ## rewrite the golden files and fail if that changed anything tracked or added a file
	git diff --exit-code -- xds/translate/testdata envoy-configs
	@untracked=$$(git ls-files --others --exclude-standard -- xds/translate/testdata envoy-configs); \
	if [ -n "$$untracked" ]; then echo "golden files not committed:"; echo "$$untracked"; exit 1; fi

.PHONY: clean
clean: ## remove build outputs (not ./data)
	rm -rf $(BIN) bench.out bench-limits.out bench-peers.out
