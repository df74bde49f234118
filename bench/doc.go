// Package bench is the engine of `nebula bench`: it reproduces the study
// "Docker container per call vs WebAssembly instance per call" against a
// containerd, with Nebula's runtimes side by side, and writes a report
// (raw.csv, summary.md, machine.json, SVG and PNG plots).
//
//	res, err := bench.Run(ctx, bench.Config{
//		Address: "/run/containerd/containerd.sock", Namespace: "default",
//		Out: "results", N: bench.DefaultN, Warmup: bench.DefaultWarmup,
//		Events: bench.DefaultEvents, Primers: bench.DefaultPrimers,
//		CacheDir: bench.DefaultCacheDir, Seed: 1, Stdout: os.Stdout,
//	})
//
// A study is cells — Runtimes × functions — run in rounds. The statistics
// (Quantile, BootstrapMedianCI, MedianRatio, Analyze) and the writers
// (WriteCSV, WriteMarkdown, WriteTable) are usable on their own.
//
// # Why it is built this way
//
// Interleaving. Each round runs every cell once in a fresh random order
// (seeded). A fixed rotation would keep the same neighbours: the cell
// after a cache-miss task start would always run while the shim of that
// start is still exiting. A 25 ms pause before each call lets such
// aftermath pass; the order spreads what remains over all cells.
//
// Per-event cells are sampled more. A wasm instance of the tiny module
// starts in ~15 µs with a long right tail, a process's start is bimodal
// (see below): with 20–30 samples their medians moved by a third or more
// from run to run, while a container's moved by about 5 %. Their calls cost nothing, so
// an iteration of a per-event cell is Events measured events (one CSV row
// each), after Primers unmeasured ones: without primers the first event
// after seconds of container starts runs with cold caches and measured
// about twice the steady-state instantiation time.
//
// Process start-up is bimodal. os.StartProcess returns once the child has
// exec'd; on two busy cores the parent gets the CPU back either at once
// (≈0.2–0.4 ms) or after the child's Go runtime ran (≈1.2–1.6 ms), and
// Server-Timing's start/exec split moves with it while their sum does
// not. Ratios with the process runtime compare whole invocations.
//
// The cache-miss cell plants a variant of the module — the module plus a
// custom section with a random nonce — in the container's rootfs snapshot
// (mounted on the host between container and task creation, outside the
// timed phases). Same code, a digest the shim has never compiled: a miss
// without access to the shim's cache and without disturbing the real
// module's entry. The variants' entries are removed from --cache-dir when
// it is the shim's cache (NEBULA_CACHE_DIR); otherwise they are listed in
// leftover-cache-entries.txt.
//
// Function tasks run in a network namespace the study creates (only lo,
// up) and joins their specs to; the client dials from a thread that has
// joined it. Front doors listen on every interface of their namespace, so
// on the host network they would be reachable from outside for the
// study's duration, and their ports could clash with anything running.
//
// A container per event gets its data through a FIFO that the runc shim
// keeps open until the client calls CloseIO, as ctr does: a function that
// reads stdin to EOF would otherwise never exit. The copy can hit EOF
// before NewTask returns, so the reader waits for the task on a channel.
//
// Operations on containerd use a context that Ctrl-C does not cancel
// (bounded by timeouts instead): a call is finished or undone, never
// abandoned halfway with a container or shim left behind; then the
// study stops and writes what it measured.
package bench
