package oci

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// The memory model of a wasm task. With a container memory limit L (the OCI
// spec's linux.resources.memory.limit, whatever set it: ctr run
// --memory-limit, nerdctl --memory, a pod's resources.limits.memory):
//
//	Reserve + Concurrency × (InstanceLimit + 2 × StdoutLimit + TableBytes) ≤ L
//
// Reserve is HostReserve plus what loading the module costs: twice its
// compiled code (the cache entry is read into the heap, then copied into
// an executable mapping) and the module itself (kept decoded); in function
// mode also BodyBudget, the request bodies the front door may hold at once
// (L/8, at least one max-body). The stdout buffer counts twice (the buffer
// and its copy in the reply). In run mode Concurrency is 1, stdout is not
// buffered and no body is read.
const (
	// HostReserve is what nebula-host needs for itself in function mode
	// besides the module: the Go runtime and the host's heap (held to
	// hostHeapReserve by its soft memory limit), the pages of its program
	// the kernel must keep resident, the kernel's own. Measured under load
	// (README, Performance): 10.4 MB of anonymous memory, 12 MB of the
	// program's pages.
	HostReserve = 16 << 20
	// HostReserveRun is HostReserve in run mode, which serves no events:
	// a 16 MiB container runs a small module, as it runs a small native
	// program.
	HostReserveRun = 8 << 20
	// hostHeapReserve is the Go runtime's share of the reserve (function
	// mode; half of HostReserveRun in run mode): the host's GOMEMLIMIT is
	// this plus what the module keeps on its heap (its bytes, decoded, and
	// the cache entry while it loads) and what the instances keep there
	// (stdout buffers, tables).
	hostHeapReserve = 12 << 20
	// DefaultStdoutLimit is what one invocation may write to stdout when
	// the memory budget allows: 16 MiB. A smaller budget gets a sixteenth
	// of an instance's share.
	DefaultStdoutLimit = 16 << 20
	// DefaultMaxBody is the max-body knob's default, the front door's: 10 MiB.
	DefaultMaxBody = 10 << 20
	// bodyShare is the part of the container's limit request bodies may
	// hold at once (at least one max-body): one eighth.
	bodyShare = 8
	// wasmPage is the size of a WebAssembly memory page.
	wasmPage = 64 << 10
	// maxLinearMemory is the most a 32-bit linear memory can address.
	maxLinearMemory = 4 << 30
)

// ModuleMemory is what a module needs of the memory budget, per instance
// unless said otherwise.
type ModuleMemory struct {
	// MinMemory is its minimum linear memory in bytes.
	MinMemory uint64
	// Tables is the most its tables can take on the host's heap.
	Tables uint64
	// Code is the size of its compiled code, loaded once by the host.
	Code uint64
	// Size is the size of the module.
	Size uint64
}

// loadCost is what loading the module costs the host (see Reserve).
func (m ModuleMemory) loadCost() uint64 { return 2*m.Code + m.Size }

// MemoryPlan divides a wasm task's memory between the host and its
// instances. Zero limits mean none.
type MemoryPlan struct {
	ContainerLimit uint64 // the OCI memory limit; 0: none
	Reserve        uint64 // HostReserve (run mode: HostReserveRun) + 2 × compiled code + module size
	Concurrency    int    // instances at once: 1 in run mode
	// ConcurrencyFrom says where Concurrency came from, for errors.
	ConcurrencyFrom string
	InstanceLimit   uint64 // linear memory per instance, whole pages; 0: 4 GiB
	StdoutLimit     uint64 // per invocation; 0 in run mode
	BodyBudget      uint64 // request bodies held at once (function mode, in Reserve); 0: the front door's default
	TableBytes      uint64 // per instance
	HeapLimit       uint64 // the host's soft memory limit (GOMEMLIMIT)
}

// MemoryError is a plan that cannot work: the task would be killed or
// could not start. It carries every number of the model.
type MemoryError struct {
	Plan   MemoryPlan
	Module ModuleMemory
	Reason string
}

func (e *MemoryError) Error() string {
	p := e.Plan
	var b strings.Builder
	fmt.Fprintf(&b, "memory: %s: container limit %s, host reserve %s (%d MiB + 2 × %d bytes of compiled code + the module's %d bytes + %d bytes of request bodies), concurrency %d (%s)",
		e.Reason, size(p.ContainerLimit), size(p.Reserve), (p.Reserve-e.Module.loadCost()-p.BodyBudget)>>20, e.Module.Code, e.Module.Size, p.BodyBudget, p.Concurrency, p.ConcurrencyFrom)
	fmt.Fprintf(&b, ", per instance %s of linear memory + 2 × %s stdout + %s tables, module minimum memory %s",
		size(p.InstanceLimit), size(p.StdoutLimit), size(p.TableBytes), size(e.Module.MinMemory))
	b.WriteString("; raise the memory limit, lower nebula.dev/concurrency or nebula.dev/memory-limit")
	return b.String()
}

// ErrMemoryBudget is wrapped by every *MemoryError.
var ErrMemoryBudget = errors.New("memory budget")

func (e *MemoryError) Unwrap() error { return ErrMemoryBudget }

// reservePlan is the part of a plan that does not depend on the
// instances' share: the host's reserve (and its heap's), the concurrency,
// the stdout limit, the container's limit and the body budget.
func reservePlan(spec *specs.Spec, k Knobs, m ModuleMemory) (p MemoryPlan, heapReserve uint64) {
	p = MemoryPlan{Reserve: HostReserveRun + m.loadCost(), Concurrency: 1, ConcurrencyFrom: "run mode", TableBytes: m.Tables}
	heapReserve = uint64(HostReserveRun / 2)
	function := k.Mode == ModeFunction
	if function {
		p.Reserve, heapReserve = HostReserve+m.loadCost(), hostHeapReserve
		p.Concurrency, p.ConcurrencyFrom = k.Concurrency, AnnotationPrefix+"concurrency"
		if p.Concurrency < 1 {
			p.Concurrency, p.ConcurrencyFrom = DefaultConcurrency(spec)
		}
		p.StdoutLimit = DefaultStdoutLimit
	}
	p.ContainerLimit = ContainerMemoryLimit(spec)
	if function && p.ContainerLimit > 0 {
		maxBody := uint64(DefaultMaxBody)
		if k.MaxBody > 0 {
			maxBody = uint64(k.MaxBody)
		}
		p.BodyBudget = max(maxBody, p.ContainerLimit/bodyShare)
		p.Reserve += p.BodyBudget
	}
	return p, heapReserve
}

// PlanMemory applies the memory model to a wasm task: it returns the
// limits the host must enforce, or a *MemoryError when the container's
// limit cannot hold the host and Concurrency instances of at least the
// module's minimum memory (and at least one page each). Without a
// container limit only the memory-limit knob applies.
//
// # Notes
//
//   - Function mode always gets an explicit concurrency: the knob, else
//     DefaultConcurrency, so that the shim's budget and the host's number
//     of instances agree.
//   - The memory-limit knob is per instance; with a container limit it
//     must fit the instance's share, and is refused otherwise.
func PlanMemory(spec *specs.Spec, k Knobs, m ModuleMemory) (MemoryPlan, error) {
	p, heapReserve := reservePlan(spec, k, m)
	function := k.Mode == ModeFunction
	fail := func(format string, a ...any) (MemoryPlan, error) {
		return p, &MemoryError{Plan: p, Module: m, Reason: fmt.Sprintf(format, a...)}
	}
	if p.ContainerLimit == 0 {
		p.InstanceLimit = k.MemoryLimit
		if p.InstanceLimit != 0 && p.InstanceLimit < max(m.MinMemory, wasmPage) {
			return fail("nebula.dev/memory-limit is below the module's minimum memory")
		}
		return p, nil
	}
	if p.ContainerLimit <= p.Reserve {
		return fail("the container limit does not exceed the host reserve")
	}
	if need := CompileMemoryEstimate(m.Size); p.ContainerLimit < need {
		return fail("compiling the module needs about %s (8 MiB + 24 × its size), more than the container limit", size(need))
	}
	n := uint64(p.Concurrency)
	share := (p.ContainerLimit - p.Reserve) / n
	if function {
		p.StdoutLimit = min(DefaultStdoutLimit, share/16)
	}
	perInstance := 2*p.StdoutLimit + p.TableBytes
	if share < perInstance {
		return fail("each instance's share of %s cannot hold its stdout and tables", size(share))
	}
	avail := min((share-perInstance)&^(wasmPage-1), maxLinearMemory)
	switch {
	case k.MemoryLimit > avail:
		p.InstanceLimit = k.MemoryLimit
		return fail("nebula.dev/memory-limit is above each instance's share of %s", size(avail))
	case k.MemoryLimit > 0:
		p.InstanceLimit = k.MemoryLimit
	default:
		p.InstanceLimit = avail
	}
	if p.InstanceLimit < max(m.MinMemory, wasmPage) {
		return fail("each instance would get less than the module's minimum memory (or one page)")
	}
	p.HeapLimit = heapReserve + m.Code + m.Size + p.BodyBudget + n*perInstance
	return p, nil
}

// CompileMemoryEstimate is what compiling a module of n bytes needs of the
// task's memory: the compile runs in the task's cgroups before the host
// starts (a cache hit skips it, but the plan does not depend on the cache,
// so the same task is accepted or refused every time). 8 MiB + 24n:
// `nebula-host compile` of the 3 MB Go probe peaks at 77 MB RSS unbounded
// and is OOM-killed in a 64 MiB cgroup even with its heap held to half of
// it; a small WAT module compiles in a 16 MiB one.
func CompileMemoryEstimate(n uint64) uint64 { return 8<<20 + 24*n }

// ContainerMemoryLimit is the OCI spec's memory limit in bytes, 0 for none.
func ContainerMemoryLimit(spec *specs.Spec) uint64 {
	if spec.Linux == nil || spec.Linux.Resources == nil || spec.Linux.Resources.Memory == nil ||
		spec.Linux.Resources.Memory.Limit == nil || *spec.Linux.Resources.Memory.Limit <= 0 {
		return 0
	}
	return uint64(*spec.Linux.Resources.Memory.Limit)
}

// DefaultConcurrency is the number of instances a function task runs at
// once when the concurrency knob is unset: the CPUs the container may use,
// as Go ≥ 1.25 sizes GOMAXPROCS inside it: the CPUs of its cpuset (else
// this machine's), at most the CPU quota (quota/period) rounded up, but
// at least 2. from says which applied.
func DefaultConcurrency(spec *specs.Spec) (n int, from string) {
	n, from = runtime.NumCPU(), "the default: this machine's CPUs"
	if spec.Linux == nil || spec.Linux.Resources == nil || spec.Linux.Resources.CPU == nil {
		return n, from
	}
	cpu := spec.Linux.Resources.CPU
	if c := cpusetSize(cpu.Cpus); c > 0 && c < n {
		n, from = c, "the default: the container's cpuset"
	}
	if cpu.Quota != nil && *cpu.Quota > 0 && cpu.Period != nil && *cpu.Period > 0 {
		q := max(int((uint64(*cpu.Quota)+*cpu.Period-1) / *cpu.Period), 2) // as Go does
		if q < n {
			n, from = q, "the default: the container's CPU quota"
		}
	}
	return max(n, 1), from
}

// cpusetSize counts the CPUs in a cpuset list such as "0-3,8"; 0 if empty
// or malformed.
func cpusetSize(s string) int {
	if s == "" {
		return 0
	}
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0
			}
		}
		n += b - a + 1
	}
	return n
}

// size formats a byte count exactly, with a binary unit for readers.
func size(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d bytes (%.1f KiB)", n, float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
