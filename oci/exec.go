package oci

import (
	"bytes"
	"fmt"
	"path"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/internal/hostargs"
)

// RewriteExec makes a process exec'd into a wasm task (ctr task exec,
// kubectl exec, an exec probe) run under the host program when it names a
// WebAssembly module, as the task's own process does: taskArgs are the
// task's process args as Rewrite left them. It reports whether it changed
// p; a process of a task that is not a wasm task, or that names no module,
// is left alone, and runc execs it as it would in any container.
//
// The process names a module when its args[0]
//
//  1. ends in .wasm (Classify's rule 4), or
//  2. is a path (absolute, or relative to the process's cwd) to a file in
//     the container's root filesystem that starts with WasmMagic, read with
//     read (Classify's rule 5).
//
// The rewritten process is the host program in run mode with the task's
// per-instance memory limit and module cache (a cache entry of another
// module only costs a compile); env, cwd, user, terminal and capabilities
// stay as given, so stdout, stderr, the exit code, a tty and signals behave
// as for the task's own process.
//
// # Notes
//
//   - read must resolve the path inside the container's root filesystem
//     (shim: openat2 with RESOLVE_IN_ROOT), so that a symlink cannot point
//     it at a host file. Whatever it answers, the host program opens the
//     module itself, inside the container, with the container's view.
//   - A .wasm path that is missing or not a module is still rewritten: the
//     host program then fails with an error naming the path, exit code 127
//     (no such file) or 126 (not a module it can run), as a shell would,
//     rather than runc's "exec format error".
//   - Mounts the shim cannot see (a pod's volumes) are not read: a module
//     there without a .wasm name is exec'd natively and fails as under runc.
//   - A function task of the process runtime is not a wasm task: execs
//     there are left alone.
func RewriteExec(p *specs.Process, taskArgs []string, read ReadHeader) (bool, error) {
	if p == nil || len(p.Args) == 0 || len(taskArgs) == 0 || taskArgs[0] != HostBinary {
		return false, nil
	}
	task, err := hostargs.Parse(taskArgs[1:])
	if err != nil {
		return false, fmt.Errorf("the task's host program arguments %q: %w", taskArgs, err)
	}
	if task.Runtime != "" && task.Runtime != abi.RuntimeWasm {
		return false, nil
	}
	if !namesModule(p, read) {
		return false, nil
	}
	a := hostargs.Args{
		Mode:        ModeRun,
		Runtime:     abi.RuntimeWasm,
		CacheDir:    task.CacheDir,
		MemoryLimit: task.MemoryLimit,
		Command:     p.Args,
	}
	p.Args = append([]string{HostBinary}, a.Argv()...)
	return true, nil
}

// namesModule reports whether p's args[0] is a WebAssembly module, by name
// or by its first bytes.
func namesModule(p *specs.Process, read ReadHeader) bool {
	arg0 := p.Args[0]
	if strings.HasSuffix(arg0, ".wasm") {
		return true
	}
	if read == nil || !strings.Contains(arg0, "/") {
		return false
	}
	file := path.Clean(arg0)
	if !path.IsAbs(file) {
		cwd := p.Cwd
		if cwd == "" {
			cwd = "/"
		}
		file = path.Join(cwd, arg0)
	}
	h, err := read(file)
	return err == nil && bytes.HasPrefix(h, WasmMagic)
}
