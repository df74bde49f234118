package oci

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/internal/hostargs"
)

func TestRewrite(t *testing.T) {
	limit := int64(512 << 20)
	base := func() *specs.Spec {
		return &specs.Spec{
			Process: &specs.Process{Args: []string{"/fn.wasm", "a"}, Env: []string{"X=1"}, Cwd: "/w"},
			Mounts:  []specs.Mount{{Destination: "/proc", Type: "proc"}, {Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}},
			Linux:   &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}},
		}
	}
	h := Host{Binary: "/usr/local/bin/containerd-shim-nebula-v1", CacheDir: "/var/lib/nebula/cache/abc"}

	s := base()
	if err := Rewrite(s, Decision{Runtime: RuntimeWasm}, Knobs{}, h); err != nil {
		t.Fatal(err)
	}
	wantArgs := []string{HostBinary, "--cache", HostCache, "--mode", "run", "--runtime", "wasm", "--memory-limit", "528482304", "--heap-limit", "4194304", "--", "/fn.wasm", "a"}
	if !slices.Equal(s.Process.Args, wantArgs) {
		t.Errorf("args = %q\nwant   %q", s.Process.Args, wantArgs)
	}
	if s.Process.Cwd != "/w" || !slices.Equal(s.Process.Env, []string{"X=1"}) {
		t.Errorf("cwd/env changed: %q %q", s.Process.Cwd, s.Process.Env)
	}
	if len(s.Mounts) != 4 {
		t.Fatalf("want the two original mounts plus binary and cache, got %+v", s.Mounts)
	}
	for _, m := range s.Mounts[2:] {
		if !slices.Contains(m.Options, "ro") || m.Type != "bind" {
			t.Errorf("mount %+v must be a read-only bind", m)
		}
	}
	if s.Mounts[2].Source != h.Binary || s.Mounts[2].Destination != HostBinary || s.Mounts[3].Source != h.CacheDir {
		t.Errorf("wrong mounts %+v", s.Mounts[2:])
	}

	// Function mode: knobs become flags; the memory limit is shared (see
	// TestPlanMemory for the numbers).
	s = base()
	k := Knobs{Mode: ModeFunction, Concurrency: 4, Timeout: time.Second, MetricsPort: 9100, ReplyType: "r", MaxConnections: 100, Protocol: "http"}
	if err := Rewrite(s, Decision{Runtime: RuntimeWasm}, k, Host{Binary: h.Binary}); err != nil {
		t.Fatal(err)
	}
	wantArgs = []string{HostBinary, "--mode", "function", "--runtime", "wasm", "--memory-limit", "99090432",
		"--heap-limit", "136314880", "--stdout-limit", "7077888", "--body-budget", "67108864", "--timeout", "1s", "--concurrency", "4", "--metrics-port", "9100", "--reply-type", "r", "--max-connections", "100", "--protocol", "http", "--", "/fn.wasm", "a"}
	if !slices.Equal(s.Process.Args, wantArgs) {
		t.Errorf("args = %q\nwant   %q", s.Process.Args, wantArgs)
	}

	// A plan that cannot work is refused, the spec untouched.
	s = base()
	small := int64(16 << 20)
	s.Linux.Resources.Memory.Limit = &small
	err := Rewrite(s, Decision{Runtime: RuntimeWasm}, Knobs{Mode: ModeFunction, Concurrency: 2}, Host{Binary: h.Binary, Memory: ModuleMemory{MinMemory: 4 << 20}})
	if !errors.Is(err, ErrMemoryBudget) || s.Process.Args[0] != "/fn.wasm" {
		t.Errorf("err %v, args %q: want ErrMemoryBudget and the spec unchanged", err, s.Process.Args)
	}

	// A process function: no memory limit flag (the cgroup limits it).
	s = base()
	s.Process.Args = []string{"/fn"}
	if err := Rewrite(s, Decision{Runtime: RuntimeRunc}, Knobs{Mode: ModeFunction}, Host{Binary: h.Binary}); err != nil {
		t.Fatal(err)
	}
	wantArgs = []string{HostBinary, "--mode", "function", "--runtime", "process", "--", "/fn"}
	if !slices.Equal(s.Process.Args, wantArgs) {
		t.Errorf("args = %q\nwant   %q", s.Process.Args, wantArgs)
	}

	// No /dev tmpfs: Nebula brings its own.
	s = base()
	s.Mounts = s.Mounts[:1]
	if err := Rewrite(s, Decision{Runtime: RuntimeWasm}, Knobs{}, Host{Binary: h.Binary}); err != nil {
		t.Fatal(err)
	}
	if s.Mounts[1].Destination != HostDir || s.Mounts[1].Type != "tmpfs" {
		t.Errorf("want a tmpfs at %s before the binds, got %+v", HostDir, s.Mounts)
	}

	if err := Rewrite(&specs.Spec{}, Decision{Runtime: RuntimeWasm}, Knobs{}, h); err == nil {
		t.Error("a spec without process must be refused")
	}
	if !NeedsRewrite(Decision{Runtime: RuntimeRunc}, Knobs{Mode: ModeFunction}) || NeedsRewrite(Decision{Runtime: RuntimeRunc}, Knobs{}) {
		t.Error("NeedsRewrite wrong")
	}
}

// TestRewriteHostArgs: what Rewrite writes is what the host program parses,
// every knob included: a Knobs field reaches the host as the hostargs.Args
// field of the same name, unless it is listed here as the shim's own.
func TestRewriteHostArgs(t *testing.T) {
	shimOnly := map[string]string{
		"Runtime":        "becomes Args.Runtime, abi's name",
		"MemoryLimit":    "becomes the memory plan (wasm), or nothing (a process's cgroup holds it)",
		"CompileTimeout": "bounds the shim's compile",
		"CompileMemory":  "bounds the shim's compile",
	}
	k := Knobs{Runtime: RuntimeRunc, Mode: ModeFunction, Timeout: 2 * time.Second, Concurrency: 3, MemoryLimit: 1 << 20,
		MaxBody: 1 << 20, MetricsPort: 9100, ReplyType: "t", ReplySource: "/s", ReplyContentType: "text/plain",
		MaxConnections: 50, Protocol: "cloudevents", CompileTimeout: time.Second, CompileMemory: 1 << 30}
	created := time.Date(2026, 11, 27, 12, 0, 0, 5, time.UTC)
	h := Host{Binary: "/nebula-host", CacheDir: "/cache/ab", ID: "fn", CacheHit: true, CompileTime: time.Second, CreatedAt: created}

	s := &specs.Spec{Process: &specs.Process{Args: []string{"/fn", "x"}}}
	if err := Rewrite(s, Decision{Runtime: RuntimeRunc}, k, h); err != nil {
		t.Fatal(err)
	}
	a, err := hostargs.Parse(s.Process.Args[1:])
	if err != nil {
		t.Fatalf("the host cannot parse %q: %v", s.Process.Args, err)
	}
	kv, av := reflect.ValueOf(k), reflect.ValueOf(a)
	for i := range kv.NumField() {
		name := kv.Type().Field(i).Name
		if kv.Field(i).IsZero() {
			t.Fatalf("the fixture leaves Knobs.%s zero: set every field", name)
		}
		if _, ok := shimOnly[name]; ok {
			continue
		}
		f := av.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("Knobs.%s has no hostargs.Args field: add one, or list it as the shim's own", name)
			continue
		}
		if want := kv.Field(i); !want.CanConvert(f.Type()) || !f.Equal(want.Convert(f.Type())) {
			t.Errorf("Knobs.%s = %v reaches the host as %v", name, want, f)
		}
	}
	want := hostargs.Args{Runtime: abi.RuntimeProcess, CacheDir: HostCache, ContainerID: "fn", CreatedAt: created,
		CompileTime: time.Second, CacheHit: true, Command: []string{"/fn", "x"}}
	if a.Runtime != want.Runtime || a.CacheDir != want.CacheDir || a.ContainerID != want.ContainerID || !a.CreatedAt.Equal(created) ||
		a.CompileTime != want.CompileTime || a.CacheHit != want.CacheHit || !slices.Equal(a.Command, want.Command) {
		t.Errorf("host args %+v; want %+v", a, want)
	}

	// A wasm task: the plan's numbers, the runtime's name.
	s = &specs.Spec{Process: &specs.Process{Args: []string{"/fn.wasm"}}}
	k.Runtime = RuntimeWasm
	if err := Rewrite(s, Decision{Runtime: RuntimeWasm}, k, h); err != nil {
		t.Fatal(err)
	}
	if a, err = hostargs.Parse(s.Process.Args[1:]); err != nil {
		t.Fatalf("the host cannot parse %q: %v", s.Process.Args, err)
	}
	if a.Runtime != abi.RuntimeWasm || a.MemoryLimit != k.MemoryLimit || a.StdoutLimit != DefaultStdoutLimit || a.Concurrency != k.Concurrency {
		t.Errorf("wasm host args %+v", a)
	}
}
