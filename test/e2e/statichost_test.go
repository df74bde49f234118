package e2e

import (
	"debug/elf"
	"strings"
	"testing"
)

// TestDynamicHostRefused: a dynamically linked host program (as a cgo build
// of nebula-host is) cannot run inside a function's root filesystem, which
// has no loader. The shim refuses it at Create, naming it, its interpreter
// and CGO_ENABLED=0, instead of creating a container that dies with "exec
// /dev/.nebula/nebula-host: no such file or directory".
func TestDynamicHostRefused(t *testing.T) {
	const dynamic = "/bin/true" // Debian's coreutils: dynamically linked
	f, err := elf.Open(dynamic)
	if err != nil {
		t.Fatalf("this test needs a dynamically linked %s: %v", dynamic, err)
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			n, _ := p.ReadAt(b, 0)
			interp = strings.TrimRight(string(b[:n]), "\x00")
		}
	}
	f.Close()
	if interp == "" {
		t.Fatalf("this test needs a dynamically linked %s; it is static", dynamic)
	}
	// The daemon, and so the shim, inherits the test's environment.
	t.Setenv("NEBULA_HOST_BINARY", dynamic)
	d := startWithProbe(t)

	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, helloWasmImage, "dynhost")
	for _, want := range []string{dynamic, "dynamically linked", interp, "CGO_ENABLED=0"} {
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, want) {
			t.Errorf("exit %d, stderr %q; want a refusal containing %q", r.ExitCode, r.Stderr, want)
		}
	}
	d.Ctr(t, "container", "rm", "dynhost")
	// An ordinary image does not need the host program: still runc.v2's path.
	if r := d.Ctr(t, "run", "--rm", "--runtime", nebula, probeImage, "native", "/probe", "hello"); r.ExitCode != 0 {
		t.Errorf("native task under the dynamic host setting: exit %d, stderr %q", r.ExitCode, r.Stderr)
	}
	assertNothingLeft(t, d)
}
