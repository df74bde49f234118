package wasmhost

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
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
	// Whatever a failing run created in the host's message queues and
	// cgroups.
	tb.Cleanup(func() {
		for _, q := range []string{"nebula-x", "nebula-q"} {
			os.Remove(filepath.Join(root, "dev/mqueue", q))
		}
		os.Remove(filepath.Join(root, "sys/fs/cgroup/nebula-x"))
	})
	fsys, err := NewGuestFS(root, DefaultHiddenPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fsys.Close() })
	return root, fsys
}

// TestEscape runs the escape suite (test/functions/escape) in a guest over
// a container-like root: every route to the host's memory, mounts,
// program, devices and Nebula's files is refused with the errno the
// package doc promises, and the controls still work.
func TestEscape(t *testing.T) {
	_, fsys := containerRoot(t)
	mod := compile(t, Config{}, functions.Escape)
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

// TestGuestFSRefuses exercises the rule on GuestFS directly, over the
// container-like root, with what a guest cannot set up itself: absolute
// symbolic links, FIFOs, sockets, block devices, mounts below /proc.
func TestGuestFSRefuses(t *testing.T) {
	root, g := containerRoot(t)
	at := func(p string) string { return filepath.Join(root, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/proc/self/mem", at("tmp/abs-mem")))
	must(os.Symlink("/proc/self/exe", at("tmp/abs-exe")))
	must(os.Symlink("../proc/self/fd/0", at("tmp/rel-fd")))
	must(os.Symlink("/etc/hostname", at("tmp/abs-hostname")))
	must(os.Symlink("../../../../../../../../etc", at("tmp/up")))
	must(os.Symlink("../dev/mqueue/nebula-q", at("tmp/dangling-mq")))
	must(os.Symlink("new-file", at("tmp/dangling-ok")))
	must(unix.Mkfifo(at("tmp/fifo"), 0o666))
	must(unix.Mknod(at("tmp/loop"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	must(unix.Mknod(at("dev/mem"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(err)
	defer unix.Close(sock)
	must(unix.Bind(sock, &unix.SockaddrUnix{Name: at("tmp/sock")}))
	// Mounts below /proc, as runc masks paths: a tmpfs on a directory and
	// /dev/null bound over a file.
	must(unix.Mount("tmpfs", at("proc/fs"), "tmpfs", 0, ""))
	t.Cleanup(func() { unix.Unmount(at("proc/fs"), unix.MNT_DETACH) })
	must(unix.Mount("/dev/null", at("proc/version"), "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(at("proc/version"), unix.MNT_DETACH) })
	g.Close()
	g, err = NewGuestFS(root, DefaultHiddenPath) // the mount table is read here
	must(err)
	defer g.Close()

	refused := []string{
		"proc/self/mem", "proc/self/exe", "proc/self/fd/0", "proc/self/root", "proc/1/mem", "proc/fs", "proc/version",
		"proc", "sys", "sys/fs/cgroup", "dev/pts", "dev/mqueue", "dev/tty", "dev/console", "dev/kmsg", "dev/mem", "dev/ptmx",
		"tmp/abs-mem", "tmp/abs-exe", "tmp/rel-fd", "tmp/fifo", "tmp/loop", "tmp/sock",
		"dev/.nebula", "dev/.nebula/nebula-host",
	}
	for _, p := range refused {
		for _, flag := range []experimentalsys.Oflag{experimentalsys.O_RDONLY, experimentalsys.O_RDWR, experimentalsys.O_WRONLY | experimentalsys.O_CREAT | experimentalsys.O_TRUNC} {
			if f, errno := g.OpenFile(p, flag, 0o644); errno != experimentalsys.ENOENT {
				if f != nil {
					f.Close()
				}
				t.Errorf("open %s (%#x): %v, want ENOENT", p, flag, errno)
			}
		}
		if _, errno := g.Stat(p); errno != experimentalsys.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT", p, errno)
		}
		if errno := g.Chmod(p, 0o777); errno != experimentalsys.ENOENT {
			t.Errorf("chmod %s: %v, want ENOENT", p, errno)
		}
		if errno := g.Utimens(p, 0, 0); errno != experimentalsys.ENOENT {
			t.Errorf("utimens %s: %v, want ENOENT", p, errno)
		}
	}
	// The links themselves are the guest's; where they lead is not.
	for _, p := range []string{"tmp/abs-mem", "tmp/rel-fd", "dev/ptmx"} {
		if st, errno := g.Lstat(p); errno != 0 || st.Mode.Type() != fs.ModeSymlink {
			t.Errorf("lstat %s: %v %v, want a symbolic link", p, st.Mode, errno)
		}
	}
	for _, p := range []string{"proc/self/exe", "proc/self/cwd", "proc/1/root"} {
		if target, errno := g.Readlink(p); errno != experimentalsys.ENOENT {
			t.Errorf("readlink %s: %q %v, want ENOENT", p, target, errno)
		}
	}

	// Resolution stays in the root: absolute links and ".." that climbs
	// past it land in the guest's own /etc.
	for _, p := range []string{"tmp/abs-hostname", "tmp/up/hostname"} {
		f, errno := g.OpenFile(p, experimentalsys.O_RDONLY, 0)
		if errno != 0 {
			t.Fatalf("open %s: %v", p, errno)
		}
		buf := make([]byte, 64)
		n, _ := f.Read(buf)
		f.Close()
		if string(buf[:n]) != "nebula-test\n" {
			t.Errorf("%s read %q: resolution left the root", p, buf[:n])
		}
	}

	// Creating through a dangling link: only where the guest may create.
	if _, errno := g.OpenFile("tmp/dangling-mq", experimentalsys.O_WRONLY|experimentalsys.O_CREAT, 0o644); errno != experimentalsys.ENOENT {
		t.Errorf("create via link into mqueue: %v, want ENOENT", errno)
	}
	if _, err := os.Lstat(at("dev/mqueue/nebula-q")); err == nil {
		t.Error("a message queue was created")
	}
	if f, errno := g.OpenFile("tmp/dangling-ok", experimentalsys.O_WRONLY|experimentalsys.O_CREAT, 0o644); errno != 0 {
		t.Errorf("create via link in tmp: %v", errno)
	} else {
		f.Close()
		if _, err := os.Stat(at("tmp/new-file")); err != nil {
			t.Errorf("create via link in tmp: %v", err)
		}
	}
	// Nothing is made in a special file system, nor over a refused name.
	for _, p := range []string{"sys/fs/cgroup/nebula-x", "proc/nebula-x", "dev/mqueue/nebula-x", "dev/pts/x"} {
		if errno := g.Mkdir(p, 0o755); errno != experimentalsys.ENOENT {
			t.Errorf("mkdir %s: %v, want ENOENT", p, errno)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/nebula-x"); err == nil {
		t.Error("a cgroup was created")
	}
	for _, p := range []string{"proc", "dev/tty", "tmp/fifo", "dev/.nebula"} {
		if errno := g.Mkdir(p, 0o755); errno != experimentalsys.EACCES {
			t.Errorf("mkdir over %s: %v, want EACCES", p, errno)
		}
		if errno := g.Symlink("x", p); errno != experimentalsys.EACCES {
			t.Errorf("symlink over %s: %v, want EACCES", p, errno)
		}
		if errno := g.Rename("tmp/dangling-ok", p); errno != experimentalsys.EACCES {
			t.Errorf("rename over %s: %v, want EACCES", p, errno)
		}
	}
	for _, p := range []string{"dev/tty", "tmp/fifo", "tmp/sock", "proc/self/mem"} {
		if errno := g.Unlink(p); errno != experimentalsys.ENOENT {
			t.Errorf("unlink %s: %v, want ENOENT", p, errno)
		}
		if errno := g.Link(p, "tmp/hard"); errno != experimentalsys.ENOENT {
			t.Errorf("link %s: %v, want ENOENT", p, errno)
		}
		if errno := g.Rename(p, "tmp/moved"); errno != experimentalsys.ENOENT {
			t.Errorf("rename %s: %v, want ENOENT", p, errno)
		}
	}
	// A name that does not exist is ENOENT, also where the kernel checks
	// the mounts first (rename across file systems: EXDEV).
	must(os.Mkdir(at("dev/shm"), 0o1777))
	must(unix.Mount("tmpfs", at("dev/shm"), "tmpfs", 0, ""))
	t.Cleanup(func() { unix.Unmount(at("dev/shm"), unix.MNT_DETACH) })
	if errno := g.Rename("dev/shm/none", "tmp/x"); errno != experimentalsys.ENOENT {
		t.Errorf("rename of a missing name across mounts: %v, want ENOENT", errno)
	}
	if errno := g.Symlink("/proc/self/mem", "tmp/new-abs"); errno != experimentalsys.EPERM {
		t.Errorf("symlink to an absolute target: %v, want EPERM (as WASI)", errno)
	}

	// The harmless devices are open to the guest.
	for _, p := range []string{"dev/null", "dev/zero", "dev/full", "dev/random", "dev/urandom"} {
		f, errno := g.OpenFile(p, experimentalsys.O_RDWR, 0)
		if errno != 0 {
			t.Errorf("open %s: %v", p, errno)
			continue
		}
		f.Close()
	}

	// Listings show only what can be opened (and links).
	for dir, want := range map[string]string{
		"":    "dev,etc,tmp",
		"dev": "full,null,ptmx,random,shm,urandom,zero",
		"tmp": "abs-exe,abs-hostname,abs-mem,dangling-mq,dangling-ok,new-file,rel-fd,up",
	} {
		if got := strings.Join(list(t, g, dir), ","); got != want {
			t.Errorf("readdir %q: %s, want %s", dir, got, want)
		}
	}
}

// list returns the sorted names GuestFS lists in dir, read two at a time.
func list(t *testing.T, g *GuestFS, dir string) []string {
	t.Helper()
	d, errno := g.OpenFile(dir, experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
	if errno != 0 {
		t.Fatalf("open %q: %v", dir, errno)
	}
	defer d.Close()
	var names []string
	for {
		ents, errno := d.Readdir(2)
		if errno != 0 {
			t.Fatalf("readdir %q: %v", dir, errno)
		}
		for _, e := range ents {
			names = append(names, e.Name)
		}
		if len(ents) < 2 {
			break
		}
	}
	sort.Strings(names)
	return names
}
