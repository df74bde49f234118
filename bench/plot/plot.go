// Package plot draws the figures of `nebula bench`: for each phase, the
// empirical CDF and a box plot of every series on a logarithmic time axis,
// written as SVG and PNG. It knows nothing of studies or cells: a figure
// is a title and named samples in seconds, each with its colour and dash.
//
//	files, err := plot.Write(dir, []plot.Figure{{Name: "startup", Title: "Start-up per call",
//		Series: []plot.Series{{Name: "wasm/go", Color: color.Black, Samples: xs}}}})
package plot

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	gonum "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"nebula.dev/nebula/bench/stats"
)

// Figure is what one phase's plots show.
type Figure struct {
	// Name is the files' base name: NAME-ecdf.svg, NAME-box.png, ….
	Name string
	// Title heads both plots.
	Title  string
	Series []Series
}

// Series is one sample drawn in a figure.
type Series struct {
	Name  string
	Color color.Color
	Dash  Dash
	// Samples are durations in seconds, in any order; values ≤ 0 (a phase
	// that took no measurable time) are left out, as a log axis must.
	Samples []float64
}

// Dash is the line style of a series in the ECDF, telling apart series
// that share a colour.
type Dash int

// Dash styles.
const (
	Solid Dash = iota
	Dashed
	Dotted
)

func (d Dash) lengths() []vg.Length {
	switch d {
	case Dashed:
		return []vg.Length{vg.Points(6), vg.Points(3)}
	case Dotted:
		return []vg.Length{vg.Points(1.5), vg.Points(2)}
	}
	return nil
}

// dpi is the resolution of the PNGs.
const dpi = 150

// Write writes NAME-ecdf and NAME-box, as SVG and PNG, into dir for each
// figure that has data, and returns the names of the files written.
func Write(dir string, figs []Figure) ([]string, error) {
	var files []string
	for _, fig := range figs {
		var series []Series
		for _, s := range fig.Series {
			if xs := positive(s.Samples); len(xs) > 0 {
				s.Samples = xs
				series = append(series, s)
			}
		}
		if len(series) == 0 {
			continue
		}
		ecdf, legend, err := ecdfPlot(fig.Title, series)
		if err != nil {
			return files, err
		}
		names, err := savePlot(dir, fig.Name+"-ecdf", ecdf, legend, 10*vg.Inch, 5.5*vg.Inch)
		files = append(files, names...)
		if err != nil {
			return files, err
		}
		box, err := boxPlot(fig.Title, series)
		if err != nil {
			return files, err
		}
		h := max(3*vg.Inch, vg.Length(len(series))*0.42*vg.Inch+1.3*vg.Inch)
		names, err = savePlot(dir, fig.Name+"-box", box, nil, 10*vg.Inch, h)
		files = append(files, names...)
		if err != nil {
			return files, err
		}
	}
	return files, nil
}

func positive(xs []float64) []float64 {
	var out []float64
	for _, x := range xs {
		if x > 0 {
			out = append(out, x)
		}
	}
	return out
}

func newTimePlot(title string) *gonum.Plot {
	p := gonum.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Scale = gonum.LogScale{}
	p.X.Tick.Marker = timeTicks{}
	p.X.Label.Text = "time (log scale)"
	p.Add(plotter.NewGrid())
	return p
}

// ecdfPlot draws one empirical CDF per cell on a log time axis; the
// legend is returned apart, to be drawn beside the gonum.
func ecdfPlot(title string, series []Series) (*gonum.Plot, *gonum.Legend, error) {
	p := newTimePlot(title + ": empirical CDF")
	p.Y.Label.Text = "fraction of calls ≤ time"
	p.Y.Min, p.Y.Max = 0, 1
	legend := gonum.NewLegend()
	legend.Top, legend.Left = true, true
	legend.TextStyle.Font.Size = vg.Points(9)
	for _, s := range series {
		xs := slices.Sorted(slices.Values(s.Samples))
		pts := make(plotter.XYs, 0, len(xs)+1)
		pts = append(pts, plotter.XY{X: xs[0], Y: 0})
		for i, x := range xs {
			pts = append(pts, plotter.XY{X: x, Y: float64(i+1) / float64(len(xs))})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, nil, err
		}
		line.StepStyle = plotter.PostStep
		line.Color = s.Color
		line.Width = vg.Points(1.6)
		line.Dashes = s.Dash.lengths()
		p.Add(line)
		legend.Add(s.Name, line)
	}
	lo, hi := sampleRange(series)
	padLogX(p, lo, hi)
	return p, &legend, nil
}

// boxPlot draws one horizontal box per cell on a log time axis: the box
// spans the quartiles, the bar is the median, whiskers reach the farthest
// values within 1.5 IQR, points are the values beyond.
func boxPlot(title string, series []Series) (*gonum.Plot, error) {
	p := newTimePlot(title + " (box: quartiles and median; whiskers: 1.5 IQR)")
	names := make([]string, len(series))
	var medians plotter.XYLabels
	for i, s := range series {
		// Bottom to top in the given order: the first series on top.
		row := len(series) - 1 - i
		names[row] = s.Name
		box, err := plotter.NewBoxPlot(vg.Points(14), float64(row), plotter.Values(s.Samples))
		if err != nil {
			return nil, err
		}
		box.Horizontal = true
		box.FillColor = withAlpha(s.Color, 90)
		box.BoxStyle.Color = s.Color
		box.MedianStyle.Color = s.Color
		box.MedianStyle.Width = vg.Points(2)
		box.WhiskerStyle.Color = s.Color
		box.GlyphStyle.Color = s.Color
		box.GlyphStyle.Radius = vg.Points(1.5)
		p.Add(box)
		medians.XYs = append(medians.XYs, plotter.XY{X: slices.Max(s.Samples), Y: float64(row)})
		medians.Labels = append(medians.Labels, "median "+stats.FormatSeconds(stats.MedianOf(s.Samples)))
	}
	p.NominalY(names...)
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	labels, err := plotter.NewLabels(medians)
	if err != nil {
		return nil, err
	}
	labels.Offset = vg.Point{X: vg.Points(8), Y: -vg.Points(3.5)}
	for i := range labels.TextStyle {
		labels.TextStyle[i].Font.Size = vg.Points(8.5)
	}
	p.Add(labels)
	lo, hi := sampleRange(series)
	padLogX(p, lo, hi)
	p.X.Max = hi * 8 // room for the labels
	return p, nil
}

func withAlpha(c color.Color, a uint8) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), a}
}

// savePlot writes NAME.svg and NAME.png: the plot, and the legend (if
// any) in a strip on its right.
func savePlot(dir, name string, p *gonum.Plot, legend *gonum.Legend, w, h vg.Length) ([]string, error) {
	render := func(c vg.CanvasSizer) {
		const margin = 0.12 * vg.Inch
		dc := draw.Crop(draw.New(c), margin, -margin, margin, -margin)
		if legend == nil {
			p.Draw(dc)
			return
		}
		const strip = 2.6 * vg.Inch
		p.Draw(draw.Crop(dc, 0, -strip, 0, 0))
		ld := draw.Crop(dc, w-strip+0.15*vg.Inch, 0, 0, -0.45*vg.Inch)
		legend.Draw(ld)
	}
	svg := vgsvg.New(w, h)
	render(svg)
	png := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi), vgimg.UseBackgroundColor(color.White))}
	render(png)
	var files []string
	for _, out := range []struct {
		ext string
		w   io.WriterTo
	}{{".svg", svg}, {".png", png}} {
		path := filepath.Join(dir, name+out.ext)
		if err := writeTo(path, out.w); err != nil {
			return files, fmt.Errorf("writing %s: %w", path, err)
		}
		files = append(files, name+out.ext)
	}
	return files, nil
}

func writeTo(path string, wt io.WriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := wt.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// timeTicks marks a logarithmic time axis: labelled ticks at each power of
// ten ("10 µs", "1 ms", "1 s"), unlabelled ones at 2–9 times it; at 2 and
// 5 times too when the axis spans less than two decades.
type timeTicks struct{}

func (timeTicks) Ticks(lo, hi float64) []gonum.Tick {
	if lo <= 0 || hi <= lo {
		return nil
	}
	narrow := math.Log10(hi/lo) < 2
	var ticks []gonum.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for k := 1.0; k < 10; k++ {
			v := k * base
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := gonum.Tick{Value: v}
			if k == 1 || (narrow && (k == 2 || k == 5)) {
				t.Label = tickLabel(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// tickLabel is FormatSeconds without trailing zeros: "1 ms", "100 µs".
func tickLabel(v float64) string {
	num, unit, _ := strings.Cut(stats.FormatSeconds(v), " ")
	if strings.Contains(num, ".") {
		num = strings.TrimRight(strings.TrimRight(num, "0"), ".")
	}
	return num + " " + unit
}

// padLogX widens the X range of p by a factor on each side, so that no
// box or step sits on the frame.
func padLogX(p *gonum.Plot, lo, hi float64) {
	p.X.Min, p.X.Max = lo/1.6, hi*1.6
}

func sampleRange(series []Series) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, x := range s.Samples {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	return lo, hi
}
