package hostcmd

import (
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
)

// fewPids is the pids limit below which the host runs on one P: each P
// can keep an OS thread busy, and a Go program that cannot create a thread
// it wants dies ("failed to create new OS thread"), not waits. The shim
// refuses limits below oci.MinPids, measured with this setting.
const fewPids = 32

// limitThreads sets GOMAXPROCS to 1 when the container's pids limit is
// below fewPids, unless the task sets GOMAXPROCS itself. It returns the
// limit it found (0: none or unknown).
//
// # Notes
//
// The host cannot pass GOMAXPROCS to itself through the environment: the
// guest inherits the host's environment, and a Go wasip1 guest started with
// GOMAXPROCS=2 crashes ("newosproc: not implemented").
func limitThreads() uint64 {
	limit := cgroupPidsLimit()
	if limit > 0 && limit < fewPids && os.Getenv("GOMAXPROCS") == "" {
		goruntime.GOMAXPROCS(1)
	}
	return limit
}

// cgroupPidsLimit returns the container's pids limit, or 0 for none, from
// cgroup v2's pids.max or v1's pids/pids.max as runc mounts them inside
// the container.
func cgroupPidsLimit() uint64 {
	for _, p := range []string{"/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil { // "max"
			return 0
		}
		return n
	}
	return 0
}
