package oci

import (
	"fmt"
	"strconv"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
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
// and cwd. The host's flags carry the task's knobs, since annotations are
// not visible inside the container.
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
	args := []string{HostBinary}
	if h.CacheDir != "" {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: HostCache, Type: "bind", Source: h.CacheDir,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
		args = append(args, "--cache", HostCache)
	}
	mode := k.Mode
	if mode == "" {
		mode = ModeRun
	}
	runtime := "process"
	if d.Runtime == RuntimeWasm {
		runtime = "wasm"
	}
	args = append(args, "--mode", string(mode), "--runtime", runtime)
	if plan.InstanceLimit > 0 {
		args = append(args, "--memory-limit", strconv.FormatUint(plan.InstanceLimit, 10))
	}
	if plan.HeapLimit > 0 {
		args = append(args, "--heap-limit", strconv.FormatUint(plan.HeapLimit, 10))
	}
	if mode == ModeFunction {
		if d.Runtime == RuntimeWasm {
			k.Concurrency = plan.Concurrency
			args = append(args, "--stdout-limit", strconv.FormatUint(plan.StdoutLimit, 10))
			if plan.BodyBudget > 0 {
				args = append(args, "--body-budget", strconv.FormatUint(plan.BodyBudget, 10))
			}
		}
		args = append(args, k.flags()...)
		if h.ID != "" {
			args = append(args, "--container-id", h.ID)
		}
		if !h.CreatedAt.IsZero() {
			args = append(args, "--created-at", h.CreatedAt.UTC().Format(time.RFC3339Nano))
		}
		if h.CacheDir != "" && h.CompileTime > 0 {
			cache := "miss"
			if h.CacheHit {
				cache = "hit"
			}
			args = append(args, "--compile-cache", cache, "--compile-time", h.CompileTime.String())
		}
	}
	args = append(args, "--")
	spec.Process.Args = append(args, spec.Process.Args...)
	return nil
}

// flags renders the function-mode knobs as the host program's flags.
func (k Knobs) flags() []string {
	var f []string
	add := func(name, v string) { f = append(f, "--"+name, v) }
	if k.Timeout > 0 {
		add("timeout", k.Timeout.String())
	}
	if k.Concurrency > 0 {
		add("concurrency", strconv.Itoa(k.Concurrency))
	}
	if k.MaxBody > 0 {
		add("max-body", strconv.FormatInt(k.MaxBody, 10))
	}
	if k.MetricsPort > 0 {
		add("metrics-port", strconv.Itoa(k.MetricsPort))
	}
	if k.ReplyType != "" {
		add("reply-type", k.ReplyType)
	}
	if k.ReplySource != "" {
		add("reply-source", k.ReplySource)
	}
	if k.ReplyContentType != "" {
		add("reply-content-type", k.ReplyContentType)
	}
	if k.MaxConnections > 0 {
		add("max-connections", strconv.Itoa(k.MaxConnections))
	}
	if k.Protocol != "" {
		add("protocol", k.Protocol)
	}
	return f
}

func hasDevTmpfs(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Destination == "/dev" && m.Type == "tmpfs" {
			return true
		}
	}
	return false
}
