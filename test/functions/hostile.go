package functions

import "strconv"

// Hostile modules: valid WASI commands (a `_start` of type () -> (), no
// imports) whose only function is built to make a compiler work hard, and
// one that holds files open (OpenFilesWAT). They are generated rather than
// shipped, so a test picks the size it can afford.

// NestedBlocks returns a module of count functions (the first is `_start`)
// that each nest n empty blocks; wazero's compiler takes time quadratic in
// n (about 3.7 s for 20 000 and 25 s for 60 000 on a 2-core machine) while
// the module stays about 2n·count bytes.
func NestedBlocks(n, count int) []byte {
	body := make([]byte, 0, 2*n+3)
	body = append(body, 0) // no locals
	for i := 0; i < n; i++ {
		body = append(body, 0x02, 0x40) // block (no result)
	}
	for i := 0; i < n; i++ {
		body = append(body, 0x0b) // end
	}
	body = append(body, 0x0b)
	bodies := make([][]byte, count)
	for i := range bodies {
		bodies[i] = body
	}
	return command(bodies...)
}

// BigFunction returns a module whose `_start` body is size bytes of
// `i32.const 0; drop` pairs (and a final end).
func BigFunction(size int) []byte {
	body := make([]byte, 0, size+4)
	body = append(body, 0) // no locals
	for len(body)+3 <= size-1 {
		body = append(body, 0x41, 0x00, 0x1a)
	}
	for len(body) < size-1 {
		body = append(body, 0x01) // nop
	}
	return command(append(body, 0x0b))
}

// ManyLocals returns a module whose `_start` declares n i32 locals.
func ManyLocals(n uint32) []byte {
	body := []byte{1}
	body = appendU32(body, n)
	body = append(body, 0x7f, 0x0b) // i32, end
	return command(body)
}

// command makes a module of functions of type () -> () with the given
// bodies, exporting the first as `_start`.
func command(bodies ...[]byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = section(m, 1, []byte{1, 0x60, 0, 0}) // type 0: () -> ()
	funcs := appendU32(nil, uint32(len(bodies)))
	code := appendU32(nil, uint32(len(bodies)))
	for _, b := range bodies {
		funcs = append(funcs, 0) // type 0
		code = append(appendU32(code, uint32(len(b))), b...)
	}
	m = section(m, 3, funcs)
	m = section(m, 7, append([]byte{1, 6}, append([]byte("_start"), 0, 0)...)) // export func 0
	return section(m, 10, code)
}

func section(m []byte, id byte, contents []byte) []byte {
	m = append(m, id)
	m = appendU32(m, uint32(len(contents)))
	return append(m, contents...)
}

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

// OpenFilesWAT is a WASI command, in the text format, that opens the file
// at path (relative, in the preopened directory, descriptor 3) without
// closing it until an open fails or max opens succeeded, and then exits
// with the number of files it opened | the last errno << shift.
func OpenFilesWAT(path string, max, shift int) string {
	return `(module
		(import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
		(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
		(memory 1)
		(data (i32.const 100) "` + path + `")
		(func (export "_start") (local $n i32) (local $errno i32)
			(loop $l
				(local.set $errno (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const ` + strconv.Itoa(len(path)) + `)
					(i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 200)))
				(if (i32.eqz (local.get $errno)) (then
					(local.set $n (i32.add (local.get $n) (i32.const 1)))
					(br_if $l (i32.lt_u (local.get $n) (i32.const ` + strconv.Itoa(max) + `))))))
			(call $exit (i32.or (local.get $n) (i32.shl (local.get $errno) (i32.const ` + strconv.Itoa(shift) + `))))))`
}
