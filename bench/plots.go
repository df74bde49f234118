package bench

import (
	"image/color"

	"nebula.dev/nebula/bench/plot"
)

// plotPhases are the phases plotted, each as an ECDF and a box plot, with
// their titles.
var plotPhases = []struct {
	phase Phase
	title string
}{
	{PhaseStartup, "Start-up per call"},
	{PhaseExec, "Execution per call"},
	{PhaseTotal, "Whole call, as the caller sees it"},
}

// runtimeColors gives each runtime its colour (Okabe–Ito, readable by
// colour-blind readers), in Runtimes order.
var runtimeColors = []color.RGBA{
	{0, 0, 0, 255},       // container-runc: black
	{230, 159, 0, 255},   // container-nebula: orange
	{204, 121, 167, 255}, // container-wasm: purple
	{213, 94, 0, 255},    // process: vermillion
	{0, 114, 178, 255},   // wasm: blue
	{0, 60, 100, 255},    // snapshot: dark blue
	{0, 158, 115, 255},   // start-native: green
	{86, 180, 233, 255},  // start-wasm: sky blue
	{120, 120, 120, 255}, // start-wasm-miss: grey
	{240, 228, 66, 255},  // start-snapshot: yellow
}

func cellColor(c *Cell) color.Color {
	for i, r := range Runtimes {
		if r.ID == c.Runtime.ID {
			return runtimeColors[i%len(runtimeColors)]
		}
	}
	return color.Black
}

// cellDash tells functions apart: go solid, tiny dashed, user dotted.
func cellDash(c *Cell) plot.Dash {
	switch c.Function.Name {
	case "tiny":
		return plot.Dashed
	case "user":
		return plot.Dotted
	}
	return plot.Solid
}

// writePlots writes PHASE-ecdf and PHASE-box, as SVG and PNG, for each
// plotted phase that has data, and returns the file names.
func writePlots(dir string, rep *Report) ([]string, error) {
	var figs []plot.Figure
	for _, p := range plotPhases {
		fig := plot.Figure{Name: p.phase.String(), Title: p.title}
		for _, c := range rep.Cells {
			fig.Series = append(fig.Series, plot.Series{Name: c.Name(), Color: cellColor(c), Dash: cellDash(c), Samples: rep.Samples[c][p.phase]})
		}
		figs = append(figs, fig)
	}
	return plot.Write(dir, figs)
}
