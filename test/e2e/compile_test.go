package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	nebulaoci "nebula.dev/nebula/oci"
	"nebula.dev/nebula/test/functions"
	"nebula.dev/nebula/test/harness"
	"nebula.dev/nebula/wasmhost"
)

// slowModule takes minutes to compile (60 functions nesting MaxNesting
// blocks, about 3.7 s each here) yet passes every structural limit.
func slowModule() []byte { return functions.NestedBlocks(wasmhost.MaxNesting, 60) }

// moduleRootfs makes a root file system directory holding the given
// modules (name in the root → bytes) and an empty /tmp.
func moduleRootfs(t *testing.T, modules map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	for name, b := range modules {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// processesIn returns the pids of the processes whose command line starts
// with the given words and whose cgroups include /<ns>/<id> (ctr's cgroup
// path for a container).
func processesIn(d *harness.Daemon, id string, words ...string) []int {
	var pids []int
	for _, pid := range harness.PIDs() {
		args, ok := harness.Argv(pid)
		if !ok || len(args) < len(words) || filepath.Base(args[0]) != words[0] {
			continue
		}
		match := true
		for i, w := range words[1:] {
			match = match && args[i+1] == w
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if match && bytes.Contains(cg, []byte("/"+d.Namespace+"/"+id+"\n")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitCompiling waits until the module of task id is being compiled and
// returns the compile's pid.
func waitCompiling(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if pids := processesIn(d, id, "nebula-host", "compile"); len(pids) == 1 {
			return pids[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `nebula-host compile` in the cgroups of %s after 60s\n%s", id, d.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCompileBounded: a module whose compile outlasts the compile-timeout
// knob fails Create naming the limit, and meanwhile its compile runs in the
// container's cgroups (memory, cpu, pids: the task's, not containerd's)
// while another task starts normally; one that needs more memory than the
// compile-memory knob fails naming that limit; modules over a structural
// limit fail at once. Nothing is left behind.
func TestCompileBounded(t *testing.T) {
	d := startWithProbe(t)
	rootfs := moduleRootfs(t, map[string][]byte{
		"slow.wasm":   slowModule(),
		"big.wasm":    functions.BigFunction(wasmhost.MaxFunctionBodySize),
		"deep.wasm":   functions.NestedBlocks(wasmhost.MaxNesting+1, 1),
		"locals.wasm": functions.ManyLocals(wasmhost.MaxLocals + 1),
	})

	cmd := d.CtrCommand("run", "--rm", "--runtime", nebula, "--annotation", "nebula.dev/compile-timeout=10s",
		"--rootfs", rootfs, "slow", "/slow.wasm")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitCompiling(t, d, "slow")
	cg, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	for _, controller := range []string{"memory", "cpu", "pids"} {
		if !strings.Contains(string(cg), ":"+controller+":/"+d.Namespace+"/slow\n") && !strings.Contains(string(cg), ","+controller+":/"+d.Namespace+"/slow\n") {
			t.Errorf("the compile (pid %d) is not in the container's %s cgroup:\n%s", pid, controller, cg)
		}
	}
	// It runs with no capabilities, no way to gain any, and no network.
	// nebula-host compile drops its privileges as it starts, which may be
	// just after it joined the cgroups: wait for that (the compile itself
	// lasts until its 10 s timeout).
	for privDeadline := time.Now().Add(8 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		status, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		var lacking []string
		for _, want := range []string{"CapEff:\t0000000000000000\n", "CapPrm:\t0000000000000000\n", "NoNewPrivs:\t1\n"} {
			if !strings.Contains(string(status), want) {
				lacking = append(lacking, want)
			}
		}
		if len(lacking) == 0 {
			break
		}
		if time.Now().After(privDeadline) {
			t.Errorf("the compile's /proc/%d/status lacks %q 8 s after it started", pid, lacking)
			break
		}
	}
	if ns, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net")); ns == "" || ns == mustReadlink(t, "/proc/self/ns/net") {
		t.Errorf("the compile runs in the host's network namespace (%q)", ns)
	}
	// containerd and the shims keep serving.
	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, helloWasmImage, "meanwhile")
	if r.ExitCode != 0 || r.Stdout != "hello from wasm\n" {
		t.Errorf("a task started during the hostile compile: exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	if len(processesIn(d, "slow", "nebula-host", "compile")) != 1 {
		t.Errorf("the hostile compile ended before the other task did: the test proves nothing about meanwhile")
	}
	if shims := d.ShimPIDs(); len(shims) > 0 {
		time.Sleep(3 * time.Second)
		t.Logf("CPU so far: the compile %v, the shims %v (uptime %s)", cpuTime(pid), cpuTime(shims...), time.Since(start))
	}
	err := cmd.Wait()
	took := time.Since(start)
	if err == nil || !strings.Contains(stderr.String(), "module /slow.wasm: compiling took longer than the compile-timeout of 10s (knob compile-timeout, annotation nebula.dev/compile-timeout)") {
		t.Errorf("ctr run: %v, stderr %q; want the compile-timeout named", err, stderr.String())
	}
	t.Logf("Create failed after %v", took.Round(time.Millisecond))
	d.Ctr(t, "container", "rm", "slow")

	for _, tc := range []struct{ file, knob, want string }{
		{"/big.wasm", "nebula.dev/compile-memory=64Mi",
			"module /big.wasm: compiling needed more than 67108864 bytes, the compile-memory limit (knob compile-memory, annotation nebula.dev/compile-memory)"},
		{"/deep.wasm", "", "module /deep.wasm: module exceeds a compile limit: function 0 nests blocks more than 20000 deep (MaxNesting)"},
		{"/locals.wasm", "", "module /locals.wasm: module exceeds a compile limit: function 0 declares 50001 locals, the limit is 50000 (MaxLocals)"},
	} {
		id := strings.TrimSuffix(strings.TrimPrefix(tc.file, "/"), ".wasm")
		args := []string{"run", "--rm", "--runtime", nebula}
		if tc.knob != "" {
			args = append(args, "--annotation", tc.knob)
		}
		// --rootfs last: ctr 2.0 takes it for a boolean and stops at the path.
		r := d.Ctr(t, append(args, "--rootfs", rootfs, id, tc.file)...)
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %q", tc.file, r.ExitCode, r.Stderr, tc.want)
		}
		d.Ctr(t, "container", "rm", id)
	}
	if pids := processesIn(d, "", "nebula-host", "compile"); len(pids) > 0 {
		t.Errorf("compiles left: %v", pids)
	}
	assertNothingLeft(t, d)
}

// TestCompileCancelled: when the user gives up on a Create that is
// compiling, the compile stops and nothing remains: no task, no shim, no
// runc init, no compile. What reaches the shim in containerd 2.x:
//
//   - Ctrl-C or kill of `ctr run`: containerd cancels its Create, which
//     ttrpc does not carry to the shim; containerd then calls the shim's
//     Delete and Shutdown for the task.
//   - `ctr c rm`: refused ("task must be stopped before deletion"): runc has
//     created the task before the compile starts; `ctr task rm -f` then
//     sends Kill and Delete.
//   - a client deleting the container's record directly (the containers
//     API does not check for a task): nothing at all, so the shim asks
//     containerd every second whether the container still exists.
func TestCompileCancelled(t *testing.T) {
	d := startWithProbe(t)
	rootfs := moduleRootfs(t, map[string][]byte{"slow.wasm": slowModule()})
	for _, tc := range []struct {
		name   string
		cancel func(t *testing.T, ctr *os.Process, id string)
	}{
		{"ctr c rm, then ctr task rm -f", func(t *testing.T, _ *os.Process, id string) {
			r := d.Ctr(t, "container", "rm", id)
			if r.ExitCode == 0 || !strings.Contains(r.Stderr, "task must be stopped before deletion: created") {
				t.Errorf("ctr container rm during the compile: exit %d, stderr %q; want it refused", r.ExitCode, r.Stderr)
			}
			d.Ctr(t, "task", "rm", "-f", id)
		}},
		{"record deleted", func(t *testing.T, _ *os.Process, id string) {
			if err := d.Client.ContainerService().Delete(d.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
		{"Ctrl-C", func(t *testing.T, ctr *os.Process, _ string) { ctr.Signal(syscall.SIGINT) }},
		{"kill", func(t *testing.T, ctr *os.Process, _ string) { ctr.Signal(syscall.SIGKILL) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "cancel-" + strings.NewReplacer(" ", "", "-", "", ",", "").Replace(strings.ToLower(tc.name))
			cmd := d.CtrCommand("run", "--rm", "--runtime", nebula, "--annotation", "nebula.dev/compile-timeout=10m",
				"--rootfs", rootfs, id, "/slow.wasm")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			compile := waitCompiling(t, d, id)
			if len(processesIn(d, id, "runc", "init")) == 0 {
				t.Errorf("no runc init for %s while its module compiles", id)
			}
			tc.cancel(t, cmd.Process, id)
			waitGone(t, "the compile", func() bool { return syscall.Kill(compile, 0) != nil })
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Errorf("ctr run still running 60s after the cancel")
			}
			waitGone(t, "runc init", func() bool { return len(processesIn(d, id, "runc", "init")) == 0 })
			waitGone(t, "the shim", func() bool { return len(d.ShimPIDs()) == 0 })
			if tasks := strings.TrimSpace(d.MustCtr(t, "task", "ls", "-q")); tasks != "" {
				t.Errorf("tasks left: %s", tasks)
			}
			d.Ctr(t, "container", "rm", id) // ctr run, killed, could not
			assertNothingLeft(t, d)
		})
	}
	for _, want := range []string{"the container was removed while its module compiled", "the task was deleted while its module compiled"} {
		if !strings.Contains(d.Log(), want) {
			t.Errorf("the shim's log does not say %q", want)
		}
	}
}

// TestCreateRefusesWhatCannotStart: settings with which the host program
// would exit at start fail Create instead, naming the setting, where it
// came from and the value. `ctr run -d` succeeded with each before.
func TestCreateRefusesWhatCannotStart(t *testing.T) {
	d := startWithProbe(t)
	fn := harness.EchoFnWasmImage
	for i, tc := range []struct {
		image string
		args  []string
		want  string
	}{
		{fn, []string{"--env", "PORT=abc"}, `invalid PORT="abc" (env PORT): want a TCP port from 1 to 65535`},
		{fn, []string{"--env", "PORT=9464"}, `invalid PORT="9464" (env PORT): 9464 is the metrics port`},
		{fn, []string{"--env", "PORT=8081", "--annotation", "nebula.dev/metrics-port=8081"},
			`invalid knob metrics-port="8081" (annotation nebula.dev/metrics-port): the events port is 8081 too (env PORT)`},
		{fn, []string{"--env", "NEBULA_METRICS_PORT=8080"},
			`invalid knob metrics-port="8080" (env NEBULA_METRICS_PORT): the events port is 8080 too (PORT unset, default 8080)`},
		{helloWasmImage, []string{"--env", "GOMEMLIMIT=lots"}, `invalid GOMEMLIMIT="lots" (env GOMEMLIMIT)`},
		{fn, []string{"--env", "PORT=80", "--user", "1000", "--cap-drop", "CAP_NET_BIND_SERVICE"},
			`invalid PORT="80" (env PORT): user 1000 may not listen on port 80`},
	} {
		id := "refused-" + strconv.Itoa(i)
		r := d.Ctr(t, append(append([]string{"run", "-d", "--runtime", nebula}, tc.args...), tc.image, id)...)
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want Create to fail with %q", tc.args, r.ExitCode, r.Stderr, tc.want)
		}
		d.Ctr(t, "task", "kill", "-s", "SIGKILL", id)
		d.Ctr(t, "task", "rm", "-f", id)
		d.Ctr(t, "container", "rm", id)
	}
	// ctr has no --pids-limit: the Go client, as nerdctl and the kubelet.
	_, _, err := runWithPidsLimit(d, helloWasmImage, "refused-pids", nebulaoci.MinPids-1, nil)
	want := `invalid pids limit="11" (linux.resources.pids.limit, e.g. ctr run --pids-limit): Nebula's host program needs at least 12`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("pids limit %d: %v; want Create to fail with %q", nebulaoci.MinPids-1, err, want)
	}
	assertNothingLeft(t, d)
}

// runWithPidsLimit runs image's entrypoint (with args, if any) under a pids
// limit through the Go client, as nerdctl or the kubelet set it, and
// returns its exit status and output, or the error of the first step that
// failed. opts add to the spec.
func runWithPidsLimit(d *harness.Daemon, image, id string, limit int64, args []string, opts ...oci.SpecOpts) (uint32, string, error) {
	ctx, cancel := context.WithTimeout(d.Context(), 2*time.Minute)
	defer cancel()
	img, err := d.Client.GetImage(ctx, image)
	if err != nil {
		return 0, "", err
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithPidsLimit(limit)}
	if args != nil {
		specOpts = append(specOpts, oci.WithProcessArgs(args...))
	}
	c, err := d.Client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(nebula, nil), containerd.WithNewSpec(append(specOpts, opts...)...))
	if err != nil {
		return 0, "", err
	}
	defer c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	var stdout, stderr bytes.Buffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		return 0, "", err
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return 0, "", err
	}
	if err := task.Start(ctx); err != nil {
		return 0, "", err
	}
	st := <-exitCh
	code, _, err := st.Result()
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	return code, stdout.String(), err
}

// TestPidsLimit: wasm tasks run, and a function task serves, under the
// smallest pids limit Create accepts (nebulaoci.MinPids), with the module
// compiled inside that limit (an empty cache) and loaded from the cache.
// Before, a wasm task died under a small limit ("failed to create new OS
// thread") where the native one ran.
func TestPidsLimit(t *testing.T) {
	d := startWithProbe(t)
	for _, tc := range []struct {
		image string
		args  []string
		want  string
	}{
		{helloWasmImage, nil, "hello from wasm\n"},
		{probeWasmImage, []string{"/probe.wasm", "hello"}, "hello from probe\n"},
	} {
		for _, id := range []string{"pids-miss", "pids-hit"} {
			_, out, err := runWithPidsLimit(d, tc.image, id, nebulaoci.MinPids, tc.args)
			if err != nil || out != tc.want {
				t.Errorf("%s %s, pids limit %d: %v, stdout %q", tc.image, id, nebulaoci.MinPids, err, out)
			}
		}
	}

	// A function task, which listens on two ports and serves events.
	port, mport := harness.FreePort(t), harness.FreePort(t)
	served := make(chan error, 1)
	go func() {
		_, _, err := runWithPidsLimit(d, probeFnWasm, "pids-fn", nebulaoci.MinPids, nil,
			oci.WithHostNamespace(specs.NetworkNamespace),
			oci.WithEnv([]string{"PORT=" + strconv.Itoa(port)}),
			oci.WithAnnotations(map[string]string{"nebula.dev/metrics-port": strconv.Itoa(mport)}))
		served <- err
	}()
	f := function{ID: "pids-fn", URL: fmt.Sprintf("http://127.0.0.1:%d/", port)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(f.URL + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-served:
			t.Fatalf("function under pids limit %d: %v", nebulaoci.MinPids, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("function under pids limit %d not ready after 60s: %v\n%s", nebulaoci.MinPids, err, d.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if rep := binary(t, f, "echo", "", []byte("hi"), nil); rep.status != 200 || string(rep.body) != "hi" {
					t.Errorf("event under pids limit %d: %d %q", nebulaoci.MinPids, rep.status, rep.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	d.MustCtr(t, "task", "kill", "pids-fn")
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("function under pids limit %d, after SIGTERM: %v", nebulaoci.MinPids, err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("function under pids limit %d still running 60s after SIGTERM", nebulaoci.MinPids)
	}
	assertNothingLeft(t, d)
}

// TestCacheFull: with the module cache on a full file system, a wasm task
// still runs (the host compiles it at start), the shim logs the cache's
// error as such rather than blaming the module, and no partial entry stays.
// Before, Create failed with "invalid WebAssembly module ... no space left
// on device".
func TestCacheFull(t *testing.T) {
	d := startWithProbe(t)
	cache := d.CacheDir()
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	// The Go probe's entry is 11 MB.
	if err := syscall.Mount("tmpfs", cache, "tmpfs", 0, "size=2m,mode=700"); err != nil {
		t.Fatalf("mounting a small tmpfs on the cache: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(cache, 0); err != nil {
			t.Errorf("unmounting %s: %v", cache, err)
		}
	})
	for _, id := range []string{"full-1", "full-2"} {
		r := d.Ctr(t, "run", "--rm", "--runtime", nebula, probeWasmImage, id, "/probe.wasm", "hello")
		if r.ExitCode != 0 || r.Stdout != "hello from probe\n" {
			t.Fatalf("%s with a full cache: exit %d, stdout %q, stderr %q", id, r.ExitCode, r.Stdout, r.Stderr)
		}
	}
	log := d.Log()
	if !strings.Contains(log, "nebula: module cache unusable; the host compiles at start") || !strings.Contains(log, "no space left on device") {
		t.Errorf("the shim's log does not report the full cache")
	}
	if strings.Contains(log, "invalid WebAssembly module") {
		t.Errorf("the module was blamed for the full cache")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(cache, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 64<<10 {
		t.Errorf("%d bytes left in the full cache; want the partial entry removed", used)
	}
	// A small module still fits, and is a hit the second time.
	for _, id := range []string{"small-1", "small-2"} {
		if r := d.Ctr(t, "run", "--rm", "--runtime", nebula, helloWasmImage, id); r.ExitCode != 0 || r.Stdout != "hello from wasm\n" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", id, r.ExitCode, r.Stdout, r.Stderr)
		}
	}
	if !strings.Contains(d.Log(), `cache=hit digest="sha256:`) {
		t.Errorf("no cache hit for the small module")
	}
	assertNothingLeft(t, d)
}

// TestCacheEviction: with NEBULA_CACHE_MAX set, compiling a new module
// evicts the least recently used entries until the cache fits — never the
// entry of a running task — and removes what killed compiles left behind.
func TestCacheEviction(t *testing.T) {
	d := startWithProbe(t, harness.WithEnv("NEBULA_CACHE_MAX=4Mi"))
	cache := d.CacheDir()
	fx := fixtures(t)
	entry := func(file string) string {
		b, err := os.ReadFile(filepath.Join(fx, file))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		return filepath.Join(cache, hex.EncodeToString(sum[:]))
	}
	held, hello, exit7 := entry("probe.wasm"), entry("hello.wasm"), entry("exit7.wasm")

	// A running task holds the probe's 11 MB entry.
	d.MustCtr(t, "run", "-d", "--runtime", nebula, probeWasmImage, "held", "/probe.wasm", "sleep", "1h")
	waitRunning(t, d, "held")
	waitGone(t, "no lock on the running task's entry", func() bool { return flockHeld(t, filepath.Join(held, wasmhost.ManifestName)) })
	for _, image := range []string{helloWasmImage, exit7WasmImage} {
		d.Ctr(t, "run", "--rm", "--runtime", nebula, image, "fill")
	}
	// Everything was used an hour ago; a killed compile left a directory
	// without a manifest, and something left a stray file.
	leftover := filepath.Join(cache, strings.Repeat("0", 64))
	if err := os.MkdirAll(filepath.Join(leftover, "wazero-v0-amd64-linux"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(leftover, "wazero-v0-amd64-linux", "x.tmp"), make([]byte, 4096), 0o600)
	stray := filepath.Join(cache, "config.json.nebula.tmp")
	os.WriteFile(stray, []byte("{}"), 0o600)
	hourAgo := time.Now().Add(-time.Hour)
	for _, p := range []string{held, hello, exit7, leftover, stray} {
		if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
			t.Fatal(err)
		}
	}

	// A new module's compile prunes the cache.
	rootfs := moduleRootfs(t, map[string][]byte{"new.wasm": functions.NestedBlocks(1, 1)})
	if r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--rootfs", rootfs, "new", "/new.wasm"); r.ExitCode != 0 {
		t.Fatalf("new module: exit %d, stderr %q", r.ExitCode, r.Stderr)
	}
	for _, p := range []string{hello, exit7, leftover, stray} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was not evicted", p)
		}
	}
	if _, err := os.Stat(filepath.Join(held, wasmhost.ManifestName)); err != nil {
		t.Errorf("the running task's entry was evicted: %v", err)
	}
	if !strings.Contains(d.Log(), "nebula: pruned the module cache") {
		t.Errorf("the shim did not log the pruning")
	}
	// Evicted modules compile again.
	if r := d.Ctr(t, "run", "--rm", "--runtime", nebula, helloWasmImage, "again"); r.ExitCode != 0 || r.Stdout != "hello from wasm\n" {
		t.Errorf("hello after its eviction: exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	d.MustCtr(t, "task", "kill", "-s", "SIGKILL", "held")
	waitExit(t, d, "held")
	d.MustCtr(t, "task", "rm", "held")
	d.MustCtr(t, "container", "rm", "held")
	assertNothingLeft(t, d)
}

// flockHeld reports whether /proc/locks lists a lock on the file at p.
func flockHeld(t *testing.T, p string) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return false
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	for _, line := range strings.Split(string(locks), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasSuffix(f, suffix) && strings.Count(f, ":") == 2 {
				return true
			}
		}
	}
	return false
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cpuTime is the user and system CPU time the processes used so far.
func cpuTime(pids ...int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		for _, i := range []int{11, 12} { // utime, stime (fields 14 and 15)
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
}
