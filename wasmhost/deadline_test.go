package wasmhost

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
)

// TestDeadlineStopsGuest: a guest spinning in a loop, or recursing
// without one, is stopped at its deadline, whether the module was
// instrumented (instrumentDeadline) or left to wazero's
// WithCloseOnContextDone (no sched_yield import, or the instrumentation's
// names taken).
func TestDeadlineStopsGuest(t *testing.T) {
	const yield = `(import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))`
	const spin = `(func $spin (loop (br 0)))`
	const recurse = `(func $rec (param i32) (result i32) (call $rec (i32.add (local.get 0) (i32.const 1))))`
	for _, c := range []struct {
		name, src    string
		instrumented bool
	}{
		{"loop", `(module ` + yield + spin + ` (func (export "_start") (call $spin)))`, true},
		{"loop, no other section", `(module ` + yield + `(func (export "_start") (loop (br 0))))`, true},
		{"recursion", `(module ` + yield + recurse + ` (func (export "_start") (drop (call $rec (i32.const 0)))))`, true},
		{"no sched_yield: memory.grow", `(module (memory 1) ` + spin + ` (func (export "_start") (call $spin)))`, true},
		{"neither sched_yield nor memory", `(module ` + spin + ` (func (export "_start") (call $spin)))`, false},
		{"names taken", `(module ` + yield + `(global (export "nebula.deadline.stop") i32 (i32.const 0)) ` + spin +
			` (func (export "_start") (call $spin)))`, false},
		// A start function runs inside instantiation, before the host
		// watches the instance: the rewrite defers it (deferredStartExport).
		{"start function", `(module (memory 1) ` + spin + ` (start $spin) (func (export "_start")))`, true},
		{"start function, sched_yield", `(module ` + yield + spin + ` (start $spin) (func (export "_start")))`, true},
		{"start function, uninstrumented", `(module ` + spin + ` (start $spin) (func (export "_start")))`, false},
		{"start function, name taken", `(module (memory 1) ` + spin + ` (start $spin) (func (export "_start"))
			(export "nebula.deadline.start" (func $spin)))`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := wat(t, c.src)
			info, err := parseModule(wasm)
			if err != nil {
				t.Fatal(err)
			}
			out, instrumented := instrumentDeadline(wasm, info)
			if instrumented != c.instrumented {
				t.Fatalf("instrumented %v, want %v", instrumented, c.instrumented)
			}
			if instrumented {
				if _, err := parseModule(out); err != nil {
					t.Fatalf("the instrumented module does not parse: %v", err)
				}
			}
			mod, err := newHost(t, Config{}).Compile(context.Background(), wasm)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			done := make(chan int, 1)
			go func() {
				code, _ := mod.Run(ctx, RunConfig{})
				done <- code
			}()
			select {
			case code := <-done:
				// Deep recursion may overflow the stack before the deadline.
				if code != ExitCodeTimeout && !(c.name == "recursion" && code == ExitCodeTrap) {
					t.Errorf("exit code %d, want %d", code, ExitCodeTimeout)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the guest was not stopped 30 s after its deadline")
			}
		})
	}
}

// TestDeadlineYields: an instrumented guest spinning without a deadline
// still lets the garbage collector stop the world, and one with a
// deadline is stopped, with one P only: the spinning guest holds it, and
// only its yield — sched_yield, or memory.grow 0 without that import —
// lets the collector and the deadline's timer run.
func TestDeadlineYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, c := range []struct{ name, src string }{
		{"sched_yield", `(module (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
			(func (export "_start") (loop (br 0))))`},
		{"memory.grow", `(module (memory 1) (func (export "_start") (loop (br 0))))`},
	} {
		t.Run(c.name, func(t *testing.T) {
			mod, err := newHost(t, Config{}).Compile(context.Background(), wat(t, c.src))
			if err != nil {
				t.Fatal(err)
			}
			if !mod.instrumented {
				t.Fatal("not instrumented")
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() {
				code, _ := mod.Run(ctx, RunConfig{})
				done <- code
			}()
			time.Sleep(100 * time.Millisecond) // spinning
			gc := make(chan struct{})
			go func() { runtime.GC(); close(gc) }()
			select {
			case <-gc:
			case <-time.After(30 * time.Second):
				t.Error("a garbage collection waited 30 s for the spinning guest")
			}
			cancel()
			select {
			case code := <-done:
				if code != ExitCodeCanceled {
					t.Errorf("exit code %d, want %d", code, ExitCodeCanceled)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the guest was not stopped 30 s after its cancellation")
			}

			dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer dcancel()
			if code, _ := mod.Run(dctx, RunConfig{}); code != ExitCodeTimeout {
				t.Errorf("with a deadline: exit code %d, want %d", code, ExitCodeTimeout)
			}
		})
	}
}

// TestDeadlineStartFunction: a command's start function, deferred by the
// rewrite or not, runs once per instance, after its data segments and
// before `_start`; an event whose start function spins is stopped at its
// deadline, one whose start function traps fails, and the Invoker serves
// the next event.
func TestDeadlineStartFunction(t *testing.T) {
	const module = `(module
		(import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(data (i32.const 16) "x")
		(func $start
			(i32.store8 (i32.const 16) (i32.add (i32.load8_u (i32.const 16)) (i32.const 1)))
			(if (i32.eq (i32.load8_u (i32.const 17)) (i32.const 0)) (then (return)))
			(if (i32.eq (i32.load8_u (i32.const 17)) (i32.const 1)) (then (unreachable)))
			(loop (br 0)))
		(start $start)
		(func (export "_start")
			(i32.store (i32.const 0) (i32.const 16))
			(i32.store (i32.const 4) (i32.const 1))
			(drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))`
	for _, c := range []struct {
		name, extra                 string
		instrumented, deferredStart bool
	}{
		{"deferred", "", true, true},
		{"uninstrumented", `(global (export "nebula.deadline.fuel") i32 (i32.const 0))`, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The byte at 17 chooses what the start function does: return
			// (0), trap (1) or spin (2); the data segment sets it.
			compile := func(mode string) *Module {
				src := module + `(data (i32.const 17) "` + mode + `")` + c.extra + `)`
				mod, err := newHost(t, NewConfig()).Compile(context.Background(), wat(t, src))
				if err != nil {
					t.Fatal(err)
				}
				if mod.instrumented != c.instrumented || mod.deferredStart != c.deferredStart {
					t.Fatalf("instrumented %v, deferred start %v; want %v, %v", mod.instrumented, mod.deferredStart, c.instrumented, c.deferredStart)
				}
				return mod
			}
			ok := NewInvoker(compile(`\00`), RunConfig{})
			for i := 0; i < 3; i++ {
				resp, _, err := invoke(t, context.Background(), ok, "")
				if err != nil || string(resp.Stdout) != "y" {
					t.Fatalf("event %d: %q, %v; want \"y\" (the start function ran once, after the data)", i, resp.Stdout, err)
				}
			}

			traps := NewInvoker(compile(`\01`), RunConfig{})
			if _, _, err := invoke(t, context.Background(), traps, ""); !errors.Is(err, abi.ErrTrap) {
				t.Fatalf("a start function that traps: %v, want ErrTrap", err)
			}

			spins := NewInvoker(compile(`\02`), RunConfig{})
			for i := 0; i < 2; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				err := invokeWithin(t, ctx, spins, 30*time.Second)
				cancel()
				if err == errStillRunning {
					t.Fatalf("event %d: a spinning start function was not stopped 30 s after its deadline", i)
				}
				if !errors.Is(err, abi.ErrTimeout) {
					t.Errorf("event %d: %v, want ErrTimeout", i, err)
				}
			}
		})
	}
}

// TestStartFunctionRefused: a start section naming a function that is
// not of type () -> () is invalid WebAssembly. The deadline rewrite moves
// the start function to an export, which wazero accepts of any type, so
// preflight must refuse it, as wazero refuses the module itself: Compile
// agrees with Check, and no event calls it with the wrong arguments.
func TestStartFunctionRefused(t *testing.T) {
	for _, c := range []struct{ name, src string }{
		{"a parameter", `(module (memory 1) (func $s (param i32)) (start $s) (func (export "_start")))`},
		{"a result", `(module (memory 1) (func $s (result i32) (i32.const 1)) (start $s) (func (export "_start")))`},
		{"out of range", `(module (memory 1) (start 7) (func (export "_start")))`},
		{"an import", `(module (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
			(memory 1) (start $y) (func (export "_start")))`},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := wat(t, c.src)
			if err := Check(context.Background(), wasm, NewConfig()); !errors.Is(err, ErrInvalid) {
				t.Errorf("Check: %v, want ErrInvalid", err)
			}
			if _, err := newHost(t, NewConfig()).Compile(context.Background(), wasm); !errors.Is(err, ErrInvalid) {
				t.Errorf("Compile: %v, want ErrInvalid", err)
			}
		})
	}
}
