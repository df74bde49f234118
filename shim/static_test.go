package shim

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// elfExecutable returns a minimal x86-64 ELF executable: a PT_LOAD program
// header and, when interp is not empty, a PT_INTERP naming it, as the Go
// linker writes for a cgo (dynamically linked) binary.
func elfExecutable(interp string) []byte {
	const ehsize, phentsize = 64, 56
	phnum := 1
	if interp != "" {
		phnum = 2
	}
	dataOff := uint64(ehsize + phnum*phentsize)
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0})
	b.Write(make([]byte, 8))
	le := binary.LittleEndian
	binary.Write(&b, le, uint16(2))  // ET_EXEC
	binary.Write(&b, le, uint16(62)) // EM_X86_64
	binary.Write(&b, le, uint32(1))
	binary.Write(&b, le, uint64(0x401000)) // entry
	binary.Write(&b, le, uint64(ehsize))   // phoff
	binary.Write(&b, le, uint64(0))        // shoff
	binary.Write(&b, le, uint32(0))
	binary.Write(&b, le, uint16(ehsize))
	binary.Write(&b, le, uint16(phentsize))
	binary.Write(&b, le, uint16(phnum))
	binary.Write(&b, le, uint16(64)) // shentsize
	binary.Write(&b, le, uint16(0))  // shnum
	binary.Write(&b, le, uint16(0))  // shstrndx
	prog := func(typ uint32, off, size uint64) {
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint32(4)) // PF_R
		binary.Write(&b, le, off)
		binary.Write(&b, le, 0x400000+off) // vaddr
		binary.Write(&b, le, 0x400000+off) // paddr
		binary.Write(&b, le, size)
		binary.Write(&b, le, size)
		binary.Write(&b, le, uint64(1)) // align
	}
	if interp != "" {
		prog(3, dataOff, uint64(len(interp)+1)) // PT_INTERP
	}
	prog(1, 0, dataOff) // PT_LOAD
	if interp != "" {
		b.WriteString(interp + "\x00")
	}
	return b.Bytes()
}

func TestCheckStaticHost(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	static := write("static", elfExecutable(""))
	if err := checkStaticHost(static); err != nil {
		t.Errorf("static executable refused: %v", err)
	}

	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"dynamic", write("dynamic", elfExecutable("/lib64/ld-linux-x86-64.so.2")),
			[]string{"dynamic", "is dynamically linked", "/lib64/ld-linux-x86-64.so.2", "CGO_ENABLED=0"}},
		{"script", write("script", []byte("#!/bin/sh\nexec true\n")),
			[]string{"script", "is not an ELF executable"}},
		{"missing", filepath.Join(dir, "missing"),
			[]string{"missing", "is not an ELF executable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkStaticHost(tc.path)
			if err == nil {
				t.Fatalf("%s accepted", tc.path)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
