package bench_test

import (
	"testing"

	"nebula.dev/nebula/bench"
	"nebula.dev/nebula/test/harness"
)

// TestDefaultImages holds bench's default images equal to the fixtures
// that package harness (and `make bench`) imports: bench must not depend
// on the test harness, so the names are written twice.
func TestDefaultImages(t *testing.T) {
	for _, c := range []struct{ bench, harness string }{
		{bench.DefaultProbeFnImage, harness.ProbeFnImage},
		{bench.DefaultProbeFnWasmImage, harness.ProbeFnWasmImage},
		{bench.DefaultEchoFnWasmImage, harness.EchoFnWasmImage},
		{bench.DefaultProbeReactorImage, harness.ProbeReactorImage},
		{bench.DefaultEchoReactorImage, harness.EchoReactorImage},
	} {
		if c.bench != c.harness {
			t.Errorf("bench default %q != harness %q", c.bench, c.harness)
		}
	}
}
