// Package hostcmd is Nebula's host program, nebula-host: the process a wasm
// task's container runs instead of the module. The shim rewrites the task's
// OCI spec so that the container's process is
//
//	/dev/.nebula/nebula-host [--cache DIR] [--memory-limit BYTES] [--hide PATH]... -- MODULE [ARGS...]
//
// and nebula-host runs MODULE's `_start` with wazero (package wasmhost):
// arguments MODULE ARGS..., the container's environment and working
// directory, its own stdio, the container's file system minus the hidden
// paths. It exits with the guest's exit code.
//
//   - --cache DIR: the module's compilation cache, filled by the shim with
//     wasmhost.CompileToCache and mounted read-only. Optional; a missing or
//     corrupt cache only costs a compile.
//   - --memory-limit BYTES: per-instance memory limit (Ki, Mi, Gi, Ti suffixes).
//   - --heap-limit BYTES: the host's own soft memory limit (Go's
//     GOMEMLIMIT, which wins if set); --stdout-limit BYTES: what one
//     invocation may write to stdout. The shim derives both, with the
//     memory limit and the concurrency, from the container's memory limit
//     (oci.PlanMemory).
//   - --hide PATH: hidden from the guest, with everything under it
//     (repeatable; default /dev/.nebula). The shim should mount the host
//     binary and the cache under /dev/.nebula.
//
// `nebula-host compile` is the shim's compile of a module at Create, in a
// process of its own (see compile.go).
//
// It runs as PID 1 of the container's pid namespace: it handles SIGTERM,
// SIGINT, SIGHUP and SIGQUIT explicitly (PID 1 gets no default action for
// them), exits 128+signal at most StopGrace after one even if the guest is
// blocked reading stdin, and reaps orphaned processes.
package hostcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// Exit codes of the host itself, before the guest runs, following the
// shell's conventions (and runc's, for a missing or unusable executable).
const (
	// ExitUsage: bad flags.
	ExitUsage = 2
	// ExitHostError: the host could not set up the guest.
	ExitHostError = 125
	// ExitCannotRun: MODULE is not a module Nebula can run (the error names
	// why), or cannot be read.
	ExitCannotRun = 126
	// ExitNotFound: MODULE does not exist.
	ExitNotFound = 127
)

// StopGrace is how long the host waits, after a stop signal, for the guest
// to stop before exiting anyway. A guest blocked reading a pipe cannot be
// interrupted.
const StopGrace = 200 * time.Millisecond

// stopSignals are the signals that stop the guest.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// Main runs the host program with args as os.Args (args[0] is the program
// name) and returns its exit code: the guest's (see wasmhost.Module.Run for
// traps, the memory limit and signals), or one of the Exit* constants if the
// guest could not run. Exit codes outside 0-255 (a guest may pass any
// 32-bit value to proc_exit) become 255, not their low byte, so that a
// failure never reads as success.
func Main(args []string) int {
	if code, ran := supervise(args); ran {
		return code
	}
	if len(args) > 1 && args[1] == "compile" {
		return compile(args[2:], os.Stdin, os.Stdout, os.Stderr)
	}
	// Signals first: as PID 1 of a pid namespace, the host gets no default
	// action for signals it does not handle: an unhandled SIGTERM would be
	// ignored.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	limitThreads()

	code := run(args, os.Stdin, os.Stdout, os.Stderr, sigs)
	if code < 0 || code > 255 {
		code = 255
	}
	return code
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	name := "nebula-host"
	if len(args) > 0 {
		name = filepath.Base(args[0])
		args = args[1:]
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "nebula: "+format+"\n", a...)
		return code
	}

	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.SetOutput(stderr)
	cacheDir := flags.String("cache", "", "read-only compilation cache `DIR` of the module (optional)")
	memLimit := flags.String("memory-limit", "0", "memory limit per instance in `BYTES` (suffix Ki, Mi, Gi or Ti allowed; 0: 4 GiB)")
	heapLimit := flags.String("heap-limit", "0", "the host's own soft memory limit in `BYTES` (GOMEMLIMIT, which wins; 0: none)")
	stdoutLimit := flags.String("stdout-limit", strconv.Itoa(wasmhost.DefaultStdoutLimit), "what one invocation may write to stdout, in `BYTES` (function mode)")
	mode := flags.String("mode", "run", "`run` the module once, or serve events as a `function`")
	runtime := flags.String("runtime", "wasm", "what runs the guest: `wasm`, or (function mode) `process`")
	var fn functionFlags
	fn.register(flags)
	var hide stringList
	flags.Var(&hide, "hide", "hide `PATH` and everything under it from the guest (repeatable; default "+wasmhost.DefaultHiddenPath+")")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s [flags] -- MODULE [ARGS...]\n", name)
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return ExitUsage
	}
	if flags.NArg() == 0 {
		flags.Usage()
		return ExitUsage
	}
	limit, err := oci.ParseSize(*memLimit)
	if err != nil {
		return fail(ExitUsage, "--memory-limit %q: %v", *memLimit, err)
	}
	heap, err := oci.ParseSize(*heapLimit)
	if err != nil {
		return fail(ExitUsage, "--heap-limit %q: %v", *heapLimit, err)
	}
	outLimit, err := oci.ParseSize(*stdoutLimit)
	if err != nil || outLimit > 1<<62 {
		return fail(ExitUsage, "--stdout-limit %q: want bytes", *stdoutLimit)
	}
	setHeapLimit(heap)
	if len(hide) == 0 {
		hide = stringList{wasmhost.DefaultHiddenPath}
	}
	module, guestArgs := flags.Arg(0), flags.Args()
	// As PID 1, reap orphans; with a process per event, without taking
	// the exit statuses of the invocations' supervisors.
	if os.Getpid() == 1 {
		stop := reapOrphansOf(*runtime)
		defer stop()
	}
	switch {
	case *mode == "function" && *runtime == "process":
		return serveFunction(&fn, spawnInvoker(guestArgs), nil, stderr, sigs)
	case *mode != "run" && *mode != "function":
		return fail(ExitUsage, "--mode %q: want run or function", *mode)
	case *runtime != "wasm":
		return fail(ExitUsage, "--runtime %q: want wasm (or process in function mode)", *runtime)
	}

	wasm, err := os.ReadFile(module)
	if errors.Is(err, fs.ErrNotExist) {
		return fail(ExitNotFound, "%s: no such file", module)
	} else if err != nil {
		return fail(ExitCannotRun, "%v", err)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	cfg := wasmhost.NewConfig().WithMemoryLimit(limit).WithStdoutLimit(int64(outLimit))
	if *cacheDir != "" {
		cfg = cfg.WithCacheDir(*cacheDir)
		// While the task runs, the shim does not evict its cache entry.
		if release, err := wasmhost.HoldCacheEntry(*cacheDir); err == nil {
			defer release()
		}
	}
	host, err := wasmhost.New(ctx, cfg)
	if err != nil {
		return fail(ExitHostError, "%v", err)
	}
	// No host.Close: the process exits, and a guest that outlives a stop
	// signal (blocked reading stdin) must not be waited for.
	mod, err := host.Compile(ctx, wasm)
	if err != nil {
		return fail(ExitCannotRun, "%s: %v", module, err)
	}
	root, err := wasmhost.NewGuestFS("/", hide...)
	if err != nil {
		return fail(ExitHostError, "%v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		wd = "/"
	}
	if *mode == "function" {
		inv := wasmhost.NewInvoker(mod, wasmhost.RunConfig{Args: guestArgs, Env: os.Environ(), Dir: wd, FS: root})
		return serveFunction(&fn, inv, mod, stderr, sigs)
	}

	done := make(chan int, 1)
	go func() {
		code, err := mod.Run(ctx, wasmhost.RunConfig{
			Args:   guestArgs,
			Env:    os.Environ(),
			Dir:    wd,
			Stdin:  stdin,
			Stdout: stdout,
			Stderr: stderr,
			FS:     root,
		})
		if err != nil {
			code = fail(ExitHostError, "%s: %v", module, err)
		}
		done <- code
	}()

	var grace <-chan time.Time
	var stopCode int
	for {
		select {
		case code := <-done:
			return code
		case sig := <-sigs:
			if grace != nil {
				continue // already stopping
			}
			s, _ := sig.(syscall.Signal)
			stopCode = wasmhost.ExitCodeSignalBase + int(s)
			cancel(&wasmhost.SignalError{Signal: s})
			grace = time.After(StopGrace)
		case <-grace:
			return stopCode
		}
	}
}

// reapOrphans waits for the processes that become children of PID 1 (the
// orphans of `ctr task exec` sessions, for instance), as an init must, so
// that they do not linger as zombies. The host starts no processes of its
// own in this mode, so it takes nothing from anyone.
func reapOrphans() (stop func()) {
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	done := make(chan struct{})
	go func() {
		for {
			var ws syscall.WaitStatus
			for {
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
			select {
			case <-chld:
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(chld); close(done) }
}
