package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkCtrRun measures the wall time of `ctr run --rm` of the static
// probe image printing hello, under runc.v2 and under Nebula, alternating so
// that machine drift hits both alike. Each b.N iteration runs both once; the
// medians and their ratio are reported as custom metrics:
//
//	make bench   (go test -bench CtrRun -benchtime 20x ./test/e2e)
func BenchmarkCtrRun(b *testing.B) {
	d := startWithProbe(b)
	var runc, neb []time.Duration
	timeRun := func(runtime string, i int) time.Duration {
		start := time.Now()
		r := d.Ctr(b, "run", "--rm", "--runtime", runtime, probeImage, fmt.Sprintf("bench-%d", i), "/probe", "hello")
		elapsed := time.Since(start)
		if r.ExitCode != 0 || r.Stdout != "hello from probe\n" {
			b.Fatalf("%s: exit %d, stdout %q, stderr %q", runtime, r.ExitCode, r.Stdout, r.Stderr)
		}
		return elapsed
	}
	// One warm-up run each: the first start pays for page-cache misses.
	timeRun(runcV2, -1)
	timeRun(nebula, -2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			runc = append(runc, timeRun(runcV2, i))
			neb = append(neb, timeRun(nebula, i))
		} else {
			neb = append(neb, timeRun(nebula, i))
			runc = append(runc, timeRun(runcV2, i))
		}
	}
	b.StopTimer()
	mr, mn := median(runc), median(neb)
	b.ReportMetric(float64(mr)/1e6, "runc-ms")
	b.ReportMetric(float64(mn)/1e6, "nebula-ms")
	b.ReportMetric(float64(mn)/float64(mr), "ratio")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
