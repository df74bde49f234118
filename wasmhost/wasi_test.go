package wasmhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"nebula.dev/nebula/test/functions"
)

// TestWASIArgumentsBounded: a WASI call cannot make the host allocate in
// proportion to the guest's memory. wazero's poll_oneoff allocates per
// subscription (a guest's 256 MiB of fd_read subscriptions cost about
// 200 MiB of the host's heap, outside the memory budget) and its path_*
// functions copy and clean the path (two copies of a 200 MiB path): the
// host refuses more than maxPollSubscriptions subscriptions (EINVAL) and
// paths longer than maxPathLen (ENAMETOOLONG) before wazero sees them.
func TestWASIArgumentsBounded(t *testing.T) {
	const mem = 256 << 20
	const nsubs = (mem - 4) / 80 // 48 bytes in, 32 out
	const pathLen = 200 << 20
	for _, c := range []struct {
		name, imp, call string
		errno           int
	}{
		{"poll_oneoff", `(import "wasi_snapshot_preview1" "poll_oneoff" (func $f (param i32 i32 i32 i32) (result i32)))`,
			fmt.Sprintf(`(local $i i32)
				(loop $l ;; every subscription an fd_read of stdin
					(i32.store8 offset=8 (i32.mul (local.get $i) (i32.const 48)) (i32.const 1))
					(local.set $i (i32.add (local.get $i) (i32.const 1)))
					(br_if $l (i32.lt_u (local.get $i) (i32.const %d))))
				(call $f (i32.const 0) (i32.const %d) (i32.const %d) (i32.const %d))`, nsubs, nsubs*48, nsubs, mem-4),
			wasiErrnoInval},
		{"path_open", `(import "wasi_snapshot_preview1" "path_open" (func $f (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))`,
			fmt.Sprintf(`(call $f (i32.const 3) (i32.const 0) (i32.const 0) (i32.const %d) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const %d))`, pathLen, mem-4),
			wasiErrnoNameTooLong},
		{"path_symlink, second path", `(import "wasi_snapshot_preview1" "path_symlink" (func $f (param i32 i32 i32 i32 i32) (result i32)))`,
			fmt.Sprintf(`(call $f (i32.const 0) (i32.const 1) (i32.const 3) (i32.const 0) (i32.const %d))`, pathLen),
			wasiErrnoNameTooLong},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := `(module ` + c.imp + `
				(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
				(memory 4096)
				(func (export "_start") ` + c.call + ` (call $exit)))`
			mod, err := newHost(t, Config{}).Compile(context.Background(), wat(t, src))
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := NewGuestFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			code, err := mod.Run(context.Background(), RunConfig{FS: fsys})
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if code != c.errno {
				t.Errorf("errno %d, want %d", code, c.errno)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
				t.Errorf("the call allocated %d MiB on the host's heap", n>>20)
			}
		})
	}
}

// TestWASILimitsNameLengths: every index in wasiLimits names a path and
// its length in wazero's own parameter names.
func TestWASILimitsNameLengths(t *testing.T) {
	defs, err := wazeroWASI()
	if err != nil {
		t.Fatal(err)
	}
	for name, paths := range wasiLimits {
		names := defs[name].ParamNames()
		for _, i := range paths {
			if !strings.HasSuffix(names[i], "path") || names[i+1] != names[i]+"_len" {
				t.Errorf("%s: parameters %d and %d are %q and %q, want a path and its length", name, i, i+1, names[i], names[i+1])
			}
		}
		if name == "poll_oneoff" && names[2] != "nsubscriptions" {
			t.Errorf("poll_oneoff's third parameter is %q", names[2])
		}
	}
}

// TestGuestFSOpenFileLimit: with LimitOpenFiles, a guest that opens files
// without closing them gets EAGAIN at the limit (counted across every
// instance, each file holding two of the host's descriptors), and what
// it held is counted free again once its instance is gone. Without the
// limit one guest could take every descriptor the host process has,
// its listeners' included.
func TestGuestFSOpenFileLimit(t *testing.T) {
	const eagain = 6
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fsys, err := NewGuestFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys.LimitOpenFiles(8)
	// Opens "f" until an open fails or 100 succeeded, then exits with
	// the count | the errno << 8.
	src := functions.OpenFilesWAT("f", 100, 8)
	mod, err := newHost(t, Config{}).Compile(context.Background(), wat(t, src))
	if err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		code, err := mod.Run(context.Background(), RunConfig{FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		// The preopened root counts too, once used (wazero opens it then).
		if n, errno := code&0xff, code>>8; n != 7 || errno != eagain {
			t.Errorf("run %d: %d files opened, then errno %d; want 7 (and the root), then EAGAIN (%d)", run, n, errno, eagain)
		}
	}
	if n := fsys.files.n.Load(); n != 0 {
		t.Errorf("%d files still counted open", n)
	}
}
