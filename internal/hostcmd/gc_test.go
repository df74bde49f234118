package hostcmd

import (
	"runtime/debug"
	"testing"
)

// TestLoadGC: while a module loads, the collector runs at function mode's
// GOGC, in any mode, and run mode gets the default back after; GOGC in the
// task's environment is left alone.
func TestLoadGC(t *testing.T) {
	t.Setenv("GOGC", "")
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	done := loadGC()
	if during := debug.SetGCPercent(-1); during != functionGCPercent {
		t.Errorf("GOGC during the load: %d, want %d", during, functionGCPercent)
	}
	debug.SetGCPercent(functionGCPercent)
	done()
	if after := debug.SetGCPercent(100); after != 100 {
		t.Errorf("GOGC after the load: %d, want 100 again", after)
	}

	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	loadGC()()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GOGC=50 in the environment: the load set %d", got)
	}
}
