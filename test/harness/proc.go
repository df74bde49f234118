package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Cmdline returns the argv of process pid, failing t if it is gone.
func Cmdline(t T, pid int) []string {
	t.Helper()
	argv, ok := Argv(pid)
	if !ok {
		t.Fatalf("pid %d: gone", pid)
	}
	return argv
}

// RunsNebulaHost reports whether process pid executes Nebula's host
// program, nebula-host in binDir (which the shim bind-mounts into a wasm or
// function-mode container and makes its process), rather than the image's
// own program.
func RunsNebulaHost(t T, binDir string, pid int) bool {
	t.Helper()
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	host, err := os.Stat(filepath.Join(binDir, "nebula-host"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	return os.SameFile(exe, host)
}

// PIDs returns the pids of the processes running now.
func PIDs() []int {
	entries, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Argv returns the argv of process pid, and false if it is gone (or a
// kernel thread, which has none).
func Argv(pid int) ([]string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil, false
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), true
}
