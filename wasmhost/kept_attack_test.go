package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"

	"nebula.dev/nebula/abi"
)

// TestReactorKeptNoMemory: a reactor with no memory, or one of no pages,
// cannot be probed with fd_fdstat_get (it has nowhere to write), so a
// kept instance could carry a closed standard descriptor to the next
// event. Every event closes stdout and returns fd_close's errno: a new
// instance's is 0, so every event must succeed.
func TestReactorKeptNoMemory(t *testing.T) {
	const imports = `
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))`
	const handle = `(func (export "nebula_handle") (result i32) (call $fd_close (i32.const 1)))`
	for _, c := range []struct{ name, src string }{
		{"no memory", `(module ` + imports + ` ` + handle + `)`},
		{"zero pages", `(module ` + imports + ` (memory 0) ` + handle + `)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			mod, err := newHost(t, NewConfig().WithReactorWarmup(false)).Compile(ctx, wat(t, c.src))
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := NewGuestFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			inv, err := NewReactorInvoker(ctx, mod, RunConfig{FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				_, err := inv.Invoke(ctx, &abi.Request{})
				var exit *abi.ExitError
				if errors.As(err, &exit) {
					t.Fatalf("event %d: fd_close(1) returned %d: stdout was already closed", i, exit.Code)
				} else if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
		})
	}
}

// TestDeadlineGlobalsUnreachable: the globals instrumentDeadline adds
// come after the module's own, so a body naming a global the module does
// not have would, once instrumented, reach them — and refill its fuel or
// clear its stop flag forever, out of the deadline's reach. Such a module
// is invalid: Compile refuses it, and instrumentDeadline leaves it alone.
func TestDeadlineGlobalsUnreachable(t *testing.T) {
	const spin = `(loop $l (global.set 1 (i32.const 0x7fffffff)) (br $l))`
	for _, c := range []struct{ name, src string }{
		{"command", `(module (memory 1) (func (export "_start") ` + spin + `))`},
		{"reactor", `(module (memory 1) (func (export "nebula_handle") (result i32) ` + spin + ` (i32.const 0)))`},
		{"reactor, own global", `(module (memory 1) (global (mut i32) (i32.const 0))
  (func (export "nebula_handle") (result i32) (global.set 0 (i32.const 1)) (global.get 2)))`},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := wat(t, c.src)
			_, err := newHost(t, NewConfig()).Compile(context.Background(), wasm)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile: %v, want ErrInvalid", err)
			}
			info, err := parseModule(wasm)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := instrumentDeadline(wasm, info); ok {
				t.Fatal("instrumented")
			}
		})
	}
}

// TestReactorKeptUninstrumented: wazero stops a module without the
// deadline's check (no memory, no sched_yield) by closing it from a
// watcher goroutine, which can fire after the handler returned; such an
// instance must not be kept, or the next event could find it closed.
func TestReactorKeptUninstrumented(t *testing.T) {
	ctx := context.Background()
	src := `(module (func (export "nebula_handle") (result i32) (i32.const 0)))`
	mod, err := newHost(t, NewConfig().WithReactorWarmup(false)).Compile(ctx, wat(t, src))
	if err != nil {
		t.Fatal(err)
	}
	if mod.instrumented {
		t.Fatal("a module with neither memory nor sched_yield was instrumented")
	}
	inv, err := NewReactorInvoker(ctx, mod, RunConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := inv.Invoke(ctx, &abi.Request{}); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if n := inv.keptEvents.Load(); n != 0 {
		t.Fatalf("%d events kept an instance wazero may close", n)
	}
}

// failingClose is a file whose Close fails, as wazero's does when the
// kernel's close(2) reports an error.
type failingClose struct {
	experimentalsys.UnimplementedFile
}

func (failingClose) Close() experimentalsys.Errno { return experimentalsys.EIO }

// TestFdGuardFailedClose: wazero keeps a file whose Close failed in the
// guest's descriptor table, so the guard must not count it as closed.
func TestFdGuardFailedClose(t *testing.T) {
	var g fdGuard
	g.begin()
	g.open++
	f := &guestFile{File: failingClose{}, handle: -1, guard: &g, event: g.event}
	if errno := f.Close(); errno != experimentalsys.EIO {
		t.Fatalf("Close: %v, want EIO", errno)
	}
	if g.clean() {
		t.Fatal("a file whose close failed counts as closed")
	}
}

// TestReactorKeptRenumberSelf: fd_renumber(n, n) in wazero closes the
// file at n and leaves it in the descriptor table, closed, which the
// guard takes for a close and fd_fdstat_get for a free descriptor (EBADF).
// A kept instance would carry that descriptor to the next event, whose
// path_open would get another number and whose fd_close(n) would succeed.
// Every event opens ".", renumbers it onto itself and reports the number
// and fd_close's errno on it: a new instance's are 4 and 0.
func TestReactorKeptRenumberSelf(t *testing.T) {
	const src = `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $fd_renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 3000) ".")
  (func (export "nebula_handle") (result i32)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 3000) (i32.const 1)
      (i32.const 2) (i64.const 0x4002) (i64.const 0x4002) (i32.const 0) (i32.const 400)) (then unreachable))
    (i32.store (i32.const 404) (call $fd_close (i32.const 4)))
    (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 3000) (i32.const 1)
      (i32.const 2) (i64.const 0x4002) (i64.const 0x4002) (i32.const 0) (i32.const 408)))
    (drop (call $fd_renumber (i32.load (i32.const 408)) (i32.load (i32.const 408))))
    (i32.store (i32.const 300) (i32.const 400))
    (i32.store (i32.const 304) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)))
    (i32.const 0)))`
	ctx := context.Background()
	inv := newWATReactor(t, Config{}, src)
	for i := range 3 {
		resp, err := inv.Invoke(ctx, &abi.Request{})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := []byte{4, 0, 0, 0, 0, 0, 0, 0}; string(resp.Stdout) != string(want) {
			t.Fatalf("event %d: path_open's descriptor and fd_close's errno % x, want % x", i, resp.Stdout, want)
		}
	}
}

// TestReactorKeptMemoryRefusal: an event whose memory.grow the limit
// refused, and which then returned normally, must not make the next
// event's trap look like the memory limit. Stdin "g" asks for a page over
// the limit and returns 0; "t" traps.
func TestReactorKeptMemoryRefusal(t *testing.T) {
	const src = `(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "nebula_handle") (result i32)
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 108)))
    (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 103)) ;; g
      (then (drop (memory.grow (i32.const 1)))))
    (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 116)) ;; t
      (then unreachable))
    (i32.const 0)))`
	ctx := context.Background()
	mod, err := newHost(t, NewConfig().WithMemoryLimit(PageSize).WithReactorWarmup(false)).Compile(ctx, wat(t, src))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := NewReactorInvoker(ctx, mod, RunConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte("g")}); err != nil {
		t.Fatalf("event 0: %v", err)
	}
	_, err = inv.Invoke(ctx, &abi.Request{Stdin: []byte("t")})
	if !errors.Is(err, abi.ErrTrap) || errors.Is(err, abi.ErrMemoryLimit) {
		t.Fatalf("event 1: %v, want ErrTrap", err)
	}
}

// TestReactorKeptConcurrent: events at once, clean and hostile mixed,
// each in its slot's kept or new instance, every one finding the
// snapshot's state (run it with -race).
func TestReactorKeptConcurrent(t *testing.T) {
	ctx := context.Background()
	inv := newWATReactor(t, Config{}, keptReactor)
	want := []byte{2, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0}
	const workers, events = 4, 40
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			cmds := "nnnnxnnonnlncnngnntne"
			for i := range events {
				cmd := cmds[(i*(w+1))%len(cmds)]
				resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte{cmd}})
				if (err != nil) != (cmd == 't') {
					errs <- fmt.Errorf("worker %d event %d (%c): %v", w, i, cmd, err)
					return
				}
				if string(resp.Stdout) != string(want) {
					errs <- fmt.Errorf("worker %d event %d (%c) found % x, want % x", w, i, cmd, resp.Stdout, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if inv.keptEvents.Load() == 0 {
		t.Fatal("no instance was ever kept")
	}
}

// TestReactorKeptDeadline: an event whose deadline fired, even if its
// handler returned first, does not keep its instance (the deadline's
// watcher may be setting the stop flag as the host restores it), and the
// next event runs normally.
func TestReactorKeptDeadline(t *testing.T) {
	ctx := context.Background()
	mod, err := newHost(t, NewConfig().WithReactorWarmup(false)).Compile(ctx, wat(t, keptReactor))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := NewReactorInvoker(ctx, mod, RunConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte("n")}); err != nil {
		t.Fatalf("event 0: %v", err)
	}
	kept := inv.keptEvents.Load()
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	inv.Invoke(expired, &abi.Request{Stdin: []byte("n")}) // any outcome
	if n := inv.keptEvents.Load(); n != kept {
		t.Fatalf("the instance of an event past its deadline was kept")
	}
	resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte("n")})
	if err != nil {
		t.Fatalf("event 2: %v", err)
	}
	if want := []byte{2, 0, 0, 0, 42, 0, 0, 0}; string(resp.Stdout[:8]) != string(want) {
		t.Fatalf("event 2 found % x, want % x", resp.Stdout[:8], want)
	}
}

// TestReactorKeptOutputLimit: a guest that goes over its output limit is
// stopped through its deadline globals; one that returns before its next
// check still has them set, and its instance must not serve the next
// event (this reactor has no fd_close, so no probe runs its code first).
func TestReactorKeptOutputLimit(t *testing.T) {
	const src = `(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok")
  (func (export "nebula_handle") (result i32)
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 108)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (if (i32.eq (i32.load8_u (i32.const 200)) (i32.const 102)) ;; f: 4 KiB
      (then (i32.store (i32.const 4) (i32.const 4096))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 0)))`
	inv := newWATReactor(t, NewConfig().WithStdoutLimit(1024), src)
	if !inv.keep {
		t.Fatalf("not kept: %s", inv.mod.reactor.noKeep)
	}
	ctx := context.Background()
	for i, data := range []string{"n", "f", "n", "f", "f", "n", "n"} {
		before := inv.keptEvents.Load()
		resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(data)})
		if data == "f" {
			if !errors.Is(err, abi.ErrOutputLimit) {
				t.Fatalf("event %d (%s): %v, want ErrOutputLimit", i, data, err)
			}
			if inv.keptEvents.Load() > before {
				t.Fatalf("event %d (%s): the instance stopped over its limit was kept", i, data)
			}
			continue
		}
		if err != nil || string(resp.Stdout) != "ok" {
			t.Fatalf("event %d (%s): %q, %v; want ok", i, data, resp.Stdout, err)
		}
	}
}
