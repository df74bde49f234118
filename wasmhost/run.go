package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// Exit codes of Module.Run besides the guest's own. They follow the shell's
// convention for a process killed by a signal, 128+signal, so that a wasm
// task reads like a container task.
const (
	// ExitCodeSignalBase plus the signal number is the exit code of a run
	// cancelled with a *SignalError cause: SIGTERM gives 143.
	ExitCodeSignalBase = 128
	// ExitCodeTrap is the exit code of a guest that trapped (unreachable,
	// out-of-bounds access, stack overflow...): 128+SIGABRT, what a native
	// program that aborts exits with. "nebula: wasm trap: <reason>" is
	// written to stderr.
	ExitCodeTrap = ExitCodeSignalBase + int(syscall.SIGABRT)
	// ExitCodeMemoryLimit is the exit code of a guest that died (trapped or
	// exited non-zero) after the memory limit refused to grow its memory:
	// 128+SIGKILL, what the kernel's OOM killer leaves. "nebula: memory
	// limit of N bytes reached" is written to stderr.
	ExitCodeMemoryLimit = ExitCodeSignalBase + int(syscall.SIGKILL)
	// ExitCodeTimeout is the exit code of a run whose context's deadline
	// passed, as timeout(1) exits.
	ExitCodeTimeout = 124
	// ExitCodeCanceled is the exit code of a run cancelled without a
	// *SignalError cause: as if stopped by SIGTERM.
	ExitCodeCanceled = ExitCodeSignalBase + int(syscall.SIGTERM)
)

// SignalError is the cause to cancel a run's context with (see
// context.WithCancelCause) when a signal stops it: Module.Run then returns
// ExitCodeSignalBase + Signal.
type SignalError struct {
	Signal syscall.Signal
}

func (e *SignalError) Error() string {
	return fmt.Sprintf("stopped by signal %d (%v)", int(e.Signal), e.Signal)
}

// ErrReactorRun is Module.Run's error for a reactor: a reactor has no
// `_start`; it is a function, served per event (NewReactorInvoker).
var ErrReactorRun = errors.New("the module is a reactor (it exports " + HandleExport +
	"): it handles events and runs only in function mode")

// RunConfig is what one run of a module gets. It is a plain value: copy it
// and change fields freely.
type RunConfig struct {
	// Args are the guest's arguments. Args[0] is the module's path as the
	// guest sees it.
	Args []string
	// Env holds KEY=VALUE entries, as os.Environ returns them. Entries
	// without "=" or with an empty key are skipped.
	Env []string
	// Dir is the working directory. WASI has no working directory: it is
	// passed as the PWD environment variable, which Go's wasip1 port
	// honours; wasi-libc guests (C, Rust) start in "/" whatever it says.
	Dir string
	// Stdin is read for the guest's standard input; nil reads as empty.
	// A read from a pipe or terminal cannot be interrupted: a guest blocked
	// in it ignores cancellation until data or EOF arrives.
	Stdin io.Reader
	// Stdout and Stderr receive the guest's output; nil discards it.
	Stdout, Stderr io.Writer
	// FS is mounted as the guest's "/", e.g. a *GuestFS. Nil gives the
	// guest no file system.
	FS experimentalsys.FS
}

// taskEnv returns rc's environment: Env, and PWD (Dir) if Dir is set.
func taskEnv(rc *RunConfig) ([]envVar, error) {
	env, err := mergeEnv(nil, rc.Env)
	if err == nil && rc.Dir != "" {
		env, err = mergeEnv(env, []string{"PWD=" + rc.Dir})
	}
	return env, err
}

// moduleConfig returns the wazero configuration for rc, without stdio and
// environment (see environ).
func (m *Module) moduleConfig(rc *RunConfig) wazero.ModuleConfig {
	cfg := m.base
	if len(rc.Args) > 0 {
		cfg = cfg.WithArgs(rc.Args...)
	}
	if rc.FS != nil {
		cfg = cfg.WithFSConfig(wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(rc.FS, "/"))
	}
	return cfg
}

// Run runs the module's `_start` once, in a new instance, and returns its
// exit code:
//
//   - `_start` returns, or the guest calls proc_exit(n): 0, or n.
//   - the guest traps: ExitCodeTrap.
//   - the guest dies after the memory limit refused it memory:
//     ExitCodeMemoryLimit.
//   - ctx is cancelled: ExitCodeSignalBase+signal if its cause
//     (context.Cause) is a *SignalError, ExitCodeTimeout if its deadline
//     passed, else ExitCodeCanceled. The guest is stopped promptly, even
//     when spinning or sleeping; not while blocked reading a pipe (see
//     RunConfig.Stdin).
//
// The error is non-nil only when the guest could not be started; the exit
// code is then -1. Messages for traps and the memory limit go to rc.Stderr.
func (m *Module) Run(ctx context.Context, rc RunConfig) (exitCode int, err error) {
	if m.reactor != nil {
		return -1, ErrReactorRun
	}
	task, err := taskEnv(&rc)
	if err != nil {
		return -1, err
	}
	var env environ
	env.reset(task, nil)
	cfg := m.moduleConfig(&rc).WithNanosleep(sleeper(ctx))
	if rc.Stdin != nil {
		cfg = cfg.WithStdin(rc.Stdin)
	}
	if rc.Stdout != nil {
		cfg = cfg.WithStdout(rc.Stdout)
	}
	stderr := rc.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	cfg = cfg.WithStderr(stderr)

	mem := &linearMemory{limit: m.memoryLimit()}
	ctx = withEnviron(experimental.WithMemoryAllocator(ctx, mem), &env)
	mod, err := m.runtime.InstantiateModule(ctx, m.compiled, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return cancelCode(ctx), nil
		}
		return -1, fmt.Errorf("wasmhost: instantiate: %w", err)
	}
	defer mod.Close(context.Background())
	stop := m.watchDeadline(ctx, mod)
	err = m.start(ctx, mod)
	stop()

	r := classify(ctx, err, mem)
	switch r.kind {
	case outcomeExit:
		return r.code, nil
	case outcomeCanceled:
		return cancelCode(ctx), nil
	case outcomeMemoryLimit:
		fmt.Fprintf(stderr, "nebula: memory limit of %d bytes reached\n", r.limit)
		return ExitCodeMemoryLimit, nil
	default:
		fmt.Fprintf(stderr, "nebula: wasm trap: %s\n", r.msg)
		return ExitCodeTrap, nil
	}
}

// memoryLimit is the most linear memory an instance of m may have, in
// bytes: the Config's limit, else the 4 GiB a 32-bit memory can address.
func (m *Module) memoryLimit() uint64 {
	if m.limit == 0 {
		return maxPages * PageSize
	}
	return m.limit
}

// cancelCode is the exit code of a run stopped because ctx is done.
func cancelCode(ctx context.Context) int {
	var se *SignalError
	switch cause := context.Cause(ctx); {
	case errors.As(cause, &se):
		return ExitCodeSignalBase + int(se.Signal)
	case errors.Is(cause, context.DeadlineExceeded):
		return ExitCodeTimeout
	default:
		return ExitCodeCanceled
	}
}

type outcomeKind int

const (
	outcomeExit outcomeKind = iota
	outcomeTrap
	outcomeMemoryLimit
	outcomeCanceled
)

type outcome struct {
	kind  outcomeKind
	code  int    // outcomeExit
	msg   string // outcomeTrap
	limit uint64 // outcomeMemoryLimit, in bytes
}

// classify turns what `_start` returned into an outcome.
func classify(ctx context.Context, err error, mem *linearMemory) outcome {
	if err == nil {
		return outcome{}
	}
	var ee *sys.ExitError
	isExit := errors.As(err, &ee)
	if ctx.Err() != nil && (!isExit || ee.ExitCode() == sys.ExitCodeContextCanceled || ee.ExitCode() == sys.ExitCodeDeadlineExceeded) {
		return outcome{kind: outcomeCanceled}
	}
	if isExit && ee.ExitCode() == 0 {
		return outcome{}
	}
	// The guest failed: was it for want of memory?
	if mem.refused {
		return outcome{kind: outcomeMemoryLimit, limit: mem.limit}
	}
	// At 4 GiB wazero refuses before asking the allocator; a smaller
	// maximum of the module's own is the module's business.
	if const4G := uint64(maxPages) * PageSize; mem.limit >= const4G && mem.dirty+PageSize > const4G {
		return outcome{kind: outcomeMemoryLimit, limit: const4G}
	}
	if isExit {
		return outcome{kind: outcomeExit, code: int(ee.ExitCode())}
	}
	return outcome{kind: outcomeTrap, msg: strings.TrimPrefix(err.Error(), "wasm error: ")}
}

// sleeper returns a sys.Nanosleep that returns early when ctx is done.
// wazero's own (WithSysNanosleep) cannot be interrupted: a guest sleeping an
// hour would hold a cancelled run for an hour.
func sleeper(ctx context.Context) sys.Nanosleep {
	done := ctx.Done()
	return func(ns int64) {
		if ns <= 0 {
			return
		}
		if done == nil {
			time.Sleep(time.Duration(ns))
			return
		}
		t := time.NewTimer(time.Duration(ns))
		select {
		case <-t.C:
		case <-done:
			t.Stop()
		}
	}
}
