package hostcmd

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/test/functions"
	"nebula.dev/nebula/wasmhost"
)

// freePort returns a loopback TCP port nobody listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// watFile converts the WAT module src to a .wasm file in a temporary
// directory and returns its path.
func watFile(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	wat, wasm := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(wat, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("wat2wasm", wat, "-o", wasm).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v: %s", err, out)
	}
	return wasm
}

// compileWAT compiles the WAT module src with a Host of its own, closed
// when the test ends.
func compileWAT(t *testing.T, src string) *wasmhost.Module {
	t.Helper()
	b, err := os.ReadFile(watFile(t, src))
	if err != nil {
		t.Fatal(err)
	}
	h, err := wasmhost.New(context.Background(), wasmhost.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	mod, err := h.Compile(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return mod
}

// TestHostReactor: in function mode a reactor serves events from its
// snapshot; in run mode it is refused with a clear error, and so is a
// reactor whose initialisation fails.
func TestHostReactor(t *testing.T) {
	reactor := fn(t, functions.Reactor)

	t.Run("run mode", func(t *testing.T) {
		r := runHost(t, host("--", reactor))
		if r.code != ExitCannotRun || !strings.Contains(r.stderr, "it handles events and runs only in function mode") {
			t.Errorf("exit %d, stderr %q; want %d and the reason", r.code, r.stderr, ExitCannotRun)
		}
	})

	t.Run("init fails", func(t *testing.T) {
		wasm := watFile(t, `(module (func (export "_initialize") unreachable)
			(func (export "nebula_handle") (result i32) (i32.const 0)))`)
		cmd := host("--mode", "function", "--metrics-port", strconv.Itoa(freePort(t)), "--", wasm)
		cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(freePort(t)))
		r := runHost(t, cmd)
		if r.code != ExitCannotRun || !strings.Contains(r.stderr, "reactor initialisation: _initialize: guest trapped: unreachable") {
			t.Errorf("exit %d, stderr %q; want %d and the trap", r.code, r.stderr, ExitCannotRun)
		}
	})

	// A stop signal during initialisation stops it: the host exits
	// 128+signal.
	t.Run("signal during init", func(t *testing.T) {
		wasm := watFile(t, `(module (func (export "_initialize") (loop (br 0)))
			(func (export "nebula_handle") (result i32) (i32.const 0)))`)
		cmd := host("--mode", "function", "--metrics-port", strconv.Itoa(freePort(t)), "--", wasm)
		cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(freePort(t)))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // into the loop
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("the host did not stop within 30 s of SIGTERM")
		}
		if code := cmd.ProcessState.ExitCode(); code != 143 {
			t.Errorf("exit %d, want 143", code)
		}
	})

	t.Run("function mode", func(t *testing.T) {
		port := freePort(t)
		cmd := host("--mode", "function", "--metrics-port", strconv.Itoa(freePort(t)), "--", reactor)
		cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(port))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
		post := func(id, data string) (int, string) {
			req, _ := http.NewRequest("POST", url, strings.NewReader(data))
			req.Header.Set("Ce-Id", id)
			req.Header.Set("Ce-Type", "test")
			req.Header.Set("Ce-Source", "/hostcmd")
			req.Header.Set("Ce-Specversion", "1.0")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if code, _ := post("0", "ping"); code != 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, id := range []string{"a", "b"} {
			code, body := post(id, "hi "+id)
			if code != 200 || !strings.HasPrefix(body, "ready hi "+id+"\x00") || !strings.Contains(body, "CE_ID="+id+"\x00") {
				t.Errorf("event %s: %d %q", id, code, body)
			}
		}
		if code, _ := post("c", "!"); code != 500 {
			t.Errorf("trapping event: %d, want 500", code)
		}
		if code, _ := post("d", "after"); code != 200 {
			t.Errorf("event after the trap: %d, want 200", code)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit: %v; stderr %s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "reactor initialised; snapshot of 65536 bytes") ||
			!strings.Contains(stderr.String(), "; an instance kept between events that leave nothing behind\n") {
			t.Errorf("stderr %q: want the snapshot's line, instances kept", stderr.String())
		}
	})
}

// TestInitTimeout: a reactor whose initialisation spins is stopped at
// initTimeout, and the host gives up with ExitCannotRun and the reason,
// rather than never serving.
func TestInitTimeout(t *testing.T) {
	defer func(d time.Duration) { initTimeout = d }(initTimeout)
	initTimeout = 300 * time.Millisecond
	for _, c := range []struct{ name, src string }{
		{"_initialize", `(module (memory 1) (func (export "_initialize") (loop (br 0)))
			(func (export "nebula_handle") (result i32) (i32.const 0)))`},
		{"start function", `(module (memory 1) (func $s (loop (br 0))) (start $s)
			(func (export "nebula_handle") (result i32) (i32.const 0)))`},
	} {
		t.Run(c.name, func(t *testing.T) {
			mod := compileWAT(t, c.src)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			var stderr bytes.Buffer
			done := make(chan int, 1)
			go func() {
				_, code := initReactor(ctx, cancel, mod, wasmhost.RunConfig{Args: []string{"m.wasm"}, Stderr: &stderr}, nil)
				done <- code
			}()
			select {
			case code := <-done:
				if code != ExitCannotRun || !strings.Contains(stderr.String(), "initialisation did not finish within 300ms") {
					t.Errorf("exit %d, stderr %q; want %d and the timeout", code, stderr.String(), ExitCannotRun)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the initialisation was not stopped 30 s after its timeout")
			}
		})
	}
}
