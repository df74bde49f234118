//go:build k8s

package k8s

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// BenchmarkKnative measures event → reply through Knative Serving for
// deploy/knative/service.yaml (set up as in TestKnative): Warm with the
// Revision's pod running, FromZero with the Revision scaled to zero, so
// that the activator holds the event while the autoscaler scales the
// Revision up, the kubelet starts the pod (pause, queue-proxy, and
// Nebula's host program compiling the module) and the pod becomes ready.
// Both go from the host to the Revision's Service through the activator
// and queue-proxy. Each reports the median (median-ms) besides the mean.
//
//	go test -tags k8s -run '^$' -bench Knative -benchtime 5x ./test/k8s
func BenchmarkKnative(b *testing.B) {
	k := harness.StartKubernetes(b)
	harness.InstallKnative(b, k)
	setUpKnativeFunction(b, k)
	url := revisionURL(b, k)

	event := func(b *testing.B, id string) time.Duration {
		began := time.Now()
		r, err := postEventWith(ingress, url, id, "probe.echo", "", id)
		took := time.Since(began)
		if err != nil || r.status != 200 || string(r.body) != id {
			b.Fatalf("event %s: %v %d %q", id, err, r.status, r.body)
		}
		return took
	}
	b.Run("Warm", func(b *testing.B) {
		event(b, "warm-up")
		var took []time.Duration
		b.ResetTimer()
		for i := range b.N {
			took = append(took, event(b, fmt.Sprintf("warm-%d", i)))
		}
		reportMedian(b, took)
	})
	b.Run("FromZero", func(b *testing.B) {
		var took []time.Duration
		for i := range b.N {
			b.StopTimer()
			waitForZero(b, k)
			b.StartTimer()
			took = append(took, event(b, fmt.Sprintf("cold-%d", i)))
		}
		reportMedian(b, took)
	})
	deleteKnativeFunction(b, k)
}

// reportMedian reports the median of took in milliseconds, and logs all.
func reportMedian(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
	b.Logf("%d events: %v", len(took), took)
}
