// Command escape is Nebula's escape suite: a guest that tries every route
// out of the WASI world it is given that its authors could think of (the
// host's memory and code through /proc/self/mem, the host's mounts, program
// and file descriptors through /proc, /sys, device nodes, Nebula's own
// files under /dev/.nebula; directly, through symbolic links it creates,
// through hard links, renames and listings, and through raw path_open
// calls Go's os package would never make) and reports each attempt as one
// JSON line on stdout:
//
//	{"route":"proc-self-mem","op":"read","path":"/proc/self/mem","want":"ENOENT","got":"ENOENT"}
//
// want is what Nebula's guest file system promises (see the package doc of
// wasmhost): an errno name, or "ok" for the controls that must keep
// working. got is what happened: "ok" or the errno's name, with detail
// saying what leaked when something did. The last line is
// {"route":"done",...}; a test checks got == want on every line and that
// the done line arrived (a host that dies mid-way loses it).
//
// The same source builds natively, where the raw WASI calls report ENOSYS.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
)

var timeZero = time.Unix(0, 0)

type result struct {
	Route  string `json:"route"`
	Op     string `json:"op"`
	Path   string `json:"path"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Detail string `json:"detail,omitempty"`
}

var out = json.NewEncoder(os.Stdout)

func report(route, op, path, want string, err error, detail string) {
	out.Encode(result{Route: route, Op: op, Path: path, Want: want, Got: errnoName(err), Detail: detail})
}

// errnoName names err's errno, "ok" for nil.
func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "error: " + err.Error()
	}
	return errnoString(errno)
}

func errnoString(errno syscall.Errno) string {
	for _, e := range []struct {
		errno syscall.Errno
		name  string
	}{
		{syscall.ENOENT, "ENOENT"}, {syscall.EACCES, "EACCES"}, {syscall.EPERM, "EPERM"},
		{syscall.ELOOP, "ELOOP"}, {syscall.EXDEV, "EXDEV"}, {syscall.EEXIST, "EEXIST"},
		{syscall.ENOTDIR, "ENOTDIR"}, {syscall.EISDIR, "EISDIR"}, {syscall.EBADF, "EBADF"},
		{syscall.EINVAL, "EINVAL"}, {syscall.ENOSYS, "ENOSYS"}, {syscall.EROFS, "EROFS"},
		{syscall.EBUSY, "EBUSY"}, {syscall.ENOTEMPTY, "ENOTEMPTY"}, {syscall.ENXIO, "ENXIO"},
		{syscall.ENOTSUP, "ENOTSUP"}, {syscall.EIO, "EIO"}, {syscall.EFAULT, "EFAULT"},
		{syscall.ENOTSOCK, "ENOTSOCK"},
	} {
		if errno == e.errno {
			return e.name
		}
	}
	return fmt.Sprintf("errno %d", uintptr(errno))
}

// secrets are the routes into the host: each is tried directly and then
// through symbolic links, read and written.
var secrets = []struct{ route, path string }{
	{"proc-self-mem", "/proc/self/mem"},
	{"proc-self-maps", "/proc/self/maps"},
	{"proc-self-mountinfo", "/proc/self/mountinfo"},
	{"proc-self-environ", "/proc/self/environ"},
	{"proc-self-exe", "/proc/self/exe"},
	{"proc-self-fd", "/proc/self/fd/0"},
	{"proc-self-fd-dir", "/proc/self/fd"},
	{"proc-self-root", "/proc/self/root/etc/hostname"},
	{"proc-self-cwd", "/proc/self/cwd"},
	{"proc-1-mem", "/proc/1/mem"},
	{"proc-1-root", "/proc/1/root"},
	{"proc-thread-self", "/proc/thread-self/mem"},
	{"proc-kcore", "/proc/kcore"},
	{"proc-acpi", "/proc/acpi"},
	{"proc-sysrq", "/proc/sysrq-trigger"},
	{"proc", "/proc"},
	{"sys", "/sys"},
	{"sys-kernel", "/sys/kernel/mm/transparent_hugepage/enabled"},
	{"sys-cgroup-procs", "/sys/fs/cgroup/cgroup.procs"},
	{"nebula", "/dev/.nebula"},
	{"nebula-host", "/dev/.nebula/nebula-host"},
	{"nebula-cache", "/dev/.nebula/cache"},
	{"dev-tty", "/dev/tty"},
	{"dev-console", "/dev/console"},
	{"dev-pts", "/dev/pts"},
	{"dev-pts-ptmx", "/dev/pts/ptmx"},
	{"dev-mqueue", "/dev/mqueue"},
	{"dev-kmsg", "/dev/kmsg"},
	{"dev-mem", "/dev/mem"},
}

func main() {
	tmp, err := os.MkdirTemp("/tmp", "escape-")
	if err != nil {
		report("tmp", "mkdir", "/tmp", "ok", err, "")
		fmt.Println(`{"route":"done"}`)
		return
	}
	defer os.RemoveAll(tmp)

	memory() // first: the finding that started the suite
	for _, s := range secrets {
		direct(s.route, s.path)
	}
	for _, s := range secrets {
		viaLinks(tmp, s.route, s.path)
	}
	listings()
	creation(tmp)
	controls(tmp)
	raw()
	fmt.Println(`{"route":"done"}`)
}

// direct tries path by every operation that takes a path.
func direct(route, path string) {
	f, err := os.Open(path)
	report(route, "open", path, "ENOENT", err, readSome(f))
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	report(route, "open-rdwr", path, "ENOENT", err, "")
	closeFile(f)
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	report(route, "open-wronly", path, "ENOENT", err, "")
	closeFile(f)
	_, err = os.Stat(path)
	report(route, "stat", path, "ENOENT", err, "")
	_, err = os.Lstat(path)
	report(route, "lstat", path, "ENOENT", err, "")
	target, err := os.Readlink(path)
	report(route, "readlink", path, "ENOENT", err, target)
	names, err := readNames(path)
	report(route, "readdir", path, "ENOENT", err, strings.Join(names, ","))
	report(route, "chmod", path, "ENOENT", os.Chmod(path, 0o777), "")
	report(route, "utimes", path, "ENOENT", os.Chtimes(path, timeZero, timeZero), "")
}

// viaLinks reaches path through symbolic links the guest creates: absolute
// (refused by WASI when created), relative through "..", a chain, and a
// link to a parent directory walked through.
func viaLinks(tmp, route, path string) {
	rel := "../.." + path // tmp is /tmp/escape-*
	link := tmp + "/" + route
	if err := os.Symlink(path, link+"-abs"); err == nil {
		tryOpen(route, "open-via-abs-link", link+"-abs")
	} else {
		report(route, "symlink-abs", link+"-abs", "EPERM", err, "")
	}
	if err := os.Symlink(rel, link+"-rel"); err != nil {
		report(route, "symlink-rel", link+"-rel", "ok", err, "")
		return
	}
	tryOpen(route, "open-via-rel-link", link+"-rel")
	_, err := os.Stat(link + "-rel")
	report(route, "stat-via-rel-link", link+"-rel", "ENOENT", err, "")
	if err := os.Symlink(route+"-rel", link+"-chain"); err != nil {
		report(route, "symlink-chain", link+"-chain", "ok", err, "")
		return
	}
	tryOpen(route, "open-via-chain", link+"-chain")
	dir, base := splitPath(path)
	if err := os.Symlink("../.."+dir, link+"-parent"); err != nil {
		report(route, "symlink-parent", link+"-parent", "ok", err, "")
		return
	}
	tryOpen(route, "open-via-parent-link", link+"-parent/"+base)
	tryOpen(route, "open-via-dotdot", tmp+"/../.."+path)
	report(route, "link", path, "ENOENT", os.Link(path, link+"-hard"), "")
	report(route, "rename", path, "ENOENT", os.Rename(path, link+"-moved"), "")
}

func tryOpen(route, op, path string) {
	f, err := os.Open(path)
	report(route, op, path, "ENOENT", err, readSome(f))
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	report(route, op+"-rdwr", path, "ENOENT", err, "")
	closeFile(f)
}

// memory is the finding that started this suite: reading and writing the
// host's own code through /proc/self/mem. A host that lets the open
// through dies here (SIGTRAP), and the done line never comes. The write is
// attempted only with ESCAPE_WRITE_CODE=1, so that a test running the
// suite in its own process reports the failures rather than dying.
func memory() {
	f, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		report("proc-self-mem", "write-code", "/proc/self/mem", "ENOENT", err, "")
		return
	}
	defer f.Close()
	elf := make([]byte, 4)
	_, err = f.ReadAt(elf, 0x400000)
	report("proc-self-mem", "read-elf-header", "/proc/self/mem", "ENOENT", err, fmt.Sprintf("%q", elf))
	if os.Getenv("ESCAPE_WRITE_CODE") != "1" {
		return
	}
	_, err = f.WriteAt(bytes.Repeat([]byte{0xcc}, 4096), 0x410000)
	report("proc-self-mem", "write-code", "/proc/self/mem", "ENOENT", err, "")
}

// forbiddenNames must not appear in listings of their directories.
var forbiddenNames = map[string][]string{
	"/":    {"proc", "sys"},
	"/dev": {".nebula", "tty", "console", "pts", "mqueue", "kmsg", "mem"},
}

func listings() {
	for _, dir := range []string{"/", "/dev"} {
		names, err := readNames(dir)
		var leaked []string
		for _, n := range names {
			for _, f := range forbiddenNames[dir] {
				if n == f {
					leaked = append(leaked, n)
				}
			}
		}
		if err == nil && len(leaked) > 0 {
			err = errors.New("listed " + strings.Join(leaked, ","))
		}
		report("listing", "readdir", dir, "ok", err, strings.Join(names, ","))
	}
}

// creation tries to make, move or remove things where the guest must not.
func creation(tmp string) {
	for _, p := range []string{"/proc/nebula-x", "/sys/fs/cgroup/nebula-x", "/dev/.nebula/x", "/dev/mqueue/nebula-x", "/dev/pts/x"} {
		report("create-in", "mkdir", p, "ENOENT", os.Mkdir(p, 0o755), "")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		report("create-in", "create", p, "ENOENT", err, "")
		closeFile(f)
		report("create-in", "symlink", p, "ENOENT", os.Symlink("x", p), "")
		os.Mkdir(tmp+"/moveme", 0o755)
		report("create-in", "rename-into", p, "ENOENT", os.Rename(tmp+"/moveme", p), "")
	}
	for _, p := range []string{"/proc", "/sys", "/dev/.nebula", "/dev/tty"} {
		report("create-over", "mkdir", p, "EACCES", os.Mkdir(p, 0o755), "")
		report("create-over", "symlink", p, "EACCES", os.Symlink("tmp", p), "")
	}
	// Through a dangling link the guest made: creating its target.
	os.Symlink("../../dev/mqueue/nebula-q", tmp+"/dangling")
	f, err := os.OpenFile(tmp+"/dangling", os.O_CREATE|os.O_WRONLY, 0o644)
	report("create-via-link", "create", tmp+"/dangling", "ENOENT", err, "")
	closeFile(f)
	for _, p := range []string{"/dev/.nebula/nebula-host", "/dev/tty", "/proc/self/mem", "/sys/fs/cgroup/cgroup.procs"} {
		report("remove", "unlink", p, "ENOENT", os.Remove(p), "")
	}
	report("remove", "rmdir", "/dev/.nebula/cache", "ENOENT", syscall.Rmdir("/dev/.nebula/cache"), "")
	report("remove", "rmdir", "/dev/pts", "ENOENT", syscall.Rmdir("/dev/pts"), "")
}

// controls must keep working: the guest's world is not empty.
func controls(tmp string) {
	p := tmp + "/mine"
	err := os.WriteFile(p, []byte("mine"), 0o644)
	report("control", "write", p, "ok", err, "")
	b, err := os.ReadFile(p)
	report("control", "read", p, "ok", err, string(b))
	report("control", "symlink", tmp+"/mine-link", "ok", os.Symlink("mine", tmp+"/mine-link"), "")
	b, err = os.ReadFile(tmp + "/mine-link")
	report("control", "read-via-link", tmp+"/mine-link", "ok", err, string(b))
	report("control", "link", tmp+"/mine-hard", "ok", os.Link(p, tmp+"/mine-hard"), "")
	report("control", "rename", tmp+"/mine-moved", "ok", os.Rename(tmp+"/mine-hard", tmp+"/mine-moved"), "")
	report("control", "chmod", p, "ok", os.Chmod(p, 0o600), "")
	report("control", "utimes", p, "ok", os.Chtimes(p, timeZero, timeZero), "")
	for _, dev := range []string{"/dev/null", "/dev/zero", "/dev/urandom"} {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		report("control", "open-rdwr", dev, "ok", err, "")
		closeFile(f)
	}
	_, err = os.ReadDir("/")
	report("control", "readdir", "/", "ok", err, "")
}

// readSome reads up to 64 bytes of an open file (nil: not opened) and
// closes it, returning what it read, for the report.
func readSome(f *os.File) string {
	if f == nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.Read(b)
	if err != nil && err != io.EOF {
		return "opened; read: " + errnoName(err)
	}
	return fmt.Sprintf("opened; read %q", b[:n])
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

func readNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, err
}

func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	return p[:i], p[i+1:]
}
