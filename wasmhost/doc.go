// Package wasmhost runs WebAssembly (WASI preview 1) modules with wazero:
// it checks and compiles modules, caches their native code, runs `_start`
// once (run mode, Module.Run) or once per invocation in a fresh instance
// (function mode, Invoker, an abi.Invoker), limits memory and output, and
// gives the guest a view of the file system with Nebula's own files hidden
// (GuestFS). It knows nothing of containerd: the shim and the host program
// (internal/hostcmd) put it to use.
//
// Typical use, as the host program inside a container does it:
//
//	host, _ := wasmhost.New(ctx, wasmhost.NewConfig().
//		WithCacheDir(cacheDir).       // read-only, filled by CompileToCache
//		WithMemoryLimit(128 << 20))
//	defer host.Close(ctx)
//	mod, err := host.Compile(ctx, wasm) // err names the reason: prefix the path
//	fsys, _ := wasmhost.NewGuestFS("/", wasmhost.DefaultHiddenPath)
//	code, err := mod.Run(ctx, wasmhost.RunConfig{
//		Args: append([]string{path}, args...), Env: os.Environ(), Dir: wd,
//		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, FS: fsys,
//	})
//
// The rest of this comment records choices that are not obvious from the
// code.
//
// # Why wazero v1.11.0
//
// v1.12.0 regressed Go guests: instantiating a Go wasip1 module allocates per
// data segment per instantiation (extended-const support in applyData), 36k
// allocations and 1.4 ms against 1.9k and 0.6 ms on v1.11.0; a whole
// invocation went from 1.7 ms to 2.2 ms. Function mode instantiates per
// invocation, so that is the number that matters. v1.12.0 also mishandles a
// module compiled in one Runtime and instantiated in another sharing a cache;
// wasmhost compiles each Module in its own Runtime anyway. Re-measure with
// the benchmarks here before upgrading: the cache format (below) is
// internal to wazero and version-specific.
//
// # Compilation cache
//
// The shim compiles each module once, at Create, into a directory of its
// own (CompileToCache, run by `nebula-host compile` in the task's cgroups);
// the host inside the container opens that directory read-only
// (Config.WithCacheDir) and holds it (HoldCacheEntry) so that PruneCache
// leaves it alone. CompileToCache reports a failing directory as ErrCache,
// never as an invalid module. What wazero v1.11.0 does
// with a file cache, measured by the tests here:
//
//   - NewCompilationCacheWithDir creates the directory and a
//     "wazero-<version>-<arch>-<os>" directory in it. On a read-only file
//     system where they do not exist yet it fails ("read-only file system").
//   - A missing entry: wazero compiles, then writes the entry (temporary file
//     and rename). In a read-only directory that write fails and so does
//     CompileModule: wazero does not fall back.
//   - A corrupt entry fails CompileModule ("compilationcache: checksum
//     mismatch", "invalid magic number", "error reading executable"); wazero
//     neither deletes nor recompiles it. Only an entry of another wazero
//     version is deleted and recompiled.
//   - wazero's CRC-32 covers the native code only. A flipped byte in the
//     entry's function offset table is loaded without complaint: the module
//     would jump into the middle of its code. A corrupt function count makes
//     wazero allocate a table of that many entries (up to 32 GiB).
//
// So wasmhost never hands wazero an entry it has not verified:
// CompileToCache writes the SHA-256 of every entry to ManifestName, and
// Compile loads through the file cache only when every recorded entry
// matches; otherwise (no manifest, missing or corrupt entry) it compiles in
// memory without touching the directory, and if wazero still fails with a
// verified entry it compiles again without the cache. Hashing a Go module's
// 11 MB entry costs about 10 ms, against 0.5 to 2.5 s to compile it. Module.CacheHit and CacheDetail report the outcome; the
// directory is per module, so "the directory verified and Compile added
// nothing to it" is a hit.
//
// Entries are native code the host maps executable: the directory must be
// writable only by the shim. The manifest protects against corruption, not
// against someone who can write the directory.
//
// # Memory limit
//
// Config.WithMemoryLimit is not passed to wazero's WithMemoryLimitPages.
// wazero refuses a memory.grow past that limit before asking the memory
// allocator, and leaves no trace: a Go guest that hits it prints "fatal
// error: out of memory" and exits 2, typically with its memory 8 pages or
// more below the limit (it grows by whole heap chunks), so "memory within a
// page of the limit" does not recognise it. Instead each instance's memory is
// backed by an experimental.MemoryAllocator (linearMemory) that refuses to
// grow past the limit and records that it did. A guest that then exits
// non-zero or traps is reported as having hit the memory limit
// (ExitCodeMemoryLimit, abi.ErrMemoryLimit); one that copes and exits 0 is
// not. A module whose minimum memory exceeds the limit is rejected by Check
// and Compile (ErrMemoryMinimum).
//
// # Exit codes
//
// A wasm task should read like a container task, so Module.Run maps
// outcomes to the codes a shell reports for a process: the guest's own
// proc_exit code; 134 (128+SIGABRT, an aborted program) for a trap; 137
// (128+SIGKILL, an OOM-killed container) for the memory limit; 128+N when
// stopped by signal N (the caller cancels the run's context with a
// *SignalError cause); 124 (timeout(1)) for a deadline. Traps and the memory
// limit also print one "nebula: ..." line on the guest's stderr, since the
// exit code alone is ambiguous with a guest that exits 134 itself.
//
// # Stopping guests: contexts and sleeps
//
// Every Runtime has WithCloseOnContextDone(true): without it a spinning
// guest cannot be stopped and blocks the whole process at the next garbage
// collection. It makes tight loops slower (wazero issue #2466), a price paid
// for being able to stop them. Sleeps are not covered by it: wazero's
// poll_oneoff calls the module's sys.Nanosleep, which ignores the context
// (WithSysNanosleep is a plain time.Sleep). Run and Invoke pass a sleep that
// returns early when the run's context is done, so a guest sleeping an hour
// stops within milliseconds of a cancel. A guest blocked reading a pipe
// cannot be interrupted (the read is a plain blocking read): Invoke feeds
// stdin from memory, and the host program exits on its own 200 ms after a
// signal if the guest has not stopped.
//
// Clocks and randomness are the host's (WithSysWalltime, WithSysNanotime,
// crypto/rand.Reader): wazero's defaults are fake clocks and a deterministic
// random source, right for reproducible tests, wrong for a server.
//
// # Hiding Nebula's files by identity
//
// The host runs inside the container, so the guest's "/" is the container's
// "/" and the kernel already keeps path resolution inside the container's
// root. What must not be visible is Nebula's own files, mounted in the
// container at /dev/.nebula: the host binary and the module's cache.
// wazero refuses lexical ".." and absolute symbolic link targets, but a guest
// with a writable /tmp can still create "/tmp/x -> ../dev/.nebula/nebula-host",
// or a link to "/dev" and walk through it; any check on the name the guest
// passes is defeated by symbolic links, and a check on the resolved name by
// a rename between the check and the open. GuestFS therefore records the
// (device, inode) of every hidden object once, at startup, and checks the
// identity of what the kernel actually opened (fstat on the new file
// descriptor) before handing it to the guest; stat and lstat results and
// directory listings are filtered the same way. Mount points are listed with
// the inode they cover, so listings also filter by (directory identity,
// name). Operations on paths (mkdir, rename, unlink...) are checked before
// they run, which is not race-free; the hidden paths are read-only mounts,
// which the kernel protects.
//
// # Function mode allocations
//
// Invoker keeps per-invocation state (stdin reader, stdout buffer, the
// wazero ModuleConfig bound to them, the memory allocator) in pooled slots,
// so an invocation allocates little beyond what wazero needs to instantiate
// the module; each environment variable a request adds costs a copy of the
// ModuleConfig (wazero's configuration is immutable). See the benchmarks.
package wasmhost
