package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Images every fixture set holds, built by `nebula build` from
// test/functions: the probe natively (entrypoint /probe) and as wasm
// (entrypoint /probe.wasm, plus /etc/greeting.txt), two WAT modules and
// the escape suite.
const (
	ProbeImage     = "localhost/nebula/probe:latest"
	ProbeWasmImage = "localhost/nebula/probe-wasm:latest"
	HelloWasmImage = "localhost/nebula/hello-wasm:latest"
	Exit7WasmImage = "localhost/nebula/exit7-wasm:latest"

	// Function-mode images (NEBULA_MODE=function baked in): the probe
	// dispatching on the event's type, as wasm and natively; the tiny WAT
	// echo; a module that traps.
	ProbeFnWasmImage = "localhost/nebula/probe-fn-wasm:latest"
	ProbeFnImage     = "localhost/nebula/probe-fn:latest"
	// ProbeReactorImage is the probe's reactor build (package guest): the
	// same commands, each event in an instance restored from a snapshot.
	ProbeReactorImage = "localhost/nebula/probe-reactor:latest"
	// EchoReactorImage is the tiny echo as a WAT reactor
	// (test/functions/echoreactor.wat).
	EchoReactorImage = "localhost/nebula/echo-reactor:latest"
	EchoFnWasmImage  = "localhost/nebula/echo-fn-wasm:latest"
	TrapFnWasmImage  = "localhost/nebula/trap-fn-wasm:latest"
	// StartSpinFnWasmImage has a start function that spins when the
	// event's data begins with "spin" (test/functions/startspin.wat).
	StartSpinFnWasmImage = "localhost/nebula/startspin-fn-wasm:latest"
	// MemhogFnWasmImage exhausts memory, its table, stdout or open files,
	// chosen by the event's data (test/functions/memhog.wat).
	MemhogFnWasmImage = "localhost/nebula/memhog-fn-wasm:latest"

	// The escape suite (test/functions/escape), to run once and as a
	// function.
	EscapeWasmImage   = "localhost/nebula/escape-wasm:latest"
	EscapeFnWasmImage = "localhost/nebula/escape-fn-wasm:latest"

	// PauseImage is the CRI sandbox ("pause") image, test/functions/pause.
	PauseImage = "localhost/nebula/pause:v1"
)

// images maps each archive in the fixtures directory to nebula build's
// arguments; GREETING stands for test/e2e/testdata/greeting.txt.
var images = map[string][]string{
	"probe.tar":      {"probe", "-t", ProbeImage},
	"probe-wasm.tar": {"probe.wasm", "-t", ProbeWasmImage, "--add", "GREETING:/etc/greeting.txt"},
	"hello-wasm.tar": {"hello.wasm", "-t", HelloWasmImage},
	"exit7-wasm.tar": {"exit7.wasm", "-t", Exit7WasmImage},

	"probe-fn-wasm.tar":     {"probe.wasm", "--function", "--arg", "ce", "-t", ProbeFnWasmImage},
	"probe-fn.tar":          {"probe", "--function", "--arg", "ce", "-t", ProbeFnImage},
	"probe-reactor.tar":     {"probe-reactor.wasm", "--function", "-t", ProbeReactorImage},
	"echo-reactor.tar":      {"echoreactor.wasm", "--function", "-t", EchoReactorImage},
	"echo-fn-wasm.tar":      {"echo.wasm", "--function", "-t", EchoFnWasmImage},
	"trap-fn-wasm.tar":      {"trap.wasm", "--function", "-t", TrapFnWasmImage},
	"startspin-fn-wasm.tar": {"startspin.wasm", "--function", "-t", StartSpinFnWasmImage},
	"memhog-fn-wasm.tar":    {"memhog.wasm", "--function", "-t", MemhogFnWasmImage},

	"escape-wasm.tar":    {"escape.wasm", "-t", EscapeWasmImage},
	"escape-fn-wasm.tar": {"escape.wasm", "--function", "-t", EscapeFnWasmImage},

	"pause.tar": {"pause", "-t", PauseImage},
}

var (
	fixturesOnce sync.Once
	fixturesDir  string
	fixturesErr  error
)

// Fixtures builds, once per process, the example functions
// (test/functions/build.sh: *.wasm, probe, probe.wasm; and the static
// pause program, test/functions/pause) and their image
// archives with the nebula CLI, and returns the directory holding both.
func Fixtures(t T) string {
	t.Helper()
	bin := Binaries(t)
	fixturesOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			fixturesErr = err
			return
		}
		if fixturesDir, fixturesErr = os.MkdirTemp("", "nebula-fixtures-"); fixturesErr != nil {
			return
		}
		build := exec.Command("test/functions/build.sh", fixturesDir)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fixturesErr = fmt.Errorf("test/functions/build.sh: %v\n%s", err, out)
			return
		}
		pause := exec.Command("go", "build", "-o", filepath.Join(fixturesDir, "pause"), "./test/functions/pause")
		pause.Dir = root
		pause.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := pause.CombinedOutput(); err != nil {
			fixturesErr = fmt.Errorf("go build ./test/functions/pause: %v\n%s", err, out)
			return
		}
		greeting := filepath.Join(root, "test/e2e/testdata/greeting.txt")
		for archive, args := range images {
			args = append([]string{"build"}, args...)
			args[1] = filepath.Join(fixturesDir, args[1])
			for i, a := range args {
				args[i] = strings.Replace(a, "GREETING", greeting, 1)
			}
			args = append(args, "-o", filepath.Join(fixturesDir, archive))
			if out, err := exec.Command(filepath.Join(bin, "nebula"), args...).CombinedOutput(); err != nil {
				fixturesErr = fmt.Errorf("nebula %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if fixturesErr != nil {
		t.Fatalf("%v", fixturesErr)
	}
	return fixturesDir
}

// ImportFixtures imports every fixture image into d.
func (d *Daemon) ImportFixtures(t T) {
	t.Helper()
	for _, a := range fixtureArchives(t) {
		d.MustCtr(t, "images", "import", a)
	}
}

// fixtureArchives returns the paths of the fixture image archives, sorted.
func fixtureArchives(t T) []string {
	t.Helper()
	dir := Fixtures(t)
	archives := make([]string, 0, len(images))
	for a := range images {
		archives = append(archives, filepath.Join(dir, a))
	}
	sort.Strings(archives)
	return archives
}

// RemoveFixtures deletes what Fixtures and Binaries built; call it from
// TestMain (or at the end of a program).
func RemoveFixtures() {
	if fixturesDir != "" {
		os.RemoveAll(fixturesDir)
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
