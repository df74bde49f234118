package wasmhost

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// wazeroRelease is the wazero version go.mod requires. See docs/rationale.md for why.
const wazeroRelease = "v1.11.0"

// startFunction is the entry point of a WASI command.
const startFunction = "_start"

// Host compiles modules with one Config. It is safe for concurrent use.
type Host struct {
	cfg Config

	mu      sync.Mutex
	modules map[*Module]struct{}
	closed  bool
}

// New returns a Host compiling with cfg. A nil cfg means NewConfig().
func New(ctx context.Context, cfg Config) (*Host, error) {
	// Resolve the WASI function table now: Compile needs it.
	if _, err := wasiFunctions(); err != nil {
		return nil, fmt.Errorf("wasmhost: %w", err)
	}
	return &Host{cfg: cfg, modules: map[*Module]struct{}{}}, nil
}

// Close closes every Module the Host compiled, stopping their instances.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	mods := h.modules
	h.modules, h.closed = nil, true
	h.mu.Unlock()
	var errs []error
	for m := range mods {
		errs = append(errs, m.close(ctx))
	}
	return errors.Join(errs...)
}

// Module is a compiled module, ready to Run or to serve invocations
// (NewInvoker). It is safe for concurrent use.
type Module struct {
	host     *Host
	runtime  wazero.Runtime
	cache    wazero.CompilationCache // nil without a file cache
	compiled wazero.CompiledModule
	base     wazero.ModuleConfig

	limit       uint64 // memory limit in bytes; 0: none beyond 4 GiB
	stdoutLimit int64
	warmup      bool // see Config.WithReactorWarmup

	// reactor is the plan of a reactor module (see NewReactorInvoker);
	// nil for a command.
	reactor *reactorPlan
	// instrumented: the module checks its own deadline (instrumentDeadline);
	// deferredStart: its start function is called by the host (Module.start).
	instrumented, deferredStart bool

	cacheHit    bool
	prepared    bool // the module wazero loaded came from the entry's prepared file
	cacheDetail string
	compileTime time.Duration

	closeOnce sync.Once
	closeErr  error
}

// Compile checks wasm as Check does (without its interpreter pass) and
// compiles it to native code, with the Host's cache directory if it has one.
//
// With a cache directory, an entry verified against the checksums written
// by CompileToCache is loaded instead of compiling; a missing, stale or
// corrupt entry, or a read-only directory without an entry, makes Compile
// compile the module in memory instead, never fail. CacheHit and
// CompileTime report what happened. A verified entry also spares Compile
// rewriting the module and repeating the checks of the module alone (see
// docs/rationale.md); the checks that depend on the Config, such as the
// memory limit, are made on every call.
func (h *Host) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	start := time.Now()
	c := h.cfg
	var entry *cacheEntry
	if c.cacheDir != "" {
		entry = lookupEntry(c.cacheDir, sha256.Sum256(wasm), true)
	}
	info, err := preflightVouched(wasm, c, entry.vouches())
	if err != nil {
		return nil, err
	}
	m := &Module{host: h, stdoutLimit: c.stdout(), warmup: !c.noWarmup}
	if info.isReactor() {
		m.reactor = planReactor(wasm, info)
	}
	if pages, ok := c.limit(); ok {
		m.limit = uint64(pages) * PageSize
	}

	if entry != nil {
		err = m.compileCached(ctx, c.cacheDir, entry, wasm)
	}
	if m.runtime == nil || err != nil {
		// From the module itself: a prepared file is used only with the
		// entry it was verified with.
		final, instrumented := finalize(m.input(wasm))
		m.prepared = false
		if err = m.compile(ctx, final, instrumented, ""); err != nil {
			m.close(ctx)
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if m.cacheHit {
		m.cacheDetail = "hit"
	}

	m.base = baseModuleConfig()
	m.compileTime = time.Since(start)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		m.close(ctx)
		return nil, errors.New("wasmhost: host closed")
	}
	h.modules[m] = struct{}{}
	return m, nil
}

// baseModuleConfig is the configuration every instance of a Module starts
// from.
func baseModuleConfig() wazero.ModuleConfig {
	return wazero.NewModuleConfig().
		WithName("").         // anonymous: instances may run concurrently
		WithStartFunctions(). // _start is called explicitly, see Run
		WithSysWalltime().
		WithSysNanotime().
		WithOsyield(runtime.Gosched).
		WithRandSource(rand.Reader)
}

// compile compiles final (see compileFinal) into a new Runtime, with the
// file cache in cacheDir unless it is empty.
func (m *Module) compile(ctx context.Context, final []byte, instrumented bool, cacheDir string) (err error) {
	m.instrumented = instrumented
	m.runtime, m.cache, m.compiled, err = compileFinal(ctx, final, instrumented, cacheDir)
	if err == nil && instrumented {
		// instrumentDeadline refuses a module exporting the name itself.
		_, m.deferredStart = m.compiled.ExportedFunctions()[deferredStartExport]
	}
	return
}

// compileFinal compiles final, a module as finalize returned it (with
// instrumented, whether its deadline checks were added), into a new
// Runtime.
func compileFinal(ctx context.Context, final []byte, instrumented bool, cacheDir string) (r wazero.Runtime, cc wazero.CompilationCache, cm wazero.CompiledModule, err error) {
	wasm := final
	// The memory limit is enforced by linearMemory, not by
	// WithMemoryLimitPages: wazero refuses to grow past its limit before
	// asking the allocator, which leaves no trace (docs/rationale.md).
	// wazero's own deadline checks only for a module that could not be
	// instrumented (see instrumentDeadline).
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(!instrumented)
	if cacheDir != "" {
		if cc, err = wazero.NewCompilationCacheWithDir(cacheDir); err != nil {
			return nil, nil, nil, err
		}
		rc = rc.WithCompilationCache(cc)
	}
	r = wazero.NewRuntimeWithConfig(ctx, rc)
	if cm, err = r.CompileModule(ctx, wasm); err == nil {
		err = instantiateWASI(ctx, r)
	}
	if err == nil {
		err = instantiateReactorImports(ctx, r)
	}
	if err != nil {
		r.Close(ctx)
		if cc != nil {
			cc.Close(ctx)
		}
		return nil, nil, nil, err
	}
	return r, cc, cm, nil
}

// IsReactor reports whether the module is a reactor (see IsReactor): it
// serves events through NewReactorInvoker, and cannot Run.
func (m *Module) IsReactor() bool { return m.reactor != nil }

// CacheHit reports whether Compile loaded the module from the cache
// directory rather than compiling it.
func (m *Module) CacheHit() bool { return m.cacheHit }

// CacheDetail explains CacheHit for logs: "hit", "no cache directory",
// "no entry", "corrupt entry: ..." and so on.
func (m *Module) CacheDetail() string {
	if m.cacheDetail == "" {
		return "no cache directory"
	}
	return m.cacheDetail
}

// CompileTime is how long Compile took, checks and cache included.
func (m *Module) CompileTime() time.Duration { return m.compileTime }

// Close releases the compiled code. Running instances are stopped.
func (m *Module) Close(ctx context.Context) error {
	if h := m.host; h != nil {
		h.mu.Lock()
		delete(h.modules, m)
		h.mu.Unlock()
	}
	return m.close(ctx)
}

func (m *Module) close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		if m.runtime != nil {
			m.closeErr = m.runtime.Close(ctx)
		}
		if m.cache != nil {
			m.closeErr = errors.Join(m.closeErr, m.cache.Close(ctx))
		}
	})
	return m.closeErr
}
