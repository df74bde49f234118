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
// Before anything compiles a module, Preflight (and Check, Compile and
// CompileToCache, which run it first) parses it in one pass and refuses
// what Nebula cannot run or what would make a compiler work without bound
// (the structural limits MaxFunctions, MaxFunctionBodySize, MaxLocals and
// MaxNesting). Compile loads through a cache directory only the entries
// whose checksums CompileToCache recorded (ManifestName); PruneCache and
// HoldCacheEntry manage a directory of such entries.
//
// Module.Run reports outcomes as a shell reports a process's: the guest's
// exit code; 134 for a trap; 137 for the memory limit (ExitCodeMemoryLimit);
// 128+N when stopped by signal N (cancel the run's context with a
// *SignalError cause); 124 for a deadline. Traps and the memory limit also
// print one "nebula: ..." line on the guest's stderr.
//
// The guest's world is its arguments, the task's environment, stdio and "/"
// as the only pre-opened directory, seen through GuestFS: regular files,
// directories, symbolic links and five stateless devices; every other
// object, and everything under the hidden paths, does not exist for it
// (ENOENT). Clocks and randomness are the host's, not wazero's reproducible
// defaults.
//
// A reactor (IsReactor: the module exports HandleExport) serves events
// through a ReactorInvoker instead: NewReactorInvoker initialises it once
// (data segments, start function, `_initialize`, a warm-up event; see
// Config.WithReactorWarmup) and captures its linear memory and mutable
// globals; each Invoke runs the handler in an instance in that state (a
// small snapshot restored by copying, a large one by a copy-on-write
// mapping of a sealed memfd whose written pages are copied back after the
// event): a new instance, or the one that served the previous event,
// restored in place when that event provably left nothing behind (see
// keptInstance), with the event's variables behind the host function
// ImportModule.EventEnvImport rather than in the WASI environment. To make
// that possible Compile rewrites a reactor: its mutable globals are
// exported under ReservedExportPrefix, its data and start sections are
// removed (the host applies them once); a reactor whose state a snapshot
// cannot restore (ErrSnapshot) is refused by Preflight.
//
// A snapshot repeats, in every event, whatever initialisation computed:
// for Go, the runtime's map hash seed and the state of math/rand's global
// generator (the same numbers in every event), time.Now() values and
// os.Environ() taken at initialisation. WASI random_get, and so
// crypto/rand, is fresh per event.
//
// docs/rationale.md gives the reasons for the choices here: the wazero
// release, the verified cache, the memory allocator, bounded tables, the
// structural limits, the file system rules and the reactors' snapshots.
package wasmhost
