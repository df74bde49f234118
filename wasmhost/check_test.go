package wasmhost

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"nebula.dev/nebula/test/functions"
)

// wat compiles WebAssembly text with wat2wasm.
func wat(tb testing.TB, src string) []byte {
	tb.Helper()
	needFunctions(tb)
	dir := tb.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	if b, err := exec.Command("wat2wasm", "--no-check", in, "-o", out).CombinedOutput(); err != nil {
		tb.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestCheck(t *testing.T) {
	hello := wasmFile(t, functions.Hello)
	tests := []struct {
		name string
		wasm []byte
		cfg  Config
		err  error
		msg  string // a substring of the error message
	}{
		{name: "hello", wasm: hello},
		{name: "probe", wasm: wasmFile(t, functions.Probe)},
		{name: "probe within limit", wasm: wasmFile(t, functions.Probe), cfg: NewConfig().WithMemoryLimit(64 << 20)},
		{name: "empty", wasm: nil, err: ErrNotWasm, msg: "the file is empty"},
		{name: "ELF", wasm: []byte("\x7fELF\x02\x01\x01\x00"), err: ErrNotWasm,
			msg: `it starts with 7f 45 4c 46 (an ELF executable), not the magic number 00 61 73 6d`},
		{name: "text format", wasm: []byte("(module)"), err: ErrNotWasm, msg: "WebAssembly text: compile it with wat2wasm"},
		{name: "short magic", wasm: []byte("\x00as"), err: ErrTruncated, msg: "3 bytes, shorter than the 8-byte header"},
		{name: "short header", wasm: []byte("\x00asm\x01\x00"), err: ErrTruncated, msg: "6 bytes, shorter than the 8-byte header"},
		{name: "component", wasm: []byte("\x00asm\x0d\x00\x01\x00"), err: ErrNotWasm, msg: "a WebAssembly component"},
		{name: "version 2", wasm: []byte("\x00asm\x02\x00\x00\x00"), err: ErrNotWasm, msg: "unsupported binary version 0x2, want 1"},
		{name: "truncated", wasm: hello[:len(hello)-5], err: ErrTruncated, msg: "section 11 (data) at offset"},
		{name: "truncated section header", wasm: append(append([]byte{}, hello[:8]...), 1, 0x85), err: ErrTruncated,
			msg: "it ends inside the header of a section at offset 0x8"},
		{name: "unknown section", wasm: []byte("\x00asm\x01\x00\x00\x00\x42\x00"), err: ErrInvalid, msg: "unknown section id 66 at offset 0x8"},
		{name: "bad import", wasm: wasmFile(t, functions.BadImport), err: ErrUnsupportedImport,
			msg: "unsupported import: env.nope (function); only the wasi_snapshot_preview1 functions of wazero v1.11.0 are provided"},
		{name: "unknown wasi function", err: ErrUnsupportedImport, msg: "wasi_snapshot_preview1.nope (not implemented)",
			wasm: wat(t, `(module (import "wasi_snapshot_preview1" "nope" (func)) (func (export "_start")))`)},
		{name: "wrong wasi type", err: ErrUnsupportedImport,
			msg:  "wasi_snapshot_preview1.fd_write with type (i32) -> (), want (i32, i32, i32, i32) -> (i32)",
			wasm: wat(t, `(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32))) (func (export "_start")))`)},
		{name: "imported memory", err: ErrUnsupportedImport, msg: "env.memory (a memory; only functions can be imported)",
			wasm: wat(t, `(module (import "env" "memory" (memory 1)) (func (export "_start")))`)},
		{name: "several bad imports", err: ErrUnsupportedImport, msg: "2 imports: env.a (function), env.b (function)",
			wasm: wat(t, `(module (import "env" "a" (func)) (import "env" "b" (func)) (func (export "_start")))`)},
		{name: "no _start", wasm: wasmFile(t, functions.NoStart), err: ErrNoStart,
			msg: `no _start function: the module does not export "_start", the entry point of a WASI command (it exports main, memory)`},
		{name: "reactor", err: ErrNoStart, msg: "it exports _initialize: a WASI reactor, not a command",
			wasm: wat(t, `(module (func (export "_initialize")))`)},
		{name: "_start not a function", err: ErrNoStart, msg: `export "_start" is a memory, not a function`,
			wasm: wat(t, `(module (memory (export "_start") 1))`)},
		{name: "_start with parameters", err: ErrNoStart, msg: `"_start" has type (i32) -> (), want () -> ()`,
			wasm: wat(t, `(module (func (export "_start") (param i32)))`)},
		{name: "minimum memory over the limit", cfg: NewConfig().WithMemoryLimit(1<<20 + 100), err: ErrMemoryMinimum,
			msg:  "memory minimum above the limit: the module needs at least 100 pages (6553600 bytes) of memory; the limit is 16 pages (1048576 bytes)",
			wasm: wat(t, `(module (memory 100) (func (export "_start")))`)},
		{name: "maximum memory over the limit is fine", cfg: NewConfig().WithMemoryLimit(1 << 20),
			wasm: wat(t, `(module (memory 1 1000) (func (export "_start")))`)},
		// Instantiation writes active segments into the minimum memory:
		// one beyond it fails every instance, so the module cannot start.
		{name: "data beyond the minimum memory", err: ErrInvalid,
			msg:  "data segment 1 (10 bytes at 0xfffa) ends beyond the module's minimum memory of 65536 bytes: no instance could start",
			wasm: wat(t, `(module (memory 1) (data (i32.const 0) "a") (data (i32.const 65530) "0123456789") (func (export "_start")))`)},
		{name: "reactor data beyond the minimum memory", err: ErrInvalid, msg: "data segment 0 (1 bytes at 0x10000) ends beyond",
			wasm: wat(t, `(module (memory 1) (data (i32.const 65536) "x") (func (export "nebula_handle") (result i32) (i32.const 0)))`)},
		{name: "data up to the minimum memory is fine",
			wasm: wat(t, `(module (memory 1) (data (i32.const 65526) "0123456789") (func (export "_start")))`)},
		{name: "invalid body", err: ErrInvalid, msg: "invalid WebAssembly module: ",
			wasm: wat(t, `(module (func (export "_start") (drop (i32.const 1)) (drop)))`)},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(ctx, tc.wasm, tc.cfg)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Check: got %v, want %v", err, tc.err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Check: got %q, want it to contain %q", err, tc.msg)
			}
		})
	}
}

// TestCompileChecks: Compile rejects what Check rejects, with the same error.
func TestCompileChecks(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, NewConfig().WithMemoryLimit(1<<20))
	for name, want := range map[string]error{
		functions.BadImport: ErrUnsupportedImport,
		functions.NoStart:   ErrNoStart,
		functions.Probe:     nil, // 39 pages minimum, above 16
	} {
		_, err := h.Compile(ctx, wasmFile(t, name))
		if want == nil {
			want = ErrMemoryMinimum
		}
		if !errors.Is(err, want) {
			t.Errorf("Compile(%s): got %v, want %v", name, err, want)
		}
	}
	_, err := h.Compile(ctx, wat(t, `(module (func (export "_start") (drop (i32.const 1)) (drop)))`))
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Compile(invalid body): got %v, want ErrInvalid", err)
	}
}

// TestLimits: modules beyond a structural limit are refused before anything
// compiles them, with an error naming the limit; modules just within pass.
func TestLimits(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		wasm []byte
		msg  string // "" for accepted
	}{
		{"nesting at the limit", functions.NestedBlocks(MaxNesting, 1), ""},
		{"nesting over the limit", functions.NestedBlocks(MaxNesting+1, 1), "nests blocks more than 20000 deep (MaxNesting)"},
		{"body at the limit", functions.BigFunction(MaxFunctionBodySize), ""},
		{"body over the limit", functions.BigFunction(MaxFunctionBodySize + 1), "function 0 has a body of 4194305 bytes, the limit is 4194304 (MaxFunctionBodySize)"},
		{"locals at the limit", functions.ManyLocals(MaxLocals), ""},
		{"locals over the limit", functions.ManyLocals(MaxLocals + 1), "function 0 declares 50001 locals, the limit is 50000 (MaxLocals)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := preflight(tc.wasm, Config{})
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("preflight: %v", err)
				}
				if len(tc.wasm) > 1<<20 {
					return // validating 4 MiB takes seconds
				}
				if err := Check(ctx, tc.wasm, Config{}); err != nil {
					t.Fatalf("Check: %v (the generated module must be valid)", err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want ErrTooLarge with %q", err, tc.msg)
			}
			if err := Check(ctx, tc.wasm, Config{}); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Check: %v; want ErrTooLarge", err)
			}
		})
	}
}

// TestLimitsOfRealModules: the built test functions, the Go probe among
// them, are far within the limits; it logs their largest values.
func TestLimitsOfRealModules(t *testing.T) {
	for _, name := range []string{functions.Probe, functions.Hello, functions.Echo, functions.Trap, functions.Scratch} {
		info, err := preflight(wasmFile(t, name), Config{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := info.code
		t.Logf("%s: %d functions (%d undecoded); largest body %d bytes (function %d); most locals %d (function %d); deepest nesting %d (function %d)",
			name, c.functions, c.undecoded, c.maxBody, c.bodyAt, c.maxLocals, c.localsAt, c.maxDepth, c.depthAt)
		if c.functions*10 > MaxFunctions || c.maxBody*10 > MaxFunctionBodySize || c.maxLocals*10 > MaxLocals || c.maxDepth*5 > MaxNesting {
			t.Errorf("%s comes within 10x (nesting: 5x) of a limit", name)
		}
		if c.undecoded != 0 {
			t.Errorf("%s: the instructions of %d functions could not be decoded", name, c.undecoded)
		}
	}
}

// TestVectorCounts: a section declaring more entries than it has bytes is
// refused by preflight, so wazero's decoder, which allocates every entry a
// section declares before reading one, never sees it: Check returns
// ErrInvalid instead of the process dying of an allocation of hundreds of
// gigabytes. Each case is a valid command with one section appended, or a
// header and one section.
func TestVectorCounts(t *testing.T) {
	ctx := context.Background()
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x0f} // 2^32-1
	valid := functions.BigFunction(8)
	for _, tc := range []struct {
		name string
		wasm []byte
	}{
		// Sections preflight otherwise leaves to wazero.
		{"data", append(append([]byte{}, valid...), append([]byte{11, 5}, huge...)...)},
		{"data, one more than its bytes", append(append([]byte{}, valid...), 11, 2, 2, 0)},
		{"global", append([]byte("\x00asm\x01\x00\x00\x00\x06\x05"), huge...)},
		{"element", append([]byte("\x00asm\x01\x00\x00\x00\x09\x05"), huge...)},
		// Vectors inside sections preflight otherwise leaves to wazero.
		{"data segment bytes", append(append([]byte{}, valid...), append([]byte{11, 7, 1, 1}, huge...)...)},
		{"element segment functions", append([]byte("\x00asm\x01\x00\x00\x00\x09\x08\x01\x01\x00"), huge...)},
		{"custom section name", append(append([]byte{}, valid...), append([]byte{0, 5}, huge...)...)},
		{"function names", append(append([]byte{}, valid...), append([]byte{0, 12, 4, 'n', 'a', 'm', 'e', 1, 5}, huge...)...)},
		{"local names", append(append([]byte{}, valid...), append([]byte{0, 12, 4, 'n', 'a', 'm', 'e', 2, 5}, huge...)...)},
		{"local names of a function", append(append([]byte{}, valid...), append([]byte{0, 14, 4, 'n', 'a', 'm', 'e', 2, 7, 1, 0}, huge...)...)},
		// Sections preflight parses.
		{"type", append([]byte("\x00asm\x01\x00\x00\x00\x01\x05"), huge...)},
		{"code", append([]byte("\x00asm\x01\x00\x00\x00\x0a\x05"), huge...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := preflight(tc.wasm, Config{})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "entries in") {
				t.Fatalf("preflight: %v; want ErrInvalid naming the count", err)
			}
			if err := Check(ctx, tc.wasm, Config{}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Check: %v; want ErrInvalid", err)
			}
		})
	}
	if err := Check(ctx, append(append([]byte{}, valid...), 11, 1, 0), Config{}); err != nil {
		t.Fatalf("a command with an empty data section: %v", err)
	}
}

// TestParseDataOneSlice: the data section's segments are decoded into one
// slice sized from their count, not grown segment by segment (a Go
// reactor has 37,398 of them), and a count that claims more segments than
// the section's bytes can hold gets no room for them.
func TestParseDataOneSlice(t *testing.T) {
	const n = 20000
	var data []byte
	for i := 0; i < n; i++ {
		data = append(data, 0, 0x41, 0, 0x0b, 1, byte(i)) // active, i32.const 0, one byte
	}
	module := func(count uint32, body []byte) []byte {
		sec := appendU32(nil, count)
		sec = append(sec, body...)
		wasm := []byte("\x00asm\x01\x00\x00\x00")
		wasm = append(wasm, 5, 3, 1, 0, 1) // memory section: one memory of 1 page
		wasm = append(wasm, 11)
		return append(appendU32(wasm, uint32(len(sec))), sec...)
	}
	allocated := func(wasm []byte) (uint64, *moduleInfo, error) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		info, err := parseModule(wasm)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, info, err
	}
	size := uint64(n * unsafe.Sizeof(dataSegment{}))
	got, info, err := allocated(module(n, data))
	if err != nil || len(info.data) != n {
		t.Fatalf("parse: %d segments, %v", len(info.data), err)
	}
	if got > size+size/4 {
		t.Errorf("%d segments (%d bytes of dataSegment) allocated %d bytes; want one slice", n, size, got)
	}
	// A lying count: room bounded by the bytes, then a clean error.
	if got, _, err := allocated(module(1<<30, data[:60])); err == nil || got > 64<<10 {
		t.Errorf("a count of 2^30 segments in 60 bytes: %d bytes allocated, %v; want an error and no room for them", got, err)
	}
}
