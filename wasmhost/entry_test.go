package wasmhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"nebula.dev/nebula/test/functions"
)

// TestEntryVouches: an entry CompileToCache wrote vouches for its module
// and for no other; the parse of a vouched module skips the function
// bodies (the code walk, 90% of a Go module's parse) and yields everything
// else a load needs, for a command and a reactor alike: a reactor's plan
// from it rewrites the module to the same bytes.
func TestEntryVouches(t *testing.T) {
	for _, name := range []string{functions.Hello, functions.Reactor, functions.ReactorState, functions.Probe} {
		t.Run(name, func(t *testing.T) {
			wasm := wasmFile(t, name)
			dir := cacheWith(t, name, wasm)
			for _, load := range []bool{false, true} {
				e := lookupEntry(dir, sha256.Sum256(wasm), load)
				if !e.vouches() || !e.compiled() || (e.final != nil) != load {
					t.Fatalf("entry of %s, load %v: vouches %v, compiled %v (%s), %d bytes loaded; want both, and the module if loaded",
						name, load, e.vouches(), e.compiled(), e.detail, len(e.final))
				}
				if other := lookupEntry(dir, sha256.Sum256(append(wasm, 0)), load); other.vouches() || !other.compiled() || other.final != nil {
					t.Fatalf("entry for another module, load %v: vouches %v, compiled %v; want only compiled", load, other.vouches(), other.compiled())
				}
			}

			full, err := preflight(wasm, Config{})
			if err != nil {
				t.Fatal(err)
			}
			vouched, err := preflightVouched(wasm, Config{}, true)
			if err != nil {
				t.Fatal(err)
			}
			if full.code.functions == 0 || !reflect.DeepEqual(vouched.code, codeStats{}) {
				t.Fatalf("code stats: full %+v, vouched %+v; want the bodies walked only without a vouch", full.code, vouched.code)
			}
			for _, f := range []struct {
				name          string
				full, vouched any
			}{
				{"types", full.types, vouched.types}, {"imports", full.imports, vouched.imports},
				{"funcTypes", full.funcTypes, vouched.funcTypes}, {"memories", full.memories, vouched.memories},
				{"tables", full.tables, vouched.tables}, {"exports", full.exports, vouched.exports},
				{"globals", full.globals, vouched.globals}, {"start", full.start, vouched.start},
				{"sections", full.sections, vouched.sections}, {"importsOf", full.importsOf, vouched.importsOf},
			} {
				if !reflect.DeepEqual(f.full, f.vouched) {
					t.Errorf("%s: full parse %v, vouched %v", f.name, f.full, f.vouched)
				}
			}
			if !full.isReactor() {
				return
			}
			if !reflect.DeepEqual(full.data, vouched.data) {
				t.Errorf("a reactor's data segments: full parse %d, vouched %d", len(full.data), len(vouched.data))
			}
			if p, q := planReactor(wasm, full), planReactor(wasm, vouched); !bytes.Equal(p.module(), q.module()) || !reflect.DeepEqual(p.globals, q.globals) {
				t.Error("the reactor's plan differs after a vouched parse")
			}
		})
	}
}

// TestVouchedRefusesOthers: an entry vouches for its own module only. A
// module refused by a check of the module alone (nesting over MaxNesting)
// is refused with the same error by Compile and by the shim's
// PreflightCached when the cache directory holds the entry of a module
// that differs from it by one block, as it is without a cache.
func TestVouchedRefusesOthers(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	if _, _, err := CompileToCache(ctx, functions.NestedBlocks(MaxNesting, 1), dir, Config{}); err != nil {
		t.Fatal(err)
	}
	hostile := functions.NestedBlocks(MaxNesting+1, 1)
	_, want := preflight(hostile, Config{})
	if !errors.Is(want, ErrTooLarge) {
		t.Fatalf("preflight: %v, want ErrTooLarge", want)
	}
	if _, err := newHost(t, NewConfig().WithCacheDir(dir)).Compile(ctx, hostile); err == nil || err.Error() != want.Error() {
		t.Errorf("Compile with the neighbour's entry: %v; want %v", err, want)
	}
	if _, _, _, hit, err := PreflightCached(hostile, sha256.Sum256(hostile), Config{}, dir); hit || err == nil || err.Error() != want.Error() {
		t.Errorf("PreflightCached with the neighbour's entry: hit %v, %v; want %v", hit, err, want)
	}
}
