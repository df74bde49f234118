package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/bench/stats"
)

// synthetic returns cells and records shaped like a real study: container
// start-up around 100 ms, wasm instances around 30 µs and 2.5 ms.
func synthetic(n int) ([]*Cell, []Record) {
	tiny, goFn := builtinFunction("tiny"), builtinFunction("go")
	cells := selectCells([]*Function{tiny, goFn}, []string{"container-runc", "process", "wasm", "start-wasm", "start-wasm-miss"})
	rng := stats.NewRand(5)
	var recs []Record
	for i := range n {
		for _, c := range cells {
			r := newRecord(c, i)
			jitter := 1 + 0.1*rng.NormFloat64()
			switch c.Runtime.Kind {
			case KindContainer:
				r.Values[PhaseCreate] = 0.09 * jitter
				r.Values[PhaseStartup] = 0.1 * jitter
				r.Values[PhaseExec] = 0.005 * jitter
				r.Values[PhaseTeardown] = 0.06 * jitter
				r.Values[PhaseTotal] = 0.165 * jitter
			case KindFrontDoor:
				base := 30e-6
				if c.Function.Name == "go" {
					base = 2.5e-3
				}
				if c.Runtime.ID == "process" {
					base = 1.2e-3
				}
				r.Values[PhaseQueue] = 0
				r.Values[PhaseStartup] = base * jitter
				r.Values[PhaseExec] = base / 2 * jitter
				r.Values[PhaseServer] = base * 2 * jitter
				r.Values[PhaseTotal] = base * 3 * jitter
			case KindTaskStart:
				base := 0.15
				if c.Runtime.Miss && c.Function.Name == "go" {
					base = 0.7
				}
				r.Values[PhaseCreate] = base * 0.9 * jitter
				r.Values[PhaseStartup] = base * jitter
				r.Values[PhaseReady] = 0.01 * jitter
				r.Values[PhaseTeardown] = 0.07 * jitter
				r.Values[PhaseTotal] = (base + 0.01) * jitter
			}
			recs = append(recs, r)
		}
	}
	return cells, recs
}

func TestSelectCells(t *testing.T) {
	cells := selectCells([]*Function{builtinFunction("tiny"), builtinFunction("go")}, RuntimeIDs())
	var names []string
	for _, c := range cells {
		names = append(names, c.Name())
	}
	want := "container-runc/go container-nebula/go container-wasm/tiny container-wasm/go process/go wasm/tiny wasm/go snapshot/tiny snapshot/go " +
		"start-native/go start-wasm/tiny start-wasm/go start-wasm-miss/tiny start-wasm-miss/go start-snapshot/tiny start-snapshot/go"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("cells:\n got %s\nwant %s", got, want)
	}
}

func TestWriteCSV(t *testing.T) {
	cells, recs := synthetic(3)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, recs); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+3*len(cells) {
		t.Fatalf("%d rows, want header + %d", len(rows), 3*len(cells))
	}
	if got := strings.Join(rows[0], ","); got != "cell,model,runtime,function,iteration,create_s,startup_s,exec_s,ready_s,teardown_s,queue_s,server_s,total_s" {
		t.Errorf("header %s", got)
	}
	first := rows[1]
	if first[0] != "container-runc/go" || first[1] != "container per event" || first[2] != "container-runc" || first[3] != "go" || first[4] != "0" {
		t.Errorf("first row %v", first)
	}
	if first[8] != "" || first[10] != "" {
		t.Errorf("phases that do not apply must be empty: %v", first)
	}
	v, err := strconv.ParseFloat(first[6], 64)
	if err != nil || math.Abs(v-recs[0].Values[PhaseStartup]) > 1e-9 {
		t.Errorf("startup %q, want %v", first[6], recs[0].Values[PhaseStartup])
	}
	for _, r := range rows[1:] {
		if r[0] == "wasm/tiny" && r[10] != "0.000000000" {
			t.Errorf("queue of a front-door call %q, want 0.000000000", r[10])
		}
	}
}

func TestAnalyzeRatios(t *testing.T) {
	cells, recs := synthetic(40)
	rep := Analyze(cells, recs, 1, 500)
	got := map[string]RatioRow{}
	for _, r := range rep.Ratios {
		got[r.Name()+" "+r.Phase.String()] = r
	}
	for name, want := range map[string]float64{
		"container-runc/go ÷ wasm/go startup":          0.1 / 2.5e-3,
		"container-runc/go ÷ wasm/tiny startup":        0.1 / 30e-6,
		"container-runc/go ÷ process/go total":         0.165 / 3.6e-3,
		"start-wasm-miss/go ÷ start-wasm/go total":     0.71 / 0.16,
		"start-wasm-miss/tiny ÷ start-wasm/tiny total": 1,
		"process/go ÷ wasm/go server":                  2.4e-3 / 5e-3,
		"container-runc/go ÷ wasm/go total":            0.165 / 7.5e-3,
	} {
		r, ok := got[name]
		if !ok {
			t.Errorf("no ratio %s (have %d)", name, len(got))
			continue
		}
		if math.Abs(r.Value/want-1) > 0.15 {
			t.Errorf("%s = %v, want about %v", name, r.Value, want)
		}
		if !(r.CILo <= r.Value && r.Value <= r.CIHi) {
			t.Errorf("%s: CI [%v, %v] misses %v", name, r.CILo, r.CIHi, r.Value)
		}
	}
	if _, ok := got["container-nebula/go ÷ container-runc/go startup"]; ok {
		t.Errorf("a ratio of a cell that did not run")
	}
	// Same records, same seed: the same report.
	again := Analyze(cells, recs, 1, 500)
	for i := range rep.Ratios {
		if rep.Ratios[i].Ratio != again.Ratios[i].Ratio {
			t.Fatalf("ratio %s differs between two analyses", rep.Ratios[i].Name())
		}
	}
	if st := rep.Stats[cells[0]][PhaseReady]; st != nil {
		t.Errorf("a container cell has ready statistics")
	}
}

func TestWriteTable(t *testing.T) {
	cells, recs := synthetic(10)
	var buf bytes.Buffer
	WriteTable(&buf, Analyze(cells, recs, 1, 100))
	out := buf.String()
	for _, want := range []string{"cell", "median 95% CI", "container-runc/go", "startup", "wasm/tiny", "ratio of medians", "container-runc/go ÷ wasm/tiny"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Columns line up: every line of the first table has the n column
	// at the same place.
	lines := strings.Split(out, "\n")
	col := strings.Index(lines[0], "  n")
	for _, l := range lines[1:5] {
		if len(l) < col+3 || l[col+1:col+3] != "10" { // n = 10, right-aligned under "n"
			t.Errorf("misaligned line %q (n column at %d)", l, col)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	cells, recs := synthetic(10)
	rep := Analyze(cells, recs, 1, 100)
	var buf bytes.Buffer
	info := summaryInfo{cfg: Config{}.WithIterations(10, 2).WithEvents(5).WithPrimers(3).WithCacheDir("/c"), plots: []string{"startup-box.svg", "startup-box.png"},
		started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), elapsed: time.Minute, leftovers: []string{"abc"}}
	info.machine.CPUModel, info.machine.Cores = "Test CPU", 2
	if err := writeMarkdown(&buf, rep, info); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"# Container per event vs WebAssembly instance per event",
		"Test CPU, 2 cores",
		"## Findings", "300 ms", "700 µs", "429×",
		"| `container-runc/go ÷ wasm/go` | startup | **",
		"## Every phase", "| `wasm/tiny` | startup | 10 |",
		"![startup-box](startup-box.png)",
		"## Method", "10 measured iterations per cell after 2 warm-up ones",
		"leftover-cache-entries.txt",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary.md lacks %q", want)
		}
	}
	// Every table row has as many cells as its header.
	var cols int
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "|") {
			cols = 0
			continue
		}
		n := strings.Count(l, "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("table row with %d bars, header has %d: %s", n, cols, l)
		}
	}
}

func TestWritePlots(t *testing.T) {
	cells, recs := synthetic(15)
	rep := Analyze(cells, recs, 1, 50)
	dir := t.TempDir()
	files, err := writePlots(dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 12 { // 3 phases × (ECDF, box) × (SVG, PNG)
		t.Errorf("files %v", files)
	}
	for _, f := range files {
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(f) {
		case ".png":
			img, err := png.Decode(fh)
			if err != nil {
				t.Errorf("%s: %v", f, err)
			} else if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 400 {
				t.Errorf("%s: %v is small", f, b)
			}
		case ".svg":
			if err := parseXML(fh); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
		fh.Close()
	}
}

func parseXML(r io.Reader) error {
	d := xml.NewDecoder(r)
	for {
		if _, err := d.Token(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
