package wasmhost

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// Nebula's reactor ABI: the names a reactor module and the host agree on.
// A reactor is initialised once per task and every event runs in a fresh
// instance restored from the state initialisation left (see IsReactor).
const (
	// HandleExport is the function a reactor exports, of type () -> i32:
	// it handles one event and returns its exit status (0 is success).
	HandleExport = "nebula_handle"
	// InitializeExport is the WASI reactor's initialisation function,
	// called once per task if the module exports it.
	InitializeExport = "_initialize"
	// ImportModule is the module name of the host functions Nebula gives a
	// reactor.
	ImportModule = "nebula_v1"
	// EventEnvImport is the host function, of type (buf, len i32) -> i32,
	// that returns the size of the event's variables as a block of
	// NUL-terminated KEY=VALUE entries and, when len is at least that
	// size, writes the block at buf.
	EventEnvImport = "event_env"
)

// ErrSnapshot is wrapped by Check, Preflight and Compile when a reactor
// does something its snapshot could not restore faithfully: passive data
// segments, instructions that change a table, more than one memory, a
// mutable global of a reference or vector type, or an export under the
// names the host reserves (ReservedExportPrefix).
var ErrSnapshot = errors.New("reactor cannot be snapshotted")

// ReservedExportPrefix starts the names of the exports the host adds to a
// reactor (its mutable globals, its start function); a module must not
// export such a name itself.
const ReservedExportPrefix = "nebula.snapshot."

const (
	globalExportPrefix = ReservedExportPrefix + "global."
	startExport        = ReservedExportPrefix + "start"
	// fdProbeExport is a function the host adds, of type (fd, buf i32) ->
	// i32, that calls the module's own import of fd_fdstat_get: how the
	// host asks, as the guest, whether a descriptor is still open.
	fdProbeExport = ReservedExportPrefix + "fdstat"
)

// reactorImports are the functions of ImportModule, with their types.
var reactorImports = map[string]funcType{
	EventEnvImport: {params: []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, results: []api.ValueType{api.ValueTypeI32}},
}

// IsReactor reports whether wasm is a module built for Nebula's reactor
// ABI: one that exports a function named HandleExport. A module that
// cannot be parsed is not a reactor.
func IsReactor(wasm []byte) bool {
	info, err := parseModule(wasm)
	if err != nil {
		return false
	}
	return info.isReactor()
}

func (m *moduleInfo) isReactor() bool {
	e, ok := m.exports[HandleExport]
	return ok && e.kind == externFunc
}

// checkReactor requires what the snapshot needs: HandleExport of type
// () -> i32, `_initialize` (if exported) of type () -> (), and nothing
// that a restored memory and restored globals would not reproduce.
func (m *moduleInfo) checkReactor() error {
	if err := m.checkFuncType(HandleExport, funcType{results: []api.ValueType{api.ValueTypeI32}}); err != nil {
		return err
	}
	if _, ok := m.exports[InitializeExport]; ok {
		if err := m.checkFuncType(InitializeExport, funcType{}); err != nil {
			return err
		}
	}
	var reasons, reserved []string
	for name := range m.exports {
		if strings.HasPrefix(name, ReservedExportPrefix) {
			reserved = append(reserved, name)
		}
	}
	sort.Strings(reserved)
	for _, name := range reserved {
		reasons = append(reasons, fmt.Sprintf("it exports %q, a name the host reserves", name))
	}
	if n := m.importsOf.memories + len(m.memories); n > 1 {
		reasons = append(reasons, fmt.Sprintf("it has %d memories, the snapshot keeps one", n))
	}
	for i, g := range m.globals {
		if g.mutable && g.valType != api.ValueTypeI32 && g.valType != api.ValueTypeI64 &&
			g.valType != api.ValueTypeF32 && g.valType != api.ValueTypeF64 {
			reasons = append(reasons, fmt.Sprintf("mutable global %d has type %#x (only numbers can be restored)",
				m.importsOf.globals+i, g.valType))
		}
	}
	for i, d := range m.data {
		switch {
		case d.passive:
			reasons = append(reasons, fmt.Sprintf("data segment %d is passive (memory.init)", i))
		case d.memory != 0:
			reasons = append(reasons, fmt.Sprintf("data segment %d initialises memory %d", i, d.memory))
		case !d.constOffset:
			reasons = append(reasons, fmt.Sprintf("data segment %d has an offset other than an i32.const", i))
		}
	}
	ops := make([]string, 0, len(m.code.mutations))
	for op := range m.code.mutations {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		reasons = append(reasons, fmt.Sprintf("function %d uses %s", m.code.mutations[op], op))
	}
	for _, name := range m.undecoded {
		reasons = append(reasons, "its "+name+" section could not be decoded")
	}
	if m.code.undecoded > 0 {
		reasons = append(reasons, fmt.Sprintf("%d function bodies could not be decoded", m.code.undecoded))
	}
	if len(reasons) > 0 {
		return fmt.Errorf("%w: %s", ErrSnapshot, strings.Join(reasons, "; "))
	}
	return nil
}

// checkFuncType requires the export name to be a function of type want.
func (m *moduleInfo) checkFuncType(name string, want funcType) error {
	e := m.exports[name]
	if e.kind != externFunc {
		return fmt.Errorf("%w: export %q is a %s, not a function", ErrInvalid, name, externNames[e.kind&3])
	}
	if int(e.index) < len(m.funcTypes) {
		if t := m.funcTypes[e.index]; int(t) < len(m.types) && !m.types[t].equal(want) {
			return fmt.Errorf("%w: %q has type %s, want %s", ErrInvalid, name, m.types[t], want)
		}
	} // an index out of range is left to wazero's validation
	return nil
}

// reactorPlan is what the host needs to snapshot a reactor: the module
// rewritten so that instantiating it writes nothing into memory, the data
// segments to apply to the one instance that initialises, and the exports
// that reach its mutable globals and its start function.
type reactorPlan struct {
	data    []dataSegment // active segments, to apply in order
	globals []string      // export names of the mutable globals
	start   bool          // whether startExport exists

	// keep: an instance may serve the next event once restored (see
	// ReactorInvoker), for what it can do to its descriptors is either
	// nothing or visible to the host; fdProbe: fdProbeExport exists, and
	// must show the standard descriptors still open after an event.
	keep, fdProbe bool
	// noKeep says why keep is false.
	noKeep string

	// rewrite makes the rewritten module (rewriteReactor), which module
	// asks for once, if at all: a cache hit loads it, finalized, from the
	// entry's prepared file.
	rewrite   func() []byte
	rewritten []byte
}

// module returns the rewritten module.
func (p *reactorPlan) module() []byte {
	if p.rewritten == nil {
		p.rewritten = p.rewrite()
	}
	return p.rewritten
}

// planReactor rewrites a reactor that checkReactor accepted.
func planReactor(wasm []byte, info *moduleInfo) *reactorPlan {
	p := &reactorPlan{data: info.data, start: info.start != nil}
	var added, probe []byte
	var count uint32
	// A guest changes its descriptor table by opening files (through the
	// host's GuestFS, which counts them), by closing descriptors (fd_close
	// takes the standard ones too, so the host probes them), by
	// renumbering them and by accepting connections (both never kept).
	i32 := api.ValueTypeI32
	fdstat, hasFdstat := info.importedFunc("fd_fdstat_get", funcType{params: []api.ValueType{i32, i32}, results: []api.ValueType{i32}})
	_, closes := info.importedFunc("fd_close", funcType{params: []api.ValueType{i32}, results: []api.ValueType{i32}})
	_, accepts := info.importedAny("sock_accept")
	// wazero's fd_renumber(n, n) closes the file at n and leaves it in
	// the table, closed: a change neither the guard nor the probe (EBADF,
	// as for a free descriptor) can tell from a close.
	_, renames := info.importedAny("fd_renumber")
	switch {
	case accepts:
		p.noKeep = "it imports sock_accept"
	case renames:
		p.noKeep = "it imports fd_renumber"
	case !closes:
		p.keep = true
	case hasFdstat && info.hasSection(3) && info.hasSection(10):
		p.keep, p.fdProbe = true, true
		index := uint32(len(info.funcTypes)) // after every function
		probe = appendU32(nil, info.funcTypes[fdstat])
		added = appendExport(added, fdProbeExport, externFunc, index)
		count++
	default:
		p.noKeep = "it imports fd_close without fd_fdstat_get"
	}
	for i, g := range info.globals {
		if !g.mutable {
			continue
		}
		index := uint32(info.importsOf.globals + i)
		name := globalExportPrefix + strconv.FormatUint(uint64(index), 10)
		p.globals = append(p.globals, name)
		added = appendExport(added, name, externGlobal, index)
		count++
	}
	if info.start != nil {
		added = appendExport(added, startExport, externFunc, *info.start)
		count++
	}
	p.rewrite = func() []byte { return rewriteReactor(wasm, info, added, count, probe, fdstat) }
	return p
}

// fdProbeBody is the code section entry of the fdProbeExport function for
// the fd_fdstat_get import fdstat: local.get 0; local.get 1; call.
func fdProbeBody(fdstat uint32) []byte {
	body := appendU32([]byte{0, 0x20, 0, 0x20, 1, 0x10}, fdstat)
	body = append(body, 0x0b)
	return append(appendU32(nil, uint32(len(body))), body...)
}

func appendExport(b []byte, name string, kind byte, index uint32) []byte {
	b = appendU32(b, uint32(len(name)))
	b = append(b, name...)
	return appendU32(append(b, kind), index)
}

// rewriteReactor returns wasm without its start, data count and data
// sections, with count more exports (the encoded entries added) and, if
// probe (its function section entry) is not nil, the fdProbeExport
// function calling the import fdstat. The result depends only on wasm, so
// the shim and the host compile the same bytes and share the compilation
// cache.
func rewriteReactor(wasm []byte, info *moduleInfo, added []byte, count uint32, probe []byte, fdstat uint32) []byte {
	out := make([]byte, 0, len(wasm)+len(added)+32)
	out = append(out, wasm[:8]...)
	appendEntries := func(id byte, s sectionSpan, more uint32, entries []byte) {
		r := &reader{b: wasm[:s.end], off: s.start + 1}
		r.u32() // size, already checked by parseModule
		n, _ := r.u32()
		body := appendU32(nil, n+more)
		body = append(body, wasm[r.off:s.end]...)
		body = append(body, entries...)
		out = appendU32(append(out, id), uint32(len(body)))
		out = append(out, body...)
	}
	for _, s := range info.sections {
		switch {
		case s.id == 8 || s.id == 11 || s.id == 12: // start, data, data count
			continue
		case s.id == 7: // export: the entries, then ours
			appendEntries(7, s, count, added)
		case s.id == 3 && probe != nil:
			appendEntries(3, s, 1, probe)
		case s.id == 10 && probe != nil:
			appendEntries(10, s, 1, fdProbeBody(fdstat))
		default:
			out = append(out, wasm[s.start:s.end]...)
		}
	}
	return out
}
