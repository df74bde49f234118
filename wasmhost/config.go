package wasmhost

// PageSize is the size of a WebAssembly memory page: 64 KiB.
const PageSize = 65536

// maxPages is the most pages a 32-bit linear memory can have (4 GiB).
const maxPages = 65536

// DefaultStdoutLimit is the default cap on what one invocation (Invoker) may
// write to stdout: 16 MiB.
const DefaultStdoutLimit = 16 << 20

// Config controls a Host: how it compiles, caches and limits modules.
//
// Config is an immutable value. Each WithXXX method returns a copy with the
// corresponding change, so a base configuration can be shared by
// goroutines and derived from safely:
//
//	cfg := wasmhost.NewConfig().WithMemoryLimit(64 << 20)
//	host, err := wasmhost.New(ctx, cfg.WithCacheDir(dir))
//
// # Notes
//
//   - The zero value is valid and is the same as NewConfig(): every
//     default is documented on its method.
type Config struct {
	cacheDir       string
	limitPages     uint32 // 0 means no limit beyond wazero's
	stdoutLimit    int64  // <= 0 means no limit; only when stdoutLimitSet
	stdoutLimitSet bool
	noWarmup       bool
}

// NewConfig returns a Config with the defaults documented on each method.
func NewConfig() Config { return Config{} }

// WithCacheDir uses dir as the compilation cache of the modules the Host
// compiles. Defaults to "": no file cache, every Compile compiles.
//
// The directory is meant to hold the cache of a single module, and may be
// read-only: Compile then only reads it. Entries are verified against a
// checksum file written by CompileToCache; a missing, stale or corrupt
// entry makes Compile compile the module instead (Module.CacheHit
// reports false), never fail. See CompileToCache and docs/rationale.md.
func (c Config) WithCacheDir(dir string) Config {
	c.cacheDir = dir
	return c
}

// WithMemoryLimit caps the linear memory of each instance at limit
// bytes, rounded down to a whole number of 64 KiB pages. Defaults to 0:
// wazero's default, 4 GiB (65536 pages), the most a 32-bit memory can
// address. A limit of 4 GiB or more is the same as 0.
//
// A module whose minimum memory exceeds the limit fails Compile and
// Check. A guest that dies after the limit refused to grow its memory
// exits with ExitCodeMemoryLimit (Module.Run) or abi.ErrMemoryLimit
// (Invoker).
func (c Config) WithMemoryLimit(limit uint64) Config {
	switch pages := limit / PageSize; {
	case limit == 0 || pages >= maxPages:
		c.limitPages = 0
	case pages == 0: // under one page: no memory at all
		c.limitPages = limitZeroPages
	default:
		c.limitPages = uint32(pages)
	}
	return c
}

// limitZeroPages marks a limit below one page: no memory at all. It cannot
// be 0, which means "no limit".
const limitZeroPages = ^uint32(0)

// limit returns the memory limit in pages, and whether there is one.
func (c Config) limit() (pages uint32, ok bool) {
	switch c.limitPages {
	case 0:
		return maxPages, false
	case limitZeroPages:
		return 0, true
	default:
		return c.limitPages, true
	}
}

// WithStdoutLimit caps what one invocation (see NewInvoker) may write to
// stdout, in bytes. Defaults to DefaultStdoutLimit. Zero or negative
// means no limit. Module.Run does not capture stdout and ignores it.
func (c Config) WithStdoutLimit(limit int64) Config {
	c.stdoutLimit, c.stdoutLimitSet = limit, true
	return c
}

// stdout returns the stdout limit, <= 0 for none.
func (c Config) stdout() int64 {
	if !c.stdoutLimitSet {
		return DefaultStdoutLimit
	}
	return c.stdoutLimit
}

// WithReactorWarmup controls whether NewReactorInvoker calls a reactor's
// handler once, with an empty event (no data, no variables, its output
// discarded), after `_initialize` and before it captures the snapshot.
// Defaults to true: the first call of a Go handler does work (type caches,
// the scheduler's first switch to the handler's goroutine) that every
// event would otherwise repeat (docs/rationale.md). Should the warm-up
// event fail, the snapshot is taken without it.
func (c Config) WithReactorWarmup(on bool) Config {
	c.noWarmup = !on
	return c
}
