package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"nebula.dev/nebula/test/harness"
)

// Runtimes under comparison: containerd's own runc shim and Nebula's.
const (
	runcV2 = "io.containerd.runc.v2"
	nebula = "io.containerd.nebula.v1"
)

// probeImage is the image of test/functions/probe built natively, static,
// by `nebula build`; its entrypoint is /probe.
const probeImage = "localhost/nebula/probe:latest"

var (
	fixturesOnce sync.Once
	fixturesDir  string
	fixturesErr  error
)

// fixtures builds, once per test process, the probe natively and its image
// archive with the nebula CLI, and returns the directory holding
// probe (the binary) and probe.tar (the archive).
func fixtures(t testing.TB) string {
	t.Helper()
	bin := harness.Binaries(t)
	fixturesOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			fixturesErr = err
			return
		}
		if fixturesDir, fixturesErr = os.MkdirTemp("", "nebula-fixtures-"); fixturesErr != nil {
			return
		}
		probe := filepath.Join(fixturesDir, "probe")
		build := exec.Command("go", "build", "-o", probe, "./test/functions/probe")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fixturesErr = &cmdError{"go build probe", err, out}
			return
		}
		img := exec.Command(filepath.Join(bin, "nebula"), "build", probe, "-o", filepath.Join(fixturesDir, "probe.tar"), "-t", probeImage)
		if out, err := img.CombinedOutput(); err != nil {
			fixturesErr = &cmdError{"nebula build probe", err, out}
		}
	})
	if fixturesErr != nil {
		t.Fatal(fixturesErr)
	}
	return fixturesDir
}

func removeFixtures() {
	if fixturesDir != "" {
		os.RemoveAll(fixturesDir)
	}
}

type cmdError struct {
	what string
	err  error
	out  []byte
}

func (e *cmdError) Error() string { return e.what + ": " + e.err.Error() + "\n" + string(e.out) }

// startWithProbe starts a private containerd with the probe image imported.
func startWithProbe(t testing.TB, opts ...harness.Option) *harness.Daemon {
	t.Helper()
	dir := fixtures(t)
	d := harness.Start(t, opts...)
	d.MustCtr(t, "images", "import", filepath.Join(dir, "probe.tar"))
	return d
}
