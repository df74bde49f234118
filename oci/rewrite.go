package oci

import (
	"fmt"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/internal/hostargs"
)

// Where Nebula's files appear inside a rewritten container.
const (
	HostDir    = "/dev/.nebula"
	HostBinary = HostDir + "/nebula-host"
	HostCache  = HostDir + "/cache"
)

// Host says where, on the host, the files Rewrite mounts into the
// container are.
type Host struct {
	// Binary is the host program, nebula-host.
	Binary string
	// CacheDir is this module's compilation cache directory, or "" for none.
	CacheDir string
	// ID is the task's container id, the function's name when K_SERVICE
	// is not set.
	ID string
	// CacheHit and CompileTime report how the shim compiled the module
	// (CompileTime 0: not known when the spec is written; the host then
	// reports its own load); CreatedAt is when the shim's Create began.
	// Function mode reports them as metrics.
	CacheHit    bool
	CompileTime time.Duration
	CreatedAt   time.Time
	// Memory is what the module needs of the memory budget (wasm tasks;
	// see PlanMemory).
	Memory ModuleMemory
}

// NeedsRewrite reports whether a task's process must become the host
// program: wasm tasks, and function-mode tasks of either runtime.
func NeedsRewrite(d Decision, k Knobs) bool {
	return d.Runtime == RuntimeWasm || k.Mode == ModeFunction
}

// Rewrite makes the spec's process Nebula's host program, mounted
// read-only at HostBinary, running the original args with the original env
// and cwd. The host's arguments (hostargs.Args) carry the task's knobs,
// since annotations are not visible inside the container.
//
// # Notes
//
//   - Mounts are appended after the spec's own, so they land inside the
//     /dev tmpfs runc creates, never in the image's writable layer.
//   - A wasm task's memory limits come from PlanMemory; a plan that cannot
//     work is returned as a *MemoryError, before anything is changed.
func Rewrite(spec *specs.Spec, d Decision, k Knobs, h Host) error {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return fmt.Errorf("spec has no process args to run")
	}
	if h.Binary == "" {
		return fmt.Errorf("no host program to mount")
	}
	var plan MemoryPlan
	if d.Runtime == RuntimeWasm {
		var err error
		if plan, err = PlanMemory(spec, k, h.Memory); err != nil {
			return err
		}
	}
	if !hasDevTmpfs(spec) {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: HostDir, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=755", "size=64k"},
		})
	}
	spec.Mounts = append(spec.Mounts, specs.Mount{
		Destination: HostBinary, Type: "bind", Source: h.Binary,
		Options: []string{"rbind", "ro", "nosuid", "nodev"},
	})
	a := hostArgs(spec, d, k, h, plan)
	if h.CacheDir != "" {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: HostCache, Type: "bind", Source: h.CacheDir,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	spec.Process.Args = append([]string{HostBinary}, a.Argv()...)
	return nil
}

// hostArgs is what the host program is told: the task's knobs (function
// mode) and memory plan (wasm), what the shim measured, and the original
// process args to run.
func hostArgs(spec *specs.Spec, d Decision, k Knobs, h Host, plan MemoryPlan) hostargs.Args {
	a := hostargs.Args{
		Mode:        k.Mode,
		Runtime:     abi.RuntimeProcess,
		MemoryLimit: plan.InstanceLimit,
		HeapLimit:   plan.HeapLimit,
		Command:     spec.Process.Args,
	}
	if a.Mode == "" {
		a.Mode = ModeRun
	}
	if d.Runtime == RuntimeWasm {
		a.Runtime = abi.RuntimeWasm
	}
	if h.CacheDir != "" {
		a.CacheDir = HostCache
	}
	if a.Mode != ModeFunction {
		return a
	}
	a.Timeout, a.Concurrency, a.MetricsPort = k.Timeout, k.Concurrency, k.MetricsPort
	a.MaxBody = uint64(k.MaxBody)
	a.ReplyType, a.ReplySource, a.ReplyContentType = k.ReplyType, k.ReplySource, k.ReplyContentType
	a.MaxConnections, a.Protocol = k.MaxConnections, k.Protocol
	if d.Runtime == RuntimeWasm {
		a.Concurrency, a.StdoutLimit, a.BodyBudget = plan.Concurrency, plan.StdoutLimit, plan.BodyBudget
	}
	a.ContainerID, a.CreatedAt = h.ID, h.CreatedAt
	if h.CacheDir != "" && h.CompileTime > 0 {
		a.CompileTime, a.CacheHit = h.CompileTime, h.CacheHit
	}
	return a
}

func hasDevTmpfs(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Destination == "/dev" && m.Type == "tmpfs" {
			return true
		}
	}
	return false
}
