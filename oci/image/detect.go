package image

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"nebula.dev/nebula/oci"
)

// Kind is what [Build] found in its input file.
type Kind string

const (
	// KindWasm is a WebAssembly core module: the file starts with "\0asm".
	KindWasm Kind = "wasm"
	// KindNative is a statically linked ELF executable.
	KindNative Kind = "native"
)

var (
	// wasmCoreVersion is the version field of a core module (binary
	// format version 1). Components (the component model) share the magic
	// but carry another version and layer field.
	wasmCoreVersion = []byte{0x01, 0x00, 0x00, 0x00}
	elfMagic        = []byte(elf.ELFMAG)
)

// input is the classified input file.
type input struct {
	kind     Kind
	data     []byte
	path     string      // absolute path of the file inside the image
	platform v1.Platform // native only: from the ELF header
}

// readInput reads file and classifies it by content, never by its name.
func readInput(file string) (input, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return input{}, err
	}
	base := filepath.Base(file)
	switch {
	case bytes.HasPrefix(data, oci.WasmMagic):
		if len(data) < 8 || !bytes.Equal(data[4:8], wasmCoreVersion) {
			return input{}, fmt.Errorf("%s: a WebAssembly binary but not a core module of version 1 (a component, or truncated): version bytes % x", file, data[4:min(len(data), 8)])
		}
		if !strings.HasSuffix(base, ".wasm") {
			base += ".wasm"
		}
		return input{kind: KindWasm, data: data, path: "/" + base}, nil
	case bytes.HasPrefix(data, elfMagic):
		p, err := staticELF(file, data)
		if err != nil {
			return input{}, err
		}
		return input{kind: KindNative, data: data, path: "/" + base, platform: p}, nil
	default:
		return input{}, fmt.Errorf("%s: neither a WebAssembly module nor an ELF executable (it starts with neither \\0asm nor \\x7fELF)", file)
	}
}

// staticELF checks that data is a statically linked Linux executable and
// returns its platform.
func staticELF(file string, data []byte) (v1.Platform, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return v1.Platform{}, fmt.Errorf("%s: unreadable ELF file: %w", file, err)
	}
	defer f.Close()

	switch f.OSABI {
	case elf.ELFOSABI_NONE, elf.ELFOSABI_LINUX:
	default:
		return v1.Platform{}, fmt.Errorf("%s: ELF OS ABI %v, not Linux", file, f.OSABI)
	}
	switch f.Type {
	case elf.ET_EXEC:
	case elf.ET_DYN:
		// A static PIE is ET_DYN too; a shared library has no entry point.
		if f.Entry == 0 {
			return v1.Platform{}, fmt.Errorf("%s: an ELF shared library, not an executable", file)
		}
	default:
		return v1.Platform{}, fmt.Errorf("%s: ELF type %v, not an executable", file, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp, err := readInterp(p)
		if err != nil {
			return v1.Platform{}, fmt.Errorf("%s: dynamically linked (has a PT_INTERP program header): %w", file, err)
		}
		return v1.Platform{}, fmt.Errorf("%s: dynamically linked, needs the interpreter %s which the image does not have; "+
			"build it statically (Go: CGO_ENABLED=0; C: -static)", file, interp)
	}
	arch, variant, err := elfArch(f)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("%s: %w", file, err)
	}
	return v1.Platform{OS: "linux", Architecture: arch, Variant: variant}, nil
}

func readInterp(p *elf.Prog) (string, error) {
	if p.Filesz > 4096 {
		return "", errors.New("PT_INTERP segment too large")
	}
	b := make([]byte, p.Filesz)
	if _, err := p.ReadAt(b, 0); err != nil {
		return "", err
	}
	return string(bytes.TrimRight(b, "\x00")), nil
}

// elfArch maps the ELF machine to an OCI (GOARCH-style) architecture.
func elfArch(f *elf.File) (arch, variant string, err error) {
	is64 := f.Class == elf.ELFCLASS64
	le := f.Data == elf.ELFDATA2LSB
	switch {
	case f.Machine == elf.EM_X86_64 && is64:
		return "amd64", "", nil
	case f.Machine == elf.EM_386 && !is64:
		return "386", "", nil
	case f.Machine == elf.EM_AARCH64 && is64:
		return "arm64", "", nil
	case f.Machine == elf.EM_ARM && !is64:
		// The ELF header does not say which ARM version; containerd's
		// matcher treats a missing variant as v7.
		return "arm", "", nil
	case f.Machine == elf.EM_RISCV && is64:
		return "riscv64", "", nil
	case f.Machine == elf.EM_PPC64 && is64 && le:
		return "ppc64le", "", nil
	case f.Machine == elf.EM_PPC64 && is64:
		return "ppc64", "", nil
	case f.Machine == elf.EM_S390 && is64:
		return "s390x", "", nil
	case f.Machine == elf.EM_LOONGARCH && is64:
		return "loong64", "", nil
	case f.Machine == elf.EM_MIPS && is64 && le:
		return "mips64le", "", nil
	case f.Machine == elf.EM_MIPS && is64:
		return "mips64", "", nil
	case f.Machine == elf.EM_MIPS && le:
		return "mipsle", "", nil
	case f.Machine == elf.EM_MIPS:
		return "mips", "", nil
	}
	return "", "", fmt.Errorf("unsupported ELF machine %v (%v)", f.Machine, f.Class)
}
