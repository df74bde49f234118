package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	nboci "nebula.dev/nebula/oci"
)

// Config is a study: where containerd is, what to run, where to write.
// Start from NewConfig, which holds the command line's defaults, and
// chain the WithXxx methods; each returns a modified copy and leaves its
// receiver untouched. The zero value studies nothing: Run rejects it.
//
//	cfg := bench.NewConfig().
//		WithContainerd("/run/containerd/containerd.sock", "default").
//		WithOutDir("results").
//		WithStdout(os.Stdout)
//
// Values are checked by Run, which names the flag of a bad one.
type Config struct {
	address, namespace string
	out                string
	n, warmup          int
	events, primers    int
	functions          []string
	wasmFile, image    string
	cells              []string
	cacheDir           string
	seed               uint64
	resamples          int
	stdout, progress   io.Writer
	progressTTY        bool
}

// NewConfig returns a Config with the defaults of the command line:
// DefaultN measured and DefaultWarmup warm-up iterations, DefaultEvents
// events and DefaultPrimers primers per front-door iteration, the
// functions tiny and go (plus user when given), every runtime, the cache
// at DefaultCacheDir, DefaultSeed and DefaultResamples. It names no
// containerd and no output directory.
func NewConfig() Config {
	return Config{
		n: DefaultN, warmup: DefaultWarmup, events: DefaultEvents, primers: DefaultPrimers,
		cacheDir: DefaultCacheDir, seed: DefaultSeed, resamples: DefaultResamples,
	}
}

// WithContainerd sets containerd's socket and the namespace to work in
// (which holds the functions' images).
func (c Config) WithContainerd(address, namespace string) Config {
	c.address, c.namespace = address, namespace
	return c
}

// WithOutDir sets the output directory, created if needed.
func (c Config) WithOutDir(dir string) Config { c.out = dir; return c }

// WithIterations sets the measured iterations per cell, n, run after
// warmup unmeasured ones.
func (c Config) WithIterations(n, warmup int) Config { c.n, c.warmup = n, warmup; return c }

// WithEvents sets the number of measured events a per-event cell (process,
// wasm) sends in each iteration, one after another: such a call costs
// microseconds to milliseconds and its distribution is wide, so it is
// sampled n times as often as a container or a task start. Zero means
// DefaultEvents.
func (c Config) WithEvents(n int) Config { c.events = n; return c }

// WithPrimers sets the unmeasured events sent to a front door just before
// an iteration's measured ones, so that those are steady-state calls, not
// the first one after seconds spent starting containers.
func (c Config) WithPrimers(n int) Config { c.primers = n; return c }

// WithFunctions selects the functions to study, names from FunctionNames
// ("user" needs WithWasmFile or WithImage). None means tiny and go, plus
// user when given.
func (c Config) WithFunctions(names ...string) Config { c.functions = slices.Clone(names); return c }

// WithWasmFile sets a user module (function ABI) to study as function
// "user". At most one of WithWasmFile and WithImage.
func (c Config) WithWasmFile(path string) Config { c.wasmFile = path; return c }

// WithImage sets a user image, already imported into the namespace, to
// study as function "user".
func (c Config) WithImage(ref string) Config { c.image = ref; return c }

// WithCells selects runtimes by ID (see Runtimes); none means all.
func (c Config) WithCells(ids ...string) Config { c.cells = slices.Clone(ids); return c }

// WithCacheDir sets the shim's module cache (NEBULA_CACHE_DIR). When it is
// reachable, the entries that the cache-miss cells compile are removed
// after each call; otherwise they are left there and listed in summary.md.
func (c Config) WithCacheDir(dir string) Config { c.cacheDir = dir; return c }

// WithBootstrap seeds the bootstrap and sets its number of resamples
// (below 1: DefaultResamples).
func (c Config) WithBootstrap(seed uint64, resamples int) Config {
	c.seed, c.resamples = seed, resamples
	return c
}

// WithStdout sets where the summary table goes (nil: nowhere).
func (c Config) WithStdout(w io.Writer) Config { c.stdout = w; return c }

// WithProgress sets where the progress goes (nil: nowhere): a bar that
// redraws itself when tty is true, else a line per round.
func (c Config) WithProgress(w io.Writer, tty bool) Config {
	c.progress, c.progressTTY = w, tty
	return c
}

// Defaults of the command line.
const (
	DefaultN         = 40
	DefaultWarmup    = 2
	DefaultEvents    = 10
	DefaultPrimers   = 10
	DefaultSeed      = 1
	DefaultResamples = 2000
	DefaultCacheDir  = "/var/lib/nebula/cache"
)

// ErrInterrupted is returned (wrapped) when the study was stopped early:
// the output directory then holds what was measured until then.
var ErrInterrupted = errors.New("interrupted")

// check validates what can be checked without containerd.
func (c *Config) check() error {
	if c.n < 1 {
		return fmt.Errorf("-n %d: must be at least 1", c.n)
	}
	if c.warmup < 0 {
		return fmt.Errorf("--warmup %d: must not be negative", c.warmup)
	}
	switch {
	case c.events < 0:
		return fmt.Errorf("--events %d: must be at least 1", c.events)
	case c.events == 0:
		c.events = DefaultEvents
	}
	if c.primers < 0 {
		return fmt.Errorf("--primers %d: must not be negative", c.primers)
	}
	if c.resamples < 1 {
		c.resamples = DefaultResamples
	}
	if c.address == "" {
		return errors.New("--address: the containerd socket must be given")
	}
	if c.namespace == "" {
		return errors.New("--namespace: must not be empty")
	}
	if c.wasmFile != "" && c.image != "" {
		return errors.New("--wasm and --image: give at most one user function")
	}
	if err := checkNames("functions", c.functions, FunctionNames); err != nil {
		return err
	}
	if len(c.functions) == 0 {
		c.functions = []string{"tiny", "go"}
		if c.wasmFile != "" || c.image != "" {
			c.functions = append(c.functions, "user")
		}
	}
	if slices.Contains(c.functions, "user") && c.wasmFile == "" && c.image == "" {
		return errors.New(`--functions: "user" needs --wasm FILE or --image REF`)
	}
	if (c.wasmFile != "" || c.image != "") && !slices.Contains(c.functions, "user") {
		return errors.New(`--functions: add "user" to study the function of --wasm or --image`)
	}
	if err := checkNames("cells", c.cells, RuntimeIDs()); err != nil {
		return err
	}
	if len(c.cells) == 0 {
		c.cells = RuntimeIDs()
	}
	if c.wasmFile != "" {
		if err := checkWasmFile(c.wasmFile); err != nil {
			return fmt.Errorf("--wasm: %w", err)
		}
	}
	if c.out == "" {
		return errors.New("--out: the output directory must be given")
	}
	return c.checkOutDir()
}

// checkOutDir creates the output directory if needed and makes sure a
// file can be written there, before anything is measured.
func (c *Config) checkOutDir() error {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	f, err := os.CreateTemp(c.out, ".nebula-bench-*")
	if err != nil {
		return fmt.Errorf("--out %s: not writable: %w", c.out, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkWasmFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, nboci.WasmMagic) {
		return fmt.Errorf("%s is not a WebAssembly module (no \\0asm header)", path)
	}
	return nil
}

// Result is what Run measured and wrote.
type Result struct {
	Cells   []*Cell
	Records []Record
	Machine Machine
	Report  *Report
	// Files lists the files written, relative to the output directory.
	Files []string
	// Rounds is the number of measured rounds completed.
	Rounds int
	// Leftovers are cache directories (module digests) of the cache-miss
	// cells that could not be removed.
	Leftovers []string
	Started   time.Time
	Elapsed   time.Duration
}

// Run runs the study that cfg describes against containerd and writes its
// report into cfg.out. When ctx is cancelled (Ctrl-C) or a call fails, it
// stops, removes what it started and still writes what was measured,
// returning an error that wraps ErrInterrupted or says what failed.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	_, statErr := os.Stat(cfg.out)
	createdOut := cfg.out != "" && errors.Is(statErr, os.ErrNotExist) // removed again if nothing is written
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s, err := newStudy(ctx, cfg)
	if err != nil {
		if createdOut {
			os.Remove(cfg.out) // only if still empty
		}
		return nil, err
	}
	runErr := s.run(ctx)
	cleanupErr := s.close()
	if runErr == nil {
		runErr = cleanupErr
	} else if cleanupErr != nil {
		runErr = fmt.Errorf("%w; cleaning up: %v", runErr, cleanupErr)
	}
	res := s.result()
	if len(res.Records) == 0 {
		if runErr == nil {
			runErr = errors.New("nothing was measured")
		}
		if createdOut {
			os.Remove(cfg.out)
		}
		return res, runErr
	}
	if err := writeAll(cfg, res, runErr); err != nil {
		if runErr != nil {
			return res, fmt.Errorf("%w; writing the report: %v", runErr, err)
		}
		return res, err
	}
	if runErr != nil {
		return res, fmt.Errorf("%w (the %d rounds measured are in %s)", runErr, res.Rounds, cfg.out)
	}
	return res, nil
}

// writeAll writes every output file and prints the table.
func writeAll(cfg Config, res *Result, runErr error) error {
	res.Report = Analyze(res.Cells, res.Records, cfg.seed, cfg.resamples)
	var files []string
	write := func(name string, f func(io.Writer) error) error {
		path := filepath.Join(cfg.out, name)
		tmp := path + ".tmp"
		out, err := os.Create(tmp)
		if err != nil {
			return err
		}
		if err = f(out); err == nil {
			err = out.Close()
		} else {
			out.Close()
		}
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("writing %s: %w", path, err)
		}
		files = append(files, name)
		return nil
	}
	if err := write("raw.csv", func(w io.Writer) error { return WriteCSV(w, res.Records) }); err != nil {
		return err
	}
	if err := write("machine.json", func(w io.Writer) error { return res.Machine.WriteJSON(w) }); err != nil {
		return err
	}
	plots, err := writePlots(cfg.out, res.Report)
	if err != nil {
		return err
	}
	files = append(files, plots...)
	note := ""
	if runErr != nil {
		note = fmt.Sprintf("**Incomplete study**: stopped after %d of %d rounds: %v.", res.Rounds, cfg.n, runErr)
	}
	info := summaryInfo{cfg: cfg, machine: res.Machine, plots: plots, note: note, leftovers: res.Leftovers,
		started: res.Started, elapsed: res.Elapsed}
	if err := write("summary.md", func(w io.Writer) error { return writeMarkdown(w, res.Report, info) }); err != nil {
		return err
	}
	if len(res.Leftovers) > 0 {
		if err := write("leftover-cache-entries.txt", func(w io.Writer) error {
			_, err := io.WriteString(w, strings.Join(res.Leftovers, "\n")+"\n")
			return err
		}); err != nil {
			return err
		}
	}
	res.Files = files
	if cfg.stdout != nil {
		WriteTable(cfg.stdout, res.Report)
		fmt.Fprintf(cfg.stdout, "\nwrote %s: %s\n", cfg.out, strings.Join(files, ", "))
	}
	return nil
}
