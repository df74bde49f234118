#!/usr/bin/env bash
# Builds the pinned Kubernetes node that `make test-k8s` starts — etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
# and kubectl — from Go source into /var/cache/nebula/k8s-<version>/bin (or
# $NEBULA_K8S_DIR): outside the clone, so a fresh clone on the same machine
# reuses them; a binary already built is not built again.
#
# k8s.io/kubernetes's go.mod points the k8s.io/* staging modules at ./staging,
# which the module archive does not contain: a copy of the module is rewritten
# to require the published k8s.io/* modules of the same release instead.
# etcd is a five-line main around etcdmain.Main, the same entry point as the
# etcd binary.
set -euo pipefail

k8s_version=${NEBULA_K8S_VERSION:-1.34.2}
etcd_version=${NEBULA_ETCD_VERSION:-3.6.16}
out=${NEBULA_K8S_DIR:-/var/cache/nebula/k8s-$k8s_version}
bin=$out/bin
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

missing() {
	local c
	for c in "$@"; do
		[ -x "$bin/$c" ] || echo "$c"
	done
}

build_kubernetes() {
	local todo
	todo=$(missing "${components[@]}")
	[ -n "$todo" ] || return 0
	echo "install-k8s: building $(echo $todo) $k8s_version into $bin" >&2
	local dir src=$out/src/kubernetes
	mkdir -p "$out"
	dir=$(cd "$out" && go mod download -json "k8s.io/kubernetes@v$k8s_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || { echo "install-k8s: cannot download k8s.io/kubernetes $k8s_version" >&2; exit 1; }
	if [ ! -f "$src/.rewritten" ]; then
		rm -rf "$src" && mkdir -p "$(dirname "$src")"
		cp -r "$dir" "$src" && chmod -R u+w "$src"
		# Every ./staging replacement becomes a requirement of the published
		# module: k8s.io/api v0.0.0 => ./staging/src/k8s.io/api becomes
		# k8s.io/api v0.<minor>.<patch>.
		local staging=v0.${k8s_version#*.} edits=() m
		for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$src/go.mod"); do
			edits+=("-dropreplace=$m" "-require=$m@$staging")
		done
		[ ${#edits[@]} -gt 0 ] || { echo "install-k8s: no ./staging replacements in $src/go.mod" >&2; exit 1; }
		(cd "$src" && go mod edit "${edits[@]}")
		touch "$src/.rewritten"
	fi
	local minor ldflags
	minor=$(echo "$k8s_version" | cut -d. -f2)
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=${k8s_version%%.*}"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$k8s_version"
	local c
	mkdir -p "$bin"
	for c in $todo; do
		echo "install-k8s: go build ./cmd/$c" >&2
		(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bin/$c.tmp" "./cmd/$c")
		mv "$bin/$c.tmp" "$bin/$c"
	done
}

build_etcd() {
	[ -x "$bin/etcd" ] && return 0
	echo "install-k8s: building etcd $etcd_version into $bin" >&2
	local src=$out/src/etcd
	rm -rf "$src" && mkdir -p "$src" "$bin"
	cat >"$src/main.go" <<-'EOF'
		// Command etcd is the etcd server, built from its module.
		package main

		import (
			"os"

			"go.etcd.io/etcd/server/v3/etcdmain"
		)

		func main() { etcdmain.Main(os.Args) }
	EOF
	(cd "$src" && go mod init nebula.dev/etcd 2>/dev/null &&
		go get "go.etcd.io/etcd/server/v3@v$etcd_version" &&
		go mod tidy &&
		go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .)
	mv "$bin/etcd.tmp" "$bin/etcd"
}

build_etcd
build_kubernetes
echo "install-k8s: ready in $bin" >&2
