#!/usr/bin/env bash
# Builds the pinned Prometheus server that `make test-k8s` scrapes the
# function pod with, from its Go module, into
# /var/cache/nebula/prometheus-<version>/bin (or $NEBULA_PROMETHEUS_DIR):
# outside the clone, so a fresh clone on the same machine reuses it; a binary
# already built is not built again.
#
# `go install module/cmd@version` builds cmd/prometheus with the module's own
# go.mod and go.sum (it has no replace directives). The web UI's assets are
# not embedded (no builtinassets tag): the tests use the HTTP API only. Only
# the Kubernetes service discovery is built in (remove_all_sd plus
# enable_kubernetes_sd, Prometheus's own build tags): the cloud providers'
# SDKs are most of a full build's time.
set -euo pipefail

version=${NEBULA_PROMETHEUS_VERSION:-v0.316.0}
out=${NEBULA_PROMETHEUS_DIR:-/var/cache/nebula/prometheus-$version}
bin=$out/bin

if [ -x "$bin/prometheus" ]; then
	echo "install-prometheus: ready in $bin" >&2
	exit 0
fi
echo "install-prometheus: building prometheus $version into $bin" >&2
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/install-prometheus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp go install -trimpath -ldflags "-s -w" -tags remove_all_sd,enable_kubernetes_sd \
	"github.com/prometheus/prometheus/cmd/prometheus@$version"
mkdir -p "$bin"
mv "$tmp/prometheus" "$bin/prometheus"
echo "install-prometheus: ready in $bin" >&2
