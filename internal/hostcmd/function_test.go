package hostcmd

import (
	"strings"
	"syscall"
	"testing"

	"nebula.dev/nebula/events"
)

// TestConnectionCap: under containerd's default RLIMIT_NOFILE of 1024 the
// event port's cap leaves room for the metrics port and the invocations'
// files; a knob over that is lowered, with a warning.
func TestConnectionCap(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 1024, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
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
