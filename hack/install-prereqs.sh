#!/usr/bin/env bash
# Installs the Debian packages Nebula's tests, demo and benches need when
# they are missing: runc, wat2wasm (wabt), the CNI plugins and iptables.
# Says what it installs; does nothing when all are there. Needs root and
# Debian's apt (a missing package is an error, never a skipped test).
set -euo pipefail

need=()
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v wat2wasm >/dev/null || need+=(wabt)
command -v iptables >/dev/null || need+=(iptables)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-prereqs: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	echo "install-prereqs: missing ${need[*]} and no apt-get to install them with" >&2
	exit 1
fi
echo "install-prereqs: installing ${need[*]} (once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
