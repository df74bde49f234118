package e2e

import (
	"bytes"
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

	"nebula.dev/nebula/test/harness"
)

const spawnerImage = "localhost/nebula/spawner-fn:latest"

// TestProcessContainment sends a process function events whose
// entrypoint leaves children behind — plain, setsid, double-forked,
// ignoring SIGTERM — and checks through containerd and /proc that none
// outlives its invocation and none is left a zombie, that statuses stay
// exact, and that `ctr task exec` sessions and their orphans are neither
// killed nor left unreaped by the host.
func TestProcessContainment(t *testing.T) {
	d := harness.Start(t)
	importSpawner(t, d)
	f := startFunction(t, d, spawnerImage, "fn-contain", "--annotation", "nebula.dev/concurrency=4",
		"--annotation", "nebula.dev/timeout=30s")
	host := taskPID(t, d, f.ID)

	// An exec session that runs throughout, and the orphan of another.
	d.MustCtr(t, "task", "exec", "--detach", "--exec-id", "keep", f.ID, "/spawner", "sleep", "3600")
	d.MustCtr(t, "task", "exec", "--exec-id", "orphaner", f.ID, "/spawner", "orphan", "3600")
	keep := waitProcess(t, d, f.ID, "/spawner sleep 3600", func(p proc) bool { return p.ppid != host })
	orphan := waitProcess(t, d, f.ID, "/spawner sleep 3600", func(p proc) bool { return p.ppid == host })

	event := func(typ, data string) reply {
		return send(t, "POST", f.URL, map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": "c1", "Ce-Source": "/e2e", "Ce-Type": typ, "Content-Type": "text/plain",
		}, []byte(data))
	}
	const events = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := map[string]int{}
	for w := range 5 {
		wg.Go(func() {
			for i := range events / 5 {
				r := event("spawn.leave", strconv.Itoa((w+i)%2*3))
				if want := map[bool]int{true: 200, false: 500}[(w+i)%2 == 0]; r.status != want {
					mu.Lock()
					bad[fmt.Sprintf("%d %s", r.status, r.body)]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("unexpected replies: %v", bad)
	}

	// What remains: nebula-host, its idle supervisors, the exec session
	// and the orphan; nothing of the function, and no zombie.
	procs := containerProcs(t, d, f.ID)
	var leftovers []string
	supervisors := 0
	for _, p := range procs {
		switch {
		case p.pid == host, p.pid == keep.pid, p.pid == orphan.pid:
		case p.ppid == host && p.cmdline == "nebula-host supervise" && p.state != 'Z':
			supervisors++
		default:
			leftovers = append(leftovers, p.String())
		}
	}
	for _, z := range zombiesUnder(host) {
		leftovers = append(leftovers, "zombie "+z.String())
	}
	if len(leftovers) > 0 {
		t.Errorf("after %d events, %d processes outlived their invocations:\n%s", events, len(leftovers), strings.Join(leftovers, "\n"))
	}
	if supervisors < 1 || supervisors > 4 {
		t.Errorf("%d idle supervisors, want 1 to the concurrency, 4", supervisors)
	}

	// The exec session and the orphan live on; once the orphan dies, the
	// host reaps it.
	for _, p := range []proc{keep, orphan} {
		if state, ok := procState(p.pid); !ok || state == 'Z' {
			t.Errorf("%s was killed by the host (state %q)", p, state)
		}
	}
	if err := syscall.Kill(orphan.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := procState(orphan.pid); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec session's orphan %d was not reaped by nebula-host", orphan.pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.MustCtr(t, "task", "kill", "--exec-id", "keep", "-s", "SIGKILL", f.ID)

	// Still serving, with exact statuses.
	if r := event("spawn.leave", "0"); r.status != 200 || !strings.Contains(string(r.body), "left") {
		t.Errorf("after: %d %q", r.status, r.body)
	}
	if r := event("spawn.leave", "3"); r.status != 500 || string(r.body) != "function exited with status 3\n" {
		t.Errorf("exit 3: %d %q", r.status, r.body)
	}
	if r := event("spawn.signal", ""); r.status != 500 || string(r.body) != "function failed: guest trapped: killed by signal killed\n" {
		t.Errorf("SIGKILL: %d %q", r.status, r.body)
	}
}

// importSpawner builds test/e2e/testdata/spawner statically and imports
// it as a function image.
func importSpawner(t *testing.T, d *harness.Daemon) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "spawner")
	build := exec.Command("go", "build", "-o", bin, "./test/e2e/testdata/spawner")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the spawner: %v\n%s", err, out)
	}
	archive := filepath.Join(dir, "spawner.tar")
	nebula := filepath.Join(harness.Binaries(t), "nebula")
	if out, err := exec.Command(nebula, "build", bin, "--function", "-t", spawnerImage, "-o", archive).CombinedOutput(); err != nil {
		t.Fatalf("nebula build: %v\n%s", err, out)
	}
	d.MustCtr(t, "images", "import", archive)
}

// proc is a process as the host sees it.
type proc struct {
	pid, ppid int
	state     byte
	cmdline   string
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d ppid %d state %c %q", p.pid, p.ppid, p.state, p.cmdline)
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return proc{pid: pid, ppid: ppid, state: f[0][0], cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))}, true
}

func procState(pid int) (byte, bool) {
	p, ok := readProc(pid)
	return p.state, ok
}

// taskPID returns the host pid of the task's process, nebula-host.
func taskPID(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	for _, line := range strings.Split(d.MustCtr(t, "task", "ls"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("task %s not in ctr task ls", id)
	return 0
}

// containerProcs lists the processes of the task's container, from `ctr
// task ps` (its cgroup), with their state and command line from /proc.
func containerProcs(t *testing.T, d *harness.Daemon, id string) []proc {
	t.Helper()
	var procs []proc
	for _, line := range strings.Split(d.MustCtr(t, "task", "ps", id), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			procs = append(procs, p)
		}
	}
	return procs
}

// waitProcess waits for a process of the container with command line
// cmdline for which match holds.
func waitProcess(t *testing.T, d *harness.Daemon, id, cmdline string, match func(proc) bool) proc {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, p := range containerProcs(t, d, id) {
			if p.cmdline == cmdline && match(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process %q in task %s", cmdline, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zombiesUnder returns the zombies among the descendants of pid.
func zombiesUnder(pid int) []proc {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]proc{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(n); ok {
			children[p.ppid] = append(children[p.ppid], p)
		}
	}
	var zombies []proc
	var walk func(int)
	walk = func(pid int) {
		for _, c := range children[pid] {
			if c.state == 'Z' {
				zombies = append(zombies, c)
			}
			walk(c.pid)
		}
	}
	walk(pid)
	return zombies
}
