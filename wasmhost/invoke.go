package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"nebula.dev/nebula/abi"
)

// Invoker runs one invocation per fresh instance of a Module: function mode.
// It implements abi.Invoker and is safe for concurrent use.
type Invoker struct {
	mod    *Module
	base   wazero.ModuleConfig // args, working directory, file system
	env    []envVar            // the task's environment
	envErr error               // why the task's environment is unusable

	slots slotPool[*slot]
}

var _ abi.Invoker = (*Invoker)(nil)

// NewInvoker returns an Invoker of mod. Every invocation gets base's Args,
// Env (plus the request's), Dir and FS; base's Stdin, Stdout and Stderr are
// ignored: stdin is the request's data, stdout is captured into the
// response (at most the Config's stdout limit), stderr goes to the
// request's Stderr.
func NewInvoker(mod *Module, base RunConfig) *Invoker {
	env, err := taskEnv(&base)
	return &Invoker{mod: mod, base: mod.moduleConfig(&base), env: env, envErr: err}
}

// Runtime implements abi.Invoker: abi.RuntimeWasm.
func (*Invoker) Runtime() string { return abi.RuntimeWasm }

// slot holds what one invocation at a time needs, reused across
// invocations so that an invocation allocates little besides the instance
// itself. Slots are kept in a free list rather than a sync.Pool: each holds
// an address-space reservation for its linear memory, which the garbage
// collector does not see, and a pool would drop and remap them at every
// collection.
type slot struct {
	cfg    wazero.ModuleConfig // Invoker.base bound to this slot's stdio
	stdin  bytes.Reader
	stdout capWriter
	stderr switchWriter
	env    environ
	mem    linearMemory
	done   <-chan struct{} // the invocation's ctx.Done(), for nanosleep

	// How stopGuest stops the current guest: through the deadline's
	// globals of an instrumented instance (stopG, fuelG), else by
	// cancelling the invocation's context, which wazero watches (cancel).
	stopG, fuelG api.MutableGlobal
	cancel       context.CancelCauseFunc
}

// getSlot takes an idle slot, or makes one.
func (inv *Invoker) getSlot() *slot {
	s, ok := inv.slots.get()
	if !ok {
		s = &slot{}
		s.init(inv.mod, inv.base, nil)
	}
	return s
}

// init readies a new slot in place (its config points at its own stdio):
// its linear memory (mapping snap, if not nil), its stdout limit and base
// bound to its stdio.
func (s *slot) init(mod *Module, base wazero.ModuleConfig, snap *snapshot) {
	s.mem = linearMemory{limit: mod.memoryLimit(), reuse: true, snap: snap}
	s.stdout.limit = mod.stdoutLimit
	s.stdout.stop = s.stopGuest
	s.cfg = base.
		WithStdin(&s.stdin).
		WithStdout(&s.stdout).
		WithStderr(&s.stderr).
		WithNanosleep(s.nanosleep)
}

// slotPool is a free list of idle slots: as many exist as invocations
// ever ran at once.
type slotPool[S any] struct {
	mu   sync.Mutex
	idle []S
}

// get takes an idle slot; ok is false when there is none.
func (p *slotPool[S]) get() (s S, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		s, p.idle = p.idle[n-1], p.idle[:n-1]
		return s, true
	}
	return s, false
}

// put returns s to the idle slots.
func (p *slotPool[S]) put(s S) {
	p.mu.Lock()
	p.idle = append(p.idle, s)
	p.mu.Unlock()
}

// nanosleep is sleeper for the slot's current invocation. A guest over
// its output limit does not sleep: the guest calls it, as it writes its
// output, on the invocation's goroutine, so it cannot be asleep when it
// goes over the limit (stopGuest), and every later sleep must return at
// once, not only the next.
func (s *slot) nanosleep(ns int64) {
	if ns <= 0 || s.stdout.over {
		return
	}
	t := time.NewTimer(time.Duration(ns))
	select {
	case <-t.C:
	case <-s.done:
		t.Stop()
	}
}

// stopGuest stops the slot's current guest (over its output limit): at its
// next deadline check, or through its context; it sleeps no more
// (nanosleep).
func (s *slot) stopGuest() {
	if s.cancel != nil {
		s.cancel(abi.ErrOutputLimit)
	}
	if s.stopG != nil {
		s.stopG.Set(1)
		s.fuelG.Set(0)
	}
}

// Invoke implements abi.Invoker: it instantiates the module with req's
// data as stdin and req's Env added, calls `_start`, and returns what the
// guest wrote to stdout. Response.Startup is the instantiation time,
// Response.Execution the time in `_start`. Errors:
//
//   - the guest wrote more than the stdout limit: abi.ErrOutputLimit (the
//     guest is stopped as soon as it does);
//   - ctx's deadline passed: abi.ErrTimeout (the guest is stopped);
//   - ctx was cancelled: an error wrapping context.Cause(ctx);
//   - the memory limit refused the guest memory and it died:
//     abi.ErrMemoryLimit;
//   - the guest trapped: an error wrapping abi.ErrTrap with wazero's
//     message and the wasm stack trace;
//   - the guest exited non-zero: *abi.ExitError.
func (inv *Invoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	if inv.mod.reactor != nil {
		return &abi.Response{}, fmt.Errorf("wasmhost: %w: use NewReactorInvoker", ErrReactorRun)
	}
	if inv.envErr != nil {
		return &abi.Response{}, inv.envErr
	}
	s := inv.getSlot()
	defer inv.putSlot(s)

	ctx = s.begin(ctx, req, inv.mod.instrumented)
	defer s.release()
	resp := &abi.Response{}
	if err := s.env.reset(inv.env, req.Env); err != nil {
		return resp, err
	}
	// Instances of one slot reuse its linear memory's mapping, reset
	// (see linearMemory).
	ctx = withEnviron(experimental.WithMemoryAllocator(ctx, &s.mem), &s.env)

	t0 := time.Now()
	mod, err := inv.mod.runtime.InstantiateModule(ctx, inv.mod.compiled, s.cfg)
	t1 := time.Now()
	resp.Startup = t1.Sub(t0)
	if err != nil {
		if ctx.Err() != nil {
			return resp, invokeCanceled(ctx)
		}
		return resp, fmt.Errorf("%w: instantiate: %v", abi.ErrTrap, err)
	}
	s.stopG, s.fuelG = inv.mod.deadlineGlobals(mod)
	stop := watchGlobals(ctx, s.stopG, s.fuelG)
	err = inv.mod.start(ctx, mod)
	stop()
	resp.Execution = time.Since(t1)
	r := classify(ctx, err, &s.mem)
	mod.Close(context.Background())

	return s.finish(ctx, resp, r)
}

// begin readies the slot for req: the event's data as stdin, stdout
// collected under its limit and stderr to req's. A guest over the limit
// is stopped (stopGuest): an instrumented one through its globals, which
// the caller sets in s.stopG and s.fuelG once it has the instance;
// otherwise the context begin returns is cancelled, and wazero closes the
// instance. The caller must call release when done.
func (s *slot) begin(ctx context.Context, req *abi.Request, instrumented bool) context.Context {
	if !instrumented {
		ctx, s.cancel = context.WithCancelCause(ctx)
	}
	s.done = ctx.Done()
	s.stdin.Reset(req.Stdin)
	s.stdout.reset()
	s.stderr.w = req.Stderr
	if s.stderr.w == nil {
		s.stderr.w = io.Discard
	}
	return ctx
}

// finish completes resp with the guest's stdout and turns the invocation's
// outcome into the Invoker's error, the same for commands and reactors.
func (s *slot) finish(ctx context.Context, resp *abi.Response, r outcome) (*abi.Response, error) {
	if s.stdout.over {
		return resp, abi.ErrOutputLimit
	}
	if len(s.stdout.buf) > 0 {
		resp.Stdout = bytes.Clone(s.stdout.buf)
	}
	switch r.kind {
	case outcomeExit:
		if r.code != 0 {
			return resp, &abi.ExitError{Code: r.code}
		}
		return resp, nil
	case outcomeCanceled:
		return resp, invokeCanceled(ctx)
	case outcomeMemoryLimit:
		return resp, fmt.Errorf("%w: memory limit of %d bytes reached", abi.ErrMemoryLimit, r.limit)
	default:
		return resp, fmt.Errorf("%w: %s", abi.ErrTrap, r.msg)
	}
}

// invokeCanceled is the error of an invocation stopped because ctx is done.
func invokeCanceled(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) {
		return abi.ErrTimeout
	}
	return fmt.Errorf("wasmhost: invocation cancelled: %w", cause)
}

// putSlot returns s to the free list.
func (inv *Invoker) putSlot(s *slot) { inv.slots.put(s) }

// release drops the references the slot holds to one invocation.
func (s *slot) release() {
	s.stdin.Reset(nil)
	s.env.release()
	s.stderr.w = nil
	s.done = nil
	if s.cancel != nil {
		s.cancel(nil)
		s.cancel = nil
	}
	s.stopG, s.fuelG = nil, nil
	if cap(s.stdout.buf) > 64<<10 {
		s.stdout.buf = nil // don't pin a large reply in the pool
	}
}

// capWriter collects stdout up to a limit. Over it, it fails the write and
// stops the guest.
type capWriter struct {
	buf   []byte
	limit int64 // <= 0: none
	over  bool
	stop  func() // the slot's stopGuest
}

func (w *capWriter) reset() {
	w.buf, w.over = w.buf[:0], false
}

var errOutputLimit = errors.New("stdout limit reached")

func (w *capWriter) Write(p []byte) (int, error) {
	if w.over {
		return 0, errOutputLimit
	}
	if w.limit > 0 && int64(len(w.buf))+int64(len(p)) > w.limit {
		w.over = true
		w.stop()
		return 0, errOutputLimit
	}
	if need := len(w.buf) + len(p); need > cap(w.buf) {
		// Grow at most to the limit, so that the buffer and its copy in the
		// response stay within twice the limit (see oci.PlanMemory).
		n := max(need, 2*cap(w.buf), 4096)
		if w.limit > 0 {
			n = min(n, int(w.limit))
		}
		w.buf = append(make([]byte, 0, n), w.buf...)
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// switchWriter forwards to the current invocation's stderr.
type switchWriter struct{ w io.Writer }

func (w *switchWriter) Write(p []byte) (int, error) { return w.w.Write(p) }
