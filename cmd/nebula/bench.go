package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"nebula.dev/nebula/bench"
)

// Defaults shared with ctr: the socket and namespace come from the same
// environment variables.
const (
	defaultContainerdAddress = "/run/containerd/containerd.sock"
	defaultNamespace         = "default"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newBenchCommand is `nebula bench`. Long on purpose: its help text and its
// flags, each a table read top to bottom; RunE only assembles and calls.
func newBenchCommand() *cobra.Command {
	var (
		functions, cells                      string
		noProgress                            bool
		address, namespace, out               string
		wasmFile, image, cacheDir             string
		n, warmup, events, primers, resamples int
		seed                                  uint64
	)
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Compare a container, a process and a wasm instance per event, with a report and plots",
		Long: `Bench reproduces the study "Docker container per call vs WebAssembly
instance per call" against a containerd: it runs each function every way
Nebula can, interleaved, and writes a report.

Cells (select with --cells; each runs for every function that has the
build it needs — the tiny WAT function has no native build):

  container-runc     a fresh container per event under io.containerd.runc.v2
                     (create, start with the event on stdin, wait, delete)
  container-nebula   the same under io.containerd.nebula.v1 (native image)
  container-wasm     the same with the wasm image: a container per event
                     whose process runs the module once
  process            a process per event, spawned by a function-mode task
  wasm               a wasm instance per event in a function-mode task
  snapshot           the reactor build: each event in a fresh instance
                     restored from the state initialisation left
  start-native       a function-mode task's start until its front door serves
  start-wasm         the same for the wasm image, compile cache hit
  start-wasm-miss    the same with a never-compiled variant of the module
                     (the shim compiles it: a cache miss)
  start-snapshot     the same for the reactor build, cache hit (its
                     initialisation and snapshot included)

Functions (--functions): tiny (a WAT echo, also as a WAT reactor), go (the
Go probe, natively, as a wasip1 command and as a reactor), and user: your module (--wasm FILE, which bench packages and
imports) or image (--image REF, already imported), following Nebula's
function ABI. The default images are those 'make bench' builds and imports;
import them yourself with 'nebula build' and 'ctr images import'.

Each round calls every cell once, in an order rotating from round to round,
so that drift of the machine hits every cell alike: --warmup rounds are not
measured, -n rounds are. Function tasks run in a network namespace bench
creates (loopback only) and are stopped and deleted at the end; Ctrl-C stops
early and still writes what was measured.

The output directory gets raw.csv (one row per call, phases in seconds),
summary.md (percentiles, bootstrap confidence intervals of the medians,
ratios between runtimes, method), machine.json, and log-scale ECDF and box
plots per phase as SVG and PNG. The summary table is printed too.

Needs root (containerd's socket, mounts, network namespaces) on the
machine containerd runs on. The cache-miss cell leaves one compiled module
per call in the shim's cache unless --cache-dir names that cache (the
shim's NEBULA_CACHE_DIR), from which bench removes them.`,
		Example: `  # The default study against the system containerd:
  sudo nebula bench --out results/

  # A quick look, your own module only, per-event cells:
  sudo nebula bench -n 10 --warmup 1 --wasm fn.wasm --functions user --cells wasm,container-wasm --out quick/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if events < 1 {
				return fmt.Errorf("--events %d: must be at least 1", events)
			}
			if resamples < 1 {
				return fmt.Errorf("--resamples %d: must be at least 1", resamples)
			}
			cfg := bench.NewConfig().
				WithContainerd(address, namespace).
				WithOutDir(out).
				WithIterations(n, warmup).
				WithEvents(events).
				WithPrimers(primers).
				WithFunctions(splitList(functions)...).
				WithWasmFile(wasmFile).
				WithImage(image).
				WithCells(splitList(cells)...).
				WithCacheDir(cacheDir).
				WithBootstrap(seed, resamples).
				WithStdout(cmd.OutOrStdout())
			if !noProgress {
				cfg = cfg.WithProgress(cmd.ErrOrStderr(), isTerminal(cmd.ErrOrStderr()))
			}
			_, err := bench.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&address, "address", envOr("CONTAINERD_ADDRESS", defaultContainerdAddress), "containerd's socket ($CONTAINERD_ADDRESS)")
	f.StringVar(&namespace, "namespace", envOr("CONTAINERD_NAMESPACE", defaultNamespace), "containerd namespace holding the images ($CONTAINERD_NAMESPACE)")
	f.StringVar(&out, "out", "nebula-bench", "output directory (created if needed)")
	f.IntVarP(&n, "n", "n", bench.DefaultN, "measured calls per cell")
	f.IntVar(&warmup, "warmup", bench.DefaultWarmup, "unmeasured warm-up calls per cell, before the measured ones")
	f.IntVar(&events, "events", bench.DefaultEvents, "measured events per iteration of a per-event cell (process, wasm)")
	f.IntVar(&primers, "primers", bench.DefaultPrimers, "unmeasured events sent to a function task before an iteration's measured ones")
	f.StringVar(&functions, "functions", "", `functions to study, comma-separated: tiny, go, user (default "tiny,go", plus user with --wasm or --image)`)
	f.StringVar(&wasmFile, "wasm", "", "a WebAssembly module to study as function user")
	f.StringVar(&image, "image", "", "an imported image (wasm or native) to study as function user")
	f.StringVar(&cells, "cells", "", "cells to run, comma-separated (default all): "+strings.Join(bench.RuntimeIDs(), ", "))
	f.StringVar(&cacheDir, "cache-dir", bench.DefaultCacheDir, "the shim's module cache (its NEBULA_CACHE_DIR), to remove what the cache-miss cell compiles")
	f.Uint64Var(&seed, "seed", bench.DefaultSeed, "seed of the bootstrap resampling")
	f.IntVar(&resamples, "resamples", bench.DefaultResamples, "bootstrap resamples for the confidence intervals")
	f.BoolVar(&noProgress, "no-progress", false, "print no progress on standard error")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// isTerminal tells whether w is a terminal (the progress bar redraws
// itself there; elsewhere it prints a line per round).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
