package oci

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func specWith(ann map[string]string, env ...string) *specs.Spec {
	return &specs.Spec{Annotations: ann, Process: &specs.Process{Args: []string{"/fn"}, Env: env}}
}

func TestParseKnobs(t *testing.T) {
	tests := []struct {
		name string
		spec *specs.Spec
		want Knobs
	}{
		{"none", specWith(nil, "PATH=/bin"), Knobs{}},
		{"annotations", specWith(map[string]string{
			"nebula.dev/runtime": "wasm", "nebula.dev/mode": "function", "nebula.dev/timeout": "300ms",
			"nebula.dev/concurrency": "4", "nebula.dev/memory-limit": "64Mi", "nebula.dev/max-body": "1Ki",
			"nebula.dev/metrics-port": "9100", "nebula.dev/reply-type": "t", "nebula.dev/reply-source": "/s",
			"nebula.dev/reply-content-type": "text/plain; charset=utf-8",
			"nebula.dev/compile-timeout":    "90s", "nebula.dev/compile-memory": "512Mi",
			"nebula.dev/max-connections": "100", "nebula.dev/protocol": "cloudevents",
		}), Knobs{Runtime: RuntimeWasm, Mode: ModeFunction, Timeout: 300 * time.Millisecond, Concurrency: 4,
			MemoryLimit: 64 << 20, MaxBody: 1024, MetricsPort: 9100, ReplyType: "t", ReplySource: "/s",
			ReplyContentType: "text/plain; charset=utf-8", CompileTimeout: 90 * time.Second, CompileMemory: 512 << 20,
			MaxConnections: 100, Protocol: "cloudevents"}},
		{"env", specWith(nil, "NEBULA_MODE=function", "NEBULA_MEMORY_LIMIT=1048576", "NEBULA_TIMEOUT=2s"),
			Knobs{Mode: ModeFunction, MemoryLimit: 1 << 20, Timeout: 2 * time.Second}},
		{"annotation wins over env", specWith(map[string]string{"nebula.dev/mode": "run"}, "NEBULA_MODE=function"),
			Knobs{Mode: ModeRun}},
		{"last env entry wins", specWith(nil, "NEBULA_CONCURRENCY=2", "NEBULA_CONCURRENCY=3"), Knobs{Concurrency: 3}},
		{"unknown env is ignored", specWith(nil, "NEBULA_SOMETHING_ELSE=1"), Knobs{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKnobs(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseKnobsErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    *specs.Spec
		wantErr string
	}{
		{"memory words", specWith(map[string]string{"nebula.dev/memory-limit": "lots"}), `invalid knob memory-limit="lots" (annotation nebula.dev/memory-limit)`},
		{"memory too small", specWith(map[string]string{"nebula.dev/memory-limit": "1Ki"}), "at least 64Ki"},
		{"memory overflow", specWith(map[string]string{"nebula.dev/memory-limit": "99999999999999999Ti"}), "overflows"},
		{"timeout no unit", specWith(nil, "NEBULA_TIMEOUT=30"), `invalid knob timeout="30" (env NEBULA_TIMEOUT)`},
		{"timeout negative", specWith(map[string]string{"nebula.dev/timeout": "-1s"}), "positive"},
		{"runtime", specWith(map[string]string{"nebula.dev/runtime": "docker"}), `want "wasm" or "runc"`},
		{"mode", specWith(nil, "NEBULA_MODE=serve"), `invalid knob mode="serve"`},
		{"concurrency zero", specWith(map[string]string{"nebula.dev/concurrency": "0"}), "1 to 10000"},
		{"metrics port reserved", specWith(map[string]string{"nebula.dev/metrics-port": "9090"}), "reserved by Knative"},
		{"metrics port range", specWith(map[string]string{"nebula.dev/metrics-port": "70000"}), "1 to 65535"},
		{"reply content type", specWith(map[string]string{"nebula.dev/reply-content-type": "not a type/"}), "media type"},
		{"reply type empty", specWith(map[string]string{"nebula.dev/reply-type": " "}), "non-empty"},
		{"reply type NUL", specWith(map[string]string{"nebula.dev/reply-type": "a\x00b"}), "control character"},
		{"reply type newline", specWith(nil, "NEBULA_REPLY_TYPE=a\nb"), "control character"},
		{"reply type C1", specWith(map[string]string{"nebula.dev/reply-type": "a\u0085b"}), "control character"},
		{"reply source invalid UTF-8", specWith(map[string]string{"nebula.dev/reply-source": "/s\xff"}), "UTF-8"},
		{"reply content type NUL", specWith(map[string]string{"nebula.dev/reply-content-type": "text/plain; a=\"\x00\""}), "control character"},
		{"max connections zero", specWith(map[string]string{"nebula.dev/max-connections": "0"}), "1 to 65536"},
		{"protocol", specWith(nil, "NEBULA_PROTOCOL=grpc"), `want "auto", "cloudevents" or "http"`},
		{"compile timeout words", specWith(nil, "NEBULA_COMPILE_TIMEOUT=long"), `invalid knob compile-timeout="long" (env NEBULA_COMPILE_TIMEOUT)`},
		{"compile timeout too long", specWith(map[string]string{"nebula.dev/compile-timeout": "1h"}), "at most 10m0s"},
		{"compile memory too small", specWith(map[string]string{"nebula.dev/compile-memory": "1Mi"}), `invalid knob compile-memory="1Mi" (annotation nebula.dev/compile-memory): want at least 64Mi`},
		{"unknown annotation", specWith(map[string]string{"nebula.dev/memory-limt": "1Mi"}), "unknown annotation nebula.dev/memory-limt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKnobs(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	_, err := ParseKnobs(specWith(map[string]string{"nebula.dev/memory-limit": "lots"}))
	var ke *KnobError
	if !errors.As(err, &ke) || ke.Knob != "memory-limit" || ke.Value != "lots" {
		t.Fatalf("want a *KnobError naming memory-limit and lots, got %#v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1": 1, "64Ki": 64 << 10, "256Mi": 256 << 20, "2Gi": 2 << 30, "1Ti": 1 << 40} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Mi", "1.5Mi", "-1", "1MB", "1 Mi", "1mi"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded, want an error", in)
		}
	}
}
