package wasmhost

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"nebula.dev/nebula/test/functions"
)

// fnDir holds the functions TestMain built; fnErr why it could not.
var (
	fnDir string
	fnErr error
)

// probeCache is a cache directory holding probe.wasm's native code, so that
// tests compile the 3 MB Go module once (CompileToCache) and then load it.
var (
	probeCacheOnce sync.Once
	probeCache     string
	probeCacheErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(roChildEnv) != "" {
		os.Exit(roChild(m))
	}
	// TestCacheReadOnlyChild runs only in the child TestCacheReadOnly
	// starts; leave it out here rather than report it skipped.
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() == "" {
		flag.Set("test.skip", "^TestCacheReadOnlyChild$")
	}
	dir, err := os.MkdirTemp("", "wasmhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fnDir = dir
	fnErr = functions.Build(context.Background(), filepath.Join(dir))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needFunctions skips the test (fails it in CI) if the functions could not
// be built.
func needFunctions(tb testing.TB) {
	tb.Helper()
	if fnErr == nil {
		return
	}
	if os.Getenv("CI") == "true" || !errors.Is(fnErr, functions.ErrNoWat2wasm) {
		tb.Fatalf("building test functions: %v", fnErr)
	}
	tb.Skipf("skipping: cannot build the test functions: %v", fnErr)
}

// wasmFile returns the bytes of a built function.
func wasmFile(tb testing.TB, name string) []byte {
	tb.Helper()
	needFunctions(tb)
	b, err := os.ReadFile(filepath.Join(fnDir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func newHost(tb testing.TB, cfg Config) *Host {
	tb.Helper()
	h, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// compile compiles a built function with cfg. probe.wasm is loaded from a
// shared cache directory unless cfg has one.
func compile(tb testing.TB, cfg Config, name string) *Module {
	tb.Helper()
	wasm := wasmFile(tb, name)
	if name == functions.Probe && cfg.cacheDir == "" {
		cfg = cfg.WithCacheDir(sharedProbeCache(tb))
	}
	mod, err := newHost(tb, cfg).Compile(context.Background(), wasm)
	if err != nil {
		tb.Fatalf("compile %s: %v", name, err)
	}
	return mod
}

func sharedProbeCache(tb testing.TB) string {
	tb.Helper()
	probeCacheOnce.Do(func() {
		probeCache = filepath.Join(fnDir, "probe-cache")
		var wasm []byte
		if wasm, probeCacheErr = os.ReadFile(filepath.Join(fnDir, functions.Probe)); probeCacheErr == nil {
			_, _, probeCacheErr = CompileToCache(context.Background(), wasm, probeCache, Config{})
		}
	})
	if probeCacheErr != nil {
		tb.Fatal(probeCacheErr)
	}
	return probeCache
}
