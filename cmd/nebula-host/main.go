// Command nebula-host is Nebula's host program: the process a wasm or
// function-mode container runs. The shim (containerd-shim-nebula-v1) finds
// it next to its own executable and bind-mounts it read-only into the
// container at /dev/.nebula/nebula-host; see package hostcmd.
//
// It is a separate binary, not a mode of the shim, so that the shim — exec'd
// three times for every task containerd starts, wasm or not — does not pay
// for the host's dependencies at startup (measured: 14.7 ms against 9.0 ms
// per exec; README, Performance).
package main

import (
	"os"

	"nebula.dev/nebula/internal/hostcmd"
)

func main() {
	os.Exit(hostcmd.Main(os.Args))
}
