package wasmhost

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/test/functions"
)

// guestRoot builds a small root file system in a temp dir, with Nebula's
// files under /dev/.nebula, and returns it with a GuestFS hiding them.
func guestRoot(tb testing.TB) (string, *GuestFS) {
	tb.Helper()
	root := tb.TempDir()
	files := map[string]string{
		"etc/hostname":                 "nebula-test\n",
		"data/file.txt":                "data file\n",
		"dev/null":                     "",
		"dev/.nebula/nebula-host":      "SECRET host binary\n",
		"dev/.nebula/cache/wazero/key": "SECRET cache entry\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o777); err != nil {
		tb.Fatal(err)
	}
	fsys, err := NewGuestFS(root, DefaultHiddenPath)
	if err != nil {
		tb.Fatal(err)
	}
	if n := fsys.Hidden(); n != 5 { // .nebula, nebula-host, cache, wazero, key
		tb.Fatalf("hidden objects: %d, want 5", n)
	}
	return root, fsys
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs mod with rc (Args[0] defaulting to "/probe.wasm") plus args.
func run(tb testing.TB, ctx context.Context, mod *Module, rc RunConfig, args ...string) result {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	if rc.Args == nil {
		rc.Args = []string{"/probe.wasm"}
	}
	rc.Args = append(rc.Args, args...)
	rc.Stdout, rc.Stderr = &stdout, &stderr
	code, err := mod.Run(ctx, rc)
	if err != nil {
		tb.Fatalf("Run(%q): %v", rc.Args, err)
	}
	return result{code, stdout.String(), stderr.String()}
}

func TestRunExitCodes(t *testing.T) {
	ctx := context.Background()
	probe := compile(t, NewConfig().WithMemoryLimit(64<<20), functions.Probe)
	tests := []struct {
		name   string
		mod    *Module
		args   []string
		code   int
		stdout string
		stderr string // a substring
	}{
		{name: "hello", mod: compile(t, Config{}, functions.Hello), code: 0, stdout: "hello from wasm\n"},
		{name: "exit7", mod: compile(t, Config{}, functions.Exit7), code: 7},
		{name: "trap", mod: compile(t, Config{}, functions.Trap), code: ExitCodeTrap,
			stderr: "nebula: wasm trap: unreachable\nwasm stack trace:\n"},
		{name: "probe hello", mod: probe, args: []string{"hello"}, code: 0, stdout: "hello from probe\n"},
		{name: "probe exit 3", mod: probe, args: []string{"exit", "3"}, code: 3},
		{name: "probe exit 0", mod: probe, args: []string{"exit", "0"}, code: 0},
		{name: "probe failure", mod: probe, args: []string{"nope"}, code: 1, stderr: `probe: unknown command "nope"`},
		{name: "probe membomb", mod: probe, args: []string{"membomb"}, code: ExitCodeMemoryLimit,
			stderr: "fatal error: out of memory"},
		{name: "probe membomb message", mod: probe, args: []string{"membomb"}, code: ExitCodeMemoryLimit,
			stderr: "\nnebula: memory limit of 67108864 bytes reached\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, ctx, tc.mod, RunConfig{}, tc.args...)
			if r.code != tc.code || (tc.stdout != "" && r.stdout != tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestRunMemoryLimitWAT: a guest that grows its memory page by page.
func TestRunMemoryLimitWAT(t *testing.T) {
	grow := wat(t, `(module
  (memory 1)
  (func (export "_start")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))`)
	mod, err := newHost(t, NewConfig().WithMemoryLimit(10*PageSize)).Compile(context.Background(), grow)
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, context.Background(), mod, RunConfig{})
	if r.code != ExitCodeMemoryLimit || r.stderr != "nebula: memory limit of 655360 bytes reached\n" {
		t.Fatalf("got %d, %q", r.code, r.stderr)
	}
	// A guest that copes with a refused grow is not reported.
	cope := wat(t, `(module
  (memory 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 100)))))`)
	if mod, err = newHost(t, NewConfig().WithMemoryLimit(10*PageSize)).Compile(context.Background(), cope); err != nil {
		t.Fatal(err)
	}
	if r = run(t, context.Background(), mod, RunConfig{}); r.code != 0 || r.stderr != "" {
		t.Fatalf("got %d, %q", r.code, r.stderr)
	}
}

// TestRunCancel: a signal stops a spinning or sleeping guest promptly with
// 128+signal; a deadline gives 124.
func TestRunCancel(t *testing.T) {
	probe := compile(t, Config{}, functions.Probe)
	tests := []struct {
		name  string
		args  []string
		cause error
		code  int
	}{
		{"loop SIGTERM", []string{"loop"}, &SignalError{syscall.SIGTERM}, 143},
		{"sleep SIGTERM", []string{"sleep", "1h"}, &SignalError{syscall.SIGTERM}, 143},
		{"sleep SIGINT", []string{"sleep", "1h"}, &SignalError{syscall.SIGINT}, 130},
		{"loop plain cancel", []string{"loop"}, nil, ExitCodeCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			timer := time.AfterFunc(200*time.Millisecond, func() { cancel(tc.cause) })
			defer timer.Stop()
			start := time.Now()
			r := run(t, ctx, probe, RunConfig{}, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d (stderr %q), want %d", r.code, r.stderr, tc.code)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("took %v to stop, want < 1s", d)
			}
		})
	}
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if r := run(t, ctx, probe, RunConfig{}, "sleep", "1h"); r.code != ExitCodeTimeout {
			t.Fatalf("exit %d, want %d", r.code, ExitCodeTimeout)
		}
	})
	t.Run("short sleep completes", func(t *testing.T) {
		start := time.Now()
		r := run(t, context.Background(), probe, RunConfig{}, "sleep", "50ms")
		if r.code != 0 || r.stdout != "slept\n" || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("exit %d, stdout %q after %v", r.code, r.stdout, time.Since(start))
		}
	})
}

func TestRunArgsEnvDir(t *testing.T) {
	ctx := context.Background()
	probe := compile(t, Config{}, functions.Probe)
	_, fsys := guestRoot(t)
	rc := RunConfig{
		Args: []string{"/app/probe.wasm"},
		Env:  []string{"FOO=bar", "EMPTY=", "WITH=equals=sign", "NOEQUALS", "=novalue"},
		Dir:  "/data",
		FS:   fsys,
	}
	if r := run(t, ctx, probe, rc, "args", "a b", "", "c"); r.stdout != "/app/probe.wasm\nargs\na b\n\nc\n" {
		t.Errorf("args: %q", r.stdout)
	}
	if r := run(t, ctx, probe, rc, "env"); r.stdout != "FOO=bar\nEMPTY=\nWITH=equals=sign\nPWD=/data\n" {
		t.Errorf("env: %q", r.stdout)
	}
	if r := run(t, ctx, probe, rc, "pwd"); r.stdout != "/data\n" {
		t.Errorf("pwd: %q", r.stdout)
	}
	if r := run(t, ctx, probe, rc, "cat", "file.txt"); r.stdout != "data file\n" {
		t.Errorf("relative cat: %q %q", r.stdout, r.stderr)
	}
	rc.Stdin = strings.NewReader("from stdin")
	if r := run(t, ctx, probe, rc, "echo"); r.stdout != "from stdin" {
		t.Errorf("echo: %q", r.stdout)
	}
}

func TestRunFiles(t *testing.T) {
	ctx := context.Background()
	probe := compile(t, Config{}, functions.Probe)
	root, fsys := guestRoot(t)
	rc := RunConfig{FS: fsys}
	if r := run(t, ctx, probe, rc, "cat", "/etc/hostname"); r.code != 0 || r.stdout != "nebula-test\n" {
		t.Errorf("cat: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, ctx, probe, rc, "writetmp"); r.code != 0 || r.stdout != "written by probe\n" {
		t.Errorf("writetmp: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(root, "tmp/probe-file")); err != nil || string(b) != "written by probe\n" {
		t.Errorf("the file on the host: %q, %v", b, err)
	}
	if r := run(t, ctx, probe, rc, "ls", "/"); r.stdout != "data\ndev\netc\ntmp\n" {
		t.Errorf("ls /: %q %q", r.stdout, r.stderr)
	}
	// Without a file system, the guest has none.
	if r := run(t, ctx, probe, RunConfig{}, "cat", "/etc/hostname"); r.code != 1 {
		t.Errorf("cat without FS: %d %q", r.code, r.stdout)
	}
}
