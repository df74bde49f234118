// Command containerd-shim-nebula-v1 is Nebula's containerd shim (runtime
// type io.containerd.nebula.v1). Install nebula-host, the host program it
// mounts into wasm and function containers, next to it.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	nebula "nebula.dev/nebula/shim"
)

func main() {
	shim.Run(context.Background(), nebula.NewManager())
}
