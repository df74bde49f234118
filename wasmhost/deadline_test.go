package wasmhost

import (
	"context"
	"runtime"
	"testing"
	"time"
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
