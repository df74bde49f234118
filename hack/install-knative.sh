#!/usr/bin/env bash
# Builds the pinned Knative Serving that `make test-k8s` installs on its
# cluster — the controller, webhook, activator, autoscaler and queue-proxy —
# from the knative.dev/serving module into
# /var/cache/nebula/knative-v<version>/bin (or $NEBULA_KNATIVE_DIR), and
# copies the manifests a release of Serving is made of next to them, into
# config/: config/core of knative.dev/serving, and config/ of the
# knative.dev/networking (config-network and the networking CRDs) and
# knative.dev/caching (the Image CRD) versions Serving's go.mod requires.
# All of it lives outside the clone, so a fresh clone on the same machine
# reuses it; what is there is not built again.
#
# The binaries are static (CGO_ENABLED=0), built in the module's own
# directory with its go.sum (-mod=readonly): exactly the dependencies the
# release pins. The test packages them as images with `nebula build`.
set -euo pipefail

version=${NEBULA_KNATIVE_VERSION:-0.47.0}
out=${NEBULA_KNATIVE_DIR:-/var/cache/nebula/knative-v$version}
bin=$out/bin
components=(controller webhook activator autoscaler queue)

export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0

module_dir() {
	local dir
	dir=$(cd /tmp && GOFLAGS= go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || { echo "install-knative: cannot download $1" >&2; exit 1; }
	echo "$dir"
}

serving=$(module_dir "knative.dev/serving@v$version")
mkdir -p "$bin"
for c in "${components[@]}"; do
	[ -x "$bin/$c" ] && continue
	echo "install-knative: go build knative.dev/serving/cmd/$c v$version" >&2
	(cd "$serving" && go build -trimpath -ldflags "-s -w" -o "$bin/$c.tmp" "./cmd/$c")
	mv "$bin/$c.tmp" "$bin/$c"
done

if [ ! -f "$out/config/.complete" ]; then
	rm -rf "$out/config" && mkdir -p "$out/config"
	cp -r "$serving/config/core" "$out/config/core"
	for m in networking caching; do
		dir=$(module_dir "$(cd "$serving" && go list -m -f '{{.Path}}@{{.Version}}' "knative.dev/$m")")
		cp -r "$dir/config" "$out/config/$m"
	done
	find "$out/config" -name '*.go' -delete
	chmod -R u+w "$out/config"
	cp "$serving/LICENSE" "$out/config/LICENSE"
	touch "$out/config/.complete"
fi
echo "install-knative: ready in $out" >&2
