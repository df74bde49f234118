package hostcmd

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// functionGCPercent is the GOGC a function-mode host runs with unless the
// task sets GOGC. Every event instantiates a module, so the host's heap
// churns while the live heap stays small; at the default 100 the collector
// runs so often that it, not wazero, bounds throughput (README,
// Performance).
const functionGCPercent = 400

// tuneGC trades memory for fewer collections in function mode, and keeps
// that trade inside the container's memory limit: with a cgroup limit L the
// Go runtime's soft limit is set to L minus the guests' share, so the
// collector works harder before the kernel would kill the task.
// GOGC and GOMEMLIMIT in the task's environment win.
func tuneGC(guestMemory uint64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(functionGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := cgroupMemoryLimit()
	if limit == 0 {
		return
	}
	soft := limit * 3 / 4
	if guestMemory < soft {
		soft -= guestMemory
	}
	debug.SetMemoryLimit(int64(soft))
}

// cgroupMemoryLimit returns the container's memory limit in bytes, or 0 for
// none, from cgroup v2's memory.max or v1's memory.limit_in_bytes as runc
// mounts them inside the container.
func cgroupMemoryLimit() uint64 {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n >= 1<<62 { // v1 says "no limit" with a huge number
			return 0
		}
		return n
	}
	return 0
}
