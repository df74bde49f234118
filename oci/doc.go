// Package oci holds Nebula's pure functions over OCI runtime specs: which
// runtime a task wants (Classify), the knobs it sets (ParseKnobs), and the
// spec rewrite that makes a wasm or function task's process Nebula's host
// program (Rewrite). Nothing here touches containerd, runc or the disk,
// except through the callbacks the caller passes.
//
// # Why
//
//   - Classification is first-match over an ordered list of rules, each with
//     a reason string, so a surprising decision can be explained in the
//     shim's log ("wasm: annotation run.oci.handler=wasm").
//   - Knob values are validated in one place and a bad one fails the task's
//     Create with an error naming the knob and the value: a typo must never
//     become a silent default. Unknown nebula.dev/ annotations are errors for
//     the same reason; unknown NEBULA_ environment variables are not, since
//     environments are inherited wholesale from images.
//   - The host program and the compiled module are bind-mounted read-only
//     under /dev/.nebula. runc mounts a fresh tmpfs on /dev for every
//     container, so the mount points are created there and nothing is
//     written to the image's writable layer. (A spec without a /dev tmpfs
//     gets its own small tmpfs at /dev/.nebula.)
package oci
