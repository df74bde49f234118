package hostcmd

import (
	"os"
	"runtime/debug"
)

// functionGCPercent is the GOGC a function-mode host runs with unless the
// task sets GOGC. Every event instantiates a module, so the host's heap
// churns while the live heap stays small; at the default 100 the collector
// runs so often that it, not wazero, bounds throughput (README,
// Performance).
const functionGCPercent = 400

// tuneGC trades memory for fewer collections in function mode. The trade
// stays inside the container's memory limit through the soft limit
// setHeapLimit sets. GOGC in the task's environment wins.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(functionGCPercent)
	}
}

// loadGC makes the same trade while the host loads its module, in any
// mode: the heap grows from nothing to about 30 MB for a 3 MB Go module,
// and at the default GOGC the collections on the way cost 5 ms of a 50 ms
// load (docs/rationale.md). done restores the default for run mode;
// function mode keeps it (tuneGC).
func loadGC() (done func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(functionGCPercent)
	return func() { debug.SetGCPercent(old) }
}

// setHeapLimit sets the Go runtime's soft memory limit to limit bytes, the
// host's share of the container's memory (oci.PlanMemory: the host's own
// heap plus the instances' stdout buffers and tables; guests' linear
// memory is outside the Go heap). 0 means none. GOMEMLIMIT in the task's
// environment wins.
func setHeapLimit(limit uint64) {
	if limit == 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(int64(min(limit, 1<<62)))
}
