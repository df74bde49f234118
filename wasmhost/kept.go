package wasmhost

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// keptInstance is a reactor instance that serves more than one event: after
// an event it is restored to the snapshot in place — the memory pages the
// event wrote copied back, the mutable globals set — rather than closed and
// replaced by a new instance. For a Go reactor that saves most of an
// event's cost: wazero builds every instance's function table anew, one
// allocation per entry (about 2,000 for a Go module), and a call engine
// with its stack (docs/rationale.md).
//
// An instance is kept only when the event provably left nothing behind
// that a new instance would not have (restoreKept): it returned (no trap,
// no proc_exit, no deadline), its memory has the snapshot's size, it
// closed every file it opened and touched none it found (fdGuard), and,
// if the module imports fd_close, the descriptors open before the event
// are all still open (fdProbeExport; with no memory for the probe to
// write in, the instance is never kept). What wazero keeps per instance
// besides — arguments, clocks, random source, stdio — is the same for
// every event or, for stdio, the slot's and reset per event.
type keptInstance struct {
	mod        api.Module
	handle     api.Function
	probe      api.Function        // fdProbeExport; nil without
	globals    []api.MutableGlobal // the plan's, in order
	stop, fuel api.MutableGlobal   // the deadline's (instrumentDeadline); nil without
	fds        uint64              // the descriptors below probedFDs open at the start
	stack      []uint64            // the slot's, for the probe
	restored   time.Duration       // how long its last restore took: the next event's start-up
}

// probedFDs bounds the descriptors fdProbeExport checks: the standard
// ones and the preopened directories are the lowest.
const probedFDs = 16

// newKept wraps mod, just instantiated and restored, for events.
func (inv *ReactorInvoker) newKept(mod api.Module, stack []uint64) *keptInstance {
	k := &keptInstance{mod: mod, handle: mod.ExportedFunction(HandleExport), stack: stack}
	if inv.mod.instrumented {
		k.stop, _ = mod.ExportedGlobal(stopExport).(api.MutableGlobal)
		k.fuel, _ = mod.ExportedGlobal(fuelExport).(api.MutableGlobal)
	}
	if !inv.keep {
		return k
	}
	for _, name := range inv.mod.reactor.globals {
		k.globals = append(k.globals, mod.ExportedGlobal(name).(api.MutableGlobal))
	}
	if inv.mod.reactor.fdProbe {
		k.probe = mod.ExportedFunction(fdProbeExport)
		// The probe writes fd_fdstat_get's 24 bytes at address 0: put
		// them back, the event must find the snapshot. Without room for
		// them nothing can be probed, and the instance is never kept.
		k.fds = ^uint64(0) // matches no real set
		var saved [24]byte
		if m := memoryOf(mod); m != nil {
			if b, ok := m.Read(0, 24); ok {
				copy(saved[:], b)
				k.fds = k.openFDs()
				m.Write(0, saved[:])
			}
		}
	}
	return k
}

// openFDs returns which descriptors below probedFDs the guest has open.
func (k *keptInstance) openFDs() (open uint64) {
	const ebadf = 8
	for fd := range uint64(probedFDs) {
		k.stack[0], k.stack[1] = fd, 0
		if err := k.probe.CallWithStack(context.Background(), k.stack); err != nil {
			return ^uint64(0) // matches no real set: the instance is dropped
		}
		if k.stack[0] != ebadf {
			open |= 1 << fd
		}
	}
	return open
}

// stillOpen reports whether the descriptors open at the start are still
// open. Others cannot be: new ones are the guard's.
func (k *keptInstance) stillOpen() bool {
	for fd := range uint64(probedFDs) {
		if k.fds&(1<<fd) == 0 {
			continue
		}
		k.stack[0], k.stack[1] = fd, 0
		if err := k.probe.CallWithStack(context.Background(), k.stack); err != nil || k.stack[0] != 0 {
			return false
		}
	}
	return true
}

// watchDeadline stops the guest when ctx is done, as Module.watchDeadline;
// the returned function reports whether it stopped the watch before it
// fired.
func (k *keptInstance) watchDeadline(ctx context.Context) (stop func() bool) {
	return watchGlobals(ctx, k.stop, k.fuel)
}

// restoreKept returns k, after an event that returned, to the snapshot,
// and reports whether it may serve the next event; if not, the caller
// closes it.
func (inv *ReactorInvoker) restoreKept(k *keptInstance, s *reactorSlot) bool {
	if k.mod.IsClosed() || !s.guard.clean() {
		return false
	}
	if k.probe != nil && !k.stillOpen() {
		return false
	}
	if !s.mem.restoreKept() {
		return false
	}
	for i, g := range k.globals {
		g.Set(inv.snap.globals[i])
	}
	if k.stop != nil && k.fuel != nil {
		k.stop.Set(0)
		k.fuel.Set(uint64(deadlineFuel))
	}
	return true
}

// guardedConfig is the invoker's configuration with its GuestFS reporting
// to guard.
func (inv *ReactorInvoker) guardedConfig(guard *fdGuard) wazero.ModuleConfig {
	rc := inv.rc
	if fs, ok := rc.FS.(*GuestFS); ok {
		rc.FS = fs.guarded(guard)
	}
	return inv.mod.moduleConfig(&rc)
}
