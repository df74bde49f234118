#!/bin/sh
# build.sh OUTDIR: build Nebula's example functions into OUTDIR.
#   *.wat            -> OUTDIR/*.wasm      (wat2wasm, Debian package wabt)
#   probe/main.go    -> OUTDIR/probe.wasm  (GOOS=wasip1 GOARCH=wasm)
#                    -> OUTDIR/probe       (static native, CGO_ENABLED=0)
#                    -> OUTDIR/probe-reactor.wasm (-tags reactor -buildmode=c-shared)
#   escape/main.go   -> OUTDIR/escape.wasm (GOOS=wasip1 GOARCH=wasm)
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")" && pwd)
if ! command -v wat2wasm >/dev/null 2>&1; then
	echo "$0: wat2wasm not found on PATH (install WABT: apt-get install wabt)" >&2
	exit 1
fi
for wat in "$src"/*.wat; do
	wat2wasm "$wat" -o "$out/$(basename "$wat" .wat).wasm"
done
cd "$src/probe"
GOOS=wasip1 GOARCH=wasm go build -o "$out/probe.wasm" .
CGO_ENABLED=0 go build -o "$out/probe" .
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -tags reactor -o "$out/probe-reactor.wasm" .
cd "$src/escape"
GOOS=wasip1 GOARCH=wasm go build -o "$out/escape.wasm" .
