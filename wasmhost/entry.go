package wasmhost

import (
	"context"
	"crypto/sha256"
	"os"
	"syscall"
)

// cacheEntry is what a cache directory holds for one module, found once
// before loading it: by the shim at Create (PreflightCached), by Compile
// in the host, by CompileToCache.
type cacheEntry struct {
	verified bool
	detail   string   // verifyCache's explanation
	entries  []string // listEntries, when verified
	// prepared: the prepared file was written by this build for this
	// module; final and instrumented are what it records (see
	// lookupEntry).
	prepared     bool
	final        []byte
	instrumented bool
}

// lookupEntry verifies the entry in dir and reads its prepared file for
// the module whose SHA-256 is sum: every file once. With load, the
// prepared module is kept (final), to be compiled; without, only the
// file's header is.
func lookupEntry(dir string, sum [sha256.Size]byte, load bool) *cacheEntry {
	v := verifyEntry(dir, load)
	e := &cacheEntry{verified: v.ok, detail: v.detail, entries: v.entries}
	if v.ok {
		final, instrumented, ok := decodePrepared(v.prepared, sum)
		e.prepared = ok
		if ok && load {
			e.final, e.instrumented = final, instrumented
		}
	}
	return e
}

// lookupIdleEntry is lookupEntry without load, or nil while a
// CompileToCache fills dir (it holds the directory's lock): the shim does
// not wait for it.
func lookupIdleEntry(dir string, sum [sha256.Size]byte) *cacheEntry {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	if flock(d, syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil
	}
	return lookupEntry(dir, sum, false)
}

// compiled reports whether the entry is verified and holds this build of
// wazero's compiled code, which a Host would load rather than compile.
func (e *cacheEntry) compiled() bool {
	return e != nil && e.verified && hasEntryFor(e.entries, wazeroCacheSubdir())
}

// vouches reports whether the entry proves that its module passed
// preflight with this build's checks: the prepared file, verified, names
// the module's SHA-256 and this build's wasmhost code, and CompileToCache
// writes one only after preflight accepted the module. The checks of the
// module alone would then accept it again; those that depend on a Config
// must still be made (see docs/rationale.md).
func (e *cacheEntry) vouches() bool {
	return e != nil && e.verified && e.prepared
}

// compileCached compiles the module from the verified entry e, from its
// prepared file if it has one for the module (otherwise wasm is
// finalized), and sets m.cacheDetail and m.cacheHit; it leaves m.runtime
// nil if e is not verified. An error is the cache's: Compile then
// compiles without it.
func (m *Module) compileCached(ctx context.Context, dir string, e *cacheEntry, wasm []byte) error {
	if m.cacheDetail = e.detail; !e.verified {
		return nil
	}
	final, instrumented, prepared := e.final, e.instrumented, e.final != nil
	if !prepared {
		final, instrumented = finalize(m.input(wasm))
	}
	if err := m.compile(ctx, final, instrumented, dir); err != nil {
		m.cacheDetail = "the cache failed: " + err.Error()
		return err
	}
	after, _ := listEntries(dir)
	m.cacheHit = len(after) == len(e.entries)
	m.prepared = prepared
	if !m.cacheHit {
		m.cacheDetail = "no entry for this wazero build"
	}
	return nil
}

// input is what finalize rewrites for the module wasm: wasm itself, or a
// reactor's rewrite for its snapshot.
func (m *Module) input(wasm []byte) []byte {
	if m.reactor != nil {
		return m.reactor.module()
	}
	return wasm
}
