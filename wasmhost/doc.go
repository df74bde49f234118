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
// linearMemory keeps the guest's memory out of the Go heap: a reservation
// of address space (mmap PROT_NONE, MAP_NORESERVE) the size of the limit,
// made readable and writable in place as the guest grows (mprotect), and
// reset between invocations: the first 8 MiB the guest could have touched
// are cleared and stay resident (faulting them in again costs more than
// clearing them), the rest is given back with madvise(MADV_DONTNEED) and
// reads as zeros. Growing with append, as before, held the old and the new
// buffer at once and left both to the garbage collector: one guest growing
// to a 64 MiB limit took the host to 263 MB of RSS; now it takes 64 MiB
// plus the host's own ~13 MB, and all but 8 MiB go back to the kernel when
// the invocation ends. wazero only
// requires a fixed address of shared memories; the mapping gives it to
// every memory, so growth never copies.
//
// # Tables
//
// wazero keeps a table as a Go slice of 8-byte references and grows it
// with append, with no hook to limit it: a module whose table has no
// maximum could grow it to 2^32-1 elements. Compilation therefore gives
// every table without a maximum (Go's wasip1 modules have none), or with
// one above TableElementsMax, the maximum max(minimum, TableElementsMax) in
// the module's bytes; table.grow past it returns -1. MemoryNeeds reports
// what the tables can cost, for the shim's memory budget (oci.PlanMemory).
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
// # What a guest may open
//
// The host runs inside the container, so the guest's "/" is the container's
// "/". That root also holds the host's own world: /proc/self/mem is the
// host's memory (a guest that wrote to it overwrote the host's code, and in
// function mode one event took over the server of every other event),
// /proc/self/mountinfo its mounts, /proc/self/exe its program, /sys and the
// device nodes the kernel, and /dev/.nebula Nebula's files (the host binary,
// the module's cache). GuestFS therefore gives the guest a WASI world, not
// the container's: regular files, directories, symbolic links and five
// stateless devices (see GuestFS for the exact rule). Every other object
// does not exist for the guest: ENOENT, whatever the operation, and absent
// from listings, so that "ls /" does not show what cannot be opened. Making
// something where such an object is reports EACCES, since "does not exist"
// would invite creating it.
//
// The decision is made on what an object is, never on its name: any check
// on a name is defeated by symbolic links the guest creates, by "..", by
// hard links, and by a rename between the check and the use. GuestFS
// resolves every path with openat2(2) below a descriptor of the root, with
// RESOLVE_IN_ROOT (".." and absolute links stay inside the root, whichever
// directory it is) and RESOLVE_NO_MAGICLINKS (/proc/self/fd/N,
// /proc/self/root, /proc/self/exe are never followed), gets an O_PATH
// descriptor (which opens nothing: no device driver runs, no FIFO blocks),
// and inspects that descriptor: statx for its type, device number, inode and
// mount, fstatfs for its file system. Only then is it opened for the guest,
// through /proc/self/fd/N, which reaches exactly the inspected object. The
// checks are race-free because they are made on the handle that is used.
//
// Special file systems are recognised two ways: by statfs magic number on
// every handle (proc, sysfs, cgroup, ... wherever they are mounted), and by
// mount: NewGuestFS reads the mount table once and refuses every mount of a
// special type and every mount below one, which catches what runtimes
// mount over /proc (runc masks /proc/kcore with /dev/null and /proc/acpi
// with an empty tmpfs; lxcfs puts FUSE files over /proc/meminfo). The same
// table names the mount points that listings leave out.
//
// Nebula's own files are refused by identity: NewGuestFS records the
// (device, inode) of everything under the hidden paths once, at startup.
// Mount points are listed with the inode they cover, so listings also
// filter by (directory identity, name).
//
// Operations on names in a directory (mkdir, rename, link, unlink) open
// and check the directory, then act on the name relative to it, so they
// cannot reach outside what the guest may see. Whether the name itself is
// refused is checked just before acting, which is not race-free; but the
// guest can neither make device nodes nor mount, so the worst a race can do
// is unlink or rename an entry of a directory it may write anyway.
//
// Errors are made consistent by a slow path that runs only when the kernel
// refuses a resolution (ELOOP from a magic link, EACCES from /proc/1/...):
// GuestFS walks the path itself and answers ENOENT if the walk enters
// anything refused.
//
// The rest of the guest's world is small and fixed: its arguments and the
// task's environment (nothing of the host's is added), stdin, stdout and
// stderr, and "/" as the only pre-opened directory. No socket is
// pre-opened, so sock_accept has nothing to accept (EBADF).
//
// # Function mode allocations
//
// Invoker keeps per-invocation state (stdin reader, stdout buffer, the
// wazero ModuleConfig bound to them, the memory allocator and its mapping)
// in slots on a free list, so an invocation allocates little beyond what
// wazero needs to instantiate the module; each environment variable a
// request adds costs a copy of the ModuleConfig (wazero's configuration is
// immutable). There are as many slots as invocations ever ran at once. See
// the benchmarks.
package wasmhost
