package oci

import (
	"bytes"
	"path"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations other runtimes and CRI use, which Classify honours.
const (
	// AnnotationContainerType is set by CRI; "sandbox" marks a pod's pause
	// container.
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	// AnnotationCrunHandler is crun's: "wasm" runs the entrypoint as wasm.
	AnnotationCrunHandler = "run.oci.handler"
	// AnnotationWasmVariant is crun's image variant: "compat" is wasm,
	// "compat-smart" is wasm when the entrypoint ends in .wasm.
	AnnotationWasmVariant = "module.wasm.image/variant"
)

// WasmMagic starts every WebAssembly binary module.
var WasmMagic = []byte("\x00asm")

// Decision is Classify's answer and the rule that gave it.
type Decision struct {
	Runtime Runtime
	Reason  string
}

// ReadHeader returns the first bytes (at least len(WasmMagic) when the file
// is that long) of the file at an absolute path in the container's root
// filesystem, or an error if there is no such regular file.
type ReadHeader func(path string) ([]byte, error)

// Classify decides whether a task runs as wasm or as a plain runc container.
// The rules, first match wins:
//
//  1. CRI's pause container (io.kubernetes.cri.container-type=sandbox) is
//     runc, whatever else the spec says: pod annotations are copied into it.
//  2. The runtime knob (nebula.dev/runtime or NEBULA_RUNTIME).
//  3. crun's conventions: run.oci.handler=wasm, module.wasm.image/variant=
//     compat, and compat-smart when args[0] ends in .wasm.
//  4. args[0] ends in .wasm.
//  5. The file at args[0] in the root filesystem starts with \0asm.
//  6. Otherwise runc.
//
// knobs must come from ParseKnobs(spec). read may be nil, which skips rule 5.
func Classify(spec *specs.Spec, knobs Knobs, read ReadHeader) Decision {
	ann := spec.Annotations
	if ann[AnnotationContainerType] == "sandbox" {
		return Decision{RuntimeRunc, "CRI sandbox (pause) container"}
	}
	if knobs.Runtime != "" {
		return Decision{knobs.Runtime, "knob runtime=" + string(knobs.Runtime)}
	}
	arg0 := ""
	if spec.Process != nil && len(spec.Process.Args) > 0 {
		arg0 = spec.Process.Args[0]
	}
	if ann[AnnotationCrunHandler] == "wasm" {
		return Decision{RuntimeWasm, "annotation " + AnnotationCrunHandler + "=wasm"}
	}
	switch ann[AnnotationWasmVariant] {
	case "compat":
		return Decision{RuntimeWasm, "annotation " + AnnotationWasmVariant + "=compat"}
	case "compat-smart":
		if strings.HasSuffix(arg0, ".wasm") {
			return Decision{RuntimeWasm, "annotation " + AnnotationWasmVariant + "=compat-smart and args[0] ends in .wasm"}
		}
		return Decision{RuntimeRunc, "annotation " + AnnotationWasmVariant + "=compat-smart and args[0] is not .wasm"}
	}
	if strings.HasSuffix(arg0, ".wasm") {
		return Decision{RuntimeWasm, "args[0] ends in .wasm"}
	}
	if read != nil {
		if p := EntrypointPath(spec); p != "" {
			if h, err := read(p); err == nil && bytes.HasPrefix(h, WasmMagic) {
				return Decision{RuntimeWasm, p + " starts with the wasm magic"}
			}
		}
	}
	return Decision{RuntimeRunc, "default"}
}

// EntrypointPath returns args[0] as an absolute path in the container, or ""
// when args[0] is a bare name that runc would look up in $PATH.
func EntrypointPath(spec *specs.Spec) string {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return ""
	}
	a := spec.Process.Args[0]
	switch {
	case path.IsAbs(a):
		return path.Clean(a)
	case strings.Contains(a, "/"):
		cwd := spec.Process.Cwd
		if cwd == "" {
			cwd = "/"
		}
		return path.Join(cwd, a)
	}
	return ""
}
