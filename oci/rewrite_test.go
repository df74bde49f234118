package oci

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
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
