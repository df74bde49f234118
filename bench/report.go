package bench

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"nebula.dev/nebula/bench/stats"
)

// Report is the analysis of a study: statistics per cell and phase, and
// ratios between runtimes.
type Report struct {
	Cells []*Cell
	// Samples[cell][phase] are the measured values in seconds (nil when
	// the phase does not apply); Stats the same summarised.
	Samples   map[*Cell]*[numPhases][]float64
	Stats     map[*Cell]*[numPhases]*stats.Stats
	Ratios    []RatioRow
	Seed      uint64
	Resamples int
}

// RatioRow compares one phase of two cells.
type RatioRow struct {
	Num, Den *Cell
	Phase    Phase
	stats.Ratio
	// Note says what the ratio shows.
	Note string
}

// Name is "NUM ÷ DEN".
func (r RatioRow) Name() string { return r.Num.Name() + " ÷ " + r.Den.Name() }

// ratioSpec is a comparison the report makes where both cells exist.
type ratioSpec struct {
	num, den string // runtime IDs
	// numFn and denFn, when set, fix the functions; else both sides are
	// the same function, for each function.
	numFn, denFn string
	phase        Phase
	note         string
}

var ratioSpecs = []ratioSpec{
	{num: "container-runc", den: "wasm", phase: PhaseStartup, note: "the study's question: start-up of a container per event ÷ a wasm instance per event"},
	{num: "container-runc", den: "wasm", phase: PhaseTotal, note: "whole call, container per event ÷ wasm instance per event"},
	{num: "container-runc", numFn: "go", den: "wasm", denFn: "tiny", phase: PhaseStartup, note: "the study's setting: a container (runc.v2) ÷ a minimal wasm function"},
	{num: "container-runc", den: "snapshot", phase: PhaseStartup, note: "the study's question for a reactor: start-up of a container per event ÷ an instance restored from a snapshot"},
	{num: "container-runc", den: "snapshot", phase: PhaseTotal, note: "whole call, container per event ÷ instance restored from a snapshot"},
	{num: "container-wasm", den: "wasm", phase: PhaseStartup, note: "the same module in a fresh container ÷ in a fresh instance"},
	{num: "container-runc", den: "process", phase: PhaseTotal, note: "whole call, container per event ÷ process per event (a process's start-up alone is bimodal: see Method)"},
	{num: "process", den: "wasm", phase: PhaseServer, note: "invocation inside the task, process per event ÷ wasm instance per event"},
	{num: "process", den: "snapshot", phase: PhaseServer, note: "invocation inside the task, process per event ÷ instance restored from a snapshot"},
	{num: "wasm", den: "snapshot", phase: PhaseServer, note: "invocation inside the task, command instance ÷ reactor instance restored from a snapshot"},
	{num: "container-nebula", den: "container-runc", phase: PhaseStartup, note: "Nebula's overhead on a native container (1 = none)"},
	{num: "container-wasm", den: "container-runc", phase: PhaseStartup, note: "wasm module in a fresh container ÷ native container"},
	{num: "start-wasm-miss", den: "start-wasm", phase: PhaseTotal, note: "task start, compile cache miss ÷ hit"},
	{num: "start-native", den: "start-wasm", phase: PhaseTotal, note: "task start, native ÷ wasm (cache hit)"},
	{num: "start-snapshot", den: "start-native", phase: PhaseTotal, note: "task start, wasm reactor (cache hit, initialisation and snapshot included) ÷ native"},
}

// Analyze computes the statistics of records (all of cells) and the
// ratios, with the bootstrap seeded by seed. The same records and seed
// give the same report.
func Analyze(cells []*Cell, records []Record, seed uint64, resamples int) *Report {
	rep := &Report{Cells: cells, Samples: map[*Cell]*[numPhases][]float64{}, Stats: map[*Cell]*[numPhases]*stats.Stats{},
		Seed: seed, Resamples: resamples}
	for _, c := range cells {
		rep.Samples[c] = &[numPhases][]float64{}
		rep.Stats[c] = &[numPhases]*stats.Stats{}
	}
	for _, r := range records {
		s := rep.Samples[r.Cell]
		if s == nil {
			continue
		}
		for p, v := range r.Values {
			if !math.IsNaN(v) {
				s[p] = append(s[p], v)
			}
		}
	}
	rng := stats.NewRand(seed)
	for _, c := range cells {
		for p, xs := range rep.Samples[c] {
			if len(xs) > 0 {
				st := stats.Summarize(xs, resamples, rng)
				rep.Stats[c][p] = &st
			}
		}
	}
	rep.Ratios = ratios(cells, rep.Samples, resamples, rng)
	return rep
}

// ratios computes the comparisons of ratioSpecs whose cells exist and have
// samples, drawing the bootstraps from rng.
func ratios(cells []*Cell, samples map[*Cell]*[numPhases][]float64, resamples int, rng *rand.Rand) []RatioRow {
	var rows []RatioRow
	find := func(rt, fn string) *Cell {
		for _, c := range cells {
			if c.Runtime.ID == rt && c.Function.Name == fn {
				return c
			}
		}
		return nil
	}
	var fnNames []string
	for _, c := range cells {
		if !containsString(fnNames, c.Function.Name) {
			fnNames = append(fnNames, c.Function.Name)
		}
	}
	for _, spec := range ratioSpecs {
		pairs := [][2]string{}
		if spec.numFn != "" {
			pairs = append(pairs, [2]string{spec.numFn, spec.denFn})
		} else {
			for _, f := range fnNames {
				pairs = append(pairs, [2]string{f, f})
			}
		}
		for _, pair := range pairs {
			num, den := find(spec.num, pair[0]), find(spec.den, pair[1])
			if num == nil || den == nil {
				continue
			}
			ns, ds := samples[num][spec.phase], samples[den][spec.phase]
			if len(ns) == 0 || len(ds) == 0 {
				continue
			}
			rows = append(rows, RatioRow{Num: num, Den: den, Phase: spec.phase,
				Ratio: stats.MedianRatio(ns, ds, resamples, rng), Note: spec.note})
		}
	}
	return rows
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// csvHeader is the header row of raw.csv.
func csvHeader() []string {
	h := []string{"cell", "model", "runtime", "function", "iteration"}
	for _, p := range Phases() {
		h = append(h, p.String()+"_s")
	}
	return h
}

// WriteCSV writes one row per record: the cell, its model, runtime and
// function, the iteration (0-based, warm-up excluded) and each phase in
// seconds, empty where the phase does not apply.
func WriteCSV(w io.Writer, records []Record) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader()); err != nil {
		return err
	}
	for _, r := range records {
		row := []string{r.Cell.Name(), r.Cell.Runtime.Model, r.Cell.Runtime.ID, r.Cell.Function.Name, strconv.Itoa(r.Iteration)}
		for _, v := range r.Values {
			if math.IsNaN(v) {
				row = append(row, "")
			} else {
				row = append(row, strconv.FormatFloat(v, 'f', 9, 64))
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// tablePhases are the phases the tables show for each kind of cell, in
// order.
func tablePhases(k Kind) []Phase {
	switch k {
	case KindContainer:
		return []Phase{PhaseStartup, PhaseCreate, PhaseExec, PhaseTeardown, PhaseTotal}
	case KindFrontDoor:
		return []Phase{PhaseStartup, PhaseExec, PhaseQueue, PhaseServer, PhaseTotal}
	}
	return []Phase{PhaseStartup, PhaseCreate, PhaseReady, PhaseTotal, PhaseTeardown}
}

// statRows calls f for each cell and phase with statistics, in table
// order.
func (rep *Report) statRows(f func(c *Cell, p Phase, st *stats.Stats)) {
	for _, c := range rep.Cells {
		for _, p := range tablePhases(c.Runtime.Kind) {
			if st := rep.Stats[c][p]; st != nil {
				f(c, p, st)
			}
		}
	}
}

// WriteTable prints the statistics and the ratios as aligned text, for a
// terminal.
func WriteTable(w io.Writer, rep *Report) {
	rows := [][]string{{"cell", "phase", "n", "p50", "p90", "p99", "mean", "median 95% CI"}}
	last := ""
	rep.statRows(func(c *Cell, p Phase, st *stats.Stats) {
		name := c.Name()
		if name == last {
			name = ""
		}
		last = c.Name()
		rows = append(rows, []string{name, p.String(), strconv.Itoa(st.N),
			stats.FormatSeconds(st.P50), stats.FormatSeconds(st.P90), stats.FormatSeconds(st.P99), stats.FormatSeconds(st.Mean),
			stats.FormatSeconds(st.CILo) + " – " + stats.FormatSeconds(st.CIHi)})
	})
	writeAligned(w, rows, 2)
	if len(rep.Ratios) == 0 {
		return
	}
	fmt.Fprintln(w)
	rows = [][]string{{"ratio of medians", "phase", "ratio", "95% CI"}}
	for _, r := range rep.Ratios {
		rows = append(rows, []string{r.Name(), r.Phase.String(), stats.FormatRatio(r.Value), stats.FormatRatio(r.CILo) + " – " + stats.FormatRatio(r.CIHi)})
	}
	writeAligned(w, rows, 2)
}

// writeAligned prints rows as columns two spaces apart, the first left
// columns aligned left and the others right.
func writeAligned(w io.Writer, rows [][]string, left int) {
	var width []int
	for _, r := range rows {
		for i, cell := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, cell := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < left {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// summaryInfo is what summary.md says besides the report.
type summaryInfo struct {
	cfg       Config
	machine   Machine
	plots     []string
	note      string
	leftovers []string
	started   time.Time
	elapsed   time.Duration
}

// The seed study's figures, for comparison.
const (
	seedContainerStartup = 0.300  // s, Docker container start-up per call
	seedWasmStartup      = 0.0007 // s, wasm instance start-up per call
)

// writeMarkdown writes summary.md.
func writeMarkdown(w io.Writer, rep *Report, info summaryInfo) error {
	var b strings.Builder
	writeMarkdownHeader(&b, info)
	b.WriteString("## Findings\n\n")
	headline(&b, rep)
	writeCellsTable(&b, rep)
	writeRatiosTable(&b, rep)
	writePhasesTable(&b, rep)
	writePlotsSection(&b, info.plots)
	writeMethod(&b, rep, info)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeMarkdownHeader writes the title, when and where the study ran, and
// its note.
func writeMarkdownHeader(b *strings.Builder, info summaryInfo) {
	m := info.machine
	b.WriteString("# Container per event vs WebAssembly instance per event\n\n")
	fmt.Fprintf(b, "`nebula bench`, %s, %s. ", info.started.UTC().Format("2006-01-02 15:04 MST"), info.elapsed.Round(time.Second))
	fmt.Fprintf(b, "%s, %d cores, %s, kernel %s, cgroup %s; containerd %s, %s; wazero %s; %s.\n\n",
		m.CPUModel, m.Cores, fmtBytes(m.MemoryBytes), m.Kernel, m.Cgroup, m.Containerd.Version, firstField(m.Runc), m.Wazero, m.Go)
	if info.note != "" {
		b.WriteString(info.note + "\n\n")
	}
}

// writeCellsTable writes each cell's start-up and whole call, medians.
func writeCellsTable(b *strings.Builder, rep *Report) {
	b.WriteString("\n## Start-up and whole call per cell (medians)\n\n")
	b.WriteString("| cell | model | start-up p50 [95 % CI] | total p50 [95 % CI] | n |\n|---|---|---:|---:|---:|\n")
	for _, c := range rep.Cells {
		st, tot := rep.Stats[c][PhaseStartup], rep.Stats[c][PhaseTotal]
		if st == nil || tot == nil {
			continue
		}
		fmt.Fprintf(b, "| `%s` | %s | %s [%s – %s] | %s [%s – %s] | %d |\n", c.Name(), c.Runtime.Label,
			stats.FormatSeconds(st.P50), stats.FormatSeconds(st.CILo), stats.FormatSeconds(st.CIHi),
			stats.FormatSeconds(tot.P50), stats.FormatSeconds(tot.CILo), stats.FormatSeconds(tot.CIHi), st.N)
	}
}

// writeRatiosTable writes the ratios between runtimes, if any.
func writeRatiosTable(b *strings.Builder, rep *Report) {
	if len(rep.Ratios) > 0 {
		b.WriteString("\n## Ratios between runtimes\n\nRatio of the medians; the interval is a 95 % percentile bootstrap (both samples resampled independently).\n\n")
		b.WriteString("| ratio | phase | median ratio | 95 % CI | what it shows |\n|---|---|---:|---:|---|\n")
		for _, r := range rep.Ratios {
			fmt.Fprintf(b, "| `%s` | %s | **%s** | %s – %s | %s |\n", r.Name(), r.Phase, stats.FormatRatio(r.Value),
				stats.FormatRatio(r.CILo), stats.FormatRatio(r.CIHi), r.Note)
		}
	}
}

// writePhasesTable writes every phase's statistics.
func writePhasesTable(b *strings.Builder, rep *Report) {
	b.WriteString("\n## Every phase\n\n")
	b.WriteString("| cell | phase | n | p50 | p90 | p99 | mean | median 95 % CI |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	rep.statRows(func(c *Cell, p Phase, st *stats.Stats) {
		fmt.Fprintf(b, "| `%s` | %s | %d | %s | %s | %s | %s | %s – %s |\n", c.Name(), p, st.N,
			stats.FormatSeconds(st.P50), stats.FormatSeconds(st.P90), stats.FormatSeconds(st.P99), stats.FormatSeconds(st.Mean),
			stats.FormatSeconds(st.CILo), stats.FormatSeconds(st.CIHi))
	})
}

// writePlotsSection shows the PNG plots, if any.
func writePlotsSection(b *strings.Builder, plots []string) {
	if len(plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, p := range plots {
			if strings.HasSuffix(p, ".png") {
				fmt.Fprintf(b, "![%s](%s)\n\n", strings.TrimSuffix(p, ".png"), p)
			}
		}
		b.WriteString("Each PNG has an SVG twin.\n")
	}
}

// writeMethod writes how the study was made.
func writeMethod(b *strings.Builder, rep *Report, info summaryInfo) {
	b.WriteString("\n## Method\n\n")
	fmt.Fprintf(b, "- %d measured iterations per cell after %d warm-up ones, in rounds. An iteration is one call — except for the per-event cells (`process`, `wasm`), where it is %d events sent one after another: those calls cost microseconds to milliseconds, their distributions are wide, and sampling them %d× as often costs the study almost nothing. Each round runs every cell's iteration once, in a new random order (seeded: the schedule is reproducible), so that drift of the machine (other load, frequency, caches) spreads over all cells alike and no cell always follows the same neighbour. Calls are sequential, one at a time on the whole machine, each after a %d ms pause that lets the previous call's aftermath (a shim exiting, a snapshot collected) pass.\n", info.cfg.n, info.cfg.warmup, info.cfg.events, info.cfg.events, settle.Milliseconds())
	fmt.Fprintf(b, "- The measured events of an iteration follow %d unmeasured ones sent just before them, so that they measure steady-state calls rather than the first call after seconds spent starting containers (which runs with cold caches and is markedly slower).\n", info.cfg.primers)
	b.WriteString("- Functions:\n")
	seen := map[*Function]bool{}
	for _, c := range rep.Cells {
		if f := c.Function; !seen[f] {
			seen[f] = true
			fmt.Fprintf(b, "  - `%s`: %s", f.Name, f.Description)
			if f.NativeImage != "" {
				fmt.Fprintf(b, "; native image `%s`", f.NativeImage)
			}
			if f.WasmImage != "" {
				fmt.Fprintf(b, "; wasm image `%s`", f.WasmImage)
			}
			b.WriteString(".\n")
		}
	}
	b.WriteString("- Runtimes:\n")
	b.WriteString("  - **container per event** (`container-runc`, `container-nebula`, `container-wasm`): every call creates a container from the image through containerd's Go client (snapshot, spec, runtime `" + RuncShim + "` or `" + NebulaShim + "` — a new shim per container, as `ctr run` does), starts it with the event's data on stdin and its attributes as `CE_*` variables, waits for it to exit, reads stdout (the reply) and deletes task, container and snapshot. `container-wasm` runs the wasm image in run mode: a fresh container whose process is Nebula's host running the module once (compile cache hit).\n")
	b.WriteString("  - **process per event** and **wasm instance per event** (`process`, `wasm`): one function-mode task per function, started by the study in a network namespace of its own (loopback only); each call is one binary-mode CloudEvent over a kept-alive loopback connection, run by the task in a freshly spawned process or a fresh wasm instance. Phases come from the reply's `Server-Timing` header, `total` is measured by the client.\n")
	b.WriteString("  - **task start** (`start-native`, `start-wasm`, `start-wasm-miss`): a function-mode task is created and started until its front door answers `GET /healthz`, then stopped (SIGTERM) and deleted. `start-wasm-miss` plants, between container and task creation (not timed), a variant of the module with a random custom section in the container's rootfs snapshot: same code, a digest the shim has never compiled, so the shim compiles it (a cache miss) without touching its cache.")
	if info.cfg.cacheDir != "" {
		fmt.Fprintf(b, " The variants' cache entries are removed from `%s` after each call.", info.cfg.cacheDir)
	}
	b.WriteString("\n")
	b.WriteString("- A process's start-up (`os.StartProcess` until it returns) is bimodal on a busy machine: a few hundred microseconds when the parent gets the CPU back right after the child's exec, over a millisecond when the child's runtime runs first; its start-up/execution split moves with it while their sum (`server`) does not. Ratios with the process runtime therefore compare whole invocations.\n")
	b.WriteString("- Phases:\n")
	for _, p := range Phases() {
		fmt.Fprintf(b, "  - `%s`: %s.\n", p, phaseDoc[p])
	}
	fmt.Fprintf(b, "- Statistics: percentiles interpolate linearly between order statistics (R's type 7); the median's 95 %% confidence interval is a percentile bootstrap with %d resamples, seed %d (the same raw.csv gives the same intervals).\n", rep.Resamples, rep.Seed)
	b.WriteString("- Files: `raw.csv` (one row per invocation, phases in seconds), `machine.json` (machine, versions, parameters), and the plots above.\n")
	if len(info.leftovers) > 0 {
		fmt.Fprintf(b, "\n**Left behind**: the shim's module cache (not reachable at `--cache-dir %s`) keeps %d entries compiled for the cache-miss cells; remove the directories named in `leftover-cache-entries.txt` from the shim's cache directory (`NEBULA_CACHE_DIR`, by default %s).\n",
			info.cfg.cacheDir, len(info.leftovers), DefaultCacheDir)
	}
}

// headline writes the findings: the study's question and the original
// figures beside this machine's.
func headline(b *strings.Builder, rep *Report) {
	get, stat, ratio := rep.cell, rep.stat, rep.ratioText
	fmt.Fprintf(b, "- The original study measured start-up per call: Docker container ≈ %s, WebAssembly instance ≈ %s: %s.\n",
		stats.FormatSeconds(seedContainerStartup), stats.FormatSeconds(seedWasmStartup), stats.FormatRatio(seedContainerStartup/seedWasmStartup))
	cont := get("container-runc", "go")
	if st := stat(cont, PhaseStartup); st != nil {
		fmt.Fprintf(b, "- Here a container per event (containerd, runc.v2, the Go function) starts in %s, median.\n", withCI(st))
	}
	for _, fn := range []string{"tiny", "go", "user"} {
		if c := get("wasm", fn); stat(c, PhaseStartup) != nil {
			fmt.Fprintf(b, "- A wasm instance per event (`%s`) starts in %s", fn, withCI(stat(c, PhaseStartup)))
			if r := ratio(cont, c, PhaseStartup); r != "" {
				fmt.Fprintf(b, ": the container takes %s as long", r)
			}
			b.WriteString(".\n")
		}
		if c := get("snapshot", fn); stat(c, PhaseStartup) != nil {
			fmt.Fprintf(b, "- Built as a reactor (`%s`), an instance restored from its snapshot starts in %s and serves in %s", fn, withCI(stat(c, PhaseStartup)), withCI(stat(c, PhaseServer)))
			if r := ratio(cont, c, PhaseStartup); r != "" {
				fmt.Fprintf(b, ": the container takes %s as long to start", r)
			}
			if r := ratio(get("process", fn), c, PhaseServer); r != "" {
				fmt.Fprintf(b, "; a process per event takes %s as long inside the task", r)
			}
			b.WriteString(".\n")
		}
		if c := get("process", fn); stat(c, PhaseServer) != nil {
			fmt.Fprintf(b, "- A process per event (`%s`) takes %s per invocation, start-up and run", fn, withCI(stat(c, PhaseServer)))
			if r := ratio(cont, c, PhaseTotal); r != "" {
				fmt.Fprintf(b, "; a whole call in a container takes %s as long as a whole call to a process", r)
			}
			b.WriteString(".\n")
		}
	}
	if hit := stat(get("start-wasm", "go"), PhaseTotal); hit != nil {
		if miss := stat(get("start-wasm-miss", "go"), PhaseTotal); miss != nil {
			fmt.Fprintf(b, "- Starting the Go function's task until it serves takes %s with its module in the shim's compile cache and %s when the shim must compile it.\n",
				withCI(hit), withCI(miss))
		}
	}
}

// cell returns the cell of runtime rt and function fn, or nil.
func (rep *Report) cell(rt, fn string) *Cell {
	for _, c := range rep.Cells {
		if c.Runtime.ID == rt && c.Function.Name == fn {
			return c
		}
	}
	return nil
}

// stat returns c's statistics of phase p, nil without any (or a nil c).
func (rep *Report) stat(c *Cell, p Phase) *stats.Stats {
	if c == nil {
		return nil
	}
	return rep.Stats[c][p]
}

// ratioText renders the ratio num ÷ den of phase p with its interval, ""
// if it was not computed.
func (rep *Report) ratioText(num, den *Cell, p Phase) string {
	for _, r := range rep.Ratios {
		if r.Num == num && r.Den == den && r.Phase == p {
			return fmt.Sprintf("%s (95 %% CI %s – %s)", stats.FormatRatio(r.Value), stats.FormatRatio(r.CILo), stats.FormatRatio(r.CIHi))
		}
	}
	return ""
}

// withCI renders a median in bold with its interval.
func withCI(st *stats.Stats) string {
	return fmt.Sprintf("**%s** (95 %% CI %s – %s)", stats.FormatSeconds(st.P50), stats.FormatSeconds(st.CILo), stats.FormatSeconds(st.CIHi))
}

// firstField is s up to its first ';' (runc's version without its commit,
// spec and library versions, which machine.json keeps).
func firstField(s string) string {
	f, _, _ := strings.Cut(s, ";")
	return f
}

func fmtBytes(n uint64) string {
	if n == 0 {
		return "memory unknown"
	}
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB RAM"
}
