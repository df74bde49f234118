package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Errors that Check and Host.Compile wrap, matched with errors.Is. The
// message of the returned error names the precise reason after the
// sentinel's text, e.g. "unsupported import: env.nope (function) ...". It
// does not name the module: callers prefix the path they read it from.
var (
	// ErrNotWasm: the bytes are not a WebAssembly core module (bad magic,
	// an empty file, an ELF executable, a component).
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrTruncated: the module ends before its header or a section does.
	ErrTruncated = errors.New("truncated WebAssembly module")
	// ErrInvalid: the module is malformed or fails WebAssembly validation.
	ErrInvalid = errors.New("invalid WebAssembly module")
	// ErrNoStart: the module has no `_start` function, so it is not a WASI
	// command (it may be a library or a WASI reactor).
	ErrNoStart = errors.New("no _start function")
	// ErrUnsupportedImport: the module imports something other than the
	// wasi_snapshot_preview1 functions wazero implements, with their types.
	ErrUnsupportedImport = errors.New("unsupported import")
	// ErrMemoryMinimum: the module's minimum memory exceeds the memory limit.
	ErrMemoryMinimum = errors.New("memory minimum above the limit")
	// ErrTooLarge: the module exceeds one of the structural limits
	// (MaxFunctions, MaxFunctionBodySize, MaxLocals, MaxNesting) that bound
	// the time and memory compiling it takes.
	ErrTooLarge = errors.New("module exceeds a compile limit")
)

// Structural limits that preflight enforces before anything compiles a
// module: wazero's compiler is quadratic in a function's block nesting and
// needs about 35 times a function's size in memory, so one hostile function
// can hold a core and gigabytes for minutes. Each is far above what real
// modules use: the largest values in the 3 MB Go wasip1 test probe are
// 1 989 functions, a 29 KiB body, 17 locals and a nesting of 549 (see
// TestLimitsOfRealModules and docs/rationale.md).
const (
	// MaxFunctions is the most functions a module may define.
	MaxFunctions = 1_000_000
	// MaxFunctionBodySize is the largest function body, in bytes.
	MaxFunctionBodySize = 4 << 20
	// MaxLocals is the most locals one function may declare.
	MaxLocals = 50_000
	// MaxNesting is the deepest nesting of block, loop and if in a function.
	MaxNesting = 20_000
)

// Check reports whether Host.Compile with cfg would accept wasm, without
// compiling it to native code: `nebula-host compile` calls it when it has
// no cache directory to fill (otherwise it calls CompileToCache, which
// validates as it compiles; the shim itself runs only Preflight). It
// returns nil or an error wrapping one of ErrNotWasm, ErrTruncated,
// ErrInvalid, ErrNoStart, ErrUnsupportedImport, ErrMemoryMinimum or
// ErrTooLarge.
//
// Check first parses the module's header, imports, exports and memory itself
// (microseconds, precise messages), then has wazero decode and validate
// every function body with its interpreter engine, which costs about a
// tenth of compiling (0.15-0.2 s for a 3 MB Go module, see BenchmarkCheck).
// CompileToCache validates as well: a caller that compiles need not Check.
func Check(ctx context.Context, wasm []byte, cfg Config) error {
	c := cfg
	if _, err := preflight(wasm, c); err != nil {
		return err
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return cm.Close(ctx)
}

// Preflight makes the checks of Check that need no compiling: the header,
// imports, `_start`, the memory minimum, the structural limits
// (MaxFunctions, MaxFunctionBodySize, MaxLocals, MaxNesting) and the length
// of every vector wazero allocates before decoding it. It is one
// pass over the module's bytes, cheap enough for the shim to run in its own
// process before it hands the module to a bounded compile.
func Preflight(wasm []byte, cfg Config) error {
	_, err := preflight(wasm, cfg)
	return err
}

// preflight parses wasm and checks what Nebula requires of a module.
func preflight(wasm []byte, c Config) (*moduleInfo, error) {
	return preflightVouched(wasm, c, false)
}

// preflightVouched is preflight; vouched says that wasm passed preflight
// before, with this build's checks (a cache entry says so, see
// cacheEntry.vouches): the parse then skips what only the checks of the
// module alone need (parseModuleVouched; a reactor's data segments are
// kept, for its plan), and every check is made on what remains, those that
// depend on c included.
func preflightVouched(wasm []byte, c Config, vouched bool) (*moduleInfo, error) {
	info, err := parseModuleVouched(wasm, vouched, true)
	if err != nil {
		return nil, err
	}
	return info, info.check(c)
}

// check makes preflight's checks of a parsed module.
func (m *moduleInfo) check(c Config) error {
	reactor := m.isReactor()
	if err := m.checkImports(reactor); err != nil {
		return err
	}
	var err error
	if reactor {
		err = m.checkReactor()
	} else {
		err = m.checkStart()
	}
	if err != nil {
		return err
	}
	if err := m.checkStartSection(); err != nil {
		return err
	}
	if err := m.checkMemory(c); err != nil {
		return err
	}
	if err := m.checkData(); err != nil {
		return err
	}
	return m.checkGlobalRefs()
}

// checkData requires every active data segment with a constant offset to
// fit the minimum memory, which is the memory's size when instantiation
// writes it: one that does not fails every instance (a reactor's
// initialisation, each event of a command), so the module cannot start.
func (m *moduleInfo) checkData() error {
	if len(m.memories) != 1 {
		return nil // none, or an import, which checkImports refuses
	}
	size := uint64(m.memories[0].min) * PageSize
	for i, d := range m.data {
		if d.passive || d.memory != 0 || !d.constOffset {
			continue
		}
		if uint64(d.offset)+uint64(len(d.init)) > size {
			return fmt.Errorf("%w: data segment %d (%d bytes at %#x) ends beyond the module's minimum memory of %d bytes: no instance could start",
				ErrInvalid, i, len(d.init), d.offset, size)
		}
	}
	return nil
}

// checkGlobalRefs requires the function bodies to use only the module's
// own globals: the host adds globals after them (instrumentDeadline), which
// a body naming a global the module does not have would otherwise reach.
func (m *moduleInfo) checkGlobalRefs() error {
	if n := uint32(m.importsOf.globals + len(m.globals)); m.code.globals > n {
		return fmt.Errorf("%w: function %d uses global %d, the module has %d", ErrInvalid,
			m.code.globalAt, m.code.globals-1, n)
	}
	return nil
}

// moduleInfo is what Nebula needs to know about a module before compiling
// it. It is decoded by hand (parseModule) so that errors are precise and
// cheap; wazero decodes and validates everything again when compiling.
type moduleInfo struct {
	types     []funcType
	imports   []importEntry
	funcTypes []uint32 // type index of each function, imported ones first
	memories  []limits // defined (not imported) memories
	tables    []table  // defined (not imported) tables
	// tableSection is where the table section is in the module, header
	// included: [start, end); end is 0 without one.
	tableSection struct{ start, end int }
	exports      map[string]exportEntry
	code         codeStats

	// What a reactor's snapshot needs (see reactor.go).
	globals   []global      // defined globals
	data      []dataSegment // the data section's segments
	start     *uint32       // the start section's function, if any
	sections  []sectionSpan // every section, in order
	importsOf struct{ memories, globals, tables int }
	undecoded []string // sections lenient could not decode
}

// global is a defined global: its value type and mutability.
type global struct {
	valType byte
	mutable bool
}

// dataSegment is one segment of the data section.
type dataSegment struct {
	passive bool
	memory  uint32
	// offset is the constant offset of an active segment; constOffset is
	// false when the offset is any other expression.
	offset      uint32
	constOffset bool
	init        []byte
}

// sectionSpan is where a section is in the module, header included.
type sectionSpan struct {
	id         byte
	start, end int
}

// codeStats are the largest values in the code section, for the
// structural limits.
type codeStats struct {
	functions uint32
	maxBody   uint32 // bytes
	maxLocals uint64
	maxDepth  int
	// undecoded counts the bodies whose instructions could not all be
	// decoded (unknown or malformed), left to wazero's validation.
	undecoded uint32
	// at is the function index of each maximum, for messages.
	bodyAt, localsAt, depthAt uint32
	// mutations records instructions a snapshot cannot allow, by the
	// first function that uses each (see snapshotPlan).
	mutations map[string]uint32
	// globals is one more than the largest global index a decoded body
	// reads or writes (global.get, global.set), globalAt its function.
	globals, globalAt uint32
}

type funcType struct{ params, results []api.ValueType }

type importEntry struct {
	module, name string
	kind         byte   // externFunc, ...
	typeIndex    uint32 // for functions
}

type exportEntry struct {
	kind  byte
	index uint32
}

type table struct {
	refType byte
	limits
}

type limits struct {
	min    uint32
	max    uint32
	hasMax bool
}

// External kinds, as encoded in import and export entries.
const (
	externFunc   = 0
	externTable  = 1
	externMemory = 2
	externGlobal = 3
)

var externNames = [...]string{"function", "table", "memory", "global"}

var sectionNames = [...]string{
	"custom", "type", "import", "function", "table", "memory", "global",
	"export", "start", "element", "code", "data", "data count",
}

// sectionOrder is the place of each section id in a module: every section
// but custom ones appears at most once, in this order (data count between
// element and code).
var sectionOrder = [...]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 12: 10, 10: 11, 11: 12}

var wasmMagic = []byte{0, 'a', 's', 'm'}

// parseModule decodes the parts of wasm that preflight checks.
func parseModule(wasm []byte) (*moduleInfo, error) {
	return parseModuleVouched(wasm, false, true)
}

// parseModuleVouched is parseModule; with vouched, it skips what only the
// checks of the module alone need, which a module that passed them before
// need not repeat: the vector counts, the function bodies (their limits
// and a reactor's instructions a snapshot refuses) and the data segments,
// except a reactor's when plan is set (planReactor needs them). Their
// fields of moduleInfo stay zero. For the Go probe that is 10 ms of
// parsing skipped, 0.1 ms left.
func parseModuleVouched(wasm []byte, vouched, plan bool) (*moduleInfo, error) {
	if err := checkHeader(wasm); err != nil {
		return nil, err
	}
	info := &moduleInfo{exports: map[string]exportEntry{}}
	r := &reader{b: wasm, off: 8}
	last := 0 // sectionOrder of the last non-custom section
	for r.off < len(r.b) {
		start := r.off
		id, body, err := nextSection(r, &last)
		if err != nil {
			return nil, err
		}
		if id == 4 {
			info.tableSection.start, info.tableSection.end = start, r.off
		}
		info.sections = append(info.sections, sectionSpan{id: id, start: start, end: r.off})
		name := sectionNames[id]
		if vouched {
			if id == 10 || id == 11 && !(plan && info.isReactor()) { // the exports come before both
				continue
			}
		} else if err := checkCounts(id, *body); err != nil {
			return nil, fmt.Errorf("%w: section %d (%s) at offset %#x: %v", ErrInvalid, id, name, start, err)
		}
		if err := info.parseSection(id, body); err != nil {
			if errors.Is(err, ErrTooLarge) {
				return nil, err
			}
			if errors.Is(err, errEOF) {
				err = fmt.Errorf("its contents end early at offset %#x", body.off)
			}
			return nil, fmt.Errorf("%w: section %d (%s) at offset %#x: %v", ErrInvalid, id, name, start, err)
		}
	}
	return info, nil
}

// checkHeader checks wasm's magic number and binary version, naming what
// the file is instead when it can tell.
func checkHeader(wasm []byte) error {
	if len(wasm) == 0 {
		return fmt.Errorf("%w: the file is empty", ErrNotWasm)
	}
	if !bytes.HasPrefix(wasm, wasmMagic) {
		if len(wasm) < len(wasmMagic) && bytes.HasPrefix(wasmMagic, wasm) {
			return fmt.Errorf("%w: %d bytes, shorter than the 8-byte header", ErrTruncated, len(wasm))
		}
		return fmt.Errorf("%w: it starts with % x%s, not the magic number 00 61 73 6d (\"\\0asm\")",
			ErrNotWasm, wasm[:min(4, len(wasm))], guessFormat(wasm))
	}
	if len(wasm) < 8 {
		return fmt.Errorf("%w: %d bytes, shorter than the 8-byte header", ErrTruncated, len(wasm))
	}
	switch version := le32(wasm[4:8]); version {
	case 1:
	case 0x1000d: // version 13, layer 1
		return fmt.Errorf("%w: it is a WebAssembly component (binary version 0x0d, layer 1); only core modules (wasip1) are supported", ErrNotWasm)
	default:
		return fmt.Errorf("%w: unsupported binary version %#x, want 1", ErrNotWasm, version)
	}
	return nil
}

// nextSection reads the header of the section at r and checks its id, its
// place after the section whose sectionOrder is *last, and its size; it
// returns the section's body and moves r past it.
func nextSection(r *reader, last *int) (id byte, body *reader, err error) {
	start := r.off
	if id, err = r.byte(); err != nil {
		return 0, nil, err
	}
	size, err := r.u32()
	if errors.Is(err, errEOF) {
		return 0, nil, fmt.Errorf("%w: it ends inside the header of a section at offset %#x", ErrTruncated, start)
	} else if err != nil {
		return 0, nil, fmt.Errorf("%w: section at offset %#x: %v", ErrInvalid, start, err)
	}
	if int(id) >= len(sectionNames) {
		return 0, nil, fmt.Errorf("%w: unknown section id %d at offset %#x", ErrInvalid, id, start)
	}
	name := sectionNames[id]
	if id != 0 {
		if sectionOrder[id] <= *last {
			return 0, nil, fmt.Errorf("%w: section %d (%s) at offset %#x is repeated or out of order",
				ErrInvalid, id, name, start)
		}
		*last = sectionOrder[id]
	}
	if remain := len(r.b) - r.off; uint64(size) > uint64(remain) {
		return 0, nil, fmt.Errorf("%w: section %d (%s) at offset %#x declares %d bytes but only %d remain",
			ErrTruncated, id, name, start, size, remain)
	}
	body = &reader{b: r.b[:r.off+int(size)], off: r.off}
	r.off += int(size)
	return id, body, nil
}

// guessFormat names a few formats people mistake for a module.
func guessFormat(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return " (an ELF executable)"
	case bytes.HasPrefix(b, []byte("#!")):
		return " (a script)"
	case bytes.HasPrefix(b, []byte("(module")), bytes.HasPrefix(b, []byte(";;")):
		return " (WebAssembly text: compile it with wat2wasm)"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		return " (a zip archive)"
	case bytes.HasPrefix(b, []byte("\x1f\x8b")):
		return " (gzip-compressed)"
	}
	return ""
}

// parseSection decodes the body r of a section with id: the sections
// preflight needs, each by its own method; the others are left to wazero.
func (m *moduleInfo) parseSection(id byte, r *reader) error {
	switch id {
	case 1:
		return m.parseTypes(r)
	case 2:
		return m.parseImports(r)
	case 3:
		return m.parseFunctions(r)
	case 4:
		return m.parseTables(r)
	case 5:
		return m.parseMemories(r)
	case 7:
		return m.parseExports(r)
	case 6:
		return m.lenient(id, m.parseGlobals(r))
	case 8:
		return m.parseStart(r)
	case 10:
		return m.parseCode(r)
	case 11:
		return m.lenient(id, m.parseData(r))
	}
	return nil // other sections are left to wazero
}

// parseTypes decodes the type section: the module's function types.
func (m *moduleInfo) parseTypes(r *reader) error {
	return r.vec(func() error {
		form, err := r.byte()
		if err != nil {
			return err
		}
		if form != 0x60 {
			return fmt.Errorf("function type form %#x, want 0x60", form)
		}
		var ft funcType
		if ft.params, err = r.valTypes(); err != nil {
			return err
		}
		if ft.results, err = r.valTypes(); err != nil {
			return err
		}
		m.types = append(m.types, ft)
		return nil
	})
}

// parseImports decodes the import section, counting the imports of each
// kind and the types of imported functions.
func (m *moduleInfo) parseImports(r *reader) error {
	return r.vec(func() error {
		var e importEntry
		var err error
		if e.module, err = r.name(); err != nil {
			return err
		}
		if e.name, err = r.name(); err != nil {
			return err
		}
		if e.kind, err = r.byte(); err != nil {
			return err
		}
		switch e.kind {
		case externFunc:
			if e.typeIndex, err = r.u32(); err != nil {
				return err
			}
			m.funcTypes = append(m.funcTypes, e.typeIndex)
		case externTable:
			m.importsOf.tables++
			if _, err = r.byte(); err != nil { // reference type
				return err
			}
			_, err = r.limits()
		case externMemory:
			m.importsOf.memories++
			_, err = r.limits()
		case externGlobal:
			m.importsOf.globals++
			_, err = r.bytes(2) // value type, mutability
		default:
			return fmt.Errorf("import %s.%s has unknown kind %#x", e.module, e.name, e.kind)
		}
		m.imports = append(m.imports, e)
		return err
	})
}

// parseFunctions decodes the function section: the type of each defined
// function.
func (m *moduleInfo) parseFunctions(r *reader) error {
	return r.vec(func() error {
		t, err := r.u32()
		m.funcTypes = append(m.funcTypes, t)
		return err
	})
}

// parseTables decodes the table section.
func (m *moduleInfo) parseTables(r *reader) error {
	return r.vec(func() error {
		var t table
		var err error
		if t.refType, err = r.byte(); err != nil {
			return err
		}
		t.limits, err = r.limits()
		m.tables = append(m.tables, t)
		return err
	})
}

// parseMemories decodes the memory section.
func (m *moduleInfo) parseMemories(r *reader) error {
	return r.vec(func() error {
		l, err := r.limits()
		m.memories = append(m.memories, l)
		return err
	})
}

// parseExports decodes the export section.
func (m *moduleInfo) parseExports(r *reader) error {
	return r.vec(func() error {
		name, err := r.name()
		if err != nil {
			return err
		}
		var e exportEntry
		if e.kind, err = r.byte(); err != nil {
			return err
		}
		if e.index, err = r.u32(); err != nil {
			return err
		}
		m.exports[name] = e
		return nil
	})
}

// parseGlobals decodes the global section, with the constant initial value
// of each global.
func (m *moduleInfo) parseGlobals(r *reader) error {
	return r.vec(func() error {
		b, err := r.bytes(2)
		if err != nil {
			return err
		}
		m.globals = append(m.globals, global{valType: b[0], mutable: b[1] == 1})
		_, _, err = r.constValue()
		return err
	})
}

// parseStart decodes the start section: the start function's index.
func (m *moduleInfo) parseStart(r *reader) error {
	f, err := r.u32()
	m.start = &f
	return err
}

// maxDataRoom bounds the segments parseData makes room for up front (40
// MB); more are appended as they are decoded.
const maxDataRoom = 1 << 20

// parseData decodes the data section: each segment's memory, constant
// offset and bytes.
func (m *moduleInfo) parseData(r *reader) error {
	// Go's linker writes tens of thousands of segments (37,398 for the
	// probe built as a reactor): room for them at once, not grown from
	// one (7 ms of a host's start, 1.3 ms now). The room is bounded by
	// the bytes left (an active segment takes at least 5) and by
	// maxDataRoom, whatever the count claims.
	if n, err := (&reader{b: r.b, off: r.off}).u32(); err == nil {
		m.data = make([]dataSegment, 0, min(int(n), (len(r.b)-r.off)/5, maxDataRoom))
	}
	return r.vec(func() error {
		flag, err := r.u32()
		if err != nil {
			return err
		}
		var d dataSegment
		switch flag {
		case 0, 2:
			if flag == 2 {
				if d.memory, err = r.u32(); err != nil {
					return err
				}
			}
			if d.offset, d.constOffset, err = r.constValue(); err != nil {
				return err
			}
		case 1:
			d.passive = true
		default:
			return fmt.Errorf("data segment flag %d, want 0, 1 or 2", flag)
		}
		n, err := r.u32()
		if err != nil {
			return err
		}
		d.init, err = r.bytes(n)
		m.data = append(m.data, d)
		return err
	})
}

// lenient records that section id could not be decoded for a reactor's
// snapshot, and leaves the error to wazero's validation.
func (m *moduleInfo) lenient(id byte, err error) error {
	if err != nil {
		m.undecoded = append(m.undecoded, sectionNames[id])
	}
	return nil
}

// parseCode measures each function body of the code section: its size, its
// locals and its deepest nesting of blocks. It stops at the first limit
// exceeded, so a hostile module costs one pass over its bytes at most.
func (m *moduleInfo) parseCode(r *reader) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	if n > MaxFunctions {
		return fmt.Errorf("%w: %d functions, the limit is %d (MaxFunctions)", ErrTooLarge, n, MaxFunctions)
	}
	c := &m.code
	c.functions = n
	imported := uint32(len(m.funcTypes)) - min(uint32(len(m.funcTypes)), n) // defined functions follow imported ones
	for i := uint32(0); i < n; i++ {
		index := imported + i
		size, err := r.u32()
		if err != nil {
			return err
		}
		if size > MaxFunctionBodySize {
			return fmt.Errorf("%w: function %d has a body of %d bytes, the limit is %d (MaxFunctionBodySize)",
				ErrTooLarge, index, size, MaxFunctionBodySize)
		}
		b, err := r.bytes(size)
		if err != nil {
			return err
		}
		if size > c.maxBody {
			c.maxBody, c.bodyAt = size, index
		}
		if ok, err := c.measure(index, b); !ok || err != nil {
			return err
		}
	}
	if r.off != len(r.b) {
		return fmt.Errorf("%d unexpected bytes at its end", len(r.b)-r.off)
	}
	return nil
}

// measure records the locals, nesting depth and mutations of the body b of
// function index; ok is false when its locals cannot be decoded, which
// leaves the rest of the code section to wazero's validation.
func (c *codeStats) measure(index uint32, b []byte) (ok bool, err error) {
	body := &reader{b: b}
	locals, err := body.locals()
	if err != nil {
		c.undecoded++ // this body and the rest: left to wazero's validation
		return false, nil
	}
	if locals > MaxLocals {
		return false, fmt.Errorf("%w: function %d declares %d locals, the limit is %d (MaxLocals)",
			ErrTooLarge, index, locals, MaxLocals)
	}
	if locals > c.maxLocals {
		c.maxLocals, c.localsAt = locals, index
	}
	depth, decoded := body.maxNesting(MaxNesting, func(op string) {
		if c.mutations == nil {
			c.mutations = map[string]uint32{}
		}
		if _, seen := c.mutations[op]; !seen {
			c.mutations[op] = index
		}
	}, func(global uint32) {
		if global >= c.globals {
			c.globals, c.globalAt = global+1, index
		}
	})
	if depth > MaxNesting {
		return false, fmt.Errorf("%w: function %d nests blocks more than %d deep (MaxNesting)",
			ErrTooLarge, index, MaxNesting)
	}
	if !decoded {
		c.undecoded++
	}
	if depth > c.maxDepth {
		c.maxDepth, c.depthAt = depth, index
	}
	return true, nil
}

// checkImports requires every import to be a wasi_snapshot_preview1
// function that wazero implements, with the type wazero implements; a
// reactor may also import Nebula's own functions (reactorImports).
func (m *moduleInfo) checkImports(reactor bool) error {
	wasi, err := wasiFunctions()
	if err != nil {
		return err
	}
	var bad []string
	for _, e := range m.imports {
		switch {
		case e.kind != externFunc:
			bad = append(bad, fmt.Sprintf("%s.%s (a %s; only functions can be imported)", e.module, e.name, externNames[e.kind]))
		case e.module == ImportModule && reactor:
			want, ok := reactorImports[e.name]
			if !ok {
				bad = append(bad, fmt.Sprintf("%s.%s (not a function of Nebula's reactor ABI)", e.module, e.name))
			} else if int(e.typeIndex) < len(m.types) && !m.types[e.typeIndex].equal(want) {
				bad = append(bad, fmt.Sprintf("%s.%s with type %s, want %s", e.module, e.name, m.types[e.typeIndex], want))
			}
		case e.module != wasi_snapshot_preview1.ModuleName:
			bad = append(bad, fmt.Sprintf("%s.%s (function)", e.module, e.name))
		default:
			want, ok := wasi[e.name]
			if !ok {
				bad = append(bad, fmt.Sprintf("%s.%s (not implemented)", e.module, e.name))
			} else if int(e.typeIndex) < len(m.types) && !m.types[e.typeIndex].equal(want) {
				bad = append(bad, fmt.Sprintf("%s.%s with type %s, want %s", e.module, e.name, m.types[e.typeIndex], want))
			}
		}
	}
	switch len(bad) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: %s; only the %s functions of wazero %s are provided",
			ErrUnsupportedImport, bad[0], wasi_snapshot_preview1.ModuleName, wazeroRelease)
	default:
		return fmt.Errorf("%w: %d imports: %s; only the %s functions of wazero %s are provided",
			ErrUnsupportedImport, len(bad), strings.Join(bad, ", "), wasi_snapshot_preview1.ModuleName, wazeroRelease)
	}
}

// checkStart requires a `_start` function of type () -> ().
func (m *moduleInfo) checkStart() error {
	e, ok := m.exports[startFunction]
	if !ok {
		hint := ""
		if _, ok := m.exports["_initialize"]; ok {
			hint = " (it exports _initialize: a WASI reactor, not a command)"
		} else if len(m.exports) > 0 {
			names := make([]string, 0, len(m.exports))
			for name := range m.exports {
				names = append(names, name)
			}
			sort.Strings(names)
			if len(names) > 5 {
				names = append(names[:5], "...")
			}
			hint = " (it exports " + strings.Join(names, ", ") + ")"
		}
		return fmt.Errorf("%w: the module does not export %q, the entry point of a WASI command%s", ErrNoStart, startFunction, hint)
	}
	if e.kind != externFunc {
		return fmt.Errorf("%w: export %q is a %s, not a function", ErrNoStart, startFunction, externNames[e.kind&3])
	}
	if int(e.index) < len(m.funcTypes) {
		if t := m.funcTypes[e.index]; int(t) < len(m.types) {
			if ft := m.types[t]; len(ft.params) != 0 || len(ft.results) != 0 {
				return fmt.Errorf("%w: %q has type %s, want () -> ()", ErrNoStart, startFunction, ft)
			}
		}
	} // an index out of range is left to wazero's validation
	return nil
}

// checkStartSection requires the start section, if any, to name a
// function of type () -> (), as wazero's validation does: the host's
// rewrites export the start function instead (instrumentDeadline,
// rewriteReactor), and an export may have any type, so wazero no longer
// sees a start function to validate.
func (m *moduleInfo) checkStartSection() error {
	if m.start == nil {
		return nil
	}
	f := *m.start
	if int(f) >= len(m.funcTypes) {
		return fmt.Errorf("%w: the start section names function %d; the module has %d", ErrInvalid, f, len(m.funcTypes))
	}
	if t := m.funcTypes[f]; int(t) < len(m.types) {
		if ft := m.types[t]; len(ft.params) != 0 || len(ft.results) != 0 {
			return fmt.Errorf("%w: start function %d has type %s, want () -> ()", ErrInvalid, f, ft)
		}
	} // a type index out of range is left to wazero's validation
	return nil
}

// checkMemory requires the minimum memory to fit the limit.
func (m *moduleInfo) checkMemory(c Config) error {
	limit, ok := c.limit()
	if !ok {
		return nil // wazero checks the 4 GiB maximum
	}
	for _, mem := range m.memories {
		if mem.min > limit {
			return fmt.Errorf("%w: the module needs at least %d pages (%d bytes) of memory; the limit is %d pages (%d bytes)",
				ErrMemoryMinimum, mem.min, uint64(mem.min)*PageSize, limit, uint64(limit)*PageSize)
		}
	}
	return nil
}

func (t funcType) equal(o funcType) bool {
	return bytes.Equal(t.params, o.params) && bytes.Equal(t.results, o.results)
}

func (t funcType) String() string {
	var b strings.Builder
	list := func(ts []api.ValueType) {
		b.WriteByte('(')
		for i, v := range ts {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(api.ValueTypeName(v))
		}
		b.WriteByte(')')
	}
	list(t.params)
	b.WriteString(" -> ")
	list(t.results)
	return b.String()
}

// wasiFunctions returns the types of the wasi_snapshot_preview1 functions
// wazero implements, by name.
var wasiFunctions = sync.OnceValues(func() (map[string]funcType, error) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	cm, err := wasi_snapshot_preview1.NewBuilder(r).Compile(ctx)
	if err != nil {
		return nil, err
	}
	defs := cm.ExportedFunctions()
	ret := make(map[string]funcType, len(defs))
	for name, d := range defs {
		ret[name] = funcType{params: d.ParamTypes(), results: d.ResultTypes()}
	}
	return ret, nil
})

// reader decodes the WebAssembly binary format.
type reader struct {
	b   []byte
	off int
}

var errEOF = errors.New("unexpected end")

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errEOF
	}
	r.off++
	return r.b[r.off-1], nil
}

func (r *reader) bytes(n uint32) ([]byte, error) {
	if uint64(n) > uint64(len(r.b)-r.off) {
		return nil, errEOF
	}
	r.off += int(n)
	return r.b[r.off-int(n) : r.off], nil
}

// u32 decodes an unsigned LEB128 integer of at most 32 bits.
func (r *reader) u32() (uint32, error) {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		b, err := r.byte()
		if err != nil {
			return 0, err
		}
		if shift == 28 && b > 0x0f {
			return 0, fmt.Errorf("integer at offset %#x overflows 32 bits", r.off-1)
		}
		v |= uint32(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("integer at offset %#x overflows 32 bits", r.off-1)
}

func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	b, err := r.bytes(n)
	return string(b), err
}

func (r *reader) vec(each func() error) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if err = each(); err != nil {
			return err
		}
	}
	if r.off != len(r.b) {
		return fmt.Errorf("%d unexpected bytes at its end", len(r.b)-r.off)
	}
	return nil
}

func (r *reader) valTypes() ([]api.ValueType, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	b, err := r.bytes(n)
	if err != nil {
		return nil, err
	}
	for _, t := range b {
		switch t {
		case api.ValueTypeI32, api.ValueTypeI64, api.ValueTypeF32, api.ValueTypeF64,
			api.ValueTypeExternref, 0x7b /* v128 */, 0x70 /* funcref */ :
		default:
			return nil, fmt.Errorf("unknown value type %#x", t)
		}
	}
	return b, nil
}

func (r *reader) limits() (l limits, err error) {
	flag, err := r.byte()
	if err != nil {
		return l, err
	}
	if flag > 3 {
		return l, fmt.Errorf("unsupported limits flag %#x (memory64 or custom page sizes?)", flag)
	}
	if l.min, err = r.u32(); err != nil {
		return l, err
	}
	if flag&1 != 0 {
		l.hasMax = true
		l.max, err = r.u32()
	}
	return l, err
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// locals decodes a function body's local declarations and returns how many
// locals they declare.
func (r *reader) locals() (uint64, error) {
	n, err := r.u32()
	if err != nil {
		return 0, err
	}
	var total uint64
	for i := uint32(0); i < n; i++ {
		count, err := r.u32()
		if err != nil {
			return 0, err
		}
		if _, err = r.byte(); err != nil { // value type
			return 0, err
		}
		total += uint64(count)
	}
	return total, nil
}

// maxNesting decodes the instructions from r's offset to its end and
// returns the deepest nesting of block, loop, if and try, stopping as soon
// as it exceeds limit. ok is false if it met an opcode it does not know or
// a malformed immediate: the depth is then a lower bound, and wazero's
// validation decides. It calls mutation with the name of each instruction
// that changes a table or uses passive data (snapshotPlan refuses them),
// and global with the index of each global.get and global.set.
func (r *reader) maxNesting(limit int, mutation func(op string), global func(index uint32)) (depth int, ok bool) {
	cur := 0
	for r.off < len(r.b) {
		at := r.off
		op, sub, known, err := r.instruction()
		if !known || err != nil {
			return depth, false
		}
		switch op {
		case 0x23, 0x24: // global.get, global.set
			index, _ := (&reader{b: r.b[:r.off], off: at + 1}).u32()
			global(index)
		case 0x02, 0x03, 0x04, 0x06: // block, loop, if, try
			if cur++; cur > depth {
				depth = cur
				if depth > limit {
					return depth, true
				}
			}
		case 0x0b, 0x18: // end; delegate, which ends a try
			cur--
		case 0x26:
			mutation("table.set")
		case 0xfc:
			if name := miscMutations[sub]; name != "" {
				mutation(name)
			}
		}
	}
	return depth, true
}

// instruction decodes the instruction at r's offset, immediates included:
// its opcode and, for a prefixed one (0xfc, 0xfd, 0xfe), its sub-opcode.
// known is false for an opcode it does not know, whose immediates it
// cannot skip.
func (r *reader) instruction() (op byte, sub uint32, known bool, err error) {
	op, err = r.byte()
	if err != nil {
		return op, 0, true, err
	}
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04 || op == 0x06: // block, loop, if, try
		err = r.blockType()
	case op == 0x0b: // end
	case op == 0x18: // delegate
		_, err = r.u32()
	case op <= 0x01, op == 0x05, op == 0x07, op == 0x0f, op == 0x19, op == 0x1a, op == 0x1b, op == 0xd1,
		op >= 0x45 && op <= 0xc4: // no immediate
	case op == 0x08, op == 0x09, op == 0x0c, op == 0x0d, op == 0x10, op == 0x12,
		op >= 0x20 && op <= 0x26, op == 0xd2: // one index
		_, err = r.u32()
	case op == 0x11, op == 0x13: // call_indirect, return_call_indirect
		if _, err = r.u32(); err == nil {
			_, err = r.u32()
		}
	case op == 0x0e: // br_table
		var n uint32
		if n, err = r.u32(); err == nil {
			for i := uint32(0); i <= n && err == nil; i++ {
				_, err = r.u32()
			}
		}
	case op == 0x1c: // select t*
		var n uint32
		if n, err = r.u32(); err == nil {
			_, err = r.bytes(n)
		}
	case op >= 0x28 && op <= 0x3e: // loads and stores
		err = r.memarg()
	case op == 0x3f, op == 0x40, op == 0xd0: // memory.size, memory.grow, ref.null
		_, err = r.byte()
	case op == 0x41, op == 0x42: // i32.const, i64.const
		err = r.sleb()
	case op == 0x43:
		_, err = r.bytes(4)
	case op == 0x44:
		_, err = r.bytes(8)
	case op == 0xfc:
		sub, err = r.miscImmediates()
	case op == 0xfd:
		sub, err = r.simdImmediates()
	case op == 0xfe: // atomics
		if sub, err = r.u32(); err == nil {
			if sub == 0x03 { // atomic.fence
				_, err = r.byte()
			} else {
				err = r.memarg()
			}
		}
	default:
		return op, 0, false, nil
	}
	return op, sub, true, err
}

// blockType skips a block type: 0x40, a value type, or a type index (s33).
func (r *reader) blockType() error {
	if r.off < len(r.b) && (r.b[r.off] == 0x40 || r.b[r.off] >= 0x6f && r.b[r.off] <= 0x7f) {
		r.off++
		return nil
	}
	return r.sleb()
}

// sleb skips a signed LEB128 integer of at most 64 bits.
func (r *reader) sleb() error {
	for i := 0; i < 10; i++ {
		b, err := r.byte()
		if err != nil {
			return err
		}
		if b&0x80 == 0 {
			return nil
		}
	}
	return errors.New("integer too long")
}

func (r *reader) memarg() error {
	if _, err := r.u32(); err != nil { // alignment
		return err
	}
	_, err := r.u32() // offset
	return err
}

// miscMutations names the 0xfc-prefixed instructions that change a table
// or use passive data, by sub-opcode.
var miscMutations = map[uint32]string{
	8: "memory.init", 9: "data.drop", 12: "table.init", 13: "elem.drop",
	14: "table.copy", 15: "table.grow", 17: "table.fill",
}

// miscImmediates skips the immediates of a 0xfc-prefixed instruction and
// returns its sub-opcode.
func (r *reader) miscImmediates() (uint32, error) {
	sub, err := r.u32()
	if err != nil {
		return 0, err
	}
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init
		if _, err = r.u32(); err == nil {
			_, err = r.byte()
		}
	case sub == 9, sub == 13, sub >= 15 && sub <= 17: // data.drop, elem.drop, table.grow/size/fill
		_, err = r.u32()
	case sub == 10: // memory.copy
		_, err = r.bytes(2)
	case sub == 11: // memory.fill
		_, err = r.byte()
	case sub == 12, sub == 14: // table.init, table.copy
		if _, err = r.u32(); err == nil {
			_, err = r.u32()
		}
	default:
		return sub, fmt.Errorf("unknown instruction 0xfc %d", sub)
	}
	return sub, err
}

// constValue decodes a constant expression up to its end. value and ok
// report an expression that is a single i32.const.
func (r *reader) constValue() (value uint32, ok bool, err error) {
	for n := 0; ; n++ {
		op, err := r.byte()
		if err != nil {
			return 0, false, err
		}
		switch {
		case op == 0x0b: // end
			return value, ok && n == 1, nil
		case op == 0x41: // i32.const
			v, err := r.s32()
			if err != nil {
				return 0, false, err
			}
			value, ok = uint32(v), n == 0
		case op == 0x42: // i64.const
			err = r.sleb()
		case op == 0x43:
			_, err = r.bytes(4)
		case op == 0x44:
			_, err = r.bytes(8)
		case op == 0x23, op == 0xd2: // global.get, ref.func
			_, err = r.u32()
		case op == 0xd0: // ref.null
			_, err = r.byte()
		case op >= 0x6a && op <= 0x6c, op >= 0x7c && op <= 0x7e: // extended constants
		case op == 0xfd: // v128.const
			var sub uint32
			if sub, err = r.u32(); err == nil && sub == 12 {
				_, err = r.bytes(16)
			} else if err == nil {
				err = fmt.Errorf("instruction 0xfd %d in a constant expression", sub)
			}
		default:
			return 0, false, fmt.Errorf("instruction %#x in a constant expression", op)
		}
		if err != nil {
			return 0, false, err
		}
	}
}

// s32 decodes a signed LEB128 integer of at most 32 bits.
func (r *reader) s32() (int32, error) {
	var v int64
	var shift uint
	for i := 0; i < 5; i++ {
		b, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			if shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return int32(v), nil
		}
	}
	return 0, errors.New("integer too long")
}

// simdImmediates skips the immediates of a 0xfd-prefixed instruction and
// returns its sub-opcode.
func (r *reader) simdImmediates() (uint32, error) {
	sub, err := r.u32()
	if err != nil {
		return 0, err
	}
	switch {
	case sub <= 11, sub == 92, sub == 93: // loads, stores, load_zero
		return sub, r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		_, err = r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		_, err = r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		if err = r.memarg(); err == nil {
			_, err = r.byte()
		}
	}
	return sub, err
}
