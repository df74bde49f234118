package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// TestWasmRun runs WASI modules from images built by `nebula build`, with
// ctr as a user types it.
func TestWasmRun(t *testing.T) {
	d := startWithProbe(t)
	run := func(image, id string, args ...string) harness.Result {
		return d.Ctr(t, append([]string{"run", "--rm", "--runtime", nebula, "--env", "FOO=bar", image, id}, args...)...)
	}
	tests := []struct {
		name       string
		image      string
		args       []string
		wantExit   int
		wantStdout string
		contains   bool
	}{
		{"hello", helloWasmImage, nil, 0, "hello from wasm\n", false},
		{"exit7", exit7WasmImage, nil, 7, "", false},
		{"go hello", probeWasmImage, []string{"/probe.wasm", "hello"}, 0, "hello from probe\n", false},
		{"args", probeWasmImage, []string{"/probe.wasm", "args", "a b", "c"}, 0, "/probe.wasm\nargs\na b\nc\n", false},
		{"env", probeWasmImage, []string{"/probe.wasm", "env"}, 0, "FOO=bar\n", true},
		{"file from the image", probeWasmImage, []string{"/probe.wasm", "cat", "/etc/greeting.txt"}, 0, "shipped in the image\n", false},
		{"write /tmp", probeWasmImage, []string{"/probe.wasm", "writetmp"}, 0, "written by probe\n", false},
		{"go exit", probeWasmImage, []string{"/probe.wasm", "exit", "42"}, 42, "", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(tt.image, "wasm-run-"+itoa(uint32(i)), tt.args...)
			if r.ExitCode != tt.wantExit {
				t.Fatalf("exit %d, want %d; stderr %q", r.ExitCode, tt.wantExit, r.Stderr)
			}
			if tt.contains && !strings.Contains(r.Stdout, tt.wantStdout) || !tt.contains && r.Stdout != tt.wantStdout {
				t.Fatalf("stdout %q, want %q", r.Stdout, tt.wantStdout)
			}
		})
	}
	assertNothingLeft(t, d)
}

// TestWasmRootfsDir runs a module from a plain directory, no image and no
// mounts: `ctr run --rootfs DIR ... /hello.wasm`.
func TestWasmRootfsDir(t *testing.T) {
	d := startWithProbe(t)
	dir := rootfsWith(t, map[string]string{"hello.wasm": filepath.Join(fixtures(t), "hello.wasm")})
	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--rootfs", dir, "wasm-dir", "/hello.wasm")
	if r.ExitCode != 0 || r.Stdout != "hello from wasm\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	// runc creates the mount points (dev, proc, sys, run), as under
	// runc.v2; Nebula's own mounts land in runc's /dev tmpfs, not here.
	if entries, _ := os.ReadDir(filepath.Join(dir, "dev")); len(entries) != 0 {
		t.Errorf("Nebula left a trace in the rootfs: dev/ holds %v", entries)
	}
	assertNothingLeft(t, d)
}

// TestWasmKill: SIGTERM and SIGKILL stop a spinning or sleeping guest
// within a second, with 128+signal.
func TestWasmKill(t *testing.T) {
	d := startWithProbe(t)
	for _, tc := range []struct{ what, signal string }{
		{"loop", "SIGTERM"}, {"sleep", "SIGTERM"}, {"loop", "SIGKILL"}, {"sleep", "SIGINT"},
	} {
		t.Run(tc.what+"-"+tc.signal, func(t *testing.T) {
			id := "kill-" + tc.what + "-" + strings.ToLower(tc.signal)
			args := []string{"/probe.wasm", tc.what}
			if tc.what == "sleep" {
				args = append(args, "1h")
			}
			d.MustCtr(t, append([]string{"run", "-d", "--runtime", nebula, probeWasmImage, id}, args...)...)
			waitRunning(t, d, id)
			// RUNNING comes with runc's start, before nebula-host's Go
			// runtime and package initialisation (≈ 2 ms) have installed
			// its signal handlers; a SIGTERM inside that window ends it
			// with the runtime's exit status 2 (see README, exit statuses).
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			d.MustCtr(t, "task", "kill", "-s", tc.signal, id)
			status := waitExit(t, d, id)
			took := time.Since(start)
			want := map[string]uint32{"SIGTERM": 143, "SIGKILL": 137, "SIGINT": 130}[tc.signal]
			if status != want {
				t.Errorf("exit status %d, want %d", status, want)
			}
			if took > time.Second {
				t.Errorf("the task took %v to stop, want under 1s", took)
			}
			d.MustCtr(t, "task", "rm", id)
			d.MustCtr(t, "container", "rm", id)
		})
	}
}

// TestWasmConfinement: the guest sees neither Nebula's host program nor
// the module cache, by any path, and cannot leave the container's root.
func TestWasmConfinement(t *testing.T) {
	d := startWithProbe(t)
	run := func(id string, args ...string) harness.Result {
		return d.Ctr(t, append([]string{"run", "--rm", "--runtime", nebula, probeWasmImage, id, "/probe.wasm"}, args...)...)
	}
	r := run("conf-ls", "ls", "/dev")
	if r.ExitCode != 0 || strings.Contains(r.Stdout, ".nebula") || !strings.Contains(r.Stdout, "null") {
		t.Errorf("ls /dev: exit %d, %q; want /dev without .nebula", r.ExitCode, r.Stdout)
	}
	for i, args := range [][]string{
		{"cat", "/dev/.nebula/nebula-host"},
		{"ls", "/dev/.nebula"},
		{"ls", "/dev/.nebula/cache"},
		{"stat", "/dev/.nebula/nebula-host"},
		{"cat", "/dev/../dev/.nebula/nebula-host"},
		{"symlink", "/dev/.nebula/nebula-host", "/tmp/host", "+", "cat", "/tmp/host"},
		{"symlink", "../dev/.nebula", "/tmp/dir", "+", "ls", "/tmp/dir"},
		{"cat", "/proc/self/exe"},
		{"cat", "/proc/1/exe"},
	} {
		r := run("conf-"+itoa(uint32(i)), args...)
		if r.ExitCode == 0 || len(r.Stdout) > 0 {
			t.Errorf("%v: exit %d, read %d bytes; want a failure and nothing read", args, r.ExitCode, len(r.Stdout))
		}
	}
	// ".." and symlinks resolve inside the container's root.
	root := run("conf-root", "ls", "/")
	for i, args := range [][]string{
		{"ls", "/../../.."},
		{"symlink", "../../../../../..", "/tmp/up", "+", "ls", "/tmp/up"},
	} {
		r := run("conf-up-"+itoa(uint32(i)), args...)
		if r.ExitCode != 0 || r.Stdout != root.Stdout {
			t.Errorf("%v listed %q, want the container's root %q", args, r.Stdout, root.Stdout)
		}
	}
	if strings.Contains(root.Stdout, filepath.Base(d.Dir)) {
		t.Errorf("the guest's / shows the host: %q", root.Stdout)
	}
}

// TestWasmInvalidModules: each bad module fails Create with an error naming
// the file and the reason, and leaves nothing behind.
func TestWasmInvalidModules(t *testing.T) {
	d := startWithProbe(t)
	fx := fixtures(t)
	hello, err := os.ReadFile(filepath.Join(fx, "hello.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notwasm"), []byte("#!/bin/sh\necho hi\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "truncated"), hello[:len(hello)/2], 0o644)
	rootfs := rootfsWith(t, map[string]string{
		"badmagic.wasm":  filepath.Join(dir, "notwasm"),
		"truncated.wasm": filepath.Join(dir, "truncated"),
		"nostart.wasm":   filepath.Join(fx, "nostart.wasm"),
		"badimport.wasm": filepath.Join(fx, "badimport.wasm"),
	})
	for _, tc := range []struct{ file, reason string }{
		{"/badmagic.wasm", "not a WebAssembly module"},
		{"/truncated.wasm", "truncated"},
		{"/nostart.wasm", "_start"},
		{"/badimport.wasm", "env.nope"},
		{"/missing.wasm", "no such file"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			id := "bad" + strings.TrimSuffix(strings.TrimPrefix(tc.file, "/"), ".wasm")
			r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--rootfs", rootfs, id, tc.file)
			if r.ExitCode == 0 || !strings.Contains(r.Stderr, tc.file) || !strings.Contains(r.Stderr, tc.reason) {
				t.Errorf("exit %d, stderr %q; want an error naming %s and %q", r.ExitCode, r.Stderr, tc.file, tc.reason)
			}
			d.Ctr(t, "container", "rm", id)
		})
	}
	assertNothingLeft(t, d)
}

// TestWasmCompileCache: the second task of the same Go module is a cache
// hit, logged by the shim, and compiles faster.
func TestWasmCompileCache(t *testing.T) {
	d := startWithProbe(t)
	for _, id := range []string{"cache-1", "cache-2"} {
		r := d.Ctr(t, "run", "--rm", "--runtime", nebula, probeWasmImage, id, "/probe.wasm", "hello")
		if r.ExitCode != 0 || r.Stdout != "hello from probe\n" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", id, r.ExitCode, r.Stdout, r.Stderr)
		}
	}
	re := regexp.MustCompile(`cache=(hit|miss) .*id=(cache-\d).*seconds=([0-9.e-]+)|id=(cache-\d) .*cache=(hit|miss).*seconds=([0-9.e-]+)`)
	var got []string
	for _, line := range strings.Split(d.Log(), "\n") {
		if !strings.Contains(line, "nebula: compiled module") {
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsed compile log line: %s", line)
		}
		got = append(got, strings.Join(m[1:], ""))
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "misscache-1") || !strings.HasPrefix(got[1], "hitcache-2") {
		t.Fatalf("compile log: %q; want a miss for cache-1, then a hit for cache-2", got)
	}
	entries, err := os.ReadDir(d.CacheDir())
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache dir %s: %v, %v; want one module directory", d.CacheDir(), entries, err)
	}
}

// TestWasmMixedGroup: a wasm task and a runc task in one shim both work;
// the wasm task is a real container with cgroup metrics.
func TestWasmMixedGroup(t *testing.T) {
	d := startWithProbe(t)
	group := "io.containerd.runc.v2.group=mixed"
	d.MustCtr(t, "run", "-d", "--runtime", nebula, "--annotation", group, probeImage, "mixed-native", "/probe", "sleep", "1h")
	d.MustCtr(t, "run", "-d", "--runtime", nebula, "--annotation", group, probeWasmImage, "mixed-wasm", "/probe.wasm", "sleep", "1h")
	if shims := d.ShimPIDs(); len(shims) != 1 {
		t.Fatalf("want one shim for the group, found %v", shims)
	}
	waitRunning(t, d, "mixed-wasm")
	m := d.MustCtr(t, "task", "metrics", "mixed-wasm")
	if !strings.Contains(m, "memory") && !strings.Contains(m, "pids") {
		t.Errorf("ctr task metrics of the wasm task shows no cgroup metrics:\n%s", m)
	}
	for _, id := range []string{"mixed-wasm", "mixed-native"} {
		d.MustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		if st := waitExit(t, d, id); st != 137 {
			t.Errorf("%s: exit %d after SIGKILL", id, st)
		}
		d.MustCtr(t, "task", "rm", id)
		d.MustCtr(t, "container", "rm", id)
	}
	assertNothingLeft(t, d)
}

// TestWasmBadKnob: an invalid knob fails Create naming knob and value.
func TestWasmBadKnob(t *testing.T) {
	d := startWithProbe(t)
	r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--annotation", "nebula.dev/memory-limit=lots", helloWasmImage, "badknob")
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, `memory-limit="lots"`) {
		t.Fatalf("exit %d, stderr %q; want an error naming memory-limit and lots", r.ExitCode, r.Stderr)
	}
	d.Ctr(t, "container", "rm", "badknob")
	r = d.Ctr(t, "run", "--rm", "--runtime", nebula, "--env", "NEBULA_TIMEOUT=forever", helloWasmImage, "badenv")
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, `timeout="forever"`) || !strings.Contains(r.Stderr, "NEBULA_TIMEOUT") {
		t.Fatalf("exit %d, stderr %q; want an error naming NEBULA_TIMEOUT and forever", r.ExitCode, r.Stderr)
	}
	d.Ctr(t, "container", "rm", "badenv")
	assertNothingLeft(t, d)
}

// rootfsWith makes a root filesystem directory holding the given files
// (name in the root → source path) and an empty /tmp.
func rootfsWith(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func waitRunning(t *testing.T, d *harness.Daemon, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for taskStatus(t, d, id) != "RUNNING" {
		if time.Now().After(deadline) {
			t.Fatalf("task %s is not running", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
