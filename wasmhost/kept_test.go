package wasmhost

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// keptReactor reports what it finds of earlier events — memory size,
// global $g, the word at 4096, fd_fdstat_get's errno for descriptors 1
// (stdout), 3 (the preopened root) and 4 (none) —, leaves traces, and then
// does what stdin's first byte asks: c closes stdout, x closes the
// preopened root, o opens "." and keeps it, l lists the preopened root
// (moving its position), g grows memory, t traps, e calls proc_exit(0),
// f writes 4 KiB more to stdout and returns.
const keptReactor = `(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $g (mut i32) (i32.const 42))
  (data (i32.const 3000) ".")
  (func (export "nebula_handle") (result i32)
    (i32.store (i32.const 400) (memory.size))
    (i32.store (i32.const 404) (global.get $g))
    (i32.store (i32.const 408) (i32.load (i32.const 4096)))
    (i32.store (i32.const 412) (call $fdstat (i32.const 1) (i32.const 8192)))
    (i32.store (i32.const 416) (call $fdstat (i32.const 3) (i32.const 8192)))
    (i32.store (i32.const 420) (call $fdstat (i32.const 4) (i32.const 8192)))
    (i32.store (i32.const 300) (i32.const 400))
    (i32.store (i32.const 304) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)))
    (global.set $g (i32.const 7777))
    (i32.store (i32.const 4096) (i32.const 0xdeadbeef))
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 108)))
    (block $done
      (br_if $done (i32.eqz (i32.load (i32.const 108))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 99)) ;; c
        (then (drop (call $fd_close (i32.const 1)))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 120)) ;; x
        (then (drop (call $fd_close (i32.const 3)))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 111)) ;; o
        (then (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 3000) (i32.const 1)
          (i32.const 2) (i64.const 0x4002) (i64.const 0x4002) (i32.const 0) (i32.const 500)) (then unreachable))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 108)) ;; l
        (then (if (call $fd_readdir (i32.const 3) (i32.const 9000) (i32.const 512) (i64.const 0) (i32.const 508))
          (then unreachable))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 103)) ;; g
        (then (drop (memory.grow (i32.const 1)))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 116)) ;; t
        (then unreachable))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 101)) ;; e
        (then (call $proc_exit (i32.const 0))))
      (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 102)) ;; f
        (then
          (i32.store (i32.const 300) (i32.const 0))
          (i32.store (i32.const 304) (i32.const 4096))
          (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308))))))
    (i32.const 0)))`

// TestReactorKept: an instance serves the next event only if the event
// left nothing a new instance would not have; after each hostile event
// the next one, in a kept or a new instance, finds the snapshot's state,
// and the kept events are exactly the clean ones. Every way of restoring
// memory runs, as in TestReactorFreshState.
func TestReactorKept(t *testing.T) {
	noScan := func() *os.File { return nil }
	for _, c := range []struct {
		name    string
		copyMax int
		keptMax uint64
		pagemap func() *os.File
	}{
		{"copy", 1 << 20, keptMax, pagemap}, {"map", 0, keptMax, pagemap},
		{"map/drop", 0, 0, pagemap}, {"map/noscan", 0, keptMax, noScan},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func(c int, k uint64, p func() *os.File) { copyRestoreMax, keptMax, pagemap = c, k, p }(copyRestoreMax, keptMax, pagemap)
			copyRestoreMax, keptMax, pagemap = c.copyMax, c.keptMax, c.pagemap
			testReactorKept(t)
		})
	}
}

func testReactorKept(t *testing.T) {
	ctx := context.Background()
	inv := newWATReactor(t, Config{}.WithStdoutLimit(1024), keptReactor)
	if !inv.mod.reactor.keep || !inv.mod.reactor.fdProbe {
		t.Fatalf("plan: keep %v, fd probe %v; want both", inv.mod.reactor.keep, inv.mod.reactor.fdProbe)
	}
	if copied := inv.snap.copy != nil; copied != (copyRestoreMax > 0) {
		t.Fatalf("snapshot copied: %v, want %v", copied, copyRestoreMax > 0)
	}
	want := [6]uint32{2, 42, 0, 0, 0, 8} // pages, $g, word, fdstat(1), fdstat(3), fdstat(4): EBADF
	var kept int64
	for i, cmd := range "nncnonxnlngntnenfnn" {
		before := inv.keptEvents.Load()
		resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte{byte(cmd)}})
		switch {
		case cmd == 't':
			if err == nil {
				t.Fatalf("event %d (%c): no trap", i, cmd)
			}
		case cmd == 'f':
			// Over the limit, the guest returned: its stop global is set,
			// and the instance must not serve the next event.
			if !errors.Is(err, abi.ErrOutputLimit) {
				t.Fatalf("event %d (%c): %v, want ErrOutputLimit", i, cmd, err)
			}
			if inv.keptEvents.Load() > before {
				t.Fatalf("event %d (%c): instance kept", i, cmd)
			}
			continue
		case err != nil:
			t.Fatalf("event %d (%c): %v", i, cmd, err)
		}
		var got [6]uint32
		if len(resp.Stdout) != 24 {
			t.Fatalf("event %d (%c): report %q", i, cmd, resp.Stdout)
		}
		for j := range got {
			got[j] = binary.LittleEndian.Uint32(resp.Stdout[4*j:])
		}
		if got != want {
			t.Errorf("event %d (%c) found %v, want %v", i, cmd, got, want)
		}
		wasKept := inv.keptEvents.Load() > before
		if wasKept != (cmd == 'n') {
			t.Errorf("event %d (%c): instance kept %v, want %v", i, cmd, wasKept, cmd == 'n')
		}
		if wasKept {
			kept++
			// Idle, the kept instance holds none of the event's traces.
			k := inv.slots.idle[0].kept
			if word, _ := k.mod.Memory().ReadUint32Le(4096); word != 0 || k.globals[0].Get() != 42 {
				t.Errorf("event %d (%c): idle, the kept instance holds word %#x, $g %d", i, cmd, word, k.globals[0].Get())
			}
			// Nor the probe's answer, written at address 0.
			if b, _ := k.mod.Memory().Read(0, 24); string(b) != string(make([]byte, 24)) {
				t.Errorf("event %d (%c): idle, the kept instance holds % x at 0", i, cmd, b)
			}
		}
	}
	if kept == 0 {
		t.Fatal("no instance was ever kept")
	}
}

// TestReactorKeptPlan: which reactors may keep their instances.
func TestReactorKeptPlan(t *testing.T) {
	const handle = `(func (export "nebula_handle") (result i32) (i32.const 0))`
	const fdClose = `(import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))`
	const fdstat = `(import "wasi_snapshot_preview1" "fd_fdstat_get" (func (param i32 i32) (result i32)))`
	for _, c := range []struct {
		name        string
		src         string
		keep, probe bool
	}{
		{"no descriptor calls", `(module (memory 1) ` + handle + `)`, true, false},
		{"fd_close and fd_fdstat_get", `(module ` + fdClose + fdstat + ` (memory 1) ` + handle + `)`, true, true},
		{"fd_close alone", `(module ` + fdClose + ` (memory 1) ` + handle + `)`, false, false},
		{"fd_renumber alone", `(module (import "wasi_snapshot_preview1" "fd_renumber" (func (param i32 i32) (result i32))) (memory 1) ` + handle + `)`, false, false},
		{"fd_renumber with fd_close and fd_fdstat_get", `(module ` + fdClose + fdstat + `(import "wasi_snapshot_preview1" "fd_renumber" (func (param i32 i32) (result i32))) (memory 1) ` + handle + `)`, false, false},
		{"sock_accept", `(module ` + fdClose + fdstat + `(import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))) (memory 1) ` + handle + `)`, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := wat(t, c.src)
			info, err := parseModule(wasm)
			if err != nil {
				t.Fatal(err)
			}
			p := planReactor(wasm, info)
			if p.keep != c.keep || p.fdProbe != c.probe {
				t.Fatalf("keep %v, probe %v; want %v, %v", p.keep, p.fdProbe, c.keep, c.probe)
			}
			if (p.noKeep == "") != p.keep {
				t.Fatalf("keep %v, and why not: %q", p.keep, p.noKeep)
			}
			if _, err := parseModule(p.module()); err != nil {
				t.Fatalf("the rewritten module does not parse: %v", err)
			}
			if _, err := newHost(t, Config{}).Compile(context.Background(), wasm); err != nil {
				t.Fatalf("the rewritten module does not compile: %v", err)
			}
		})
	}
}

// TestReactorKeptGo: the Go reactors keep their instances, compiled or
// loaded from a cache entry.
func TestReactorKeptGo(t *testing.T) {
	ctx := context.Background()
	wasm := wasmFile(t, functions.ProbeReactor)
	dir := filepath.Join(t.TempDir(), "cache")
	if _, _, err := CompileToCache(ctx, wasm, dir, Config{}); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]*Module{
		"compiled": compile(t, Config{}, functions.ProbeReactor),
		"cached":   compileHit(t, Config{}, dir, wasm),
	} {
		t.Run(name, func(t *testing.T) {
			fsys, err := NewGuestFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			inv, err := NewReactorInvoker(ctx, mod, RunConfig{Args: []string{"probe"}, FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			if !inv.keep || !mod.reactor.fdProbe {
				t.Fatalf("keep %v, fd probe %v: the probe's reactor build may not keep its instances", inv.keep, mod.reactor.fdProbe)
			}
			for i := range 3 {
				if _, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(`{}`), Env: []string{"CE_TYPE=probe.echo"}}); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			if n := inv.keptEvents.Load(); n != 3 {
				t.Fatalf("%d of 3 events kept their instance", n)
			}
		})
	}
}

// newWATReactor compiles the reactor src with cfg, without the warm-up
// event, and initialises it with a GuestFS of its own.
func newWATReactor(tb testing.TB, cfg Config, src string) *ReactorInvoker {
	tb.Helper()
	mod, err := newHost(tb, cfg.WithReactorWarmup(false)).Compile(context.Background(), wat(tb, src))
	if err != nil {
		tb.Fatal(err)
	}
	fsys, err := NewGuestFS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := NewReactorInvoker(context.Background(), mod, RunConfig{Args: []string{"reactor"}, FS: fsys})
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}
