#!/bin/sh
# build.sh OUT.tar [NAME:TAG]: build the node installer's image with
# `nebula build` (default name localhost/nebula/installer:v1), holding
#   /nebula-installer                          the entrypoint (cmd/nebula-installer)
#   /opt/nebula/bin/containerd-shim-nebula-v1  the shim
#   /opt/nebula/bin/nebula-host                the host program the shim mounts
#   /opt/nebula/nebula.toml                    deploy/containerd/nebula.toml
# Import it on each node (ctr -n k8s.io images import OUT.tar), or push it
# to your registry and change the image in deploy/kubernetes/installer.yaml.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUT.tar [NAME:TAG]" >&2
	exit 2
fi
case $1 in
/*) out=$1 ;;
*) out=$PWD/$1 ;;
esac
tag=${2:-localhost/nebula/installer:v1}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"
CGO_ENABLED=0 go build -trimpath -o "$tmp/" ./cmd/containerd-shim-nebula-v1 ./cmd/nebula-host ./cmd/nebula
CGO_ENABLED=0 go build -trimpath -o "$tmp/nebula-installer" ./cmd/nebula-installer
"$tmp/nebula" build "$tmp/nebula-installer" -t "$tag" -o "$out" \
	--add "$tmp/containerd-shim-nebula-v1:/opt/nebula/bin/" \
	--add "$tmp/nebula-host:/opt/nebula/bin/" \
	--add deploy/containerd/nebula.toml:/opt/nebula/nebula.toml
