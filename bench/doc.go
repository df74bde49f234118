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
// The reasons for the study's method (interleaving, sampling, the
// cache-miss variant, its network namespace) are in docs/rationale.md.
package bench
