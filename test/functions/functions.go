// Package functions builds Nebula's example and test functions: small
// hand-written WebAssembly text modules (*.wat), the probe program, one
// Go source built both as a wasip1 module and as a static native binary,
// and the escape suite (escape/), a wasip1 module.
//
// build.sh does the same from a shell. Tests use Build:
//
//	func TestMain(m *testing.M) {
//		dir, _ := os.MkdirTemp("", "functions")
//		buildErr = functions.Build(context.Background(), dir)
//		...
//	}
package functions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// The files Build writes into its output directory.
const (
	Hello       = "hello.wasm"       // prints "hello from wasm\n", exits 0
	Exit7       = "exit7.wasm"       // proc_exit(7)
	Echo        = "echo.wasm"        // copies stdin to stdout
	Scratch     = "scratch.wasm"     // with no stdin, prints 64 bytes of its memory
	Trap        = "trap.wasm"        // executes unreachable
	BadImport   = "badimport.wasm"   // imports env.nope
	NoStart     = "nostart.wasm"     // exports no _start
	Memhog      = "memhog.wasm"      // exhausts memory, its table, stdout or open files, by stdin's first byte
	EchoReactor = "echoreactor.wasm" // echo.wasm as a reactor (nebula_handle)
	Probe       = "probe.wasm"       // probe/main.go for GOOS=wasip1 GOARCH=wasm
	ProbeExe    = "probe"            // probe/main.go as a static native binary
	// ProbeReactor is the probe built as a reactor with package guest
	// (-tags reactor -buildmode=c-shared): each event runs "ce" mode's
	// command in an instance restored from the post-initialisation state.
	ProbeReactor = "probe-reactor.wasm"
	Escape       = "escape.wasm" // escape/main.go for wasip1: the escape suite

	Reactor      = "reactor.wasm"      // a reactor: echoes stdin and the event's variables; fails by stdin's first byte
	ReactorState = "reactorstate.wasm" // a hostile reactor: reports what earlier events left, then leaves traces
)

// ErrNoWat2wasm is returned (wrapped) by Build when wat2wasm, from WABT
// (Debian package wabt), is not on PATH.
var ErrNoWat2wasm = errors.New("wat2wasm not found on PATH (install WABT: apt-get install wabt)")

// Dir returns the directory of the functions' sources.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Build builds every function into outDir, which must exist.
func Build(ctx context.Context, outDir string) error {
	src := Dir()
	wat2wasm, err := exec.LookPath("wat2wasm")
	if err != nil {
		return ErrNoWat2wasm
	}
	wats, err := filepath.Glob(filepath.Join(src, "*.wat"))
	if err != nil {
		return err
	}
	for _, w := range wats {
		out := filepath.Join(outDir, strings.TrimSuffix(filepath.Base(w), ".wat")+".wasm")
		if err := run(ctx, src, nil, wat2wasm, w, "-o", out); err != nil {
			return err
		}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return err
	}
	probe := filepath.Join(src, "probe")
	if err := run(ctx, probe, []string{"GOOS=wasip1", "GOARCH=wasm"},
		goTool, "build", "-o", filepath.Join(outDir, Probe), "."); err != nil {
		return err
	}
	if err := run(ctx, probe, []string{"GOOS=wasip1", "GOARCH=wasm"},
		goTool, "build", "-buildmode=c-shared", "-tags", "reactor", "-o", filepath.Join(outDir, ProbeReactor), "."); err != nil {
		return err
	}
	if err := run(ctx, filepath.Join(src, "escape"), []string{"GOOS=wasip1", "GOARCH=wasm"},
		goTool, "build", "-o", filepath.Join(outDir, Escape), "."); err != nil {
		return err
	}
	return run(ctx, probe, []string{"CGO_ENABLED=0"},
		goTool, "build", "-o", filepath.Join(outDir, ProbeExe), ".")
}

func run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return nil
}
