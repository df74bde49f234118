package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestQuantile(t *testing.T) {
	// Expected values are NumPy's np.percentile (linear, type 7).
	xs := []float64{1, 2, 3, 4}
	for _, tc := range []struct{ p, want float64 }{
		{0, 1}, {0.25, 1.75}, {0.5, 2.5}, {0.9, 3.7}, {0.99, 3.97}, {1, 4},
	} {
		if got := Quantile(xs, tc.p); !near(got, tc.want) {
			t.Errorf("Quantile(%v, %v) = %v, want %v", xs, tc.p, got, tc.want)
		}
	}
	if got := Quantile([]float64{7}, 0.9); got != 7 {
		t.Errorf("one value: %v", got)
	}
	if got := Quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("no value: %v, want NaN", got)
	}
	odd := []float64{1, 3, 10}
	if got := Median(odd); got != 3 {
		t.Errorf("Median(%v) = %v", odd, got)
	}
	if got := Mean([]float64{1, 2, 6}); got != 3 {
		t.Errorf("Mean = %v", got)
	}
	if !math.IsNaN(Mean(nil)) {
		t.Errorf("Mean(nil) is not NaN")
	}
}

func TestSummarize(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100 … 1, unsorted on purpose
	}
	st := Summarize(xs, 500, NewRand(1))
	if st.N != 100 || !near(st.P50, 50.5) || !near(st.P90, 90.1) || !near(st.P99, 99.01) || !near(st.Mean, 50.5) {
		t.Errorf("Summarize = %+v", st)
	}
	if !(st.CILo <= st.P50 && st.P50 <= st.CIHi) || st.CILo < 1 || st.CIHi > 100 {
		t.Errorf("CI [%v, %v] does not hold the median %v within the data", st.CILo, st.CIHi, st.P50)
	}
	if xs[0] != 100 {
		t.Errorf("Summarize sorted its argument in place")
	}
}

func TestBootstrapFixedSeed(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 8, 3, 9, 7, 6, 10, 12, 11}
	lo1, hi1 := BootstrapMedianCI(xs, 1000, 0.95, NewRand(42))
	lo2, hi2 := BootstrapMedianCI(xs, 1000, 0.95, NewRand(42))
	if lo1 != lo2 || hi1 != hi2 {
		t.Fatalf("same seed, different intervals: [%v %v] vs [%v %v]", lo1, hi1, lo2, hi2)
	}
	if !(lo1 < 6.5 && 6.5 < hi1) {
		t.Errorf("CI [%v, %v] misses the median 6.5", lo1, hi1)
	}
	// A resampled median is always between the extreme values.
	if lo1 < 1 || hi1 > 12 {
		t.Errorf("CI [%v, %v] outside the data", lo1, hi1)
	}
	if lo, hi := BootstrapMedianCI([]float64{3, 3, 3, 3}, 100, 0.95, NewRand(1)); lo != 3 || hi != 3 {
		t.Errorf("constant sample: [%v, %v]", lo, hi)
	}
	if lo, hi := BootstrapMedianCI([]float64{4}, 100, 0.95, NewRand(1)); lo != 4 || hi != 4 {
		t.Errorf("one value: [%v, %v]", lo, hi)
	}
}

// TestBootstrapCoverage checks that the 95 % interval holds the true
// median about 95 % of the time (log-normal samples of 30, like timings).
func TestBootstrapCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	boot := NewRand(1)
	const trials, n = 300, 30
	trueMedian := 1.0 // exp(N(0,1)) has median e^0
	hit := 0
	for range trials {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = math.Exp(rng.NormFloat64())
		}
		lo, hi := BootstrapMedianCI(xs, 400, 0.95, boot)
		if lo <= trueMedian && trueMedian <= hi {
			hit++
		}
	}
	if cov := float64(hit) / trials; cov < 0.88 || cov > 0.995 {
		t.Errorf("coverage %.3f, want about 0.95", cov)
	}
}

func TestMedianRatio(t *testing.T) {
	r := MedianRatio([]float64{300e-3, 300e-3, 300e-3}, []float64{0.7e-3, 0.7e-3}, 100, NewRand(1))
	if !near(r.Value, 300.0/0.7) || !near(r.CILo, r.Value) || !near(r.CIHi, r.Value) {
		t.Errorf("constant samples: %+v", r)
	}
	den := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9}
	num := make([]float64, len(den))
	for i, d := range den {
		num[i] = 10 * d
	}
	r = MedianRatio(num, den, 2000, NewRand(3))
	if !near(r.Value, 10) || !(r.CILo <= 10 && 10 <= r.CIHi) || r.CILo <= 0 {
		t.Errorf("scaled sample: %+v", r)
	}
	r2 := MedianRatio(num, den, 2000, NewRand(3))
	if r != r2 {
		t.Errorf("same seed, different ratio intervals: %+v vs %+v", r, r2)
	}
	if r := MedianRatio([]float64{2}, []float64{4}, 10, NewRand(1)); r.Value != 0.5 || r.CILo != 0.5 || r.CIHi != 0.5 {
		t.Errorf("single values: %+v", r)
	}
}

func TestQuantileMonotone(t *testing.T) {
	rng := NewRand(9)
	xs := make([]float64, 57)
	for i := range xs {
		xs[i] = rng.Float64()
	}
	slices.Sort(xs)
	prev := math.Inf(-1)
	for p := 0.0; p <= 1; p += 0.01 {
		q := Quantile(xs, p)
		if q < prev {
			t.Fatalf("Quantile not monotone at p=%v", p)
		}
		prev = q
	}
}
