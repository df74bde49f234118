package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

func invoke(tb testing.TB, ctx context.Context, inv abi.Invoker, stdin string, env ...string) (*abi.Response, string, error) {
	tb.Helper()
	var stderr bytes.Buffer
	resp, err := inv.Invoke(ctx, &abi.Request{ID: "test", Stdin: []byte(stdin), Env: env, Stderr: &stderr})
	if resp == nil {
		tb.Fatalf("Invoke returned a nil response (err %v)", err)
	}
	return resp, stderr.String(), err
}

// errStillRunning is invokeWithin's error for an invocation that has
// not returned in time.
var errStillRunning = errors.New("the invocation is still running")

// invokeWithin invokes inv with no data and returns its error, or
// errStillRunning if it has not returned within limit (it is then left
// running).
func invokeWithin(tb testing.TB, ctx context.Context, inv abi.Invoker, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { _, _, err := invoke(tb, ctx, inv, ""); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		return errStillRunning
	}
}

func TestInvoker(t *testing.T) {
	ctx := context.Background()
	probe := compile(t, NewConfig().WithMemoryLimit(64<<20).WithStdoutLimit(1<<20), functions.Probe)
	newInv := func(args ...string) abi.Invoker {
		return NewInvoker(probe, RunConfig{Args: append([]string{"/probe.wasm"}, args...), Env: []string{"BASE=1"}})
	}
	if r := newInv().Runtime(); r != abi.RuntimeWasm {
		t.Fatalf("Runtime: %q", r)
	}

	t.Run("fresh state", func(t *testing.T) {
		inv := newInv("counter")
		for i := 0; i < 5; i++ {
			resp, _, err := invoke(t, ctx, inv, "")
			if err != nil || string(resp.Stdout) != "1\n" {
				t.Fatalf("invocation %d: %q, %v; want \"1\\n\"", i, resp.Stdout, err)
			}
			if resp.Startup <= 0 || resp.Execution <= 0 {
				t.Fatalf("timings: %+v", resp)
			}
		}
	})
	t.Run("echo", func(t *testing.T) {
		resp, _, err := invoke(t, ctx, newInv("echo"), "event data")
		if err != nil || string(resp.Stdout) != "event data" {
			t.Fatalf("%q, %v", resp.Stdout, err)
		}
	})
	t.Run("empty stdout", func(t *testing.T) {
		resp, _, err := invoke(t, ctx, newInv("echo"), "")
		if err != nil || resp.Stdout != nil {
			t.Fatalf("%q, %v", resp.Stdout, err)
		}
	})
	t.Run("env", func(t *testing.T) {
		resp, _, err := invoke(t, ctx, newInv("env"), "", "CE_ID=abc", "CE_TYPE=t")
		if err != nil || string(resp.Stdout) != "BASE=1\nCE_ID=abc\nCE_TYPE=t\n" {
			t.Fatalf("%q, %v", resp.Stdout, err)
		}
		// The next invocation does not see them.
		resp, _, _ = invoke(t, ctx, newInv("env"), "")
		if string(resp.Stdout) != "BASE=1\n" {
			t.Fatalf("env leaked: %q", resp.Stdout)
		}
		// An event's variable overrides the task's in place; of two with
		// one name, the last wins.
		resp, _, err = invoke(t, ctx, newInv("env"), "", "CE_ID=a", "BASE=2", "NOEQUALS", "=x", "CE_ID=b")
		if err != nil || string(resp.Stdout) != "BASE=2\nCE_ID=b\n" {
			t.Fatalf("override: %q, %v", resp.Stdout, err)
		}
		// WASI strings cannot hold NUL: refused, and the slot serves on.
		inv := newInv("env")
		if _, _, err := invoke(t, ctx, inv, "", "CE_ID=a\x00CE_TYPE=forged"); !errors.Is(err, errEnvNUL) {
			t.Fatalf("NUL: %v", err)
		}
		if resp, _, err := invoke(t, ctx, inv, "", "CE_ID=c"); err != nil || string(resp.Stdout) != "BASE=1\nCE_ID=c\n" {
			t.Fatalf("after NUL: %q, %v", resp.Stdout, err)
		}
		if _, _, err := invoke(t, ctx, NewInvoker(probe, RunConfig{Args: []string{"/probe.wasm", "env"}, Env: []string{"A=\x00"}}), ""); !errors.Is(err, errEnvNUL) {
			t.Fatalf("NUL in the task's environment: %v", err)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		_, stderr, err := invoke(t, ctx, newInv("cat", "/nope"), "")
		var ee *abi.ExitError
		if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(stderr, "probe: open /nope") {
			t.Fatalf("err %v, stderr %q", err, stderr)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		_, _, err := invoke(t, ctx, newInv("exit", "3"), "")
		var ee *abi.ExitError
		if !errors.As(err, &ee) || ee.Code != 3 {
			t.Fatalf("err %v, want *abi.ExitError{3}", err)
		}
	})
	t.Run("timeout stops a loop", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := invoke(t, ctx, newInv("loop"), "")
		if !errors.Is(err, abi.ErrTimeout) || time.Since(start) > time.Second {
			t.Fatalf("err %v after %v, want ErrTimeout after ~200ms", err, time.Since(start))
		}
	})
	t.Run("timeout stops a sleep", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := invoke(t, ctx, newInv("sleep", "1h"), "")
		if !errors.Is(err, abi.ErrTimeout) || time.Since(start) > time.Second {
			t.Fatalf("err %v after %v, want ErrTimeout after ~200ms", err, time.Since(start))
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(ctx)
		time.AfterFunc(100*time.Millisecond, func() { cancel(errors.New("shutting down")) })
		_, _, err := invoke(t, ctx, newInv("loop"), "")
		if err == nil || errors.Is(err, abi.ErrTimeout) || !strings.Contains(err.Error(), "shutting down") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("output limit", func(t *testing.T) {
		start := time.Now()
		_, _, err := invoke(t, ctx, newInv("flood"), "")
		if !errors.Is(err, abi.ErrOutputLimit) || time.Since(start) > time.Second {
			t.Fatalf("err %v after %v, want ErrOutputLimit", err, time.Since(start))
		}
		// The slot is reusable afterwards.
		resp, _, err := invoke(t, ctx, newInv("hello"), "")
		if err != nil || string(resp.Stdout) != "hello from probe\n" {
			t.Fatalf("%q, %v", resp.Stdout, err)
		}
	})
	t.Run("memory limit", func(t *testing.T) {
		_, stderr, err := invoke(t, ctx, newInv("membomb"), "")
		if !errors.Is(err, abi.ErrMemoryLimit) || !strings.Contains(stderr, "out of memory") {
			t.Fatalf("err %v, stderr %.100q", err, stderr)
		}
	})
	t.Run("trap", func(t *testing.T) {
		inv := NewInvoker(compile(t, Config{}, functions.Trap), RunConfig{})
		_, _, err := invoke(t, ctx, inv, "")
		if !errors.Is(err, abi.ErrTrap) || !strings.Contains(err.Error(), "guest trapped: unreachable") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("exact output limit", func(t *testing.T) {
		hello := compile(t, NewConfig().WithStdoutLimit(int64(len("hello from wasm\n"))), functions.Hello)
		if resp, _, err := invoke(t, ctx, NewInvoker(hello, RunConfig{}), ""); err != nil || string(resp.Stdout) != "hello from wasm\n" {
			t.Fatalf("%q, %v", resp.Stdout, err)
		}
		hello = compile(t, NewConfig().WithStdoutLimit(4), functions.Hello)
		if _, _, err := invoke(t, ctx, NewInvoker(hello, RunConfig{}), ""); !errors.Is(err, abi.ErrOutputLimit) {
			t.Fatalf("err %v", err)
		}
	})
}

// TestInvokerConcurrent: concurrent invocations each get their own stdin,
// stdout and state.
func TestInvokerConcurrent(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{functions.Echo, functions.Probe} {
		t.Run(name, func(t *testing.T) {
			inv := NewInvoker(compile(t, Config{}, name), RunConfig{Args: []string{name, "echo"}})
			n := 20
			if testing.Short() || name == functions.Probe {
				n = 5
			}
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n; i++ {
						in := fmt.Sprintf("goroutine %d invocation %d %s", g, i, strings.Repeat("x", i*100))
						resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(in)})
						if err != nil || string(resp.Stdout) != in {
							t.Errorf("got %.40q, %v; want %.40q", resp.Stdout, err, in)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestInvokeMemoryCleared: invocations reuse their slot's linear memory,
// and no byte of one guest's memory reaches the next.
func TestInvokeMemoryCleared(t *testing.T) {
	ctx := context.Background()
	inv := NewInvoker(compile(t, Config{}, functions.Scratch), RunConfig{Args: []string{functions.Scratch}})
	for i := 0; i < 3; i++ {
		if _, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte("SECRET from the previous event")}); err != nil {
			t.Fatal(err)
		}
		resp, err := inv.Invoke(ctx, &abi.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Stdout) != 64 || !bytes.Equal(resp.Stdout, make([]byte, 64)) {
			t.Fatalf("a fresh instance's memory holds %q, want 64 zero bytes", resp.Stdout)
		}
	}
}

// TestInvokerOutputLimitEndsSleeps: a guest that goes over its output
// limit and then sleeps an hour, once or twice in a row with no deadline
// check between the calls (straight-line code), is stopped at once,
// instrumented (its globals are set, and every later sleep returns at
// once) or not (its context is cancelled).
func TestInvokerOutputLimitEndsSleeps(t *testing.T) {
	const sleep = `
    (drop (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 3000)))`
	module := func(sleeps int, extra string) string {
		return `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store8 (i32.const 1032) (i32.const 0))                 ;; a clock subscription
    (i64.store (i32.const 1048) (i64.const 3600000000000))      ;; of an hour` +
			strings.Repeat(sleep, sleeps) + `)` + extra + `)`
	}
	for _, c := range []struct {
		name         string
		sleeps       int
		extra        string
		instrumented bool
	}{
		{"instrumented", 1, "", true},
		{"instrumented, two sleeps", 2, "", true},
		{"uninstrumented, two sleeps", 2, `(global (export "nebula.deadline.stop") i32 (i32.const 0))`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			mod, err := newHost(t, NewConfig().WithStdoutLimit(1024)).Compile(context.Background(), wat(t, module(c.sleeps, c.extra)))
			if err != nil {
				t.Fatal(err)
			}
			if mod.instrumented != c.instrumented {
				t.Fatalf("instrumented %v, want %v", mod.instrumented, c.instrumented)
			}
			inv := NewInvoker(mod, RunConfig{})
			for i := range 2 {
				err := invokeWithin(t, context.Background(), inv, 30*time.Second)
				if err == errStillRunning {
					t.Fatalf("event %d: still sleeping 30 s after going over its output limit", i)
				}
				if !errors.Is(err, abi.ErrOutputLimit) {
					t.Fatalf("event %d: %v, want ErrOutputLimit", i, err)
				}
			}
		})
	}
}
