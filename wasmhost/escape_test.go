package wasmhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nebula.dev/nebula/test/functions"
)

// containerRoot builds, in a temp dir, a root like a wasm task's container
// sees: the real /proc and /sys (recursive bind mounts), a /dev holding the
// usual device nodes, a devpts and an mqueue file system, Nebula's hidden
// files, and a writable /tmp. It needs root; the mounts are removed when
// the test ends.
func containerRoot(tb testing.TB) (string, *GuestFS) {
	tb.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("the escape tests need root (mounts, device nodes)")
		}
		tb.Skip("skipping: the escape tests need root (mounts, device nodes)")
	}
	root := tb.TempDir()
	for _, d := range []string{"proc", "sys", "dev/pts", "dev/mqueue", "dev/.nebula/cache/wazero", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	for name, content := range map[string]string{
		"etc/hostname":                 "nebula-test\n",
		"dev/.nebula/nebula-host":      "SECRET host binary\n",
		"dev/.nebula/cache/wazero/key": "SECRET cache entry\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	for name, dev := range map[string][2]uint32{
		"null": {1, 3}, "zero": {1, 5}, "full": {1, 7}, "random": {1, 8}, "urandom": {1, 9},
		"tty": {5, 0}, "console": {5, 1}, "kmsg": {1, 11},
	} {
		if err := unix.Mknod(filepath.Join(root, "dev", name), unix.S_IFCHR|0o666, int(unix.Mkdev(dev[0], dev[1]))); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Symlink("pts/ptmx", filepath.Join(root, "dev/ptmx")); err != nil { // as runc makes it
		tb.Fatal(err)
	}
	mount := func(source, target, fstype string, flags uintptr) {
		tb.Helper()
		target = filepath.Join(root, target)
		if err := unix.Mount(source, target, fstype, flags, ""); err != nil {
			tb.Fatalf("mount %s on %s: %v", source, target, err)
		}
		tb.Cleanup(func() {
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				tb.Errorf("unmount %s: %v", target, err)
			}
		})
	}
	mount("/proc", "proc", "", unix.MS_BIND|unix.MS_REC)
	mount("/sys", "sys", "", unix.MS_BIND|unix.MS_REC)
	mount("devpts", "dev/pts", "devpts", 0)
	mount("mqueue", "dev/mqueue", "mqueue", 0)
	// Whatever a failing run created in the host's message queues.
	tb.Cleanup(func() {
		for _, q := range []string{"nebula-x", "nebula-q"} {
			os.Remove(filepath.Join(root, "dev/mqueue", q))
		}
	})
	fsys, err := NewGuestFS(root, DefaultHiddenPath)
	if err != nil {
		tb.Fatal(err)
	}
	return root, fsys
}

// TestEscape runs the escape suite (test/functions/escape) in a guest over
// a container-like root: every route to the host's memory, mounts,
// program, devices and Nebula's files is refused with the errno the
// package doc promises, and the controls still work.
func TestEscape(t *testing.T) {
	_, fsys := containerRoot(t)
	mod := compile(t, nil, functions.Escape)
	// A host that lets the guest into /proc can also let it spin there:
	// the deadline turns that into a failure (no "done" line).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := run(t, ctx, mod, RunConfig{Args: []string{"/escape.wasm"}, FS: fsys, Dir: "/"})
	if r.code != 0 {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	failures, n := functions.CheckEscape([]byte(r.stdout))
	for _, f := range failures {
		t.Error(f)
	}
	if strings.Contains(r.stdout, "SECRET") || strings.Contains(r.stdout, `\x7fELF`) {
		t.Error("a secret leaked into the report")
	}
	t.Logf("%d attempts", n)
}
