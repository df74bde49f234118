// Package stats is the statistics of `nebula bench`: quantiles (type 7),
// summaries of a sample with a percentile-bootstrap confidence interval of
// the median, ratios of medians, and the formats the report prints them
// in. It knows nothing of studies or cells: it works on []float64.
package stats

import (
	"math"
	"math/rand/v2"
	"slices"
)

// Quantile returns the p-quantile (0 ≤ p ≤ 1) of sorted, an ascending
// slice, interpolating linearly between order statistics: Hyndman and
// Fan's type 7, the default of R and NumPy. It returns NaN for an empty
// slice.
func Quantile(sorted []float64, p float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return math.NaN()
	case n == 1 || p <= 0:
		return sorted[0]
	case p >= 1:
		return sorted[n-1]
	}
	h := p * float64(n-1)
	lo := math.Floor(h)
	i := int(lo)
	if i+1 >= n {
		return sorted[n-1]
	}
	return sorted[i] + (h-lo)*(sorted[i+1]-sorted[i])
}

// Median is Quantile(sorted, 0.5).
func Median(sorted []float64) float64 { return Quantile(sorted, 0.5) }

// Mean returns the arithmetic mean of xs, NaN when empty.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Stats summarises one phase of one cell.
type Stats struct {
	N             int
	P50, P90, P99 float64
	Mean          float64
	// CILo and CIHi bound the 95 % percentile-bootstrap confidence
	// interval of the median.
	CILo, CIHi float64
}

// Summarize computes Stats of xs (in any order) with b bootstrap resamples
// drawn from rng.
func Summarize(xs []float64, b int, rng *rand.Rand) Stats {
	s := slices.Clone(xs)
	slices.Sort(s)
	st := Stats{
		N:    len(s),
		P50:  Quantile(s, 0.50),
		P90:  Quantile(s, 0.90),
		P99:  Quantile(s, 0.99),
		Mean: Mean(s),
	}
	st.CILo, st.CIHi = BootstrapMedianCI(s, b, 0.95, rng)
	return st
}

// BootstrapMedianCI returns the percentile-bootstrap confidence interval,
// at the given level (0.95 for 95 %), of the median of xs: the median of
// each of b resamples of xs drawn with replacement from rng, then the
// (1-level)/2 and (1+level)/2 quantiles of those medians. With fewer than
// two values, or b < 1, both bounds are the median itself.
func BootstrapMedianCI(xs []float64, b int, level float64, rng *rand.Rand) (lo, hi float64) {
	meds := bootstrapMedians(xs, b, rng)
	if meds == nil {
		m := MedianOf(xs)
		return m, m
	}
	return Quantile(meds, (1-level)/2), Quantile(meds, (1+level)/2)
}

// bootstrapMedians returns the sorted medians of b resamples of xs, or nil
// when there is nothing to resample.
func bootstrapMedians(xs []float64, b int, rng *rand.Rand) []float64 {
	n := len(xs)
	if n < 2 || b < 1 {
		return nil
	}
	meds := make([]float64, b)
	buf := make([]float64, n)
	for i := range meds {
		for j := range buf {
			buf[j] = xs[rng.IntN(n)]
		}
		slices.Sort(buf)
		meds[i] = Quantile(buf, 0.5)
	}
	slices.Sort(meds)
	return meds
}

// MedianOf returns the median of xs, in any order; xs is not changed.
func MedianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return Median(s)
}

// Ratio is the ratio of the medians of two samples, with a 95 %
// percentile-bootstrap confidence interval: each resample draws both
// samples independently and divides their medians.
type Ratio struct {
	Value      float64
	CILo, CIHi float64
}

// MedianRatio returns median(num) / median(den) with its bootstrap CI
// from b resamples drawn from rng.
func MedianRatio(num, den []float64, b int, rng *rand.Rand) Ratio {
	r := Ratio{Value: MedianOf(num) / MedianOf(den)}
	r.CILo, r.CIHi = r.Value, r.Value
	if len(num) < 2 || len(den) < 2 || b < 1 {
		return r
	}
	ratios := make([]float64, b)
	nb, db := make([]float64, len(num)), make([]float64, len(den))
	for i := range ratios {
		for j := range nb {
			nb[j] = num[rng.IntN(len(num))]
		}
		for j := range db {
			db[j] = den[rng.IntN(len(den))]
		}
		slices.Sort(nb)
		slices.Sort(db)
		ratios[i] = Median(nb) / Median(db)
	}
	slices.Sort(ratios)
	r.CILo, r.CIHi = Quantile(ratios, 0.025), Quantile(ratios, 0.975)
	return r
}

// NewRand returns the deterministic generator a report's bootstraps draw
// from, so that the same samples and seed give the same intervals.
func NewRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6e6562756c61)) }
