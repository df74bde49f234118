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
	"github.com/tetratelabs/wazero/api"
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

// moduleConfig returns the wazero configuration for rc, without stdio.
func (m *Module) moduleConfig(rc *RunConfig) wazero.ModuleConfig {
	cfg := m.base
	if len(rc.Args) > 0 {
		cfg = cfg.WithArgs(rc.Args...)
	}
	for _, kv := range rc.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			cfg = cfg.WithEnv(k, v)
		}
	}
	if rc.Dir != "" {
		cfg = cfg.WithEnv("PWD", rc.Dir)
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

	var mem linearMemory
	if m.limit != 0 {
		mem.limit = m.limit
		ctx = experimental.WithMemoryAllocator(ctx, &mem)
	}
	mod, err := m.runtime.InstantiateModule(ctx, m.compiled, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return cancelCode(ctx), nil
		}
		return -1, fmt.Errorf("wasmhost: instantiate: %w", err)
	}
	defer mod.Close(context.Background())
	_, err = mod.ExportedFunction(startFunction).Call(ctx)

	r := classify(ctx, err, mod, &mem, m.limit)
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
func classify(ctx context.Context, err error, mod api.Module, mem *linearMemory, limit uint64) outcome {
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
		return outcome{kind: outcomeMemoryLimit, limit: limit}
	}
	if limit == 0 && mod != nil { // no allocator: wazero's own limit, 4 GiB
		if mm := mod.Memory(); mm != nil {
			max, encoded := mm.Definition().Max()
			if !encoded {
				max = maxPages
			}
			// A smaller maximum is the module's own business.
			if max == maxPages && uint64(mm.Size())+PageSize > uint64(maxPages)*PageSize {
				return outcome{kind: outcomeMemoryLimit, limit: uint64(maxPages) * PageSize}
			}
		}
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

// linearMemory backs an instance's memory and enforces the memory limit.
// wazero's WithMemoryLimitPages refuses to grow memory before any allocator
// is asked, leaving no trace that it did; refusing here records it, so a
// guest that dies of it is reported as such. See doc.go.
type linearMemory struct {
	buf     []byte
	limit   uint64 // bytes
	refused bool
	// spare is the previous instance's memory, kept by Free for the next
	// Allocate when reuse is on (function mode): bytes [0, len(spare)) may
	// hold the old guest's data and are cleared before reuse; every byte
	// beyond len(spare) is already zero.
	spare []byte
	reuse bool
}

// maxSpare bounds the memory a linearMemory keeps between instances.
const maxSpare = 64 << 20

// Allocate implements experimental.MemoryAllocator. One linearMemory backs
// one instance, which has at most one memory.
func (m *linearMemory) Allocate(cap, _ uint64) experimental.LinearMemory {
	m.refused = false
	if m.spare != nil {
		clear(m.spare) // the next guest must not see the last one's data
		m.buf, m.spare = m.spare[:0], nil
		return m
	}
	m.buf = make([]byte, 0, min(cap, m.limit))
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused = true
		return nil
	}
	if n := uint64(len(m.buf)); size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size] // memory never shrinks: the tail is still zero
	} else {
		m.buf = append(m.buf, make([]byte, size-n)...)
	}
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	if m.reuse && cap(m.buf) <= maxSpare {
		m.spare = m.buf
	}
	m.buf = nil
}
