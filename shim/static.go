package shim

import (
	"debug/elf"
	"fmt"
	"strings"
)

// checkStaticHost fails unless path is a statically linked ELF executable.
// The host program runs inside the container's root filesystem, bind
// mounted at /dev/.nebula/nebula-host: a dynamically linked one (built with
// cgo) names a loader the image does not have, and the container would die
// with "exec /dev/.nebula/nebula-host: no such file or directory" — under
// Kubernetes a CrashLoopBackOff that says nothing about the cause.
func checkStaticHost(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("nebula's host program %s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp := make([]byte, p.Filesz)
			n, _ := p.ReadAt(interp, 0)
			return fmt.Errorf("nebula's host program %s is dynamically linked (interpreter %s), but it runs inside the container's root filesystem, which has no loader: build it static (CGO_ENABLED=0)",
				path, strings.TrimRight(string(interp[:n]), "\x00"))
		}
	}
	return nil
}
