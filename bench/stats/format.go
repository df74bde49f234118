package stats

import (
	"math"
	"strconv"
)

// FormatSeconds prints a duration given in seconds with three significant
// digits in the unit that suits it: "27.3 µs", "1.25 ms", "312 ms", "1.04 s".
func FormatSeconds(s float64) string {
	switch {
	case math.IsNaN(s):
		return "–"
	case s == 0:
		return "0"
	case math.Abs(s) < 1e-3:
		return sig3(s*1e6) + " µs"
	case math.Abs(s) < 1:
		return sig3(s*1e3) + " ms"
	}
	return sig3(s) + " s"
}

func sig3(v float64) string {
	switch a := math.Abs(v); {
	case a >= 99.95:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 9.995:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// FormatRatio prints a ratio with three significant digits: "0.982×",
// "12.4×", "3120×".
func FormatRatio(r float64) string {
	switch a := math.Abs(r); {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return "–"
	case a >= 99.95:
		return strconv.FormatFloat(r, 'f', 0, 64) + "×"
	case a >= 9.995:
		return strconv.FormatFloat(r, 'f', 1, 64) + "×"
	case a >= 0.9995:
		return strconv.FormatFloat(r, 'f', 2, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 3, 64) + "×"
}
