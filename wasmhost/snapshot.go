package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"

	"nebula.dev/nebula/abi"
)

// snapshot is a reactor's state after initialisation: its linear memory,
// in a memory file (memfd) that every event's instance maps copy-on-write,
// and the values of its mutable globals.
type snapshot struct {
	fd      int
	size    uint64   // bytes of linear memory
	copy    []byte   // the memory itself, when at most copyRestoreMax (then no fd)
	view    []byte   // a read-only shared mapping of fd, to copy pages back from
	globals []uint64 // by reactorPlan.globals
	cleanup runtime.Cleanup
}

// ReactorInvoker serves events with a reactor (see IsReactor): it
// initialises the module once (NewReactorInvoker) and runs each event in an
// instance in the state initialisation left: a new one restored from the
// snapshot, or, when the previous event provably left nothing behind, the
// previous event's restored in place. It implements abi.Invoker and is
// safe for concurrent use.
type ReactorInvoker struct {
	mod  *Module
	base wazero.ModuleConfig
	rc   RunConfig // what base was made of
	env  *environ  // the task's: the WASI environment of every instance
	snap *snapshot

	// keep: instances serve more than one event (see keptInstance);
	// keptEvents counts the events after which one was kept.
	keep       bool
	noKeep     string // why not keep
	keptEvents atomic.Int64

	// SnapshotTime is how long initialisation and capturing the snapshot
	// took.
	SnapshotTime time.Duration
	// WarmupErr is why the warm-up event failed (see
	// Config.WithReactorWarmup), and the snapshot was taken without it;
	// nil if it succeeded or was off.
	WarmupErr error

	slots slotPool[*reactorSlot]
}

var _ abi.Invoker = (*ReactorInvoker)(nil)

// NewReactorInvoker initialises the reactor mod once with base's world
// (Args, Env, Dir, FS; stdin empty; stdout and stderr to base.Stderr),
// as Nebula's reactor ABI says: it applies the module's data, calls its
// start function and `_initialize` if it has them, and captures its
// memory and mutable globals. ctx bounds the initialisation. The error
// says why initialisation failed: a trap, proc_exit, the memory limit, a
// cancelled ctx.
func NewReactorInvoker(ctx context.Context, mod *Module, base RunConfig) (*ReactorInvoker, error) {
	if mod.reactor == nil {
		return nil, fmt.Errorf("wasmhost: the module is not a reactor (it does not export %s)", HandleExport)
	}
	start := time.Now()
	task, err := taskEnv(&base)
	if err != nil {
		return nil, err
	}
	inv := &ReactorInvoker{mod: mod, base: mod.moduleConfig(&base), rc: base, env: &environ{}}
	_, guestFS := base.FS.(*GuestFS)
	// wazero stops an uninstrumented module (WithCloseOnContextDone) by
	// closing it from a goroutine of its own, which may do so after the
	// call returned: a kept instance could be closed under the next event.
	inv.keep = mod.reactor.keep && mod.instrumented && (base.FS == nil || guestFS)
	switch {
	case !mod.reactor.keep:
		inv.noKeep = mod.reactor.noKeep
	case !mod.instrumented:
		inv.noKeep = "its deadline is left to wazero"
	case !inv.keep:
		inv.noKeep = "its file system is not a GuestFS"
	}
	inv.env.reset(task, nil)
	inv.env.build() // now read-only, shared by every instance
	snap, err := inv.initialize(ctx, base.Stderr, mod.warmup)
	var werr *warmupError
	if errors.As(err, &werr) {
		inv.WarmupErr = werr.err
		snap, err = inv.initialize(ctx, base.Stderr, false)
	}
	if err != nil {
		return nil, fmt.Errorf("reactor initialisation: %w", err)
	}
	inv.snap = snap
	inv.SnapshotTime = time.Since(start)
	return inv, nil
}

// Runtime implements abi.Invoker: abi.RuntimeWasm.
func (*ReactorInvoker) Runtime() string { return abi.RuntimeWasm }

// SnapshotSize is the size of the snapshot's linear memory, in bytes.
func (inv *ReactorInvoker) SnapshotSize() uint64 { return inv.snap.size }

// InstanceReuse says, for logs, whether an instance serves more than one
// event (see keptInstance), and if not why.
func (inv *ReactorInvoker) InstanceReuse() string {
	if inv.keep {
		return "an instance kept between events that leave nothing behind"
	}
	return "a new instance per event: " + inv.noKeep
}

// RestoreMethod names how events' memory is restored, for logs: "copy"
// (a small snapshot), "mapped, written pages copied back" (PAGEMAP_SCAN)
// or "mapped, written pages dropped" (MADV_DONTNEED only).
func (inv *ReactorInvoker) RestoreMethod() string {
	switch {
	case inv.snap.copy != nil || inv.snap.size == 0:
		return "copy"
	case pagemap() != nil:
		return "mapped, written pages copied back"
	default:
		return "mapped, written pages dropped"
	}
}

// WarmupTimeout bounds the warm-up event (see Config.WithReactorWarmup).
const WarmupTimeout = 5 * time.Second

// warmupError is initialize's error when only the warm-up event failed.
type warmupError struct{ err error }

func (e *warmupError) Error() string { return "warm-up event: " + e.err.Error() }

// initialize runs the module's initialisation in one instance, and the
// warm-up event if warmup, and captures the snapshot.
func (inv *ReactorInvoker) initialize(ctx context.Context, out io.Writer, warmup bool) (*snapshot, error) {
	if out == nil {
		out = io.Discard
	}
	plan := inv.mod.reactor
	stdio := &switchWriter{w: out}
	cfg := inv.base.WithStdout(stdio).WithStderr(stdio).WithNanosleep(sleeper(ctx))
	mem := &linearMemory{limit: inv.mod.memoryLimit()}
	ctx = withEnviron(experimental.WithMemoryAllocator(ctx, mem), inv.env)
	inst, err := inv.mod.runtime.InstantiateModule(ctx, inv.mod.compiled, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, invokeCanceled(ctx)
		}
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	defer inst.Close(context.Background())
	defer inv.mod.watchDeadline(ctx, inst)()

	if err := runInit(ctx, inst, plan, mem); err != nil {
		return nil, err
	}
	if warmup {
		// Empty stdin (the base has none), output discarded, no variables.
		stdio.w = io.Discard
		if err := inv.warmUp(ctx, inst); err != nil {
			return nil, err
		}
	}
	return capture(inst, plan)
}

// runInit applies plan's data segments to inst's memory and calls the
// module's start function and InitializeExport, if it has them.
func runInit(ctx context.Context, inst api.Module, plan *reactorPlan, mem *linearMemory) error {
	memory := memoryOf(inst)
	for i, d := range plan.data {
		if memory == nil || !memory.Write(d.offset, d.init) {
			return fmt.Errorf("data segment %d (%d bytes at %#x) is out of bounds", i, len(d.init), d.offset)
		}
	}
	for _, name := range []string{startExport, InitializeExport} {
		f := inst.ExportedFunction(name)
		if f == nil {
			continue
		}
		_, err := f.Call(ctx)
		if err == nil {
			continue
		}
		if name == startExport {
			name = "the start function"
		}
		switch r := classify(ctx, err, mem); r.kind {
		case outcomeExit:
			return fmt.Errorf("%s called proc_exit(%d)", name, r.code)
		case outcomeCanceled:
			return fmt.Errorf("%s: %w", name, invokeCanceled(ctx))
		case outcomeMemoryLimit:
			return fmt.Errorf("%s: %w: memory limit of %d bytes reached", name, abi.ErrMemoryLimit, r.limit)
		default:
			return fmt.Errorf("%s: %w: %s", name, abi.ErrTrap, r.msg)
		}
	}
	return nil
}

// warmUp runs the warm-up event in inst, within WarmupTimeout; its error
// is a *warmupError.
func (inv *ReactorInvoker) warmUp(ctx context.Context, inst api.Module) error {
	wctx, cancel := context.WithTimeout(ctx, WarmupTimeout) // no variables: ctx's environment has none
	stop := inv.mod.watchDeadline(wctx, inst)
	res, err := inst.ExportedFunction(HandleExport).Call(wctx)
	stop()
	cancel()
	if err == nil && int32(res[0]) != 0 {
		err = fmt.Errorf("status %d", int32(res[0]))
	}
	if err != nil {
		return &warmupError{err}
	}
	return nil
}

// capture returns the snapshot of inst: its globals named in plan and its
// memory.
func capture(inst api.Module, plan *reactorPlan) (*snapshot, error) {
	snap := &snapshot{fd: -1}
	for _, name := range plan.globals {
		snap.globals = append(snap.globals, inst.ExportedGlobal(name).Get())
	}
	if memory := memoryOf(inst); memory != nil {
		buf, _ := memory.Read(0, memory.Size())
		if err := snap.store(buf); err != nil {
			return nil, err
		}
	}
	return snap, nil
}

// copyRestoreMax is the largest snapshot restored by copying it into
// the instance's memory (and copying it back after the event) rather than
// by mapping it copy-on-write: below it, copying costs less than the
// fault and the madvise call of a mapping (BenchmarkEvent, tiny). A
// variable for tests, which exercise both ways.
var copyRestoreMax = 128 << 10

// store keeps memory, in a copy when it is small, else in a new memory
// file whose zero pages are left as holes.
func (s *snapshot) store(memory []byte) error {
	if len(memory) <= copyRestoreMax {
		s.size, s.copy = uint64(len(memory)), bytes.Clone(memory)
		return nil
	}
	fd, err := unix.MemfdCreate("nebula-snapshot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("creating the snapshot's memory file: %w", err)
	}
	s.fd, s.size = fd, uint64(len(memory))
	s.cleanup = runtime.AddCleanup(s, func(fd int) { unix.Close(fd) }, fd)
	if err = unix.Ftruncate(fd, int64(len(memory))); err != nil {
		return fmt.Errorf("sizing the snapshot's memory file: %w", err)
	}
	page := int(osPageSize)
	for off := 0; off < len(memory); {
		if isZero(memory[off : off+page]) {
			off += page
			continue
		}
		end := off + page
		for end < len(memory) && !isZero(memory[end:end+page]) {
			end += page
		}
		if err := pwriteAll(fd, memory[off:end], int64(off)); err != nil {
			return fmt.Errorf("writing the snapshot's memory file: %w", err)
		}
		off = end
	}
	// The file never changes again: the instances' mappings rely on it.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		return fmt.Errorf("sealing the snapshot's memory file: %w", err)
	}
	view, err := unix.Mmap(fd, 0, len(memory), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the snapshot's memory file: %w", err)
	}
	s.view = view
	s.cleanup.Stop()
	s.cleanup = runtime.AddCleanup(s, func(r snapshotResources) {
		unix.Munmap(r.view)
		unix.Close(r.fd)
	}, snapshotResources{fd, view})
	return nil
}

type snapshotResources struct {
	fd   int
	view []byte
}

var zeroPage = make([]byte, osPageSize)

func isZero(b []byte) bool { return bytes.Equal(b, zeroPage[:len(b)]) }

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// reactorSlot holds what one event at a time needs, reused across events
// (see slot). Its ModuleConfig is built once: the per-event variables are
// not in the WASI environment but behind event_env.
type reactorSlot struct {
	slot
	call  environ  // the task's environment (the invoker's, shared) and the event's variables
	stack []uint64 // for nebula_handle's result

	guard fdGuard       // the files of the slot's instance (see keptInstance)
	kept  *keptInstance // restored after its last event; nil: instantiate
}

func (inv *ReactorInvoker) getSlot() *reactorSlot {
	s, ok := inv.slots.get()
	if !ok {
		s = &reactorSlot{stack: make([]uint64, 2), call: *inv.env}
		base := inv.base
		if inv.keep {
			base = inv.guardedConfig(&s.guard)
		}
		s.init(inv.mod, base, inv.snap)
	}
	return s
}

func (inv *ReactorInvoker) putSlot(s *reactorSlot) { inv.slots.put(s) }

// Invoke implements abi.Invoker: it takes the slot's kept instance or
// instantiates the module and restores the snapshot into it (memory and
// mutable globals), calls nebula_handle with req's data as stdin and
// req's Env behind event_env, restores a kept instance, and returns what
// the guest wrote to stdout. Response.Startup is the instantiation and
// restore of a new instance, or the restore of a kept one (done after its
// previous event), Response.Execution the time in the handler.
// nebula_handle's result is the exit status; the errors are Invoker's.
func (inv *ReactorInvoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	s := inv.getSlot()
	defer inv.putSlot(s)

	ctx = s.begin(ctx, req, inv.mod.instrumented)
	defer s.release()
	var err error
	if s.call.vars, err = appendEnvBlock(s.call.vars[:0], req.Env); err != nil {
		return &abi.Response{}, err
	}
	ctx = withEnviron(ctx, &s.call)

	resp := &abi.Response{}
	t0 := time.Now()
	k := s.kept
	s.kept = nil
	if k == nil {
		// Instances of one slot reuse its linear memory's mapping (see
		// linearMemory); a kept instance has its memory already.
		mod, err := inv.mod.runtime.InstantiateModule(experimental.WithMemoryAllocator(ctx, &s.mem), inv.mod.compiled, s.cfg)
		if err != nil {
			resp.Startup = time.Since(t0)
			if ctx.Err() != nil {
				return resp, invokeCanceled(ctx)
			}
			return resp, fmt.Errorf("%w: instantiate: %v", abi.ErrTrap, err)
		}
		if err := inv.restore(mod, &s.mem); err != nil {
			mod.Close(context.Background())
			resp.Startup = time.Since(t0)
			return resp, err
		}
		k = inv.newKept(mod, s.stack)
	}
	s.guard.begin()
	t1 := time.Now()
	resp.Startup = t1.Sub(t0) + k.restored // a kept instance's restore belongs to this event
	k.restored = 0
	s.stopG, s.fuelG = k.stop, k.fuel
	watch := k.watchDeadline(ctx)
	err = k.handle.CallWithStack(ctx, s.stack[:1])
	fired := !watch()
	resp.Execution = time.Since(t1)
	r := classify(ctx, err, &s.mem)
	if err == nil {
		r = outcome{kind: outcomeExit, code: int(int32(s.stack[0]))}
	}
	t2 := time.Now()
	// A guest stopped by its deadline or its output limit has its stop
	// global set: never kept.
	if err == nil && !(fired && k.stop != nil) && !s.stdout.over && inv.keep && inv.restoreKept(k, s) {
		k.restored = time.Since(t2)
		s.kept = k
		inv.keptEvents.Add(1)
	} else {
		k.mod.Close(context.Background())
	}
	return s.finish(ctx, resp, r)
}

// restore gives a new instance the snapshot's memory size (its bytes are
// already there: mem maps the snapshot) and mutable globals.
func (inv *ReactorInvoker) restore(mod api.Module, mem *linearMemory) error {
	snap := inv.snap
	if snap.size > 0 {
		if !mem.mapped || mem.region == nil {
			return errors.New("wasmhost: the snapshot could not be mapped into the instance's memory")
		}
		memory := memoryOf(mod)
		pages := uint32(snap.size / PageSize)
		if cur := memory.Size() / PageSize; cur < pages {
			if _, ok := memory.Grow(pages - cur); !ok {
				return fmt.Errorf("%w: restoring the snapshot's %d bytes of memory", abi.ErrMemoryLimit, snap.size)
			}
		}
	}
	for i, name := range inv.mod.reactor.globals {
		mod.ExportedGlobal(name).(api.MutableGlobal).Set(snap.globals[i])
	}
	return nil
}

// appendEnvBlock appends env's KEY=VALUE entries to b, each followed by a
// NUL, as event_env returns them. Like mergeEnv, it ignores entries with
// no '=' or an empty key and refuses one containing NUL, which would read
// as two.
func appendEnvBlock(b []byte, env []string) ([]byte, error) {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k != "" {
			if strings.IndexByte(kv, 0) >= 0 {
				return b, fmt.Errorf("%w: %.64q", errEnvNUL, kv)
			}
			b = append(append(b, kv...), 0)
		}
	}
	return b, nil
}

// instantiateReactorImports instantiates ImportModule's functions in r.
func instantiateReactorImports(ctx context.Context, r wazero.Runtime) error {
	_, err := r.NewHostModuleBuilder(ImportModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(eventEnv),
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).
		WithParameterNames("buf", "buf_len").
		Export(EventEnvImport).
		Instantiate(ctx)
	return err
}

// errEventEnvRange is the trap of an event_env call whose buffer is not in
// linear memory.
var errEventEnvRange = errors.New("nebula_v1.event_env: buffer outside linear memory")

// eventEnv implements EventEnvImport. Outside an event (during
// initialisation and the warm-up) the block is empty.
func eventEnv(ctx context.Context, mod api.Module, stack []uint64) {
	buf, n := uint32(stack[0]), uint32(stack[1])
	var block []byte
	if e, ok := ctx.Value(environKey{}).(*environ); ok {
		block = e.vars
	}
	memory := memoryOf(mod)
	var size uint64
	if memory != nil {
		size = uint64(memory.Size())
	}
	if uint64(buf)+uint64(n) > size {
		panic(errEventEnvRange)
	}
	if int(n) >= len(block) && len(block) > 0 {
		memory.Write(buf, block)
	}
	stack[0] = uint64(len(block))
}
