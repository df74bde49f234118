package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Cmdline returns the argv of process pid, failing t if it is gone.
func Cmdline(t T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
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
