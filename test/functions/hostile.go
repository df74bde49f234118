package functions

// Hostile modules: valid WASI commands (a `_start` of type () -> (), no
// imports) whose only function is built to make a compiler work hard. They
// are generated rather than shipped, so a test picks the size it can afford.

// NestedBlocks returns a module whose `_start` nests n empty blocks; wazero's
// compiler takes time quadratic in n (about 25 s for 60 000 on a 2-core
// machine) while the module stays 2n+60 bytes.
func NestedBlocks(n int) []byte {
	body := make([]byte, 0, 2*n+3)
	body = append(body, 0) // no locals
	for i := 0; i < n; i++ {
		body = append(body, 0x02, 0x40) // block (no result)
	}
	for i := 0; i < n; i++ {
		body = append(body, 0x0b) // end
	}
	return command(append(body, 0x0b))
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

// command wraps one function body as a module exporting it as `_start`.
func command(body []byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = section(m, 1, []byte{1, 0x60, 0, 0})                                   // type: () -> ()
	m = section(m, 3, []byte{1, 0})                                            // function 0 has type 0
	m = section(m, 7, append([]byte{1, 6}, append([]byte("_start"), 0, 0)...)) // export func 0
	code := appendU32([]byte{1}, uint32(len(body)))
	return section(m, 10, append(code, body...))
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
