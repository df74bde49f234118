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
type Config struct {
	// Address is containerd's socket; Namespace the namespace to work in.
	Address, Namespace string
	// Out is the output directory, created if needed.
	Out string
	// N measured calls per cell after Warmup unmeasured ones.
	N, Warmup int
	// Events is the number of measured events a per-event cell (process,
	// wasm) sends in each iteration, one after another: such a call costs
	// microseconds to milliseconds and its distribution is wide, so it is
	// sampled Events times as often as a container or a task start.
	Events int
	// Primers are unmeasured events sent to a front door just before an
	// iteration's measured ones, so that those are steady-state calls, not
	// the first one after seconds spent starting containers.
	Primers int
	// Functions to study: names from FunctionNames ("user" needs WasmFile
	// or Image). Empty means tiny and go, plus user when given.
	Functions []string
	// WasmFile is a user module (function ABI) to study as function "user";
	// Image a user image already imported into Namespace. At most one.
	WasmFile, Image string
	// Cells selects runtimes by ID (see Runtimes); empty means all.
	Cells []string
	// CacheDir is the shim's module cache (NEBULA_CACHE_DIR, by default
	// /var/lib/nebula/cache). When it is reachable, the entries that the
	// cache-miss cells compile are removed after each call; otherwise they
	// are left there and listed in summary.md.
	CacheDir string
	// Seed seeds the bootstrap; Resamples is its number of resamples.
	Seed      uint64
	Resamples int
	// Stdout receives the summary table; Progress the progress bar (a
	// terminal) or progress lines. Either may be nil.
	Stdout, Progress io.Writer
	// ProgressTTY draws a bar that redraws itself instead of lines.
	ProgressTTY bool

	createdOut bool // check created Out: removed again if nothing is written
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
	if c.N < 1 {
		return fmt.Errorf("-n %d: must be at least 1", c.N)
	}
	if c.Warmup < 0 {
		return fmt.Errorf("--warmup %d: must not be negative", c.Warmup)
	}
	switch {
	case c.Events < 0:
		return fmt.Errorf("--events %d: must be at least 1", c.Events)
	case c.Events == 0:
		c.Events = DefaultEvents
	}
	if c.Primers < 0 {
		return fmt.Errorf("--primers %d: must not be negative", c.Primers)
	}
	if c.Resamples < 1 {
		c.Resamples = DefaultResamples
	}
	if c.Address == "" {
		return errors.New("--address: the containerd socket must be given")
	}
	if c.Namespace == "" {
		return errors.New("--namespace: must not be empty")
	}
	if c.WasmFile != "" && c.Image != "" {
		return errors.New("--wasm and --image: give at most one user function")
	}
	if err := checkNames("functions", c.Functions, FunctionNames); err != nil {
		return err
	}
	if len(c.Functions) == 0 {
		c.Functions = []string{"tiny", "go"}
		if c.WasmFile != "" || c.Image != "" {
			c.Functions = append(c.Functions, "user")
		}
	}
	if slices.Contains(c.Functions, "user") && c.WasmFile == "" && c.Image == "" {
		return errors.New(`--functions: "user" needs --wasm FILE or --image REF`)
	}
	if (c.WasmFile != "" || c.Image != "") && !slices.Contains(c.Functions, "user") {
		return errors.New(`--functions: add "user" to study the function of --wasm or --image`)
	}
	if err := checkNames("cells", c.Cells, RuntimeIDs()); err != nil {
		return err
	}
	if len(c.Cells) == 0 {
		c.Cells = RuntimeIDs()
	}
	if c.WasmFile != "" {
		if err := checkWasmFile(c.WasmFile); err != nil {
			return fmt.Errorf("--wasm: %w", err)
		}
	}
	if c.Out == "" {
		return errors.New("--out: the output directory must be given")
	}
	return c.checkOutDir()
}

// checkOutDir creates the output directory if needed and makes sure a
// file can be written there, before anything is measured.
func (c *Config) checkOutDir() error {
	if _, err := os.Stat(c.Out); errors.Is(err, os.ErrNotExist) {
		c.createdOut = true
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	f, err := os.CreateTemp(c.Out, ".nebula-bench-*")
	if err != nil {
		return fmt.Errorf("--out %s: not writable: %w", c.Out, err)
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
	// Files lists the files written, relative to Config.Out.
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
// report into cfg.Out. When ctx is cancelled (Ctrl-C) or a call fails, it
// stops, removes what it started and still writes what was measured,
// returning an error that wraps ErrInterrupted or says what failed.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s, err := newStudy(ctx, cfg)
	if err != nil {
		if cfg.createdOut {
			os.Remove(cfg.Out) // only if still empty
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
		if cfg.createdOut {
			os.Remove(cfg.Out)
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
		return res, fmt.Errorf("%w (the %d rounds measured are in %s)", runErr, res.Rounds, cfg.Out)
	}
	return res, nil
}

// writeAll writes every output file and prints the table.
func writeAll(cfg Config, res *Result, runErr error) error {
	res.Report = Analyze(res.Cells, res.Records, cfg.Seed, cfg.Resamples)
	var files []string
	write := func(name string, f func(io.Writer) error) error {
		path := filepath.Join(cfg.Out, name)
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
	plots, err := writePlots(cfg.Out, res.Report)
	if err != nil {
		return err
	}
	files = append(files, plots...)
	note := ""
	if runErr != nil {
		note = fmt.Sprintf("**Incomplete study**: stopped after %d of %d rounds: %v.", res.Rounds, cfg.N, runErr)
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
	if cfg.Stdout != nil {
		WriteTable(cfg.Stdout, res.Report)
		fmt.Fprintf(cfg.Stdout, "\nwrote %s: %s\n", cfg.Out, strings.Join(files, ", "))
	}
	return nil
}
