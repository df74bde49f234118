// Package hostcmd is Nebula's host program, nebula-host: the process a wasm
// or function task's container runs instead of its entrypoint. The shim
// rewrites the task's OCI spec (oci.Rewrite) so that the container's
// process is
//
//	/dev/.nebula/nebula-host [flags] -- MODULE [ARGS...]
//
// with the flags of package hostargs, the contract between the two: the
// mode (run once, or serve events), the runtime (wasm, or in function mode
// a process per event), the module's compilation cache, the memory plan,
// the function-mode knobs. In run mode nebula-host runs MODULE's `_start`
// with wazero (package wasmhost): arguments MODULE ARGS..., the
// container's environment and working directory, its own stdio, the
// container's file system minus the hidden paths (--hide, default
// wasmhost.DefaultHiddenPath). It exits with the guest's exit code. In
// function mode it serves CloudEvents on $PORT (package events).
//
// `nebula-host compile` is the shim's compile of a module at Create, in a
// process of its own (see compile.go); `nebula-host supervise` is package
// spawn's per-invocation supervisor.
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
	"syscall"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/internal/hostargs"
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
	if len(args) > 1 && args[1] == hostargs.CompileSubcommand {
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

// run is the host program proper: args are os.Args, rendered by
// hostargs.Args.Argv after the program name.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	name := "nebula-host"
	if len(args) > 0 {
		name = filepath.Base(args[0])
		args = args[1:]
	}
	a, err := hostargs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		hostargs.Usage(stderr, name)
		return 0
	} else if err != nil {
		fmt.Fprintf(stderr, "nebula: %v\n", err)
		hostargs.Usage(stderr, name)
		return ExitUsage
	}
	setHeapLimit(a.HeapLimit)
	// As PID 1, reap orphans; with a process per event, without taking
	// the exit statuses of the invocations' supervisors.
	if os.Getpid() == 1 {
		stop := reapOrphansOf(a.Runtime)
		defer stop()
	}
	if a.Runtime == abi.RuntimeProcess {
		return serveFunction(a, spawnInvoker(a.Command), nil, stderr, sigs)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	loaded := loadGC()
	mod, release, code := loadModule(ctx, a, stderr)
	if mod == nil {
		return code
	}
	defer release()
	if a.Mode != hostargs.ModeFunction {
		loaded()
	}
	rc, err := guestWorld(a)
	if err != nil {
		return fail(stderr, ExitHostError, "%v", err)
	}
	if mod.IsReactor() {
		if a.Mode != hostargs.ModeFunction {
			return fail(stderr, ExitCannotRun, "%s: %v", a.Command[0], wasmhost.ErrReactorRun)
		}
		rc.Stderr = stderr
		inv, code := initReactor(ctx, cancel, mod, rc, sigs)
		if inv == nil {
			return code
		}
		return serveFunction(a, inv, mod, stderr, sigs)
	}
	if a.Mode == hostargs.ModeFunction {
		return serveFunction(a, wasmhost.NewInvoker(mod, rc), mod, stderr, sigs)
	}
	rc.Stdin, rc.Stdout, rc.Stderr = stdin, stdout, stderr
	return runOnce(ctx, cancel, mod, rc, sigs)
}

// guestWorld is what a wasm guest sees: the task's arguments, environment
// and working directory, and its root file system without the host's
// hidden paths.
func guestWorld(a hostargs.Args) (wasmhost.RunConfig, error) {
	hide := a.Hide
	if len(hide) == 0 {
		hide = []string{wasmhost.DefaultHiddenPath}
	}
	root, err := wasmhost.NewGuestFS("/", hide...)
	if err != nil {
		return wasmhost.RunConfig{}, err
	}
	root.LimitOpenFiles(guestFileLimit(a))
	wd, err := os.Getwd()
	if err != nil {
		wd = "/"
	}
	return wasmhost.RunConfig{Args: a.Command, Env: os.Environ(), Dir: wd, FS: root}, nil
}

// fail reports a failure of the host itself on stderr and returns code.
func fail(stderr io.Writer, code int, format string, a ...any) int {
	fmt.Fprintf(stderr, "nebula: "+format+"\n", a...)
	return code
}

// loadModule reads the module, a.Command[0], and compiles it (a cache hit
// only loads it). release, to be called when the host is done with the
// module, lets the shim evict its cache entry again. A nil module comes
// with the exit code, the failure reported on stderr.
func loadModule(ctx context.Context, a hostargs.Args, stderr io.Writer) (mod *wasmhost.Module, release func(), code int) {
	path := a.Command[0]
	wasm, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fail(stderr, ExitNotFound, "%s: no such file", path)
	} else if err != nil {
		return nil, nil, fail(stderr, ExitCannotRun, "%v", err)
	}
	cfg := wasmhost.NewConfig().WithMemoryLimit(a.MemoryLimit)
	if a.StdoutLimit > 0 {
		cfg = cfg.WithStdoutLimit(int64(a.StdoutLimit))
	}
	release = func() {}
	if a.CacheDir != "" {
		cfg = cfg.WithCacheDir(a.CacheDir)
		// While the task runs, the shim does not evict its cache entry.
		if r, err := wasmhost.HoldCacheEntry(a.CacheDir); err == nil {
			release = r
		}
	}
	host, err := wasmhost.New(ctx, cfg)
	if err != nil {
		release()
		return nil, nil, fail(stderr, ExitHostError, "%v", err)
	}
	// No host.Close: the process exits, and a guest that outlives a stop
	// signal (blocked reading stdin) must not be waited for.
	if mod, err = host.Compile(ctx, wasm); err != nil {
		release()
		return nil, nil, fail(stderr, ExitCannotRun, "%s: %v", path, err)
	}
	return mod, release, 0
}

// InitTimeout bounds a reactor's initialisation (its data, start
// function, `_initialize` and warm-up event, wasmhost.NewReactorInvoker):
// a guest that has not finished by then is stopped and the host exits
// ExitCannotRun, rather than never serving.
const InitTimeout = time.Minute

// initTimeout is InitTimeout, shorter in tests.
var initTimeout = InitTimeout

// initReactor initialises the reactor mod and takes its snapshot
// (wasmhost.NewReactorInvoker), within initTimeout. A stop signal
// meanwhile cancels the initialisation; the host then exits 128+signal. A
// failure is reported on rc.Stderr and the host exits ExitCannotRun.
func initReactor(ctx context.Context, cancel context.CancelCauseFunc, mod *wasmhost.Module, rc wasmhost.RunConfig, sigs <-chan os.Signal) (*wasmhost.ReactorInvoker, int) {
	type result struct {
		inv *wasmhost.ReactorInvoker
		err error
	}
	done := make(chan result, 1)
	ictx, icancel := context.WithTimeoutCause(ctx, initTimeout,
		fmt.Errorf("initialisation did not finish within %v", initTimeout))
	defer icancel()
	go func() {
		inv, err := wasmhost.NewReactorInvoker(ictx, mod, rc)
		done <- result{inv, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fail(rc.Stderr, ExitCannotRun, "%s: %v", rc.Args[0], r.err)
		}
		if r.inv.WarmupErr != nil {
			fmt.Fprintf(rc.Stderr, "nebula: %s: the warm-up event failed (%v): snapshot taken without it\n", rc.Args[0], r.inv.WarmupErr)
		}
		fmt.Fprintf(rc.Stderr, "nebula: %s: reactor initialised; snapshot of %d bytes taken in %v; memory restored by %s; %s\n",
			rc.Args[0], r.inv.SnapshotSize(), r.inv.SnapshotTime.Round(time.Microsecond), r.inv.RestoreMethod(), r.inv.InstanceReuse())
		return r.inv, 0
	case sig := <-sigs:
		s, _ := sig.(syscall.Signal)
		cancel(&wasmhost.SignalError{Signal: s})
		select {
		case <-done:
		case <-time.After(StopGrace):
		}
		return nil, wasmhost.ExitCodeSignalBase + int(s)
	}
}

// runOnce runs mod's `_start` to its end and returns the guest's exit
// code; on a stop signal it cancels the guest (ctx's cancel) and returns
// 128+signal once the guest stopped or StopGrace passed.
func runOnce(ctx context.Context, cancel context.CancelCauseFunc, mod *wasmhost.Module, rc wasmhost.RunConfig, sigs <-chan os.Signal) int {
	done := make(chan int, 1)
	go func() {
		code, err := mod.Run(ctx, rc)
		if err != nil {
			code = fail(rc.Stderr, ExitHostError, "%s: %v", rc.Args[0], err)
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
