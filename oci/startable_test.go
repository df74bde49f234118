package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckStartable(t *testing.T) {
	wasm := Decision{Runtime: RuntimeWasm}
	runc := Decision{Runtime: RuntimeRunc}
	fn := func(ann map[string]string, env ...string) *specs.Spec {
		return specWith(ann, append([]string{"NEBULA_MODE=function"}, env...)...)
	}
	pids := func(n int64) *specs.Spec {
		s := specWith(nil)
		s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &n}}}
		return s
	}
	user := func(uid uint32, port string, caps ...string) *specs.Spec {
		s := fn(nil, "PORT="+port)
		s.Process.User.UID = uid
		s.Process.Capabilities = &specs.LinuxCapabilities{Effective: caps}
		s.Linux = &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}
		return s
	}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		d    Decision
		want string // "" for no error
	}{
		{"plain runc task", specWith(nil, "PORT=abc"), runc, ""},
		{"run mode ignores PORT", specWith(nil, "PORT=abc"), wasm, ""},
		{"function defaults", fn(nil), wasm, ""},
		{"PORT words", fn(nil, "PORT=abc"), wasm, `invalid PORT="abc" (env PORT): want a TCP port from 1 to 65535`},
		{"PORT zero", fn(nil, "PORT=0"), runc, `invalid PORT="0" (env PORT)`},
		{"PORT too big", fn(nil, "PORT=65536"), wasm, `invalid PORT="65536"`},
		{"PORT is the default metrics port", fn(nil, "PORT=9464"), wasm,
			`invalid PORT="9464" (env PORT): 9464 is the metrics port (knob metrics-port, default 9464)`},
		{"metrics-port is PORT", fn(map[string]string{"nebula.dev/metrics-port": "8081"}, "PORT=8081"), wasm,
			`invalid knob metrics-port="8081" (annotation nebula.dev/metrics-port): the events port is 8081 too (env PORT)`},
		{"metrics-port is the default PORT", fn(nil, "NEBULA_METRICS_PORT=8080"), wasm,
			`invalid knob metrics-port="8080" (env NEBULA_METRICS_PORT): the events port is 8080 too (PORT unset, default 8080)`},
		{"last PORT wins", fn(nil, "PORT=9464", "PORT=8081"), wasm, ""},
		{"GOMEMLIMIT", specWith(nil, "GOMEMLIMIT=lots"), wasm, `invalid GOMEMLIMIT="lots" (env GOMEMLIMIT): the host program is a Go program`},
		{"GOMEMLIMIT MB", specWith(nil, "GOMEMLIMIT=100MB"), wasm, `invalid GOMEMLIMIT="100MB"`},
		{"GOMEMLIMIT fine", specWith(nil, "GOMEMLIMIT=100MiB"), wasm, ""},
		{"GOMEMLIMIT of a runc task", specWith(nil, "GOMEMLIMIT=lots"), runc, ""},
		{"pids below", pids(MinPids - 1), wasm, `invalid pids limit="11" (linux.resources.pids.limit, e.g. ctr run --pids-limit): Nebula's host program needs at least 12`},
		{"pids at", pids(MinPids), wasm, ""},
		{"pids unlimited", pids(-1), wasm, ""},
		{"pids of a runc task", pids(2), runc, ""},
		{"non-root on port 80", user(1000, "80"), wasm, `invalid PORT="80" (env PORT): user 1000 may not listen on port 80`},
		{"non-root with the capability", user(1000, "80", "CAP_NET_BIND_SERVICE"), wasm, ""},
		{"root on port 80", user(0, "80"), wasm, ""},
		{"non-root on 8080", user(1000, "8080"), wasm, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKnobs(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckStartable(tc.spec, tc.d, k)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			var se *SettingError
			var ke *KnobError
			if !errors.As(err, &se) && !errors.As(err, &ke) {
				t.Fatalf("%T is neither a *SettingError nor a *KnobError", err)
			}
		})
	}
}

func TestValidGoMemLimit(t *testing.T) {
	for v, want := range map[string]bool{
		"": true, "off": true, "0": true, "1048576": true, "10B": true, "64KiB": true, "100MiB": true, "2GiB": true, "1TiB": true,
		"lots": false, "100MB": false, "1.5GiB": false, "MiB": false, "B": false, "-1": false, "100 MiB": false, "9223372036854775808": false,
	} {
		if got := validGoMemLimit(v); got != want {
			t.Errorf("validGoMemLimit(%q) = %v, want %v", v, got, want)
		}
	}
}
