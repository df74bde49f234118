// Package shim is containerd-shim-nebula-v1: containerd's own runc-v2 shim,
// composed rather than copied, with a thin router in front of its task
// service.
//
// Every task Nebula runs is a runc container. Ordinary tasks are handed to
// containerd's runc task service untouched, so they behave exactly as under
// io.containerd.runc.v2. What the router changes before delegating:
//
//   - Runtime options. CRI and `ctr --runtime-config-path` send
//     runtimeoptions.v1.Options to any runtime type that is not runc, and
//     runc's task service asserts its own options type without checking
//     (a panic otherwise). The router translates the TOML they carry into
//     runc's options.Options, strictly: an unknown key fails Create with an
//     error that names it, instead of being silently dropped.
//
//   - Wasm and function tasks. The router checks the settings the host
//     program could not start with (oci.CheckStartable), rewrites the spec
//     so that runc starts nebula-host, and compiles the module into the
//     cache: after runc has created the container, in a `nebula-host
//     compile` process moved into the container's cgroups, bounded by the
//     compile-timeout and compile-memory knobs, and stopped when containerd
//     deletes the task or its container disappears (see
//     docs/rationale.md). Delete is overridden for that (and to forget
//     the task for Exec).
//
//   - Execs into a wasm task. A process exec'd into it (ctr task exec,
//     kubectl exec) that names a WebAssembly module runs under the host
//     program too (oci.RewriteExec), instead of runc's "exec format
//     error"; any other exec is runc's, untouched.
//
// # Why this shape
//
//   - containerd's runc task service has process-wide side effects (reaper,
//     console epoll, OOM watcher, a goroutine that closes the shared event
//     publisher), so a process may hold only one, and its ttrpc service name
//     may be registered only once. Hence one router that embeds it and
//     overrides only what differs.
//   - The shim links containerd v2.2's pkg/shim, the last line that speaks
//     the legacy bootstrap protocol. containerd 2.0–2.2 only speak that
//     protocol; 2.3 and 2.4 send the new protobuf BootstrapParams on stdin
//     but still accept a shim that answers with the JSON form. A shim built
//     on 2.4's pkg/shim refuses to start under anything older than 2.3.
//     The end-to-end suite runs against the oldest and newest daemons we
//     claim (see README).
//   - The task service plugin is registered here, once, under containerd's
//     usual (type, id): importing runc's own task/plugin package as well
//     would register a second and panic.
package shim
