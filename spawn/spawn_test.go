package spawn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/spawn"
)

// TestMain runs the supervisor when the test binary is re-executed as one,
// and makes the test process a child subreaper, as nebula-host is init of
// its container: an orphan the supervisor let escape would become a child
// of the test process, and a zombie, since nothing here waits for it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawn.SuperviseArg {
		os.Exit(spawn.Supervise(os.Args[2:]))
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// config is the default Config with the test binary as the supervisor.
func config() spawn.Config {
	return spawn.NewConfig().WithSupervisor("/proc/self/exe", "spawn.test", spawn.SuperviseArg)
}

// newInvoker returns spawn.New's Invoker, closed when the test ends.
func newInvoker(tb testing.TB, path string, args, env []string, cfg spawn.Config) *spawn.Invoker {
	inv := spawn.New(path, args, env, cfg)
	tb.Cleanup(func() { inv.Close() })
	return inv
}

func sh(tb testing.TB, script string, env ...string) *spawn.Invoker {
	return newInvoker(tb, "/bin/sh", []string{"-c", script}, env, config())
}

func TestRuntime(t *testing.T) {
	if got := sh(t, "true").Runtime(); got != abi.RuntimeProcess {
		t.Fatalf("Runtime() = %q, want %q", got, abi.RuntimeProcess)
	}
}

func TestStdinStdoutEnv(t *testing.T) {
	inv := sh(t, `cat; printf '|%s|%s|%s' "$CE_ID" "$BASE" "$CE_TYPE"`, "BASE=base", "CE_TYPE=stale", "PATH=/usr/bin:/bin")
	resp, err := inv.Invoke(context.Background(), &abi.Request{
		ID:    "e1",
		Stdin: []byte("hello\x00world"),
		Env:   []string{"CE_ID=e1", "CE_TYPE=com.example.ping"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello\x00world|e1|base|com.example.ping"; string(resp.Stdout) != want {
		t.Fatalf("stdout = %q, want %q", resp.Stdout, want)
	}
	if resp.Startup <= 0 || resp.Execution <= 0 {
		t.Fatalf("timings not measured: %+v", resp)
	}
}

func TestHostEnvNotInherited(t *testing.T) {
	t.Setenv("NEBULA_SPAWN_TEST_SECRET", "leak")
	resp, err := sh(t, `printf '%s' "${NEBULA_SPAWN_TEST_SECRET-unset}"`).Invoke(context.Background(), &abi.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "unset" {
		t.Fatalf("host environment leaked: %q", resp.Stdout)
	}
}

func TestEmptyStdinIsEOF(t *testing.T) {
	resp, err := sh(t, `wc -c`, "PATH=/usr/bin:/bin").Invoke(context.Background(), &abi.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(resp.Stdout)) != "0" {
		t.Fatalf("stdin not empty: %q", resp.Stdout)
	}
}

func TestLargeStdin(t *testing.T) {
	in := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	resp, err := sh(t, `cat`, "PATH=/usr/bin:/bin").Invoke(context.Background(), &abi.Request{Stdin: in})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Stdout, in) {
		t.Fatalf("got %d bytes back, want %d", len(resp.Stdout), len(in))
	}
}

func TestStderr(t *testing.T) {
	var errBuf bytes.Buffer
	resp, err := sh(t, `echo out; echo oops >&2`).Invoke(context.Background(), &abi.Request{Stderr: &errBuf})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out\n" || errBuf.String() != "oops\n" {
		t.Fatalf("stdout %q stderr %q", resp.Stdout, errBuf.String())
	}
}

func TestExitCode(t *testing.T) {
	resp, err := sh(t, `printf partial; exit 3`).Invoke(context.Background(), &abi.Request{})
	var exit *abi.ExitError
	if !errors.As(err, &exit) || exit.Code != 3 {
		t.Fatalf("err = %v, want ExitError{3}", err)
	}
	if resp == nil || string(resp.Stdout) != "partial" {
		t.Fatalf("resp = %+v", resp)
	}
}

func TestKilledBySignalIsTrap(t *testing.T) {
	_, err := sh(t, `kill -SEGV $$`).Invoke(context.Background(), &abi.Request{})
	if !errors.Is(err, abi.ErrTrap) {
		t.Fatalf("err = %v, want ErrTrap", err)
	}
}

// gone reports whether pid no longer runs (reaped, or a zombie waiting for
// whoever inherited it).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if gone(pid) {
			return
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Fatalf("process %d survived its invocation", pid)
}

func childPid(t *testing.T, out []byte) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		t.Fatalf("no child pid in stdout %q", out)
	}
	return pid
}

func TestTimeoutKillsGroup(t *testing.T) {
	// A first invocation starts the supervisor, so that the timeout runs
	// against the function alone.
	inv := sh(t, `[ -z "$WAIT" ] || { sleep 1000 & echo $!; wait; }`, "PATH=/usr/bin:/bin")
	if _, err := inv.Invoke(context.Background(), &abi.Request{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	resp, err := inv.Invoke(ctx, &abi.Request{Env: []string{"WAIT=1"}})
	if !errors.Is(err, abi.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want it to wrap the context's error", err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("Invoke returned after %v", d)
	}
	waitGone(t, childPid(t, resp.Stdout))
}

func TestLeftoversKilledAtExit(t *testing.T) {
	// The leader exits at once; its background child still holds stdout.
	inv := sh(t, `sleep 1000 & echo $!`, "PATH=/usr/bin:/bin")
	start := time.Now()
	resp, err := inv.Invoke(context.Background(), &abi.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 60*time.Second { // the child sleeps 1000 s
		t.Fatalf("Invoke waited %v for a background child", d)
	}
	waitGone(t, childPid(t, resp.Stdout))
}

func TestOutputCap(t *testing.T) {
	inv := newInvoker(t, "/bin/sh", []string{"-c", `while :; do echo 0123456789; done`}, nil,
		config().WithMaxOutput(1000))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := inv.Invoke(ctx, &abi.Request{})
	if !errors.Is(err, abi.ErrOutputLimit) {
		t.Fatalf("err = %v, want ErrOutputLimit", err)
	}
	if len(resp.Stdout) > 1000 {
		t.Fatalf("kept %d bytes, cap 1000", len(resp.Stdout))
	}
}

func TestDir(t *testing.T) {
	dir := t.TempDir()
	inv := newInvoker(t, "/bin/sh", []string{"-c", "pwd"}, nil, config().WithDir(dir))
	resp, err := inv.Invoke(context.Background(), &abi.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(resp.Stdout)) != dir {
		t.Fatalf("pwd = %q, want %q", resp.Stdout, dir)
	}
}

func TestLookPathAndMissing(t *testing.T) {
	resp, err := newInvoker(t, "echo", []string{"hi"}, nil, config()).Invoke(context.Background(), &abi.Request{})
	if err != nil || string(resp.Stdout) != "hi\n" {
		t.Fatalf("echo: %q, %v", resp.Stdout, err)
	}
	// The base env's PATH wins over the host's.
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/fn-in-path", []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err = newInvoker(t, "fn-in-path", nil, []string{"PATH=relative:" + dir}, config()).Invoke(context.Background(), &abi.Request{})
	if err != nil || string(resp.Stdout) != "found\n" {
		t.Fatalf("fn-in-path: %q, %v", resp.Stdout, err)
	}
	for _, inv := range []abi.Invoker{
		newInvoker(t, "/nonexistent/fn", nil, nil, config()),
		newInvoker(t, "fn-in-path", nil, []string{"PATH=/nonexistent"}, config()),
	} {
		if _, err = inv.Invoke(context.Background(), &abi.Request{}); err == nil {
			t.Fatal("missing program: no error")
		}
	}
}

func TestConcurrent(t *testing.T) {
	inv := sh(t, `cat; printf '%s' "$CE_ID"`, "PATH=/usr/bin:/bin")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			id := strconv.Itoa(i)
			resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("in" + id), Env: []string{"CE_ID=" + id}})
			if err != nil {
				t.Error(err)
				return
			}
			if want := "in" + id + id; string(resp.Stdout) != want {
				t.Errorf("stdout %q, want %q", resp.Stdout, want)
			}
		})
	}
	wg.Wait()
}

func BenchmarkInvokeTrue(b *testing.B) {
	benchmarkInvokeTrue(b, config())
}

// BenchmarkInvokeTrueNebulaHost supervises with nebula-host itself, as a
// function task does: its start-up (package initialisation included) is
// what the supervisor adds to every event.
func BenchmarkInvokeTrueNebulaHost(b *testing.B) {
	host := filepath.Join(b.TempDir(), "nebula-host")
	build := exec.Command("go", "build", "-o", host, "nebula.dev/nebula/cmd/nebula-host")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building nebula-host: %v\n%s", err, out)
	}
	benchmarkInvokeTrue(b, spawn.NewConfig().WithSupervisor(host, "nebula-host", spawn.SuperviseArg))
}

func benchmarkInvokeTrue(b *testing.B, cfg spawn.Config) {
	inv := newInvoker(b, "/bin/true", nil, []string{"PATH=/usr/bin:/bin"}, cfg)
	req := &abi.Request{ID: "b", Env: []string{"CE_ID=b", "CE_TYPE=t"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inv.Invoke(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
