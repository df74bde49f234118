package wasmhost

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"io/fs"
	"sync"
)

// preparedName is the file CompileToCache writes next to wazero's entries:
// the module as compileFinal hands it to wazero (finalize's output, after
// a reactor's rewrite) for the module CompileToCache was given, so that a
// host loading a verified entry need not rewrite the module again. It is
// an entry like wazero's: the manifest covers it. It also vouches for the
// module: CompileToCache writes it only for a module that passed
// preflight, so a current prepared file for a module spares a load the
// checks of the module alone (see cacheEntry.vouches).
const preparedName = "nebula-prepared"

// preparedMagic starts a prepared file; the format is
//
//	magic | SHA-256 of the rewrite code (rewriteCode) | SHA-256 of the
//	module | instrumented (1 byte) | the output
//
// where the module is what CompileToCache was given and the output what
// finalize returned for it (for a reactor, for its rewrite). Version 1
// named finalize's input instead, a reactor's rewrite.
const preparedMagic = "nebula-prepared v2\n"

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

// encodePrepared is the content of a prepared file for the module whose
// SHA-256 is sum, finalized to out.
func encodePrepared(sum [sha256.Size]byte, out []byte, instrumented bool) []byte {
	code := rewriteCode()
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

// preparedHeadSize is the head of a prepared file that decodePrepared
// needs to tell whether the file is for a module (its output then
// truncated): the header, the flag and the output's 8-byte header.
const preparedHeadSize = len(preparedMagic) + 2*sha256.Size + 1 + 8

// decodePrepared returns what the prepared file b records for the module
// whose SHA-256 is sum, if it was written by this code for that module; ok
// is false for a foreign or malformed file, which the caller ignores. The
// file's integrity is the manifest's business (verifyCache).
func decodePrepared(b []byte, sum [sha256.Size]byte) (out []byte, instrumented, ok bool) {
	head := len(preparedMagic) + 2*sha256.Size + 1
	if len(b) < head || string(b[:len(preparedMagic)]) != preparedMagic {
		return nil, false, false
	}
	b = b[len(preparedMagic):]
	code := rewriteCode()
	if !bytes.Equal(b[:sha256.Size], code[:]) || !bytes.Equal(b[sha256.Size:2*sha256.Size], sum[:]) {
		return nil, false, false
	}
	b = b[2*sha256.Size:]
	if b[0] > 1 || len(b) < 9 || binary.LittleEndian.Uint32(b[1:5]) != 0x6d736100 {
		return nil, false, false // not a flag and a module ("\0asm")
	}
	return b[1:], b[0] == 1, true
}

// writePrepared writes the prepared file for the module whose SHA-256 is
// sum into dir, atomically.
func writePrepared(dir string, sum [sha256.Size]byte, out []byte, instrumented bool) error {
	return writeFileAtomic(dir, preparedName, encodePrepared(sum, out, instrumented))
}
