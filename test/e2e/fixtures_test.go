package e2e

import (
	"testing"

	"nebula.dev/nebula/test/harness"
)

// Runtimes under comparison: containerd's own runc shim and Nebula's.
const (
	runcV2 = "io.containerd.runc.v2"
	nebula = "io.containerd.nebula.v1"
)

const (
	probeImage     = harness.ProbeImage
	probeWasmImage = harness.ProbeWasmImage
	helloWasmImage = harness.HelloWasmImage
	exit7WasmImage = harness.Exit7WasmImage
	probeFnWasm    = harness.ProbeFnWasmImage
	probeReactor   = harness.ProbeReactorImage
	probeFnNative  = harness.ProbeFnImage
)

func fixtures(t testing.TB) string { return harness.Fixtures(t) }

// startWithProbe starts a private containerd with the fixture images
// imported.
func startWithProbe(t testing.TB, opts ...harness.Option) *harness.Daemon {
	t.Helper()
	d := harness.Start(t, opts...)
	d.ImportFixtures(t)
	return d
}
