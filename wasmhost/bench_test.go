package wasmhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// The benchmarks cover the phases of a wasm task for a tiny hand-written
// module (hello.wat, echo.wat) and a Go wasip1 module (probe.wasm):
// compiling (with and without a cache), instantiating, running and closing.
//
//	go test -run '^$' -bench . -benchtime 2s ./wasmhost/

var benchModules = []struct {
	name string
	file string
	args []string
}{
	{"hello.wat", functions.Hello, nil},
	{"echo.wat", functions.Echo, nil},
	{"probe.wasm", functions.Probe, []string{"echo"}},
}

// BenchmarkCompile compiles without a cache; close-ns/op is Module.Close.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	for _, bm := range benchModules {
		if bm.file == functions.Echo {
			continue // as hello
		}
		b.Run(bm.name, func(b *testing.B) {
			wasm := wasmFile(b, bm.file)
			h := newHost(b, NewConfig())
			b.ReportAllocs()
			var closing time.Duration
			for b.Loop() {
				mod, err := h.Compile(ctx, wasm)
				if err != nil {
					b.Fatal(err)
				}
				t := time.Now()
				mod.Close(ctx)
				closing += time.Since(t)
			}
			b.ReportMetric(float64(closing.Nanoseconds())/float64(b.N), "close-ns/op")
		})
	}
}

// BenchmarkCompileCached loads from a verified cache directory, as the host
// in the container does; verify-ns/op is the SHA-256 check of the entries.
//
//	go test -run '^$' -bench BenchmarkCompileCached -benchtime 20x ./wasmhost/
func BenchmarkCompileCached(b *testing.B) {
	ctx := context.Background()
	modules := append(benchModules, struct {
		name string
		file string
		args []string
	}{"probe-reactor.wasm", functions.ProbeReactor, nil})
	for _, bm := range modules {
		if bm.file == functions.Echo {
			continue
		}
		b.Run(bm.name, func(b *testing.B) {
			wasm := wasmFile(b, bm.file)
			dir := filepath.Join(b.TempDir(), "cache")
			if bm.file == functions.Probe {
				dir = sharedProbeCache(b)
			} else if _, _, err := CompileToCache(ctx, wasm, dir, Config{}); err != nil {
				b.Fatal(err)
			}
			h := newHost(b, NewConfig().WithCacheDir(dir))
			var verify time.Duration
			b.ReportAllocs()
			for b.Loop() {
				mod, err := h.Compile(ctx, wasm)
				if err != nil || !mod.CacheHit() {
					b.Fatalf("%v, hit %v", err, mod.CacheHit())
				}
				mod.Close(ctx)
				t := time.Now()
				verifyCache(dir)
				verify += time.Since(t)
			}
			b.ReportMetric(float64(verify.Nanoseconds())/float64(b.N), "verify-ns/op")
		})
	}
}

// BenchmarkCheck is Check: hand parsing plus wazero's interpreter pass.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	for _, bm := range benchModules {
		if bm.file == functions.Echo {
			continue
		}
		b.Run(bm.name, func(b *testing.B) {
			wasm := wasmFile(b, bm.file)
			b.ReportAllocs()
			for b.Loop() {
				if err := Check(ctx, wasm, Config{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInstantiate instantiates and closes an instance without running
// `_start`.
func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	for _, bm := range benchModules {
		b.Run(bm.name, func(b *testing.B) {
			mod := compile(b, Config{}, bm.file)
			cfg := mod.moduleConfig(&RunConfig{Args: append([]string{bm.file}, bm.args...)})
			b.ReportAllocs()
			for b.Loop() {
				inst, err := mod.runtime.InstantiateModule(ctx, mod.compiled, cfg)
				if err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}

// BenchmarkRun is Module.Run: instantiate, `_start`, close (run mode).
func BenchmarkRun(b *testing.B) {
	ctx := context.Background()
	for _, bm := range benchModules {
		b.Run(bm.name, func(b *testing.B) {
			mod := compile(b, Config{}, bm.file)
			rc := RunConfig{Args: append([]string{bm.file}, bm.args...), Stdout: io.Discard}
			b.ReportAllocs()
			for b.Loop() {
				if code, err := mod.Run(ctx, rc); code != 0 || err != nil {
					b.Fatal(code, err)
				}
			}
		})
	}
}

// BenchmarkInvoke is Invoker.Invoke of an echo (function mode): instantiate
// with stdin from memory, `_start`, capture stdout, close.
func BenchmarkInvoke(b *testing.B) {
	ctx := context.Background()
	req := &abi.Request{Stdin: []byte(`{"hello":"world"}`), Env: []string{"CE_ID=1", "CE_TYPE=t"}}
	for _, bm := range benchModules {
		if bm.file == functions.Hello {
			continue
		}
		b.Run(bm.name, func(b *testing.B) {
			inv := NewInvoker(compile(b, Config{}, bm.file), RunConfig{Args: append([]string{bm.file}, bm.args...)})
			var startup, exec time.Duration
			b.ReportAllocs()
			for b.Loop() {
				resp, err := inv.Invoke(ctx, req)
				if err != nil || len(resp.Stdout) != len(req.Stdin) {
					b.Fatal(err)
				}
				startup += resp.Startup
				exec += resp.Execution
			}
			b.ReportMetric(float64(startup.Nanoseconds())/float64(b.N), "startup-ns/op")
			b.ReportMetric(float64(exec.Nanoseconds())/float64(b.N), "exec-ns/op")
		})
		b.Run(bm.name+"/parallel", func(b *testing.B) {
			inv := NewInvoker(compile(b, Config{}, bm.file), RunConfig{Args: append([]string{bm.file}, bm.args...)})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := inv.Invoke(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkFib runs a CPU-bound guest: fib(27) in the Go probe.
func BenchmarkFib(b *testing.B) {
	ctx := context.Background()
	mod := compile(b, Config{}, functions.Probe)
	rc := RunConfig{Args: []string{"probe", "fib", "27"}, Stdout: io.Discard}
	for b.Loop() {
		if code, err := mod.Run(ctx, rc); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkDeadlineCost measures what the per-invocation deadline
// mechanism costs a CPU-bound guest: fib(27) in the Go probe on plain
// wazero runtimes with no mechanism, with WithCloseOnContextDone, and
// with the checks instrumentDeadline adds (what Nebula compiles).
func BenchmarkDeadlineCost(b *testing.B) {
	ctx := context.Background()
	wasm := wasmFile(b, functions.Probe)
	info, err := parseModule(wasm)
	if err != nil {
		b.Fatal(err)
	}
	instrumented, ok := instrumentDeadline(wasm, info)
	if !ok {
		b.Fatal("instrumentDeadline refused the probe")
	}
	for _, c := range []struct {
		name        string
		closeOnDone bool
		wasm        []byte
	}{
		{"none", false, wasm},
		{"closeOnContextDone", true, wasm},
		{"instrumented", false, instrumented},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(c.closeOnDone))
			defer r.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, r)
			cm, err := r.CompileModule(ctx, c.wasm)
			if err != nil {
				b.Fatal(err)
			}
			cfg := wazero.NewModuleConfig().WithArgs("probe", "fib", "27").WithStdout(io.Discard).WithName("")
			for b.Loop() {
				mod, err := r.InstantiateModule(ctx, cm, cfg)
				if err != nil {
					b.Fatal(err)
				}
				mod.Close(ctx)
			}
		})
	}
}

// BenchmarkGuestFS measures what GuestFS's checks cost per operation a
// guest makes, against wazero's unchecked DirFS over the same directory:
// opening and closing a file (as a function reading its data per event
// does), and stat.
func BenchmarkGuestFS(b *testing.B) {
	root := b.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "srv/data"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "srv/data/config.json"), []byte(`{"a":1}`), 0o644); err != nil {
		b.Fatal(err)
	}
	guest, err := NewGuestFS(root, DefaultHiddenPath)
	if err != nil {
		b.Fatal(err)
	}
	defer guest.Close()
	for _, fsys := range []struct {
		name string
		fs   experimentalsys.FS
	}{{"DirFS", sysfs.DirFS(root)}, {"GuestFS", guest}} {
		b.Run("open/"+fsys.name, func(b *testing.B) {
			for b.Loop() {
				f, errno := fsys.fs.OpenFile("srv/data/config.json", experimentalsys.O_RDONLY, 0)
				if errno != 0 {
					b.Fatal(errno)
				}
				f.Close()
			}
		})
		b.Run("stat/"+fsys.name, func(b *testing.B) {
			for b.Loop() {
				if _, errno := fsys.fs.Stat("srv/data/config.json"); errno != 0 {
					b.Fatal(errno)
				}
			}
		})
	}
}

// BenchmarkInvokeGrow: a guest grows its memory a page at a time, filling
// each, to a 64 MiB limit, then traps (memhog.wat "m"): instantiation,
// growth and the reset of the slot's memory afterwards.
func BenchmarkInvokeGrow(b *testing.B) {
	ctx := context.Background()
	inv := NewInvoker(compile(b, NewConfig().WithMemoryLimit(64<<20), functions.Memhog), RunConfig{Args: []string{functions.Memhog}})
	req := &abi.Request{Stdin: []byte("m")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inv.Invoke(ctx, req); !errors.Is(err, abi.ErrMemoryLimit) {
			b.Fatal(err)
		}
	}
}

// BenchmarkPreflightNeeds is what the shim's Create does with a module
// before it looks at the cache: Preflight and MemoryNeeds, two parses
// (separate, as before PreflightNeeds), or PreflightNeeds, one; and
// PreflightCached, what it does instead, on a hit whose entry vouches for
// the module (the entry verified, the function bodies not parsed).
//
//	go test -run '^$' -bench BenchmarkPreflightNeeds -benchtime 20x ./wasmhost/
func BenchmarkPreflightNeeds(b *testing.B) {
	wasm := wasmFile(b, functions.Probe)
	dir := sharedProbeCache(b)
	b.Run("separate", func(b *testing.B) {
		for b.Loop() {
			if err := Preflight(wasm, Config{}); err != nil {
				b.Fatal(err)
			}
			if _, _, _, err := MemoryNeeds(wasm, dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("together", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, err := PreflightNeeds(wasm, Config{}, dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		sum := sha256.Sum256(wasm)
		for b.Loop() {
			if _, _, _, hit, err := PreflightCached(wasm, sum, Config{}, dir); err != nil || !hit {
				b.Fatal(hit, err)
			}
		}
	})
}
