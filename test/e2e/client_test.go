package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"nebula.dev/nebula/test/harness"
)

// TestParityClient drives both runtimes through the containerd Go client:
// stdio, exit codes, exec, pids, metrics type, signals, and logging to
// binary:// and file:// URIs (what nerdctl uses).
func TestParityClient(t *testing.T) {
	d := startWithProbe(t)
	logger := buildLogger(t)
	want := observeClient(t, d, runcV2, "runc", logger)
	got := observeClient(t, d, nebula, "nebula", logger)

	expect := map[string]string{
		"stdout":      "hello from probe\n",
		"exit":        "0",
		"exit7":       "7",
		"exec/stdout": "hello from probe\n",
		"pids":        "1",
		"sigkill":     "137",
		"binary-log":  "err: probe: open /nope: no such file or directory\nout: hello from probe\n",
		"file-log":    "hello from probe\nprobe: open /nope: no such file or directory\n",
	}
	checkBaseline(t, want, expect)
	if mt := want["metrics/type"]; mt != "io.containerd.cgroups.v1.Metrics" && mt != "io.containerd.cgroups.v2.Metrics" {
		t.Errorf("runc.v2 metrics type %q is not a cgroups metrics type", mt)
	}
	checkParity(t, want, got)
}

func observeClient(t *testing.T, d *harness.Daemon, runtime, prefix, logger string) map[string]string {
	ctx, cancel := context.WithTimeout(d.Context(), 2*time.Minute)
	defer cancel()
	obs := map[string]string{}
	img, err := d.Client.GetImage(ctx, probeImage)
	if err != nil {
		t.Fatal(err)
	}
	newContainer := func(name string, args ...string) containerd.Container {
		id := prefix + "-" + name
		c, err := d.Client.NewContainer(ctx, id,
			containerd.WithImage(img),
			containerd.WithNewSnapshot(id, img),
			containerd.WithRuntime(runtime, nil),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup) })
		return c
	}
	runToExit := func(c containerd.Container, creator cio.Creator) uint32 {
		task, err := c.NewTask(ctx, creator)
		if err != nil {
			t.Fatalf("%s: new task: %v", c.ID(), err)
		}
		exitCh, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		st := <-exitCh
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("%s: delete: %v", c.ID(), err)
		}
		return st.ExitCode()
	}

	var stdout, stderr bytes.Buffer
	code := runToExit(newContainer("hello", "/probe", "hello"), cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	obs["stdout"], obs["stderr"], obs["exit"] = stdout.String(), stderr.String(), itoa(code)
	obs["exit7"] = itoa(runToExit(newContainer("exit7", "/probe", "exit", "7"), cio.NullIO))

	logFile := filepath.Join(t.TempDir(), prefix+"-binary.log")
	both := []string{"/probe", "hello", "+", "cat", "/nope"}
	logURI, err := cio.LogURIGenerator("binary", logger, map[string]string{"file": logFile})
	if err != nil {
		t.Fatal(err)
	}
	runToExit(newContainer("binlog", both...), cio.LogURI(logURI))
	obs["binary-log"] = readLines(t, logFile, 2)
	fileLog := filepath.Join(t.TempDir(), prefix+"-file.log")
	runToExit(newContainer("filelog", both...), cio.LogFile(fileLog))
	obs["file-log"] = readLines(t, fileLog, 2)

	c := newContainer("long", "/probe", "sleep", "1h")
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitCh, _ := task.Wait(ctx)
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pids, err := task.Pids(ctx)
	if err != nil {
		t.Fatal(err)
	}
	obs["pids"] = itoa(uint32(len(pids)))
	m, err := task.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	obs["metrics/type"] = m.Data.GetTypeUrl()

	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"/probe", "hello"}
	var execOut, execErr bytes.Buffer
	proc, err := task.Exec(ctx, "e1", &pspec, cio.NewCreator(cio.WithStreams(nil, &execOut, &execErr)))
	if err != nil {
		t.Fatal(err)
	}
	pexit, _ := proc.Wait(ctx)
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	<-pexit
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	obs["exec/stdout"] = execOut.String()

	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := <-exitCh
	obs["sigkill"] = itoa(st.ExitCode())
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	return obs
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// readLines waits for the file at p to hold n lines (logging drivers may
// still be flushing after the task is deleted) and returns them sorted:
// stdout and stderr are separate pipes, so their order is not defined.
func readLines(t *testing.T, p string, n int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second) // the shim copies stdout and stderr on its own time; generous on a loaded machine
	for {
		b, _ := os.ReadFile(p)
		lines := strings.SplitAfter(string(b), "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		if len(lines) >= n || time.Now().After(deadline) {
			sort.Strings(lines)
			return strings.Join(lines, "")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildLogger builds the binary:// test logger once per test.
func buildLogger(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "logger")
	cmd := exec.Command("go", "build", "-o", out, "./test/e2e/testdata/logger")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building logger: %v\n%s", err, b)
	}
	return out
}
