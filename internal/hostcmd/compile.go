package hostcmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"syscall"
	"time"

	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// Exit codes of `nebula-host compile`, which the shim reads.
const (
	// ExitCompileInvalid: the module is invalid or exceeds a compile limit;
	// stderr holds the reason.
	ExitCompileInvalid = 1
	// ExitCompileCache: the module is valid but the cache directory failed
	// (full, I/O error); stderr holds the reason.
	ExitCompileCache = 3
	// ExitCompileMemory: compiling exceeded --max-memory.
	ExitCompileMemory = 4
)

// CompileResult is what `nebula-host compile` prints on stdout, as JSON,
// when it succeeds.
type CompileResult struct {
	Hit     bool    `json:"hit"`
	Seconds float64 `json:"seconds"`
}

// compile is `nebula-host compile [--cache DIR] [--memory-limit BYTES]
// [--max-memory BYTES] < MODULE`: the shim's compile of a module at Create,
// in a process of its own so that it can be bounded in time (the shim kills
// it), memory (--max-memory) and accounted to the task (the shim moves it
// into the container's cgroups before sending the module). With --cache it
// fills DIR as wasmhost.CompileToCache does; without, it only validates the
// module (wasmhost.Check). The module is read from stdin, so that nothing
// runs before the shim has placed the process. It drops every capability
// first (root's ownership of the cache directory is all it needs); the shim
// starts it in a network namespace of its own.
func compile(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("nebula-host compile", flag.ContinueOnError)
	flags.SetOutput(stderr)
	cacheDir := flags.String("cache", "", "cache `DIR` to fill (without it, only validate)")
	memLimit := flags.String("memory-limit", "0", "the task's memory limit per instance in `BYTES`, checked against the module's minimum")
	maxMemory := flags.String("max-memory", "0", "exit "+fmt.Sprint(ExitCompileMemory)+" once this process uses more than `BYTES` (0: no bound)")
	if err := flags.Parse(args); err != nil {
		return ExitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, format+"\n", a...)
		return code
	}
	limit, err := oci.ParseSize(*memLimit)
	if err != nil {
		return fail(ExitUsage, "--memory-limit %q: %v", *memLimit, err)
	}
	bound, err := oci.ParseSize(*maxMemory)
	if err != nil {
		return fail(ExitUsage, "--max-memory %q: %v", *maxMemory, err)
	}
	if err := dropPrivileges(); err != nil && !errors.Is(err, syscall.ENOTSUP) { // ENOTSUP: a cgo build (tests)
		return fail(ExitHostError, "dropping privileges: %v", err)
	}
	if bound > 0 {
		stop := boundMemory(bound, func() {
			fmt.Fprintf(stderr, "compiling needed more than the compile-memory limit of %d bytes\n", bound)
			os.Exit(ExitCompileMemory)
		})
		defer stop()
	}
	wasm, err := io.ReadAll(stdin)
	if err != nil {
		return fail(ExitHostError, "reading the module: %v", err)
	}
	ctx := context.Background()
	cfg := wasmhost.NewConfig()
	if limit > 0 {
		cfg = cfg.WithMemoryLimit(limit)
	}
	start := time.Now()
	var res CompileResult
	if *cacheDir == "" {
		err = wasmhost.Check(ctx, wasm, cfg)
	} else {
		res.Hit, _, err = wasmhost.CompileToCache(ctx, wasm, *cacheDir, cfg)
	}
	res.Seconds = time.Since(start).Seconds()
	switch {
	case errors.Is(err, wasmhost.ErrCache):
		return fail(ExitCompileCache, "%v", err)
	case err != nil:
		return fail(ExitCompileInvalid, "%v", err)
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return fail(ExitHostError, "%v", err)
	}
	return 0
}

// boundMemory calls exceeded once the process's memory passes bound: a
// watch on the Go runtime's own accounting every 10 ms, which names the
// limit, and RLIMIT_DATA (private writable memory; not RLIMIT_AS, which
// the Go runtime's address space reservations exhaust) at twice the bound
// plus 256 MiB against a burst between two looks, which makes the runtime
// die "out of memory".
func boundMemory(bound uint64, exceeded func()) (stop func()) {
	data := 2*bound + 256<<20
	syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: data, Max: data})
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > bound {
				exceeded()
				return
			}
		}
	}()
	return func() { close(done) }
}
