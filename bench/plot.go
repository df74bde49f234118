package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// plotPhases are the phases plotted, each as an ECDF and a box plot.
var plotPhases = []Phase{PhaseStartup, PhaseExec, PhaseTotal}

// plotDPI is the resolution of the PNGs.
const plotDPI = 150

// runtimeColors gives each runtime its colour (Okabe–Ito, readable by
// colour-blind readers), in Runtimes order.
var runtimeColors = []color.RGBA{
	{0, 0, 0, 255},       // container-runc: black
	{230, 159, 0, 255},   // container-nebula: orange
	{204, 121, 167, 255}, // container-wasm: purple
	{213, 94, 0, 255},    // process: vermillion
	{0, 114, 178, 255},   // wasm: blue
	{0, 158, 115, 255},   // start-native: green
	{86, 180, 233, 255},  // start-wasm: sky blue
	{120, 120, 120, 255}, // start-wasm-miss: grey
}

func cellColor(c *Cell) color.Color {
	for i, r := range Runtimes {
		if r.ID == c.Runtime.ID {
			return runtimeColors[i%len(runtimeColors)]
		}
	}
	return color.Black
}

// cellDashes tells functions apart: go solid, tiny dashed, user dotted.
func cellDashes(c *Cell) []vg.Length {
	switch c.Function.Name {
	case "tiny":
		return []vg.Length{vg.Points(6), vg.Points(3)}
	case "user":
		return []vg.Length{vg.Points(1.5), vg.Points(2)}
	}
	return nil
}

// writePlots writes PHASE-ecdf and PHASE-box, as SVG and PNG, for each
// plotted phase that has data, and returns the file names.
func writePlots(dir string, rep *Report) ([]string, error) {
	var files []string
	for _, p := range plotPhases {
		var cells []*Cell
		for _, c := range rep.Cells {
			if len(positive(rep.Samples[c][p])) > 0 {
				cells = append(cells, c)
			}
		}
		if len(cells) == 0 {
			continue
		}
		ecdf, legend, err := ecdfPlot(rep, p, cells)
		if err != nil {
			return files, err
		}
		names, err := savePlot(dir, p.String()+"-ecdf", ecdf, legend, 10*vg.Inch, 5.5*vg.Inch)
		files = append(files, names...)
		if err != nil {
			return files, err
		}
		box, err := boxPlot(rep, p, cells)
		if err != nil {
			return files, err
		}
		h := max(3*vg.Inch, vg.Length(len(cells))*0.42*vg.Inch+1.3*vg.Inch)
		names, err = savePlot(dir, p.String()+"-box", box, nil, 10*vg.Inch, h)
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

var phaseTitles = map[Phase]string{
	PhaseStartup: "Start-up per call",
	PhaseExec:    "Execution per call",
	PhaseTotal:   "Whole call, as the caller sees it",
}

func newTimePlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = timeTicks{}
	p.X.Label.Text = "time (log scale)"
	p.Add(plotter.NewGrid())
	return p
}

// ecdfPlot draws one empirical CDF per cell on a log time axis; the
// legend is returned apart, to be drawn beside the plot.
func ecdfPlot(rep *Report, ph Phase, cells []*Cell) (*plot.Plot, *plot.Legend, error) {
	p := newTimePlot(phaseTitles[ph] + ": empirical CDF")
	p.Y.Label.Text = "fraction of calls ≤ time"
	p.Y.Min, p.Y.Max = 0, 1
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.TextStyle.Font.Size = vg.Points(9)
	for _, c := range cells {
		xs := positive(rep.Samples[c][ph])
		slices.Sort(xs)
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
		line.Color = cellColor(c)
		line.Width = vg.Points(1.6)
		line.Dashes = cellDashes(c)
		p.Add(line)
		legend.Add(c.Name(), line)
	}
	lo, hi := sampleRange(rep, ph, cells)
	padLogX(p, lo, hi)
	return p, &legend, nil
}

// boxPlot draws one horizontal box per cell on a log time axis: the box
// spans the quartiles, the bar is the median, whiskers reach the farthest
// values within 1.5 IQR, points are the values beyond.
func boxPlot(rep *Report, ph Phase, cells []*Cell) (*plot.Plot, error) {
	p := newTimePlot(phaseTitles[ph] + " (box: quartiles and median; whiskers: 1.5 IQR)")
	names := make([]string, len(cells))
	var medians plotter.XYLabels
	for i, c := range cells {
		// Bottom to top in report order: the first cell on top.
		row := len(cells) - 1 - i
		names[row] = c.Name()
		box, err := plotter.NewBoxPlot(vg.Points(14), float64(row), plotter.Values(positive(rep.Samples[c][ph])))
		if err != nil {
			return nil, err
		}
		box.Horizontal = true
		box.FillColor = withAlpha(cellColor(c), 90)
		box.BoxStyle.Color = cellColor(c)
		box.MedianStyle.Color = cellColor(c)
		box.MedianStyle.Width = vg.Points(2)
		box.WhiskerStyle.Color = cellColor(c)
		box.GlyphStyle.Color = cellColor(c)
		box.GlyphStyle.Radius = vg.Points(1.5)
		p.Add(box)
		xs := positive(rep.Samples[c][ph])
		medians.XYs = append(medians.XYs, plotter.XY{X: slices.Max(xs), Y: float64(row)})
		medians.Labels = append(medians.Labels, "median "+FormatSeconds(medianOf(xs)))
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
	lo, hi := sampleRange(rep, ph, cells)
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
func savePlot(dir, name string, p *plot.Plot, legend *plot.Legend, w, h vg.Length) ([]string, error) {
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
	png := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))}
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

func (timeTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return nil
	}
	narrow := math.Log10(hi/lo) < 2
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for k := 1.0; k < 10; k++ {
			v := k * base
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
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
	num, unit, _ := strings.Cut(FormatSeconds(v), " ")
	if strings.Contains(num, ".") {
		num = strings.TrimRight(strings.TrimRight(num, "0"), ".")
	}
	return num + " " + unit
}

// padLogX widens the X range of p by a factor on each side, so that no
// box or step sits on the frame.
func padLogX(p *plot.Plot, lo, hi float64) {
	p.X.Min, p.X.Max = lo/1.6, hi*1.6
}

func sampleRange(rep *Report, ph Phase, cells []*Cell) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, c := range cells {
		for _, x := range positive(rep.Samples[c][ph]) {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	return lo, hi
}
