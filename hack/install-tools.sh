#!/usr/bin/env bash
# Builds the pinned containerd daemons, ctr, containerd-shim-runc-v2 and crictl
# that the end-to-end tests drive, into /var/cache/nebula/tools (or
# $NEBULA_TOOLS): outside the clone, so a fresh clone on the same machine
# reuses them; a version already built is not built again.
#
# containerd is built inside its own module, exactly as its go.mod pins its
# dependencies: `go install module@version` refuses containerd 2.0–2.3 because
# their go.mod carries exclude directives.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${NEBULA_TOOLS:-/var/cache/nebula/tools}
versions=${NEBULA_CONTAINERD_VERSIONS:-"2.0.14 2.4.2"}
crictl_version=${NEBULA_CRICTL_VERSION:-1.34.0}

build_containerd() {
	local v=$1 out=$tools/containerd-$1
	if [ -x "$out/bin/containerd" ] && [ -x "$out/bin/ctr" ] && [ -x "$out/bin/containerd-shim-runc-v2" ]; then
		return
	fi
	echo "install-tools: building containerd $v into $out" >&2
	local dir
	dir=$(go mod download -json "github.com/containerd/containerd/v2@v$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || { echo "install-tools: cannot download containerd $v" >&2; exit 1; }
	mkdir -p "$out/bin.tmp"
	(cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
		-ldflags "-X github.com/containerd/containerd/v2/version.Version=v$v" \
		-o "$out/bin.tmp/" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
	rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
}

build_crictl() {
	local out=$tools/crictl-$crictl_version
	[ -x "$out/bin/crictl" ] && return
	echo "install-tools: installing crictl $crictl_version into $out" >&2
	GOBIN=$out/bin CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@v$crictl_version"
}

for v in $versions; do
	build_containerd "$v"
done
build_crictl
echo "install-tools: ready in $tools" >&2
