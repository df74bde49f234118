package oci

import (
	"errors"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestClassify(t *testing.T) {
	files := map[string][]byte{
		"/app/fn":    []byte("\x00asm\x01\x00\x00\x00"),
		"/bin/tool":  []byte("\x7fELF..."),
		"/work/rel":  []byte("\x00asm\x01\x00\x00\x00"),
		"/short":     []byte("\x00a"),
		"/other.txt": []byte("hello"),
	}
	read := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, errors.New("no such file")
	}
	spec := func(ann map[string]string, cwd string, args ...string) *specs.Spec {
		return &specs.Spec{Annotations: ann, Process: &specs.Process{Args: args, Cwd: cwd}}
	}
	tests := []struct {
		name  string
		spec  *specs.Spec
		knobs Knobs
		want  Runtime
	}{
		{"sandbox beats everything", spec(map[string]string{AnnotationContainerType: "sandbox", AnnotationCrunHandler: "wasm"}, "/", "/pause"), Knobs{Runtime: RuntimeWasm}, RuntimeRunc},
		{"knob wasm", spec(nil, "/", "/bin/tool"), Knobs{Runtime: RuntimeWasm}, RuntimeWasm},
		{"knob runc beats .wasm", spec(nil, "/", "/fn.wasm"), Knobs{Runtime: RuntimeRunc}, RuntimeRunc},
		{"crun handler", spec(map[string]string{AnnotationCrunHandler: "wasm"}, "/", "/bin/tool"), Knobs{}, RuntimeWasm},
		{"variant compat", spec(map[string]string{AnnotationWasmVariant: "compat"}, "/", "/bin/tool"), Knobs{}, RuntimeWasm},
		{"compat-smart wasm", spec(map[string]string{AnnotationWasmVariant: "compat-smart"}, "/", "/x.wasm"), Knobs{}, RuntimeWasm},
		{"compat-smart native", spec(map[string]string{AnnotationWasmVariant: "compat-smart"}, "/", "/app/fn"), Knobs{}, RuntimeRunc},
		{"suffix", spec(nil, "/", "/fn.wasm", "arg"), Knobs{}, RuntimeWasm},
		{"magic absolute", spec(nil, "/", "/app/fn"), Knobs{}, RuntimeWasm},
		{"magic relative to cwd", spec(nil, "/work", "./rel"), Knobs{}, RuntimeWasm},
		{"elf", spec(nil, "/", "/bin/tool"), Knobs{}, RuntimeRunc},
		{"short file", spec(nil, "/", "/short"), Knobs{}, RuntimeRunc},
		{"missing file", spec(nil, "/", "/nope"), Knobs{}, RuntimeRunc},
		{"bare name is not read", spec(nil, "/app", "fn"), Knobs{}, RuntimeRunc},
		{"no process", &specs.Spec{}, Knobs{}, RuntimeRunc},
		{"other container type", spec(map[string]string{AnnotationContainerType: "container"}, "/", "/fn.wasm"), Knobs{}, RuntimeWasm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.spec, tt.knobs, read)
			if got.Runtime != tt.want {
				t.Errorf("Classify = %s (%s), want %s", got.Runtime, got.Reason, tt.want)
			}
			if got.Reason == "" {
				t.Error("empty reason")
			}
		})
	}
	if got := Classify(spec(nil, "/", "/app/fn"), Knobs{}, nil); got.Runtime != RuntimeRunc {
		t.Errorf("without a reader the magic rule must not apply, got %s", got.Runtime)
	}
}
