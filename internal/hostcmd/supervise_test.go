package hostcmd

import "testing"

// TestSuperviseDispatch: `nebula-host supervise` is the process runtime's
// supervisor, which refuses arguments and needs its control socket.
func TestSuperviseDispatch(t *testing.T) {
	if code := Main([]string{"nebula-host", "supervise", "extra"}); code != 2 {
		t.Fatalf("supervise with an argument: exit %d, want 2", code)
	}
}
