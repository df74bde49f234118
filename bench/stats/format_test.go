package stats

import (
	"math"
	"testing"
)

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{
		27.34e-6: "27.3 µs", 123.4e-6: "123 µs", 1.2345e-3: "1.23 ms", 0.3124: "312 ms",
		1.04: "1.04 s", 12.5: "12.5 s", 0: "0", 5e-6: "5.00 µs",
	} {
		if got := FormatSeconds(v); got != want {
			t.Errorf("FormatSeconds(%v) = %q, want %q", v, got, want)
		}
	}
	if FormatSeconds(math.NaN()) != "–" {
		t.Errorf("NaN")
	}
	for v, want := range map[float64]string{3120.4: "3120×", 42.86: "42.9×", 1.1: "1.10×", 0.4789: "0.479×"} {
		if got := FormatRatio(v); got != want {
			t.Errorf("FormatRatio(%v) = %q, want %q", v, got, want)
		}
	}
}
