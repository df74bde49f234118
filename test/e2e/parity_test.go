package e2e

import (
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/google/go-cmp/cmp"

	"nebula.dev/nebula/test/harness"
)

// TestParityCtr runs the same image under runc.v2 and under Nebula through
// the ctr binary, as a user types it, and requires every observation to
// match. The runc.v2 observations are also checked against what the probe
// must do, so two equally broken runtimes cannot pass.
func TestParityCtr(t *testing.T) {
	d := startWithProbe(t)
	want := observeCtr(t, d, runcV2, "runc")
	got := observeCtr(t, d, nebula, "nebula")

	expect := map[string]string{
		"run/stdout":           "hello from probe\n",
		"run/exit":             "0",
		"run-fail/exit":        "1",
		"run-exit3/exit":       "3",
		"exec/stdout":          "hello from probe\n",
		"exec/exit":            "0",
		"exec-exit5/exit":      "5",
		"ps/lines":             "2",
		"pause/status":         "PAUSED",
		"resume/status":        "RUNNING",
		"rm-running/failed":    "true",
		"sigkill/exit":         "137",
		"detached-wait/exit":   "0",
		"rm-stopped/exit":      "0",
		"container-rm/exit":    "0",
		"run-fail/stderr":      "probe: open /nope: no such file or directory\n",
		"sigterm/task-stopped": "true",
	}
	checkBaseline(t, want, expect)
	// A terminal turns "\n" into "\r\n" (twice, counting ctr's own pty).
	if tty := want["tty/output"]; !strings.Contains(tty, "\r\n") || strings.ReplaceAll(tty, "\r", "") != "hello from probe\n" {
		t.Errorf("runc.v2 tty output %q is not terminal output", want["tty/output"])
	}
	checkParity(t, want, got)
}

// checkBaseline checks runc.v2's observations against what the probe must
// do, so that two equally broken runtimes cannot pass the parity check.
func checkBaseline(t *testing.T, runc, expect map[string]string) {
	t.Helper()
	for k, v := range expect {
		if runc[k] != v {
			t.Errorf("runc.v2 %s = %q, want %q (the probe or the test is wrong)", k, runc[k], v)
		}
	}
}

// checkParity requires Nebula to match runc.v2 on every row.
func checkParity(t *testing.T, runc, nebula map[string]string) {
	t.Helper()
	if diff := cmp.Diff(runc, nebula); diff != "" {
		t.Errorf("Nebula differs from runc.v2 (-runc.v2 +nebula):\n%s", diff)
	}
}

// observeCtr runs every row of the parity table with ctr under runtime and
// returns what it saw, keyed by row.
func observeCtr(t *testing.T, d *harness.Daemon, runtime, prefix string) map[string]string {
	t.Helper()
	obs := map[string]string{}
	id := func(s string) string { return prefix + "-" + s }
	run := func(name string, args ...string) harness.Result {
		return d.Ctr(t, append([]string{"run", "--rm", "--runtime", runtime, probeImage, id(name)}, args...)...)
	}

	r := run("hello", "/probe", "hello")
	obs["run/stdout"], obs["run/exit"] = r.Stdout, strconv.Itoa(r.ExitCode)
	r = run("fail", "/probe", "cat", "/nope")
	obs["run-fail/stderr"], obs["run-fail/exit"] = r.Stderr, strconv.Itoa(r.ExitCode)
	r = run("exit3", "/probe", "exit", "3")
	obs["run-exit3/exit"] = strconv.Itoa(r.ExitCode)

	// A detached task: exec, ps, pause/resume, metrics, delete while
	// running, SIGTERM.
	long := id("long")
	d.MustCtr(t, "run", "-d", "--runtime", runtime, probeImage, long, "/probe", "sleep", "1h")
	r = d.Ctr(t, "task", "exec", "--exec-id", "e1", long, "/probe", "hello")
	obs["exec/stdout"], obs["exec/exit"] = r.Stdout, strconv.Itoa(r.ExitCode)
	r = d.Ctr(t, "task", "exec", "--exec-id", "e2", long, "/probe", "exit", "5")
	obs["exec-exit5/exit"] = strconv.Itoa(r.ExitCode)
	ps := d.MustCtr(t, "task", "ps", long)
	obs["ps/lines"] = strconv.Itoa(len(strings.Split(strings.TrimSpace(ps), "\n")))
	d.MustCtr(t, "task", "pause", long)
	obs["pause/status"] = taskStatus(t, d, long)
	d.MustCtr(t, "task", "resume", long)
	obs["resume/status"] = taskStatus(t, d, long)
	obs["metrics/names"] = metricNames(d.MustCtr(t, "task", "metrics", long))
	r = d.Ctr(t, "task", "rm", long)
	obs["rm-running/failed"] = strconv.FormatBool(r.ExitCode != 0)
	d.MustCtr(t, "task", "kill", "-s", "SIGTERM", long)
	status := waitExit(t, d, long)
	obs["sigterm/task-stopped"] = "true"
	obs["sigterm/exit"] = strconv.Itoa(int(status))
	obs["rm-stopped/exit"] = strconv.Itoa(d.Ctr(t, "task", "rm", long).ExitCode)
	obs["container-rm/exit"] = strconv.Itoa(d.Ctr(t, "container", "rm", long).ExitCode)

	killed := id("killed")
	d.MustCtr(t, "run", "-d", "--runtime", runtime, probeImage, killed, "/probe", "sleep", "1h")
	d.MustCtr(t, "task", "kill", "-s", "SIGKILL", killed)
	obs["sigkill/exit"] = strconv.Itoa(int(waitExit(t, d, killed)))
	d.MustCtr(t, "task", "rm", killed)
	d.MustCtr(t, "container", "rm", killed)

	obs["tty/output"] = runInPty(t, d, "run", "--rm", "-t", "--runtime", runtime, probeImage, id("tty"), "/probe", "hello")

	waited := id("waited")
	d.MustCtr(t, "run", "-d", "--runtime", runtime, probeImage, waited, "/probe", "sleep", "500ms")
	obs["detached-wait/exit"] = strconv.Itoa(int(waitExit(t, d, waited)))
	d.MustCtr(t, "task", "rm", waited)
	d.MustCtr(t, "container", "rm", waited)
	return obs
}

// taskStatus returns the STATUS column `ctr task ls` shows for id.
func taskStatus(t *testing.T, d *harness.Daemon, id string) string {
	t.Helper()
	for _, line := range strings.Split(d.MustCtr(t, "task", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	t.Fatalf("task %s not listed by ctr task ls", id)
	return ""
}

// metricNames returns the sorted METRIC column of `ctr task metrics`.
func metricNames(out string) string {
	var names []string
	inTable := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "METRIC":
			inTable = true
		case inTable && len(f) >= 1:
			names = append(names, f[0])
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// waitExit waits, through the Go client, for the task of container id to
// stop and returns its exit status.
func waitExit(t *testing.T, d *harness.Daemon, id string) uint32 {
	t.Helper()
	ctx := d.Context()
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := task.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == containerd.Stopped {
			return st.ExitStatus
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s after 30s", id, st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runInPty runs ctr with a pseudo-terminal as its stdin, stdout and stderr,
// as in an interactive shell, and returns what appeared on the terminal.
func runInPty(t *testing.T, d *harness.Daemon, args ...string) string {
	t.Helper()
	pty, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(pty)
		out <- string(b)
	}()
	r := d.CtrWith(t, func(cmd *exec.Cmd) {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	}, args...)
	slave.Close()
	var got string
	select {
	case got = <-out:
		got = harness.StripCtrWarnings(got)
	case <-time.After(10 * time.Second):
		t.Fatal("terminal output did not end")
	}
	if r.ExitCode != 0 {
		t.Fatalf("ctr %v: exit %d, terminal: %q", args, r.ExitCode, got)
	}
	return got
}
