package events

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// What the front door writes, ParseServerTiming reads back, in order.
func TestServerTimingRoundTrip(t *testing.T) {
	c := &call{t0: time.Now().Add(-3 * time.Millisecond), queue: 0, start: 31 * time.Microsecond, exec: 1118 * time.Microsecond}
	metrics, err := ParseServerTiming(c.serverTiming())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range metrics {
		names = append(names, m.Name)
	}
	if want := []string{TimingQueue, TimingStart, TimingExec, TimingTotal}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	if metrics[1].Millis != 0.031 || metrics[2].Millis != 1.118 || metrics[3].Millis < 3 {
		t.Errorf("metrics %+v", metrics)
	}
}

func TestParseServerTiming(t *testing.T) {
	// W3C syntax: parameters in any case, quoted values, metrics without
	// dur, whitespace.
	metrics, err := ParseServerTiming(`cache;desc="hit", db; DUR="2.5" ,total;dur=7`)
	if err != nil {
		t.Fatal(err)
	}
	want := []ServerTimingMetric{{"cache", 0}, {"db", 2.5}, {"total", 7}}
	if !slices.Equal(metrics, want) {
		t.Errorf("got %+v, want %+v", metrics, want)
	}
	for _, bad := range []string{"total;dur=x", "total;dur=-1"} {
		metrics, err := ParseServerTiming(bad)
		if err == nil || !strings.Contains(err.Error(), "bad dur of total") {
			t.Errorf("%q: err %v, want bad dur of total", bad, err)
		}
		if len(metrics) != 1 || metrics[0].Millis != 0 {
			t.Errorf("%q: metrics %+v, want total with 0", bad, metrics)
		}
	}
}
