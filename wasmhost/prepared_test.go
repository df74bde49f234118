package wasmhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// compileHit compiles wasm from the cache directory dir with cfg and
// requires a hit that used the prepared file.
func compileHit(tb testing.TB, cfg Config, dir string, wasm []byte) *Module {
	tb.Helper()
	mod, err := newHost(tb, cfg.WithCacheDir(dir)).Compile(context.Background(), wasm)
	if err != nil {
		tb.Fatalf("Compile with a cache hit: %v", err)
	}
	if !mod.CacheHit() || !mod.prepared {
		tb.Fatalf("Compile: hit %v (%s), prepared %v; want a hit from the prepared file", mod.CacheHit(), mod.CacheDetail(), mod.prepared)
	}
	return mod
}

// TestPreparedHit: CompileToCache records, for a command and for a
// reactor, exactly the module finalize makes of what Compile would finalize,
// and Compile on a hit loads it and serves as after a miss.
func TestPreparedHit(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{functions.Hello, functions.Reactor, functions.Probe} {
		t.Run(name, func(t *testing.T) {
			wasm := wasmFile(t, name)
			dir := cacheWith(t, name, wasm)
			info, err := preflight(wasm, Config{})
			if err != nil {
				t.Fatal(err)
			}
			input := wasm
			if info.isReactor() {
				input = planReactor(wasm, info).module()
			}
			want, wantInstrumented := finalize(input)
			e := lookupEntry(dir, sha256.Sum256(wasm), true)
			got, instrumented, ok := e.final, e.instrumented, e.vouches()
			if !ok || !bytes.Equal(got, want) || instrumented != wantInstrumented ||
				!instrumented { // each has a memory to yield through, if not sched_yield
				t.Fatalf("prepared file: ok %v, %d bytes (instrumented %v); want %d bytes (instrumented %v)",
					ok, len(got), instrumented, len(want), wantInstrumented)
			}
			mod := compileHit(t, Config{}, dir, wasm)
			if mod.IsReactor() != (name == functions.Reactor) {
				t.Fatalf("IsReactor %v", mod.IsReactor())
			}
			if name == functions.Hello {
				runHello(t, mod)
			}
			if !mod.IsReactor() {
				return
			}
			inv, err := NewReactorInvoker(ctx, mod, RunConfig{Args: []string{name}})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte("hi"), Env: []string{"CE_ID=1"}})
			if err != nil || string(resp.Stdout) != "ready hi\x00CE_ID=1\x00" {
				t.Fatalf("Invoke on a hit: %q, %v", resp.Stdout, err)
			}
		})
	}
}

// TestPreparedMemoryLimit: the memory limit is the task's, not the entry's:
// a hit refuses a module whose minimum memory is above it exactly as a
// miss does (and as the shim's PreflightNeeds and PreflightCached do, the
// latter with an entry that vouches for the module), for a command and a
// reactor, and a reactor loaded from a hit is held to the limit.
func TestPreparedMemoryLimit(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{functions.Memhog, functions.ReactorState} { // both need 2 pages
		t.Run(name, func(t *testing.T) {
			wasm := wasmFile(t, name)
			dir := filepath.Join(t.TempDir(), "cache")
			if _, _, err := CompileToCache(ctx, wasm, dir, Config{}); err != nil {
				t.Fatal(err)
			}
			tooSmall := NewConfig().WithMemoryLimit(PageSize)
			_, missErr := newHost(t, tooSmall).Compile(ctx, wasm)
			_, hitErr := newHost(t, tooSmall.WithCacheDir(dir)).Compile(ctx, wasm)
			_, _, _, shimErr := PreflightNeeds(wasm, tooSmall, dir)
			_, _, _, _, vouchedErr := PreflightCached(wasm, sha256.Sum256(wasm), tooSmall, dir)
			if !errors.Is(missErr, ErrMemoryMinimum) || hitErr == nil || hitErr.Error() != missErr.Error() ||
				shimErr == nil || shimErr.Error() != missErr.Error() || vouchedErr == nil || vouchedErr.Error() != missErr.Error() {
				t.Fatalf("limit 1 page: miss %v, hit %v, PreflightNeeds %v, PreflightCached %v; want the same ErrMemoryMinimum",
					missErr, hitErr, shimErr, vouchedErr)
			}
			fits := NewConfig().WithMemoryLimit(2 * PageSize).WithReactorWarmup(false)
			if _, _, _, err := PreflightNeeds(wasm, fits, dir); err != nil {
				t.Fatalf("PreflightNeeds, limit 2 pages: %v", err)
			}
			if _, _, _, hit, err := PreflightCached(wasm, sha256.Sum256(wasm), fits, dir); err != nil || !hit {
				t.Fatalf("PreflightCached, limit 2 pages: hit %v, %v; want a hit", hit, err)
			}
			mod := compileHit(t, fits, dir, wasm)
			if !mod.IsReactor() {
				return
			}
			fsys, err := NewGuestFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			inv, err := NewReactorInvoker(ctx, mod, RunConfig{Args: []string{name}, FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			// reactorstate grows one page per event: past the limit.
			if _, err := inv.Invoke(ctx, &abi.Request{}); !errors.Is(err, abi.ErrMemoryLimit) {
				t.Fatalf("Invoke on a hit with a 2-page limit: %v, want ErrMemoryLimit", err)
			}
		})
	}
}

// TestPreparedStale: a prepared file that verifies but was not written by
// this code for this module, or that is missing, is ignored: Compile
// finalizes the module itself, still loads wazero's entry, and runs it;
// CompileToCache then writes a current prepared file.
func TestPreparedStale(t *testing.T) {
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	name := func(dir string) string { return filepath.Join(dir, preparedName) }
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
	}{
		{"missing", func(t *testing.T, dir string) { os.Remove(name(dir)) }},
		{"another module's", func(t *testing.T, dir string) {
			echo := wasmFile(t, functions.Echo)
			out, instrumented := finalize(echo)
			os.WriteFile(name(dir), encodePrepared(sha256.Sum256(echo), out, instrumented), 0o600)
		}},
		{"other code's", func(t *testing.T, dir string) {
			flipByte(t, name(dir), len(preparedMagic)) // the code's hash
		}},
		{"other format", func(t *testing.T, dir string) {
			flipByte(t, name(dir), 0)
		}},
		{"truncated", func(t *testing.T, dir string) {
			os.Truncate(name(dir), int64(len(preparedMagic)+2*32))
		}},
		{"not a module", func(t *testing.T, dir string) {
			flipByte(t, name(dir), len(preparedMagic)+2*32+2) // "\0asm"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			if _, _, err := CompileToCache(ctx, hello, dir, Config{}); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, dir)
			entries, err := listEntries(dir)
			if err == nil {
				err = writeManifest(dir, entries) // it verifies
			}
			if err != nil {
				t.Fatal(err)
			}
			mod, err := newHost(t, NewConfig().WithCacheDir(dir)).Compile(ctx, hello)
			if err != nil {
				t.Fatal(err)
			}
			if !mod.CacheHit() || mod.prepared {
				t.Fatalf("Compile: hit %v (%s), prepared %v; want a hit of wazero's entry alone", mod.CacheHit(), mod.CacheDetail(), mod.prepared)
			}
			runHello(t, mod)
			if hit, _, err := CompileToCache(ctx, hello, dir, Config{}); err != nil || !hit {
				t.Fatalf("CompileToCache: hit %v, %v; want a hit", hit, err)
			}
			compileHit(t, Config{}, dir, hello)
		})
	}
}

// cacheWith returns a cache directory holding the entry of wasm, the
// function name: the tests' shared one for the probe.
func cacheWith(tb testing.TB, name string, wasm []byte) string {
	tb.Helper()
	if name == functions.Probe {
		return sharedProbeCache(tb)
	}
	dir := filepath.Join(tb.TempDir(), "cache")
	if _, _, err := CompileToCache(context.Background(), wasm, dir, Config{}); err != nil {
		tb.Fatal(err)
	}
	return dir
}
