package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"testing"

	"github.com/tetratelabs/wazero"

	"nebula.dev/nebula/test/functions"
)

// The fuzz targets below run the parser the shim runs as root on the bytes
// of any image. make test-unit runs each for a bounded time; their seed
// corpus (the modules the tests build, a few hostile and handcrafted ones,
// and testdata/fuzz) runs with every go test.

// fuzzAllocSlack is the allocation a parse may make beyond
// fuzzAllocPerByte per input byte: the constant cost of a parse and of its
// error message, plus the span-granular accounting of the allocation
// metric. A decoder that believed a vector count (up to 2^32 entries)
// would allocate gigabytes from a few bytes.
const (
	fuzzAllocSlack   = 1 << 20
	fuzzAllocPerByte = 64
)

// fuzzCompileMax is the largest accepted input the fuzz targets also
// compile with wazero's interpreter, which keeps each run quick; the
// seeds' larger modules are compiled by the other tests.
const fuzzCompileMax = 256 << 10

// fuzzSeedMax is the largest built module seeded when fuzzing rather than
// running the seed corpus: mutating the 3 MB Go modules (probe.wasm,
// escape.wasm) costs a parse of megabytes per run, and minimizing each
// input they yield takes the fuzzer minutes. go test runs them as seeds.
const fuzzSeedMax = 64 << 10

// fuzzing reports whether go test runs with -fuzz.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}

// addModuleSeeds adds the modules the tests use to f's seed corpus: the
// built functions, the hostile modules at sizes a run can afford, and
// modules with tables.
func addModuleSeeds(f *testing.F) {
	needFunctions(f)
	for _, name := range []string{
		functions.Hello, functions.Exit7, functions.Echo, functions.Scratch, functions.Trap,
		functions.BadImport, functions.NoStart, functions.Memhog, functions.Probe, functions.Escape,
		functions.Reactor, functions.ReactorState,
	} {
		b, err := os.ReadFile(filepath.Join(fnDir, name))
		if err != nil {
			f.Fatal(err)
		}
		if fuzzing() && len(b) > fuzzSeedMax {
			continue
		}
		f.Add(b)
	}
	f.Add(wat(f, keptReactor)) // a reactor the rewrite adds a function to
	// a body naming a global the deadline's rewrite adds
	f.Add(wat(f, `(module (memory 1) (func (export "_start") (global.set 1 (i32.const 7))))`))
	f.Add(functions.NestedBlocks(64, 3))
	f.Add(functions.NestedBlocks(MaxNesting+1, 1))
	f.Add(functions.BigFunction(4096))
	f.Add(functions.ManyLocals(64))
	f.Add(functions.ManyLocals(MaxLocals + 1))
	f.Add(moduleWithTables([]table{{0x70, limits{min: 1}}, {0x6f, limits{min: 2, max: 1 << 30, hasMax: true}}}))
	f.Add(moduleWithTables([]table{{0x70, limits{min: 1 << 20}}}))
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x0d\x00\x01\x00"))
	// A type section claiming 2^32-1 entries in 5 bytes.
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x01\x05\xff\xff\xff\xff\x0f"))
}

// allocatedBytes is the heap allocated by the process so far.
func allocatedBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// FuzzParseModule: parseModule and preflight never panic, allocate at most
// fuzzAllocPerByte bytes per input byte each (plus fuzzAllocSlack), and every
// module preflight accepts compiles with wazero's interpreter without
// panicking (an error is fine: wazero validates what preflight leaves to
// it).
func FuzzParseModule(f *testing.F) {
	addModuleSeeds(f)
	if _, err := wasiFunctions(); err != nil { // allocated once, not per input
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		before := allocatedBytes()
		info, perr := parseModule(wasm)
		_, err := preflight(wasm, NewConfig().WithMemoryLimit(64<<20))
		if allocated, bound := allocatedBytes()-before, uint64(fuzzAllocSlack+2*fuzzAllocPerByte*len(wasm)); allocated > bound {
			t.Fatalf("parsing %d bytes allocated %d bytes, more than %d", len(wasm), allocated, bound)
		}
		if (perr == nil) != (info != nil) {
			t.Fatalf("parseModule returned info %v and error %v", info != nil, perr)
		}
		if perr != nil && err == nil {
			t.Fatalf("preflight accepted a module parseModule rejects: %v", perr)
		}
		if err != nil || len(wasm) > fuzzCompileMax {
			return // production hands wazero only what preflight accepts
		}
		// The host compiles the module with its tables bounded; wazero may
		// refuse it (it validates what preflight leaves to it), but must
		// neither panic nor run out of memory.
		_ = interpreterCompile(boundTables(wasm, info))
	})
}

// FuzzBoundTables: for every module parseModule accepts, boundTables
// returns a module that parses again with the same tables, every maximum
// at most max(minimum, TableElementsMax), bytes identical outside the
// table section, and that wazero accepts whenever it accepted the input.
// Bounding again changes nothing.
func FuzzBoundTables(f *testing.F) {
	addModuleSeeds(f)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		info, err := parseModule(wasm)
		if err != nil {
			return
		}
		out := boundTables(wasm, info)
		if err := sameOutsideTables(wasm, out, info); err != nil {
			t.Fatal(err)
		}
		outInfo, err := parseModule(out)
		if err != nil {
			t.Fatalf("the bounded module does not parse: %v", err)
		}
		if len(outInfo.tables) != len(info.tables) {
			t.Fatalf("%d tables after bounding, %d before", len(outInfo.tables), len(info.tables))
		}
		for i, tb := range outInfo.tables {
			in := info.tables[i]
			if tb.refType != in.refType || tb.min != in.min || !tb.hasMax || tb.max > max(in.min, TableElementsMax) ||
				in.hasMax && tb.max > in.max {
				t.Fatalf("table %d: %+v bounded to %+v", i, in, tb)
			}
		}
		if again := boundTables(out, outInfo); !bytes.Equal(again, out) {
			t.Fatal("bounding a bounded module changed it")
		}
		if _, perr := preflight(wasm, Config{}); perr == nil && len(wasm) <= fuzzCompileMax && interpreterCompile(wasm) == nil {
			if err := interpreterCompile(out); err != nil {
				t.Fatalf("wazero compiles the module but not its bounded form: %v", err)
			}
		}
	})
}

// FuzzPlanReactor: for every reactor preflight accepts, the rewritten
// module parses, has no start, data or data count section, exports every
// mutable global and the start function under the reserved names, and
// wazero accepts it whenever it accepted the input.
func FuzzPlanReactor(f *testing.F) {
	addModuleSeeds(f)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		info, err := preflight(wasm, Config{})
		if err != nil || !info.isReactor() {
			return
		}
		p := planReactor(wasm, info)
		out, err := parseModule(p.module())
		if err != nil {
			t.Fatalf("the rewritten module does not parse: %v", err)
		}
		for _, s := range out.sections {
			if s.id == 8 || s.id == 11 || s.id == 12 {
				t.Fatalf("the rewritten module has section %d", s.id)
			}
		}
		names := p.globals
		if p.start {
			names = append(names, startExport)
		}
		if p.fdProbe {
			names = append(names, fdProbeExport)
		}
		for _, name := range names {
			if _, ok := out.exports[name]; !ok {
				t.Fatalf("the rewritten module does not export %q", name)
			}
		}
		if len(out.exports) != len(info.exports)+len(names) {
			t.Fatalf("%d exports after the rewrite, %d + %d before", len(out.exports), len(info.exports), len(names))
		}
		if len(wasm) <= fuzzCompileMax && interpreterCompile(wasm) == nil {
			if err := interpreterCompile(p.module()); err != nil {
				t.Fatalf("wazero compiles the module but not its rewrite: %v", err)
			}
		}
	})
}

// FuzzInstrumentDeadline: for every module preflight accepts,
// instrumentDeadline's output parses, exports the stop global, and wazero
// accepts it whenever it accepted the input.
func FuzzInstrumentDeadline(f *testing.F) {
	addModuleSeeds(f)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		info, err := preflight(wasm, Config{})
		if err != nil {
			return
		}
		out, ok := instrumentDeadline(wasm, info)
		if !ok {
			return
		}
		outInfo, err := parseModule(out)
		if err != nil {
			t.Fatalf("the instrumented module does not parse: %v", err)
		}
		for _, name := range []string{stopExport, fuelExport} {
			if e, found := outInfo.exports[name]; !found || e.kind != externGlobal {
				t.Fatalf("the instrumented module does not export the global %q", name)
			}
		}
		if len(wasm) <= fuzzCompileMax {
			errIn, errOut := interpreterCompile(wasm), interpreterCompile(out)
			if errIn == nil && errOut != nil {
				t.Fatalf("wazero compiles the module but not its instrumented form: %v", errOut)
			}
			if errIn != nil && errOut == nil {
				t.Fatalf("wazero refuses the module (%v) but compiles its instrumented form", errIn)
			}
		}
	})
}

// sameOutsideTables reports whether out is in with only its table section
// replaced, or in itself.
func sameOutsideTables(in, out []byte, info *moduleInfo) error {
	if bytes.Equal(in, out) {
		return nil
	}
	s := info.tableSection
	if s.end == 0 {
		return errors.New("boundTables changed a module without a table section")
	}
	if !bytes.HasPrefix(out, in[:s.start]) || !bytes.HasSuffix(out[s.start:], in[s.end:]) {
		return fmt.Errorf("boundTables changed bytes outside the table section [%#x, %#x)", s.start, s.end)
	}
	return nil
}

// interpreterCompile compiles wasm with wazero's interpreter, which decodes
// and validates the whole module (as Check does).
func interpreterCompile(wasm []byte) error {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	_, err := r.CompileModule(ctx, wasm)
	return err
}
