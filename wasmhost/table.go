package wasmhost

// TableElementsMax is the most elements a table may grow to when its
// module declares no smaller maximum: 16384 (128 KiB in wazero, which
// keeps a table as a Go slice of 8-byte references).
//
// wazero has no hook to limit table growth: a module whose table has no
// maximum can grow it to 2^32-1 elements (32 GiB) with table.grow. So
// before compiling, a table with no maximum or one above TableElementsMax
// is given the maximum max(minimum, TableElementsMax) in the module's
// bytes; table.grow past it returns -1, as the WebAssembly specification
// allows, and what the guest does then (usually trap) is its own business.
// The minimum is never changed: a module needing more is refused when its
// tables do not fit the memory budget (see TableBytes).
const TableElementsMax = 1 << 14

// What a table element costs on the host's heap: 8 bytes in a table that
// cannot grow (minimum = maximum); in one that grows, every copy wazero's
// append leaves to the garbage collector counted: Go grows a large slice
// by 1.25×, so the copies of a table grown an element at a time add up to
// about 5 × 8 bytes an element (TestTableGrowthBounded logs what it
// measures); budgeted as 48.
const (
	tableElementSize = 8
	tableElementCost = 48
)

// boundTables returns wasm with every table's maximum at most
// max(minimum, TableElementsMax), and wasm itself when nothing needs
// changing. The result depends only on wasm, so the shim and the host
// compile the same bytes and share the compilation cache.
func boundTables(wasm []byte, info *moduleInfo) []byte {
	changed := false
	tables := make([]table, len(info.tables))
	for i, t := range info.tables {
		if bound := max(t.min, TableElementsMax); !t.hasMax || t.max > bound {
			t.max, t.hasMax, changed = bound, true, true
		}
		tables[i] = t
	}
	if !changed {
		return wasm
	}
	var body []byte
	body = appendU32(body, uint32(len(tables)))
	for _, t := range tables {
		body = append(body, t.refType, 1) // flag 1: minimum and maximum
		body = appendU32(appendU32(body, t.min), t.max)
	}
	s := info.tableSection
	out := make([]byte, 0, len(wasm)+len(body))
	out = append(out, wasm[:s.start]...)
	out = appendU32(append(out, 4), uint32(len(body)))
	out = append(out, body...)
	return append(out, wasm[s.end:]...)
}

func (m *moduleInfo) tableBytes() uint64 {
	var n uint64
	for _, t := range m.tables {
		elems := max(t.min, TableElementsMax)
		if t.hasMax {
			elems = min(elems, max(t.max, t.min))
		}
		if elems == t.min {
			n += uint64(elems) * tableElementSize
		} else {
			n += uint64(elems) * tableElementCost
		}
	}
	return n
}

// appendU32 appends v in unsigned LEB128.
func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
