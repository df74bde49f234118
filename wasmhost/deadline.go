package wasmhost

import (
	"context"

	"github.com/tetratelabs/wazero/api"
)

// The mutable i32 globals instrumentDeadline adds to a module, exported:
// stopExport, 0 while the guest may run, and fuelExport, the checks left
// before the next yield; and deferredStartExport, the module's start
// function, which instantiation no longer runs (see instrumentDeadline).
const (
	stopExport          = "nebula.deadline.stop"
	fuelExport          = "nebula.deadline.fuel"
	deferredStartExport = "nebula.deadline.start"
)

// deadlineFuel is how many checks pass between two yields to the Go
// scheduler: a guest spinning in a loop holds a garbage collection's
// stop-the-world for at most that many iterations.
const deadlineFuel = 1 << 16

// instrumentDeadline returns wasm with a check at the start of every
// function and of every loop body: it decrements the global fuelExport
// and, once that reaches 0, yields (see yieldInstr), traps if the global
// stopExport is set, and refills the fuel. watchDeadline sets both when
// the context is done, so the guest stops within one loop iteration or
// call. It is what wazero's WithCloseOnContextDone does, at a fraction of
// the cost: wazero returns to Go at every check, and watches each call's
// context from a goroutine of its own (docs/rationale.md).
//
// A start function would run inside wazero's InstantiateModule, before
// the host watches the instance's globals, so nothing could stop it: its
// start section is removed and the function exported as
// deferredStartExport, which the host calls once it watches the deadline
// (Module.start).
//
// ok is false, and wasm returned as is, when the module has neither an
// import of sched_yield nor a memory, a function body cannot be decoded,
// the module exports one of the names, or a body uses a global the module
// does not have (it could reach ours); it must then be compiled with
// WithCloseOnContextDone. The result depends only on wasm.
func instrumentDeadline(wasm []byte, info *moduleInfo) (out []byte, ok bool) {
	_, stopTaken := info.exports[stopExport]
	_, fuelTaken := info.exports[fuelExport]
	_, startTaken := info.exports[deferredStartExport]
	yield, found := info.yieldInstr()
	if stopTaken || fuelTaken || startTaken || !found || info.code.undecoded > 0 || len(info.undecoded) > 0 ||
		info.checkGlobalRefs() != nil {
		return wasm, false
	}
	stop := uint32(info.importsOf.globals + len(info.globals))
	fuel := stop + 1
	check := deadlineCheck(yield, stop, fuel)
	newGlobal, newExport := deadlineGlobals(stop, fuel)
	exports := uint32(2)
	if info.start != nil {
		newExport = appendExport(newExport, deferredStartExport, externFunc, *info.start)
		exports++
	}

	out = make([]byte, 0, len(wasm)+len(wasm)/8+64)
	out = append(out, wasm[:8]...)
	haveGlobals, haveExports := info.hasSection(6), info.hasSection(7)
	emitted := map[byte]bool{}
	emit := func(id byte, entries []byte, count uint32) {
		b := appendU32(nil, count)
		b = append(b, entries...)
		out = appendU32(append(out, id), uint32(len(b)))
		out = append(out, b...)
		emitted[id] = true
	}
	// before emits the sections this rewrite adds that come before id.
	before := func(id byte) {
		if !haveGlobals && !emitted[6] && id != 0 && sectionOrder[id] > sectionOrder[6] {
			emit(6, newGlobal, 2)
		}
		if !haveExports && !emitted[7] && id != 0 && sectionOrder[id] > sectionOrder[7] {
			emit(7, newExport, exports)
		}
	}
	for _, s := range info.sections {
		before(s.id)
		r := &reader{b: wasm[:s.end], off: s.start + 1}
		r.u32() // the section's size, checked by parseModule
		switch s.id {
		case 6, 7:
			n, _ := r.u32()
			entries := append([]byte(nil), wasm[r.off:s.end]...)
			if s.id == 6 {
				emit(6, append(entries, newGlobal...), n+2)
			} else {
				emit(7, append(entries, newExport...), n+exports)
			}
		case 8: // the start section: exported instead
		case 10:
			bodies, n, ok := instrumentCode(r, check)
			if !ok {
				return wasm, false
			}
			emit(10, bodies, n)
		default:
			out = append(out, wasm[s.start:s.end]...)
		}
	}
	before(11) // the data section comes last
	return out, true
}

// deadlineCheck returns the instructions of the check instrumentDeadline
// adds, for the yield instructions yield and the globals stop and fuel.
func deadlineCheck(yield []byte, stop, fuel uint32) []byte {
	var check []byte
	check = appendU32(append(check, 0x23), fuel)     // global.get $fuel
	check = append(check, 0x41, 1, 0x6b)             // i32.const 1; i32.sub
	check = appendU32(append(check, 0x24), fuel)     // global.set $fuel
	check = appendU32(append(check, 0x23), fuel)     // global.get $fuel
	check = append(check, 0x41, 0, 0x4c, 0x04, 0x40) // i32.const 0; i32.le_s; if
	check = append(check, yield...)                  // yield (pushes an i32)
	check = append(check, 0x1a)                      // drop
	check = appendU32(append(check, 0x23), stop)     // global.get $stop
	check = append(check, 0x04, 0x40, 0x00, 0x0b)    // if unreachable end
	check = appendS32(append(check, 0x41), deadlineFuel)
	check = appendU32(append(check, 0x24), fuel) // global.set $fuel
	check = append(check, 0x0b)                  // end
	return check
}

// deadlineGlobals returns the global entries of $stop and $fuel, and the
// export entries of stopExport and fuelExport naming them.
func deadlineGlobals(stop, fuel uint32) (globals, exports []byte) {
	globals = []byte{api.ValueTypeI32, 1, 0x41, 0, 0x0b} // $stop: (mut i32) (i32.const 0)
	globals = append(globals, api.ValueTypeI32, 1, 0x41)
	globals = append(appendS32(globals, deadlineFuel), 0x0b) // $fuel
	exports = appendExport(nil, stopExport, externGlobal, stop)
	exports = appendExport(exports, fuelExport, externGlobal, fuel)
	return globals, exports
}

// hasSection reports whether the module has a section with id.
func (m *moduleInfo) hasSection(id byte) bool {
	for _, s := range m.sections {
		if s.id == id {
			return true
		}
	}
	return false
}

// instrumentCode returns the n entries of the code section at r with check
// added to each body (see instrumentBody); ok is false when a body cannot
// be decoded.
func instrumentCode(r *reader, check []byte) (bodies []byte, n uint32, ok bool) {
	n, _ = r.u32()
	for range n {
		size, _ := r.u32()
		body, _ := r.bytes(size)
		b, ok := instrumentBody(body, check)
		if !ok {
			return nil, 0, false
		}
		bodies = appendU32(bodies, uint32(len(b)))
		bodies = append(bodies, b...)
	}
	return bodies, n, true
}

// instrumentBody returns a function body with check at its start and
// after the block type of every loop.
func instrumentBody(body, check []byte) ([]byte, bool) {
	r := &reader{b: body}
	if _, err := r.locals(); err != nil {
		return nil, false
	}
	out := make([]byte, 0, len(body)+len(check)*4)
	out = append(out, body[:r.off]...)
	out = append(out, check...)
	last := r.off
	for r.off < len(r.b) {
		op, _, known, err := r.instruction()
		if !known || err != nil {
			return nil, false
		}
		if op == 0x03 { // loop: check at the start of each iteration
			out = append(out, body[last:r.off]...)
			out = append(out, check...)
			last = r.off
		}
	}
	return append(out, body[last:]...), true
}

// yieldInstr returns the instructions by which the deadline check
// yields, leaving an i32 on the stack: a call of the module's import of
// WASI sched_yield, which the host runs as runtime.Gosched; without one,
// `memory.grow 0`, which changes nothing but leaves the guest's machine
// code for Go, where the scheduler preempts a goroutine that ran for
// too long and the collector stops the world (wazero has no other way
// back to Go without an import, and adding an import would renumber the
// module's functions). ok is false if the module has neither.
func (m *moduleInfo) yieldInstr() (yield []byte, ok bool) {
	if i, found := m.schedYield(); found {
		return appendU32([]byte{0x10}, i), true // call $sched_yield
	}
	if m.importsOf.memories+len(m.memories) > 0 {
		return []byte{0x41, 0, 0x40, 0}, true // i32.const 0; memory.grow 0
	}
	return nil, false
}

// schedYield returns the function index of the module's import of WASI
// sched_yield, of type () -> i32.
func (m *moduleInfo) schedYield() (uint32, bool) {
	return m.importedFunc("sched_yield", funcType{results: []api.ValueType{api.ValueTypeI32}})
}

// importedFunc returns the function index of the module's import of the
// WASI function name, if it has type want.
func (m *moduleInfo) importedFunc(name string, want funcType) (uint32, bool) {
	i, ok := m.importedAny(name)
	if ok && int(m.funcTypes[i]) < len(m.types) && m.types[m.funcTypes[i]].equal(want) {
		return i, true
	}
	return 0, false
}

// importedAny returns the function index of the module's import of the
// WASI function name, whatever its type.
func (m *moduleInfo) importedAny(name string) (uint32, bool) {
	var index uint32
	for _, e := range m.imports {
		if e.kind != externFunc {
			continue
		}
		if e.module == "wasi_snapshot_preview1" && e.name == name {
			return index, true
		}
		index++
	}
	return 0, false
}

// watchDeadline stops the instance mod when ctx is done, by setting its
// stopExport global and emptying its fuel (see instrumentDeadline); call
// the returned function when the call returns. A module that was not
// instrumented is stopped by wazero (WithCloseOnContextDone).
func (m *Module) watchDeadline(ctx context.Context, mod api.Module) func() bool {
	stop, fuel := m.deadlineGlobals(mod)
	return watchGlobals(ctx, stop, fuel)
}

// deadlineGlobals returns the deadline's globals of mod, an instance of
// m; nil if m was not instrumented.
func (m *Module) deadlineGlobals(mod api.Module) (stop, fuel api.MutableGlobal) {
	if !m.instrumented {
		return nil, nil
	}
	stop, ok := mod.ExportedGlobal(stopExport).(api.MutableGlobal)
	fuel, fok := mod.ExportedGlobal(fuelExport).(api.MutableGlobal)
	if !ok || !fok {
		return nil, nil
	}
	return stop, fuel
}

// watchGlobals sets stop and empties fuel, a deadline's globals, when ctx
// is done; the returned function stops watching and reports whether it
// did so before that. Without globals it watches nothing.
func watchGlobals(ctx context.Context, stop, fuel api.MutableGlobal) func() bool {
	if stop == nil || fuel == nil {
		return noWatch
	}
	return context.AfterFunc(ctx, func() {
		stop.Set(1)
		fuel.Set(0)
	})
}

func noWatch() bool { return false }

// start runs a command instance's start function, if instrumentDeadline
// deferred it, and then `_start`; call it once watchDeadline watches mod.
func (m *Module) start(ctx context.Context, mod api.Module) error {
	if m.deferredStart {
		if _, err := mod.ExportedFunction(deferredStartExport).Call(ctx); err != nil {
			return err
		}
	}
	_, err := mod.ExportedFunction(startFunction).Call(ctx)
	return err
}

// appendS32 appends v in signed LEB128.
func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
