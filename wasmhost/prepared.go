package wasmhost

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// preparedName is the file CompileToCache writes next to wazero's entries:
// the module as compileFinal hands it to wazero (finalize's output) for the
// module as Compile has it after its reactor rewrite, so that a host
// loading a verified entry need not instrument the module again. It is an
// entry like wazero's: the manifest covers it.
const preparedName = "nebula-prepared"

// preparedMagic starts a prepared file; the format is
//
//	magic | SHA-256 of the rewrite code (rewriteCode) | SHA-256 of the
//	input | instrumented (1 byte) | the output
//
// where the input is what finalize was given and the output what it
// returned.
const preparedMagic = "nebula-prepared v1\n"

// sources are this package's Go files: the rewrites finalize applies are
// defined here, so their hash identifies the code that wrote a prepared
// file (see docs/rationale.md).
//
//go:embed *.go
var sources embed.FS

// rewriteCode is the SHA-256 of this package's source files.
var rewriteCode = sync.OnceValue(func() [sha256.Size]byte {
	h := sha256.New()
	fs.WalkDir(sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sources.ReadFile(p)
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		h.Write([]byte{0})
		h.Write(b)
		return nil
	})
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
})

// finalize returns wasm with its deadline checks added (instrumentDeadline)
// and its tables bounded (boundTables), and whether the instrumentation
// succeeded. It depends on wasm's bytes only.
func finalize(wasm []byte) (out []byte, instrumented bool) {
	if info, err := parseModule(wasm); err == nil {
		wasm, instrumented = instrumentDeadline(wasm, info)
	}
	if info, err := parseModule(wasm); err == nil {
		wasm = boundTables(wasm, info)
	}
	return wasm, instrumented
}

// encodePrepared is the content of a prepared file for input, finalized to
// out.
func encodePrepared(input, out []byte, instrumented bool) []byte {
	code, sum := rewriteCode(), sha256.Sum256(input)
	b := make([]byte, 0, len(preparedMagic)+2*sha256.Size+1+len(out))
	b = append(b, preparedMagic...)
	b = append(b, code[:]...)
	b = append(b, sum[:]...)
	flag := byte(0)
	if instrumented {
		flag = 1
	}
	b = append(b, flag)
	return append(b, out...)
}

// readPrepared returns finalize(input) as the prepared file in dir records
// it, if the file was written by this code for input; ok is false for a
// missing, unreadable, foreign or malformed file, which the caller ignores.
// The file's integrity is the manifest's business (verifyCache).
func readPrepared(dir string, input []byte) (out []byte, instrumented, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, preparedName))
	if err != nil {
		return nil, false, false
	}
	return decodePrepared(b, input)
}

func decodePrepared(b, input []byte) (out []byte, instrumented, ok bool) {
	head := len(preparedMagic) + 2*sha256.Size + 1
	if len(b) < head || string(b[:len(preparedMagic)]) != preparedMagic {
		return nil, false, false
	}
	b = b[len(preparedMagic):]
	code, sum := rewriteCode(), sha256.Sum256(input)
	if !bytes.Equal(b[:sha256.Size], code[:]) || !bytes.Equal(b[sha256.Size:2*sha256.Size], sum[:]) {
		return nil, false, false
	}
	b = b[2*sha256.Size:]
	if b[0] > 1 || len(b) < 9 || binary.LittleEndian.Uint32(b[1:5]) != 0x6d736100 {
		return nil, false, false // not a flag and a module ("\0asm")
	}
	return b[1:], b[0] == 1, true
}

// writePrepared writes the prepared file for input into dir, atomically.
func writePrepared(dir string, input, out []byte, instrumented bool) error {
	return writeFileAtomic(dir, preparedName, encodePrepared(input, out, instrumented))
}

// hasCurrentPrepared reports whether dir's prepared file was written by
// this code for input.
func hasCurrentPrepared(dir string, input []byte) bool {
	_, _, ok := readPrepared(dir, input)
	return ok
}
