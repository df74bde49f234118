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
// A study is cells — Runtimes × functions — run in rounds. Analyze,
// WriteCSV and WriteTable work on recorded results without containerd.
//
// # Layout
//
// Two leaves do the arithmetic and the drawing and know nothing of a
// study: package stats (quantiles, bootstrap intervals, ratios and how
// they are printed) and package plot (ECDF and box plots of named samples).
// Package internal/netns is the study's network namespace. The rest is
// this package, one file per job:
//
//   - bench.go: Config, Run and writing the output directory;
//   - model.go: functions, runtimes, cells, phases and records;
//   - study.go: the rounds — connecting, scheduling, cleaning up;
//   - images.go: resolving and importing the functions' images;
//   - container.go: one call in a fresh container;
//   - task.go: function-mode tasks — starting, invoking, stopping;
//   - variant.go: the cache-miss cell's module variant;
//   - machine.go: facts about the machine and the versions;
//   - report.go, plots.go: the analysis, raw.csv, summary.md, the table
//     and the figures;
//   - progress.go: the progress bar.
//
// The reasons for the study's method (interleaving, sampling, the
// cache-miss variant, its network namespace) are in docs/rationale.md.
package bench
