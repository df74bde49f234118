package plot

import (
	"image/color"
	"strings"
	"testing"
)

func TestTimeTicks(t *testing.T) {
	ticks := timeTicks{}.Ticks(20e-6, 3)
	var labels []string
	for _, tk := range ticks {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "100 µs,1 ms,10 ms,100 ms,1 s" {
		t.Errorf("labels %s", got)
	}
	narrow := timeTicks{}.Ticks(0.08, 0.5)
	labels = nil
	for _, tk := range narrow {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "100 ms,200 ms,500 ms" {
		t.Errorf("narrow labels %s", got)
	}
}

func TestTickLabel(t *testing.T) {
	if got := tickLabel(1e-3); got != "1 ms" {
		t.Errorf("tickLabel(1e-3) = %q", got)
	}
	if got := tickLabel(100e-6); got != "100 µs" {
		t.Errorf("tickLabel(1e-4) = %q", got)
	}
}

func TestWriteLeavesOutEmptyFigures(t *testing.T) {
	dir := t.TempDir()
	files, err := Write(dir, []Figure{
		{Name: "none", Title: "no data", Series: []Series{{Name: "zero", Color: color.Black, Samples: []float64{0, 0, -1}}}},
		{Name: "some", Title: "data", Series: []Series{
			{Name: "a", Color: color.Black, Samples: []float64{1e-3, 2e-3, 0}},
			{Name: "b", Color: color.Black, Dash: Dotted},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(files, ","); got != "some-ecdf.svg,some-ecdf.png,some-box.svg,some-box.png" {
		t.Errorf("files %s", got)
	}
}
