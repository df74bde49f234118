package oci

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func limitsSpec(memory int64, cpu *specs.LinuxCPU) *specs.Spec {
	s := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: cpu}}}
	if memory != 0 {
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &memory}
	}
	return s
}

// TestPlanMemory: the model's numbers, and plans that cannot work refused
// with all of them.
func TestPlanMemory(t *testing.T) {
	const mi = 1 << 20
	echo := ModuleMemory{MinMemory: 64 << 10}
	goGuest := ModuleMemory{MinMemory: 40 << 16, Tables: 16384 * 48, Code: 11 * mi, Size: 3 * mi}
	fn := func(c int) Knobs { return Knobs{Mode: ModeFunction, Concurrency: c} }
	for _, tc := range []struct {
		name   string
		spec   *specs.Spec
		knobs  Knobs
		module ModuleMemory
		want   MemoryPlan // compared field by field where non-zero
		err    string     // substring of the error, "" for none
	}{
		{name: "run mode, 16 MiB", spec: limitsSpec(16*mi, nil), module: echo,
			want: MemoryPlan{Concurrency: 1, InstanceLimit: 8 * mi, HeapLimit: 4 * mi}},
		{name: "function, 64 MiB, 2 at once", spec: limitsSpec(64*mi, nil), knobs: fn(2), module: echo,
			want: MemoryPlan{Concurrency: 2, BodyBudget: 10 * mi, StdoutLimit: 19 * mi / 16, InstanceLimit: 19*mi - 2*(19*mi/16)}},
		{name: "no container limit: the knob alone", spec: limitsSpec(0, nil), knobs: Knobs{Mode: ModeFunction, Concurrency: 3, MemoryLimit: 8 * mi}, module: echo,
			want: MemoryPlan{Concurrency: 3, StdoutLimit: DefaultStdoutLimit, InstanceLimit: 8 * mi}},
		{name: "the knob within the share", spec: limitsSpec(256*mi, nil), knobs: Knobs{Mode: ModeFunction, Concurrency: 2, MemoryLimit: 64 * mi}, module: echo,
			want: MemoryPlan{InstanceLimit: 64 * mi, BodyBudget: 32 * mi, StdoutLimit: 104 * mi / 16}},
		{name: "the knob above the share", spec: limitsSpec(256*mi, nil), knobs: Knobs{Mode: ModeFunction, Concurrency: 4, MemoryLimit: 64 * mi}, module: echo,
			err: "nebula.dev/memory-limit is above each instance's share"},
		{name: "limit below the reserve", spec: limitsSpec(8*mi, nil), module: echo,
			err: "does not exceed the host reserve: container limit 8388608 bytes (8.0 MiB), host reserve 8388608 bytes"},
		{name: "concurrency too high for one page", spec: limitsSpec(32*mi, nil), knobs: fn(10000), module: echo,
			err: "concurrency 10000 (nebula.dev/concurrency)"},
		{name: "Go guest in 32 MiB, run mode", spec: limitsSpec(32*mi, nil), module: goGuest,
			err: "does not exceed the host reserve"},
		{name: "Go guest in 82 MiB, run mode: the compile fits, the host does", spec: limitsSpec(82*mi, nil), module: goGuest,
			want: MemoryPlan{Concurrency: 1, Reserve: 33 * mi}},
		{name: "Go guest in 80 MiB at 10", spec: limitsSpec(80*mi, nil), knobs: fn(10), module: goGuest,
			err: "less than the module's minimum memory"},
		{name: "Go guest in 64 MiB: its compile does not fit", spec: limitsSpec(64*mi, nil), knobs: fn(2), module: goGuest,
			err: "compiling the module needs about 83886080 bytes (80.0 MiB)"},
		{name: "Go guest in 96 MiB at 2", spec: limitsSpec(96*mi, nil), knobs: fn(2), module: goGuest,
			want: MemoryPlan{Reserve: 53 * mi, BodyBudget: 12 * mi, TableBytes: 16384 * 48, HeapLimit: 38*mi + 2*(2*(43*mi/2/16)+16384*48)}},
		{name: "knob below the module's minimum, no container limit", spec: limitsSpec(0, nil), knobs: Knobs{MemoryLimit: 1 * mi}, module: goGuest,
			err: "below the module's minimum memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanMemory(tc.spec, tc.knobs, tc.module)
			if tc.err != "" {
				var me *MemoryError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want a *MemoryError containing %q", err, tc.err)
				}
				for _, part := range []string{"container limit", "host reserve", "concurrency", "per instance", "module minimum memory"} {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("the error does not give the %s: %v", part, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			check := func(name string, got, want uint64) {
				if want != 0 && got != want {
					t.Errorf("%s = %d, want %d (plan %+v)", name, got, want, p)
				}
			}
			check("Concurrency", uint64(p.Concurrency), uint64(w.Concurrency))
			check("InstanceLimit", p.InstanceLimit, w.InstanceLimit)
			check("StdoutLimit", p.StdoutLimit, w.StdoutLimit)
			check("HeapLimit", p.HeapLimit, w.HeapLimit)
			check("Reserve", p.Reserve, w.Reserve)
			check("TableBytes", p.TableBytes, w.TableBytes)
			check("BodyBudget", p.BodyBudget, w.BodyBudget)
			if l := p.ContainerLimit; l > 0 {
				used := p.Reserve + uint64(p.Concurrency)*(p.InstanceLimit+2*p.StdoutLimit+p.TableBytes)
				if used > l {
					t.Errorf("the plan uses %d bytes of the container's %d: %+v", used, l, p)
				}
			}
		})
	}
}

// TestDefaultConcurrency: the number Go ≥ 1.25 gives GOMAXPROCS inside
// the container.
func TestDefaultConcurrency(t *testing.T) {
	q := func(quota int64, period uint64, cpus string) *specs.LinuxCPU {
		return &specs.LinuxCPU{Quota: &quota, Period: &period, Cpus: cpus}
	}
	ncpu := runtime.NumCPU()
	for _, tc := range []struct {
		cpu  *specs.LinuxCPU
		want int
	}{
		{nil, ncpu},
		{q(50000, 100000, ""), min(2, ncpu)},  // half a CPU: Go's minimum of 2
		{q(150000, 100000, ""), min(2, ncpu)}, // 1.5 rounds up
		{q(0, 100000, "0"), 1},                // one CPU in the cpuset
		{q(-1, 100000, "0-63"), ncpu},         // no quota; cpuset beyond the machine
		{q(1000000, 100000, "0,1"), min(2, ncpu)},
	} {
		if got, from := DefaultConcurrency(limitsSpec(0, tc.cpu)); got != tc.want || !strings.HasPrefix(from, "the default") {
			t.Errorf("%+v: %d (%s), want %d", tc.cpu, got, from, tc.want)
		}
	}
}
