package hostcmd

import (
	"bytes"
	"context"
	"errors"
	"io"
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

// The tests run the host program as a child process: this test binary,
// re-executed with mainEnv set, calls Main.
const mainEnv = "HOSTCMD_TEST_MAIN"

var (
	fnDir      string
	fnErr      error
	probeCache string // CompileToCache'd probe.wasm, for --cache
)

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		os.Exit(Main(os.Args))
	}
	dir, err := os.MkdirTemp("", "hostcmd-test-")
	if err != nil {
		panic(err)
	}
	fnDir = dir
	if fnErr = functions.Build(context.Background(), dir); fnErr == nil {
		probeCache = filepath.Join(dir, "probe-cache")
		var wasm []byte
		if wasm, fnErr = os.ReadFile(filepath.Join(dir, functions.Probe)); fnErr == nil {
			_, _, fnErr = wasmhost.CompileToCache(context.Background(), wasm, probeCache, wasmhost.NewConfig())
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func fn(tb testing.TB, name string) string {
	tb.Helper()
	if fnErr != nil {
		if os.Getenv("CI") == "true" || !errors.Is(fnErr, functions.ErrNoWat2wasm) {
			tb.Fatalf("building test functions: %v", fnErr)
		}
		tb.Skipf("skipping: cannot build the test functions: %v", fnErr)
	}
	return filepath.Join(fnDir, name)
}

// host returns the command running the host program with args.
func host(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	return cmd
}

type result struct {
	code           int
	stdout, stderr string
}

func runHost(tb testing.TB, cmd *exec.Cmd) result {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		tb.Fatal(err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

func TestHost(t *testing.T) {
	probe := fn(t, functions.Probe)
	cwd := t.TempDir()
	os.WriteFile(filepath.Join(cwd, "here.txt"), []byte("relative file\n"), 0o644)
	secret := t.TempDir()
	os.WriteFile(filepath.Join(secret, "key"), []byte("SECRET\n"), 0o600)
	corrupt := filepath.Join(t.TempDir(), "corrupt")
	os.MkdirAll(corrupt, 0o700)
	os.WriteFile(filepath.Join(corrupt, "nebula-cache.sha256"), []byte("00  x\n"), 0o600)

	cached := []string{"--cache", probeCache}
	tests := []struct {
		name   string
		args   []string
		env    []string
		code   int
		stdout string // exact, unless "~" prefixed: a substring
		stderr string // a substring
	}{
		{name: "hello", args: []string{"--", fn(t, functions.Hello)}, stdout: "hello from wasm\n"},
		{name: "no --", args: []string{fn(t, functions.Hello)}, stdout: "hello from wasm\n"},
		{name: "exit7", args: []string{"--", fn(t, functions.Exit7)}, code: 7},
		{name: "trap", args: []string{"--", fn(t, functions.Trap)}, code: 134, stderr: "nebula: wasm trap: unreachable"},
		{name: "args", args: append(cached, "--", probe, "args", "a b", "--c"), stdout: probe + "\nargs\na b\n--c\n"},
		{name: "env", args: append(cached, "--", probe, "env"), env: []string{"FOO=bar baz"}, stdout: "~\nFOO=bar baz\n"},
		{name: "pwd", args: append(cached, "--", probe, "pwd"), stdout: cwd + "\n"},
		{name: "relative file", args: append(cached, "--", probe, "cat", "here.txt"), stdout: "relative file\n"},
		{name: "absolute file", args: append(cached, "--", probe, "cat", filepath.Join(cwd, "here.txt")), stdout: "relative file\n"},
		{name: "exit code", args: append(cached, "--", probe, "exit", "42"), code: 42},
		{name: "large exit code", args: append(cached, "--", probe, "exit", "256"), code: 255},
		{name: "memory limit", args: append(cached, "--memory-limit", "64Mi", "--", probe, "membomb"), code: 137,
			stderr: "nebula: memory limit of 67108864 bytes reached"},
		{name: "hidden", args: append(cached, "--hide", secret, "--", probe, "cat", filepath.Join(secret, "key")), code: 1,
			stderr: "No such file or directory"},
		{name: "not hidden", args: append(cached, "--", probe, "cat", filepath.Join(secret, "key")), stdout: "SECRET\n"},
		{name: "missing cache", args: []string{"--cache", filepath.Join(cwd, "nope"), "--", fn(t, functions.Hello)}, stdout: "hello from wasm\n"},
		{name: "corrupt cache", args: []string{"--cache", corrupt, "--", fn(t, functions.Hello)}, stdout: "hello from wasm\n"},
		{name: "not found", args: []string{"--", "/nope.wasm"}, code: ExitNotFound, stderr: "nebula: /nope.wasm: no such file\n"},
		{name: "no _start", args: []string{"--", fn(t, functions.NoStart)}, code: ExitCannotRun,
			stderr: "nebula: " + fn(t, functions.NoStart) + ": no _start function: the module does not export \"_start\""},
		{name: "bad import", args: []string{"--", fn(t, functions.BadImport)}, code: ExitCannotRun,
			stderr: fn(t, functions.BadImport) + ": unsupported import: env.nope (function)"},
		{name: "not wasm", args: []string{"--", fn(t, functions.ProbeExe)}, code: ExitCannotRun,
			stderr: "not a WebAssembly module: it starts with 7f 45 4c 46 (an ELF executable)"},
		{name: "directory", args: []string{"--", cwd}, code: ExitCannotRun, stderr: "is a directory"},
		{name: "bad flag", args: []string{"--nope", "--", fn(t, functions.Hello)}, code: ExitUsage, stderr: "flag provided but not defined: -nope"},
		{name: "bad limit", args: []string{"--memory-limit", "lots", "--", fn(t, functions.Hello)}, code: ExitUsage,
			stderr: `--memory-limit "lots": want bytes with an optional Ki, Mi, Gi or Ti suffix`},
		{name: "bad heap limit", args: []string{"--heap-limit", "1x", "--", fn(t, functions.Hello)}, code: ExitUsage,
			stderr: `--heap-limit "1x": want bytes`},
		{name: "bad stdout limit", args: []string{"--stdout-limit", "-1", "--", fn(t, functions.Hello)}, code: ExitUsage,
			stderr: `--stdout-limit "-1": want bytes`},
		{name: "heap limit", args: []string{"--heap-limit", "8Mi", "--", fn(t, functions.Hello)}, code: 0, stdout: "hello from wasm\n"},
		{name: "no module", args: []string{"--"}, code: ExitUsage, stderr: "usage: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := host(tc.args...)
			cmd.Dir = cwd
			cmd.Env = append(cmd.Env, tc.env...)
			r := runHost(t, cmd)
			stdoutOK := r.stdout == tc.stdout
			if want, ok := strings.CutPrefix(tc.stdout, "~"); ok {
				stdoutOK = strings.Contains(r.stdout, want)
			}
			if r.code != tc.code || !stdoutOK || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("got exit %d, stdout %q, stderr %.300q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestHostSignals: a stop signal stops the guest and the host exits with
// 128+signal within a second, whatever the guest is doing.
func TestHostSignals(t *testing.T) {
	probe := fn(t, functions.Probe)
	tests := []struct {
		name string
		args []string
		sig  syscall.Signal
		pid1 bool
	}{
		{"loop SIGTERM", []string{"loop"}, syscall.SIGTERM, false},
		{"sleep SIGINT", []string{"sleep", "1h"}, syscall.SIGINT, false},
		{"sleep SIGHUP", []string{"sleep", "1h"}, syscall.SIGHUP, false},
		{"loop SIGQUIT", []string{"loop"}, syscall.SIGQUIT, false},
		{"blocked on stdin SIGTERM", []string{"echo"}, syscall.SIGTERM, false},
		{"PID 1 loop SIGTERM", []string{"loop"}, syscall.SIGTERM, true},
		{"PID 1 blocked on stdin SIGTERM", []string{"echo"}, syscall.SIGTERM, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := host(append([]string{"--cache", probeCache, "--", probe}, tc.args...)...)
			if tc.pid1 {
				if os.Geteuid() != 0 {
					if os.Getenv("CI") == "true" {
						t.Fatal("a pid namespace needs root")
					}
					t.Skip("skipping: a pid namespace needs root")
				}
				cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
			}
			stdin, err := cmd.StdinPipe() // never written nor closed: "echo" blocks
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = io.Discard, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond) // let it compile (cache hit) and start
			start := time.Now()
			cmd.Process.Signal(tc.sig)
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case <-waited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-waited
				t.Fatalf("still running 5s after %v; stderr %q", tc.sig, stderr.String())
			}
			d := time.Since(start)
			if code := cmd.ProcessState.ExitCode(); code != 128+int(tc.sig) {
				t.Fatalf("exit %d (%v), want %d; stderr %q", code, cmd.ProcessState, 128+int(tc.sig), stderr.String())
			}
			if d > time.Second {
				t.Fatalf("stopped %v after the signal, want < 1s", d)
			}
			t.Logf("stopped %v after the signal", d)
		})
	}
}

// TestHostReapsOrphans: as PID 1 the host waits for orphans reparented to
// it, as an init must.
func TestHostReapsOrphans(t *testing.T) {
	probe := fn(t, functions.Probe)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("a pid namespace needs root")
		}
		t.Skip("skipping: a pid namespace needs root")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("skipping: nsenter (util-linux) not found")
	}
	cmd := host("--cache", probeCache, "--", probe, "sleep", "1h")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	time.Sleep(300 * time.Millisecond)
	pid := cmd.Process.Pid
	// A shell in the host's pid namespace leaves an orphan that exits.
	out, err := exec.Command(nsenter, "-t", strconv.Itoa(pid), "-p", "--", "sh", "-c", "sleep 0.2 & exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	time.Sleep(600 * time.Millisecond)
	if z := zombieChildren(t, pid); len(z) > 0 {
		t.Fatalf("zombie children of PID 1: %v", z)
	}
}

// zombieChildren lists the zombie processes whose parent is pid.
func zombieChildren(t *testing.T, pid int) []string {
	var ret []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(b)
		if strings.Contains(s, "\nState:\tZ") && strings.Contains(s, "\nPPid:\t"+strconv.Itoa(pid)+"\n") {
			ret = append(ret, d)
		}
	}
	return ret
}
