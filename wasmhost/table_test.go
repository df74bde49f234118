package wasmhost

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// TestBoundTables: tables without a maximum, or above TableElementsMax, get
// one; minimums and everything else stay as they were.
func TestBoundTables(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []table
		wantMax []uint32
	}{
		{"no maximum", []table{{0x70, limits{min: 0}}}, []uint32{TableElementsMax}},
		{"Go's: a large minimum, no maximum", []table{{0x70, limits{min: 6085}}}, []uint32{TableElementsMax}},
		{"minimum above the bound", []table{{0x70, limits{min: 1 << 20}}}, []uint32{1 << 20}},
		{"maximum above the bound", []table{{0x6f, limits{min: 1, max: 1 << 30, hasMax: true}}}, []uint32{TableElementsMax}},
		{"two tables, one within", []table{{0x70, limits{min: 2, max: 10, hasMax: true}}, {0x70, limits{min: 3}}}, []uint32{10, TableElementsMax}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wasm := moduleWithTables(tc.in)
			info, err := parseModule(wasm)
			if err != nil {
				t.Fatal(err)
			}
			out, err := parseModule(boundTables(wasm, info))
			if err != nil {
				t.Fatal(err)
			}
			if len(out.tables) != len(tc.in) {
				t.Fatalf("%d tables, want %d", len(out.tables), len(tc.in))
			}
			for i, tb := range out.tables {
				if tb.refType != tc.in[i].refType || tb.min != tc.in[i].min || !tb.hasMax || tb.max != tc.wantMax[i] {
					t.Errorf("table %d: %+v, want type %#x min %d max %d", i, tb, tc.in[i].refType, tc.in[i].min, tc.wantMax[i])
				}
			}
			if len(out.memories) != 1 || out.memories[0].min != 1 {
				t.Errorf("the memory section after the tables was damaged: %+v", out.memories)
			}
		})
	}
}

// moduleWithTables encodes a module with the given tables and one page of
// memory.
func moduleWithTables(tables []table) []byte {
	var body []byte
	body = appendU32(body, uint32(len(tables)))
	for _, t := range tables {
		body = append(body, t.refType)
		if t.hasMax {
			body = appendU32(appendU32(append(body, 1), t.min), t.max)
		} else {
			body = appendU32(append(body, 0), t.min)
		}
	}
	wasm := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	wasm = append(appendU32(append(wasm, 4), uint32(len(body))), body...)
	return append(wasm, 5, 3, 1, 0, 1) // memory section: one memory, min 1
}

// TestTableGrowthBounded: a guest growing its unbounded table in a loop
// stops at TableElementsMax (table.grow returns -1, the guest traps) after
// a bounded amount of the host's memory, and the next invocation runs.
func TestTableGrowthBounded(t *testing.T) {
	wasm := wasmFile(t, functions.Memhog)
	info, err := parseModule(wasm)
	if err != nil || info.tableBytes() != TableElementsMax*tableElementCost {
		t.Fatalf("tableBytes = %d, %v; want %d", info.tableBytes(), err, TableElementsMax*tableElementCost)
	}
	inv := NewInvoker(compile(t, Config{}, functions.Memhog), RunConfig{Args: []string{functions.Memhog}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("t")})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, abi.ErrTrap) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err %v, want a trap (unreachable) once table.grow fails", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("growing a table to %d elements allocated %d bytes (%.1f per element, every copy counted)",
		TableElementsMax, alloc, float64(alloc)/TableElementsMax)
	if alloc > 4<<20 {
		t.Fatalf("growing a table allocated %d bytes, want < 4 MiB", alloc)
	}
	resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("x")})
	if err != nil || string(resp.Stdout) != "ok\n" {
		t.Fatalf("the next invocation: %q, %v", resp.Stdout, err)
	}
}

// TestBoundTablesOneSection: a module with two table sections is refused,
// as wazero refuses it; before, parseModule took both sections' tables and
// boundTables wrote them all into the second, leaving the first as it was.
func TestBoundTablesOneSection(t *testing.T) {
	one := moduleWithTables([]table{{0x70, limits{min: 1}}})
	tables := one[8 : len(one)-5] // the table section
	two := append(append(append([]byte{}, one[:8]...), tables...), one[8:]...)
	if _, err := parseModule(one); err != nil {
		t.Fatal(err)
	}
	_, err := parseModule(two)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "section 4 (table) at offset 0xe is repeated or out of order") {
		t.Fatalf("two table sections: %v; want ErrInvalid naming the second", err)
	}
	if interpreterCompile(two) == nil {
		t.Fatal("wazero compiles a module with two table sections")
	}
}
