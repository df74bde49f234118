// Command containerd-shim-nebula-v1 is Nebula's containerd shim (runtime
// type io.containerd.nebula.v1).
//
// The same executable is Nebula's host program: the shim bind-mounts itself
// read-only into wasm and function containers as /dev/.nebula/nebula-host,
// and invoked under that name it runs the module (or serves events) inside
// the container. One file to install, and the host always matches the shim
// that compiled the module for it.
package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/shim"

	"nebula.dev/nebula/internal/hostcmd"
	"nebula.dev/nebula/oci"
	nebula "nebula.dev/nebula/shim"
)

func main() {
	if filepath.Base(os.Args[0]) == filepath.Base(oci.HostBinary) {
		os.Exit(hostcmd.Main(os.Args))
	}
	shim.Run(context.Background(), nebula.NewManager())
}
