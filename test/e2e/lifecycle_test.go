package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// TestShimKilled kills the shim with SIGKILL under a running task: containerd
// must clean up through `containerd-shim-nebula-v1 delete` and leave no
// container process, mount or cgroup behind, as it does for runc.v2.
func TestShimKilled(t *testing.T) {
	d := startWithProbe(t)
	for _, runtime := range []string{runcV2, nebula} {
		t.Run(runtime, func(t *testing.T) {
			id := "crash-" + strings.ReplaceAll(runtime, ".", "-")
			d.MustCtr(t, "run", "-d", "--runtime", runtime, probeImage, id, "/probe", "sleep", "1h")
			pid := taskPid(t, d, id)
			shims := d.ShimPIDs()
			if len(shims) != 1 {
				t.Fatalf("want one shim process, found %v", shims)
			}
			if err := syscall.Kill(shims[0], syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitGone(t, "container process", func() bool { return syscall.Kill(pid, 0) != nil })
			waitGone(t, "shim process", func() bool { return len(d.ShimPIDs()) == 0 })
			waitGone(t, "rootfs mount", func() bool { return len(harness.MountsUnder(filepath.Join(d.Dir, "state"))) == 0 })
			waitGone(t, "container cgroup", func() bool { return len(harness.CgroupsUnder(d.Namespace)) == 0 })
			// The task is gone (or stopped); the container can be removed.
			if r := d.Ctr(t, "task", "rm", id); r.ExitCode != 0 && !strings.Contains(r.Stderr, "not found") {
				t.Errorf("ctr task rm after shim crash: %s", r.Stderr)
			}
			d.MustCtr(t, "container", "rm", id)
		})
	}
}

// TestDaemonRestart restarts containerd under a running Nebula task: the
// task is still there afterwards and can be killed and deleted.
func TestDaemonRestart(t *testing.T) {
	d := startWithProbe(t)
	d.MustCtr(t, "run", "-d", "--runtime", nebula, probeImage, "survivor", "/probe", "sleep", "1h")
	pid := taskPid(t, d, "survivor")
	d.Restart(t)
	if got := taskStatus(t, d, "survivor"); got != "RUNNING" {
		t.Fatalf("after restart the task is %s, want RUNNING", got)
	}
	if got := taskPid(t, d, "survivor"); got != pid {
		t.Fatalf("after restart the task's pid is %d, want %d", got, pid)
	}
	d.MustCtr(t, "task", "kill", "-s", "SIGKILL", "survivor")
	if st := waitExit(t, d, "survivor"); st != 137 {
		t.Errorf("exit status %d after SIGKILL, want 137", st)
	}
	d.MustCtr(t, "task", "rm", "survivor")
	d.MustCtr(t, "container", "rm", "survivor")
}

// TestGroup puts two tasks into one shim with runc's group annotation.
func TestGroup(t *testing.T) {
	d := startWithProbe(t)
	for _, id := range []string{"g1", "g2"} {
		d.MustCtr(t, "run", "-d", "--runtime", nebula, "--annotation", "io.containerd.runc.v2.group=pod1",
			probeImage, id, "/probe", "sleep", "1h")
	}
	if shims := d.ShimPIDs(); len(shims) != 1 {
		t.Fatalf("two grouped tasks: want one shim, found %d (%v)", len(shims), shims)
	}
	// Deleting the first leaves the second served by the same shim.
	d.MustCtr(t, "task", "kill", "-s", "SIGKILL", "g1")
	waitExit(t, d, "g1")
	d.MustCtr(t, "task", "rm", "g1")
	if got := taskStatus(t, d, "g2"); got != "RUNNING" {
		t.Fatalf("g2 is %s after deleting g1", got)
	}
	if out := d.MustCtr(t, "task", "exec", "--exec-id", "x", "g2", "/probe", "hello"); out != "hello from probe\n" {
		t.Fatalf("exec in g2 after deleting g1: %q", out)
	}
	d.MustCtr(t, "task", "kill", "-s", "SIGKILL", "g2")
	waitExit(t, d, "g2")
	d.MustCtr(t, "task", "rm", "g2")
	waitGone(t, "group shim", func() bool { return len(d.ShimPIDs()) == 0 })
}

// TestRuntimeOptions: `ctr --runtime-config-path` sends CRI's
// runtimeoptions to a non-runc runtime; valid runc options are translated,
// an unknown one fails with an error naming it.
func TestRuntimeOptions(t *testing.T) {
	d := startWithProbe(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("BinaryName = \"runc\"\nNoNewKeyring = true\n"), 0o600)
	os.WriteFile(bad, []byte("BinaryName = \"runc\"\nBogusKnob = 1\n"), 0o600)

	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--runtime-config-path", good, probeImage, "opts-good", "/probe", "hello")
	if r.ExitCode != 0 || r.Stdout != "hello from probe\n" {
		t.Fatalf("valid runtime options: exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	r = d.Ctr(t, "run", "--rm", "--runtime", nebula, "--runtime-config-path", bad, probeImage, "opts-bad", "/probe", "hello")
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, `unknown option "BogusKnob"`) {
		t.Fatalf("unknown runtime option: exit %d, stderr %q; want an error naming BogusKnob", r.ExitCode, r.Stderr)
	}
	d.Ctr(t, "container", "rm", "opts-bad")
	assertNothingLeft(t, d)
}

// TestBadInput: an invalid spec and a missing entrypoint fail with a clear
// error under both runtimes, and leave nothing behind.
func TestBadInput(t *testing.T) {
	d := startWithProbe(t)
	spec := filepath.Join(t.TempDir(), "spec.json")
	// A spec without a process: valid JSON, invalid bundle.
	os.WriteFile(spec, []byte(`{"ociVersion": "1.0.2", "root": {"path": "/nonexistent-rootfs"}, "linux": {}}`), 0o600)
	for _, runtime := range []string{runcV2, nebula} {
		t.Run(runtime, func(t *testing.T) {
			id := strings.ReplaceAll(runtime, ".", "-")
			r := d.Ctr(t, "run", "--rm", "--runtime", runtime, probeImage, id+"-noentry", "/nope")
			if r.ExitCode == 0 || !strings.Contains(r.Stderr, "/nope") {
				t.Errorf("missing entrypoint: exit %d, stderr %q; want an error naming /nope", r.ExitCode, r.Stderr)
			}
			d.Ctr(t, "container", "rm", id+"-noentry")
			r = d.Ctr(t, "run", "--rm", "--runtime", runtime, "--config", spec, id+"-noproc")
			if r.ExitCode == 0 || !strings.Contains(strings.ToLower(r.Stderr), "process") {
				t.Errorf("spec without process: exit %d, stderr %q; want an error about the process", r.ExitCode, r.Stderr)
			}
			d.Ctr(t, "container", "rm", id+"-noproc")
			assertNothingLeft(t, d)
		})
	}
}

// assertNothingLeft fails t if the daemon still has a task, a shim, a
// rootfs mount or a container cgroup.
func assertNothingLeft(t *testing.T, d *harness.Daemon) {
	t.Helper()
	waitGone(t, "shim process", func() bool { return len(d.ShimPIDs()) == 0 })
	if tasks := strings.TrimSpace(d.MustCtr(t, "task", "ls", "-q")); tasks != "" {
		t.Errorf("tasks left: %s", tasks)
	}
	if m := harness.MountsUnder(filepath.Join(d.Dir, "state")); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if cg := harness.CgroupsUnder(d.Namespace); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
}

func taskPid(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	for _, line := range strings.Split(d.MustCtr(t, "task", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("task %s not listed", id)
	return 0
}

func waitGone(t *testing.T, what string, gone func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !gone() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after 15s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
