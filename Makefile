# Nebula — see README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin
OUT       := out
VERSIONS  ?= 2.0.14 2.4.2
# The newest containerd we support is the default for the demo and benches.
CONTAINERD_VERSION ?= 2.4.2

export CGO_ENABLED = 0

.PHONY: all build functions tools test test-unit test-e2e test-k8s demo bench bench-go soak install clean

all: build

build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...

functions:
	test/functions/build.sh $(OUT)/functions

tools:
	hack/install-prereqs.sh
	NEBULA_CONTAINERD_VERSIONS="$(VERSIONS)" hack/install-tools.sh

# Unit tests, then the end-to-end suite once per supported containerd version.
test: tools test-unit test-e2e

# The fuzz targets of the wasm parser the shim runs on every image, 200,000
# inputs each (5-60 s here; a count, not a duration: -fuzztime with a
# duration fails with "context deadline exceeded" when the time runs out
# while a worker is busy with a slow input). Their seed corpus also runs
# with the unit tests.
test-unit:
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)
	$(GO) test -run '^$$' -fuzz '^FuzzParseModule$$' -fuzztime 200000x -fuzzminimizetime 5s ./wasmhost
	$(GO) test -run '^$$' -fuzz '^FuzzBoundTables$$' -fuzztime 200000x -fuzzminimizetime 5s ./wasmhost
	$(GO) test -run '^$$' -fuzz '^FuzzPlanReactor$$' -fuzztime 200000x -fuzzminimizetime 5s ./wasmhost
	$(GO) test -run '^$$' -fuzz '^FuzzInstrumentDeadline$$' -fuzztime 200000x -fuzzminimizetime 5s ./wasmhost

test-e2e:
	@set -e; for v in $(VERSIONS); do \
		echo "== end-to-end against containerd $$v"; \
		NEBULA_CONTAINERD_VERSION=$$v $(GO) test -count=1 -timeout 30m -v ./test/...; \
	done

# Nebula functions on a single-node Kubernetes of the test's own, driven with
# kubectl: everything on the newest containerd; on the others the node's own
# tests (CRI, exec, installer, Prometheus), as Knative does not depend on the
# containerd version. hack/install-k8s.sh builds the pinned cluster into
# /var/cache/nebula/k8s-<version>, hack/install-knative.sh Knative Serving
# into /var/cache/nebula/knative-v<version>, hack/install-prometheus.sh the
# Prometheus that scrapes the function (each once per machine).
test-k8s: tools
	hack/install-k8s.sh
	hack/install-knative.sh
	hack/install-prometheus.sh
	@set -e; for v in $(VERSIONS); do \
		run=.; [ "$$v" = "$(CONTAINERD_VERSION)" ] || run='^Test(Kubernetes|Node)$$'; \
		echo "== Kubernetes on containerd $$v (-run $$run)"; \
		NEBULA_CONTAINERD_VERSION=$$v $(GO) test -tags k8s -count=1 -timeout 30m -run "$$run" -v ./test/k8s; \
	done

demo: build tools
	NEBULA_CONTAINERD_VERSION=$(CONTAINERD_VERSION) $(GO) run ./test/demo

# The Docker-vs-WebAssembly study (nebula bench) against a private containerd;
# results in $(OUT)/bench. The go test benchmarks are `make bench-go`.
bench: build tools
	NEBULA_CONTAINERD_VERSION=$(CONTAINERD_VERSION) $(GO) run ./test/benchrun -out $(OUT)/bench

bench-go: build tools
	NEBULA_CONTAINERD_VERSION=$(CONTAINERD_VERSION) $(GO) test -run '^$$' -bench . -benchtime 20x -timeout 30m ./test/e2e

# Drives the tiny and the Go wasm function at saturation (1,000,000 and
# 50,000 events) and fails on any non-2xx reply or on growth of the host's
# memory, file descriptors or goroutines after warm-up.
soak: build tools
	NEBULA_CONTAINERD_VERSION=$(CONTAINERD_VERSION) $(GO) run ./test/soakrun

# Installs the shim next to an existing containerd and prints the config
# snippet that registers it for CRI.
install: build
	install -D -m 0755 $(BIN)/containerd-shim-nebula-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-nebula-v1
	install -D -m 0755 $(BIN)/nebula-host $(DESTDIR)$(PREFIX)/bin/nebula-host
	install -D -m 0755 $(BIN)/nebula $(DESTDIR)$(PREFIX)/bin/nebula
	install -D -m 0644 deploy/containerd/nebula.toml $(DESTDIR)/etc/containerd/conf.d/nebula.toml
	@echo "installed; containerd's config must import /etc/containerd/conf.d/*.toml (see README)"

clean:
	rm -rf $(BIN) $(OUT)
