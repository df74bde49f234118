package hostcmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"nebula.dev/nebula/events"
	"nebula.dev/nebula/internal/hostargs"
	"nebula.dev/nebula/test/functions"
)

// limitFiles sets the test process's RLIMIT_NOFILE to n until the test
// ends.
func limitFiles(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
}

// TestConnectionCap: under containerd's default RLIMIT_NOFILE of 1024 the
// event port's cap leaves room for the metrics port and the invocations'
// files; a knob over that is lowered, with a warning.
func TestConnectionCap(t *testing.T) {
	limitFiles(t, 1024)
	var warn strings.Builder
	if got := connectionCap(0, &warn); got != events.DefaultMaxConnections || warn.Len() != 0 {
		t.Errorf("default: %d (%q), want %d silently", got, warn.String(), events.DefaultMaxConnections)
	}
	want := 1024 - events.MetricsMaxConnections - fdReserve
	if got := connectionCap(5000, &warn); got != want || !strings.Contains(warn.String(), "max-connections=5000 lowered") {
		t.Errorf("5000: %d (%q), want %d with a warning", got, warn.String(), want)
	}
	if got := connectionCap(100, &warn); got != 100 {
		t.Errorf("100: %d", got)
	}
}

// TestGuestFileLimit: under containerd's default RLIMIT_NOFILE of 1024, a
// guest opening files without closing them is refused (EAGAIN) while the
// connections of both ports and the host's own descriptors still fit;
// it used to open files until the process had no descriptor left
// (EMFILE, which the guest sees as EIO), and the front door could then
// accept no connection.
func TestGuestFileLimit(t *testing.T) {
	limitFiles(t, 1024)
	a := hostargs.Args{Mode: hostargs.ModeFunction, Command: []string{"/fn.wasm"}}
	rc, err := guestWorld(a)
	if err != nil {
		t.Fatal(err)
	}
	// Opens the file f until an open fails or 2000 succeeded, then exits
	// with the count | the errno << 16.
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, nil, 0o644)
	mod := compileWAT(t, functions.OpenFilesWAT(f[1:], 2000, 16))
	code, err := mod.Run(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	const eagain = 6
	n, errno := code&0xffff, code>>16
	// What the guests may hold leaves the connections of both ports free.
	if most := (1024 - events.DefaultMaxConnections - events.MetricsMaxConnections) / 2; errno != eagain || n >= most {
		t.Errorf("the guest opened %d files, then errno %d; want fewer than %d, then EAGAIN (%d)", n, errno, most, eagain)
	}
}
