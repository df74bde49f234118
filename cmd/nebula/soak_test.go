package main

import (
	"bytes"
	"strings"
	"testing"
)

func samplesOf(sent []int64, rss []float64) []soakSample {
	out := make([]soakSample, len(sent))
	for i := range sent {
		out[i] = soakSample{sent: sent[i], values: map[string]float64{"rss": rss[i], "fds": 10, "goroutines": 20}}
	}
	return out
}

func TestSoakDrift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sent    []int64
		rss     []float64
		warmup  int64
		percent float64
	}{
		// Warm-up growth is ignored; the rest is flat.
		{"flat after warm-up", []int64{0, 10, 20, 30, 40, 50, 60, 70, 80}, []float64{10, 50, 100, 100, 101, 99, 100, 100, 100}, 20, 0},
		// A leak raises the floor: the last quarter's lowest against the
		// first quarter's.
		{"leak", []int64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90}, []float64{100, 100, 100, 110, 120, 130, 140, 150, 160, 170}, 10, 60},
		// Busy moments (requests in flight when the gauge is read) are not
		// drift.
		{"busy moments", []int64{0, 10, 20, 30, 40, 50, 60, 70, 80}, []float64{100, 100, 100, 114, 300, 100, 116, 120, 100}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := soakDrift(samplesOf(tc.sent, tc.rss), tc.warmup)
			if err != nil {
				t.Fatal(err)
			}
			if got := d["rss"].percent; got != tc.percent {
				t.Errorf("rss drift = %v%%, want %v%%", got, tc.percent)
			}
			if got := d["fds"].percent; got != 0 {
				t.Errorf("fds drift = %v%%, want 0", got)
			}
		})
	}
	if _, err := soakDrift(samplesOf([]int64{0, 10, 20}, []float64{1, 1, 1}), 0); err == nil || !strings.Contains(err.Error(), "too few") {
		t.Errorf("three samples: err = %v, want too few", err)
	}
}

func TestSoakFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"soak", "http://127.0.0.1:1/"}, "--metrics is required"},
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "ftp://x/"}, "--metrics"},
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "http://127.0.0.1:1/metrics", "--count", "0"}, "--count 0"},
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "http://127.0.0.1:1/metrics", "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "http://127.0.0.1:1/metrics", "--warmup", "1"}, "--warmup 1"},
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "http://127.0.0.1:1/metrics", "--max-drift", "-1"}, "--max-drift -1"},
		// Nothing listens on port 1: the first scrape fails with the URL.
		{[]string{"soak", "http://127.0.0.1:1/", "--metrics", "http://127.0.0.1:1/metrics", "--count", "1"}, "scraping http://127.0.0.1:1/metrics"},
	} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("nebula %s: err = %v, want it to contain %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
