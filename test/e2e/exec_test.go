package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// TestWasmExec: `ctr task exec` of a WebAssembly module into a running wasm
// task runs the module under Nebula's host program, like the task's own
// process (runc alone answers "exec format error"), with its stdout,
// stderr, exit code and signals; a native binary exec'd into the same task
// runs natively; hostile execs get their documented outcome and the task
// keeps running.
func TestWasmExec(t *testing.T) {
	d := startWithProbe(t)
	fx := fixtures(t)

	// From an image (the rootfs an overlay the shim mounted): the module
	// that is the task's own process, and a file from the image.
	d.MustCtr(t, "run", "-d", "--runtime", nebula, probeWasmImage, "exec-image", "/probe.wasm", "sleep", "1h")
	waitRunning(t, d, "exec-image")
	execIn := func(id, execID string, args ...string) harness.Result {
		return d.Ctr(t, append([]string{"task", "exec", "--exec-id", execID, id}, args...)...)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		exit   int
		stdout string
	}{
		{"hello", []string{"/probe.wasm", "hello"}, 0, "hello from probe\n"},
		{"args", []string{"/probe.wasm", "args", "a b"}, 0, "/probe.wasm\nargs\na b\n"},
		{"file", []string{"/probe.wasm", "cat", "/etc/greeting.txt"}, 0, "shipped in the image\n"},
		{"exit", []string{"/probe.wasm", "exit", "42"}, 42, ""},
		// The guest sees the container as the task's guest does: Nebula's
		// files are hidden.
		{"hidden", []string{"/probe.wasm", "ls", "/dev/.nebula"}, 1, ""},
	} {
		r := execIn("exec-image", "x-"+tc.name, tc.args...)
		if r.ExitCode != tc.exit || r.Stdout != tc.stdout {
			t.Errorf("ctr task exec exec-image %s: exit %d stdout %q stderr %q; want exit %d stdout %q",
				strings.Join(tc.args, " "), r.ExitCode, r.Stdout, r.Stderr, tc.exit, tc.stdout)
		}
	}
	// stderr is the exec's own.
	if r := execIn("exec-image", "x-stderr", "/probe.wasm", "cat", "/nope"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "/nope") {
		t.Errorf("exec of a failing guest: exit %d stderr %q, want non-zero and the guest's error", r.ExitCode, r.Stderr)
	}

	// From a directory: a module without the .wasm name, a native binary,
	// and hostile names.
	dir := rootfsWith(t, map[string]string{
		"probe.wasm":  filepath.Join(fx, "probe.wasm"),
		"module":      filepath.Join(fx, "probe.wasm"),
		"probe":       filepath.Join(fx, "probe"),
		"script.wasm": filepath.Join(harnessRoot(t), "test/e2e/testdata/greeting.txt"),
	})
	// A symlink that would leave the root on the host, to a real module.
	if err := os.Symlink("../../../../../../.."+filepath.Join(fx, "hello.wasm"), filepath.Join(dir, "escape.wasm")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../.."+filepath.Join(fx, "hello.wasm"), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	d.MustCtr(t, "run", "-d", "--runtime", nebula, "--rootfs", dir, "exec-dir", "/probe.wasm", "sleep", "1h")
	waitRunning(t, d, "exec-dir")
	for i, tc := range []struct {
		name           string
		args           []string
		exit           int
		stdout, stderr string
	}{
		{"magic", []string{"/module", "hello"}, 0, "hello from probe\n", ""},
		// Natively, the process sees the host program's mount.
		{"native", []string{"/probe", "ls", "/dev/.nebula"}, 0, "cache\nnebula-host\n", ""},
		// Not a module: the host program says so, as a shell would (126).
		{"non-module .wasm", []string{"/script.wasm"}, 126, "", "/script.wasm"},
		{"missing .wasm", []string{"/missing.wasm"}, 127, "", "/missing.wasm: no such file"},
		// The symlink resolves inside the container, to nothing.
		{"escaping symlink .wasm", []string{"/escape.wasm"}, 127, "", "/escape.wasm: no such file"},
		// Without .wasm, the shim's reader resolves it in the root too
		// (nothing there), and runc execs it natively: runc's error.
		{"escaping symlink", []string{"/escape"}, -1, "", "no such file or directory"},
		{"outside the root", []string{"/../../../../" + filepath.Join(fx, "hello.wasm")}, 127, "", "no such file"},
	} {
		r := execIn("exec-dir", fmt.Sprintf("x%d", i), tc.args...)
		t.Logf("ctr task exec exec-dir %s → exit %d stdout %q stderr %q", strings.Join(tc.args, " "), r.ExitCode, r.Stdout, r.Stderr)
		if tc.exit >= 0 && r.ExitCode != tc.exit || tc.exit < 0 && r.ExitCode == 0 ||
			r.Stdout != tc.stdout || !strings.Contains(r.Stderr, tc.stderr) {
			t.Errorf("%s: exit %d stdout %q stderr %q; want exit %d stdout %q stderr containing %q",
				tc.name, r.ExitCode, r.Stdout, r.Stderr, tc.exit, tc.stdout, tc.stderr)
		}
	}

	// With a terminal (ctr task exec -t, under script(1) for a pty of its
	// own, whose \n → \r\n translation is off) the guest writes to the
	// container's tty, whose line discipline adds the \r.
	viaPty := func(args ...string) string {
		cmd := d.CtrCommand(args...)
		out, err := exec.Command("script", "-qec", "stty -onlcr; "+shellJoin(cmd.Args), "/dev/null").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "hello from probe") {
			t.Errorf("ctr %s under script: %v, output %q", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	withTTY := viaPty("task", "exec", "-t", "--exec-id", "x-tty", "exec-dir", "/probe.wasm", "hello")
	without := viaPty("task", "exec", "--exec-id", "x-notty", "exec-dir", "/probe.wasm", "hello")
	if !strings.Contains(withTTY, "hello from probe\r\n") || !strings.Contains(without, "hello from probe\n") || strings.Contains(without, "probe\r") {
		t.Errorf("ctr task exec -t: output %q, without -t %q: want \\r\\n from the container's tty, \\n without", withTTY, without)
	}

	// Signals reach the exec'd guest: SIGTERM ends it with 128+15.
	cmd := d.CtrCommand("task", "exec", "--exec-id", "x-sleep", "exec-dir", "/probe.wasm", "sleep", "1h")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for taskProcesses(t, d, "exec-dir") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the exec x-sleep never appeared in ctr task ps")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the host's signal handlers
	d.MustCtr(t, "task", "kill", "--exec-id", "x-sleep", "-s", "SIGTERM", "exec-dir")
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 143 {
			t.Errorf("exec'd guest after SIGTERM: %v, want exit 143; stderr %q", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the exec'd guest did not stop on SIGTERM")
	}

	// Both tasks still run their own process.
	for _, id := range []string{"exec-image", "exec-dir"} {
		if st := taskStatus(t, d, id); st != "RUNNING" {
			t.Errorf("task %s is %s after the execs, want RUNNING", id, st)
		}
		d.MustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		waitExit(t, d, id)
		d.MustCtr(t, "task", "rm", id)
		d.MustCtr(t, "container", "rm", id)
	}
	assertNothingLeft(t, d)
}

// taskProcesses counts the processes ctr task ps lists for task id.
func taskProcesses(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(d.MustCtr(t, "task", "ps", id)), "\n")
	return len(lines) - 1 // the header
}

func harnessRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// shellJoin quotes args for sh -c.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
