package e2e

import (
	"strings"
	"testing"

	"nebula.dev/nebula/test/functions"
	"nebula.dev/nebula/test/harness"
)

// The escape suite (test/functions/escape) tries every route out of the
// guest's WASI world it knows, from inside a real container: the host's
// memory and code (/proc/self/mem, read and written), its mounts, program
// and descriptors (/proc/self/...), /sys, device nodes, Nebula's files
// under /dev/.nebula, through links it makes, renames, listings and raw
// path_open calls. Every route must be refused with the errno the suite
// expects, and the host must survive to print the last line.
//
// ESCAPE_WRITE_CODE=1 makes the suite write 0xCC over the host's code if
// it ever opens /proc/self/mem: the host then dies of SIGTRAP, as it did
// before GuestFS checked what it opens.

// checkEscape fails t for every route that was not refused as it should.
func checkEscape(t *testing.T, stdout string) {
	t.Helper()
	failures, n := functions.CheckEscape([]byte(stdout))
	for _, f := range failures {
		t.Error(f)
	}
	if strings.Contains(stdout, `\u007fELF`) || strings.Contains(stdout, `\x7fELF`) {
		t.Error("the host's ELF header leaked into the report")
	}
	t.Logf("%d routes tried", n)
}

// TestEscapeRun runs the suite once, as a user types it:
// `ctr run --rm --runtime io.containerd.nebula.v1 IMAGE ID`.
func TestEscapeRun(t *testing.T) {
	d := startWithProbe(t)
	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--env", "ESCAPE_WRITE_CODE=1",
		harness.EscapeWasmImage, "escape-run")
	if r.ExitCode != 0 {
		t.Errorf("exit %d (the host died?), stderr %q", r.ExitCode, r.Stderr)
	}
	checkEscape(t, r.Stdout)
}

// TestEscapeFunction runs the suite as a function-mode event, three times:
// each event is refused everything, the host serves the next event, and
// an ordinary function's event is still answered.
func TestEscapeFunction(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, harness.EscapeFnWasmImage, "fn-escape",
		"--env", "ESCAPE_WRITE_CODE=1", "--annotation", "nebula.dev/timeout=60s")
	for i := 0; i < 3; i++ {
		r := binary(t, f, "escape", "", nil, nil)
		if r.status != 200 {
			t.Fatalf("event %d: status %d (the host died?), body %q\n%s", i, r.status, r.body, d.LogTail(30))
		}
		checkEscape(t, string(r.body))
	}
	if r := send(t, "GET", f.URL+"healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz after the suite: %d", r.status)
	}
}
