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

	"nebula.dev/nebula/internal/hostargs"
	"nebula.dev/nebula/wasmhost"
)

// compile is `nebula-host compile [--cache DIR] [--memory-limit BYTES]
// [--max-memory BYTES] < MODULE` (hostargs.Compile): the shim's compile of a module at Create,
// in a process of its own so that it can be bounded in time (the shim kills
// it), memory (--max-memory) and accounted to the task (the shim moves it
// into the container's cgroups before sending the module). With --cache it
// fills DIR as wasmhost.CompileToCache does; without, it only validates the
// module (wasmhost.Check). The module is read from stdin, so that nothing
// runs before the shim has placed the process. It drops every capability
// first (root's ownership of the cache directory is all it needs); the shim
// starts it in a network namespace of its own.
func compile(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := hostargs.ParseCompile(args)
	if errors.Is(err, flag.ErrHelp) {
		hostargs.CompileUsage(stderr)
		return 0
	} else if err != nil {
		fmt.Fprintln(stderr, err)
		hostargs.CompileUsage(stderr)
		return ExitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, format+"\n", a...)
		return code
	}
	if err := dropPrivileges(); err != nil && !errors.Is(err, syscall.ENOTSUP) { // ENOTSUP: a cgo build (tests)
		return fail(ExitHostError, "dropping privileges: %v", err)
	}
	if bound := c.MaxMemory; bound > 0 {
		stop := boundMemory(bound, func() {
			fmt.Fprintf(stderr, "compiling needed more than the compile-memory limit of %d bytes\n", bound)
			os.Exit(hostargs.ExitCompileMemory)
		})
		defer stop()
	}
	wasm, err := io.ReadAll(stdin)
	if err != nil {
		return fail(ExitHostError, "reading the module: %v", err)
	}
	ctx := context.Background()
	cfg := wasmhost.NewConfig()
	if c.MemoryLimit > 0 {
		cfg = cfg.WithMemoryLimit(c.MemoryLimit)
	}
	start := time.Now()
	var res hostargs.CompileResult
	if c.CacheDir == "" {
		err = wasmhost.Check(ctx, wasm, cfg)
	} else {
		res.Hit, _, err = wasmhost.CompileToCache(ctx, wasm, c.CacheDir, cfg)
	}
	res.Seconds = time.Since(start).Seconds()
	switch {
	case errors.Is(err, wasmhost.ErrCache):
		return fail(hostargs.ExitCompileCache, "%v", err)
	case err != nil:
		return fail(hostargs.ExitCompileInvalid, "%v", err)
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
