package main

import (
	"fmt"
	"os"
	"syscall"
)

// rootFD is the descriptor of the guest's "/": the first pre-open.
const rootFD = 3

// WASI open flags (oflags) and descriptor flags (fdflags).
const (
	oCreat     = 1
	oDirectory = 2
	oExcl      = 4
	oTrunc     = 8
	fdAppend   = 1
	fdSync     = 16
)

// raw tries the routes only raw WASI calls can take. Long on purpose:
// tables of routes, each tried and reported the same way.
func raw() {
	type open struct {
		route, path     string
		follow          bool
		oflags, fdflags uint32
		want            string
	}
	for _, o := range []open{
		// wazero refuses ".." that leaves the directory and absolute
		// paths before any file system sees them.
		{"raw-dotdot", "../../proc/self/mem", true, 0, 0, "EPERM"},
		{"raw-absolute", "/proc/self/mem", true, 0, 0, "EPERM"},
		{"raw-inner-dotdot", "tmp/../proc/self/mem", true, 0, 0, "ENOENT"},
		{"raw-nofollow", "proc/self/mem", false, 0, 0, "ENOENT"},
		{"raw-nofollow-exe", "proc/self/exe", false, 0, 0, "ENOENT"},
		{"raw-exe", "proc/self/exe", true, 0, 0, "ENOENT"},
		{"raw-fd", "proc/self/fd/3", true, 0, 0, "ENOENT"},
		{"raw-root-magic", "proc/self/root/etc", true, oDirectory, 0, "ENOENT"},
		{"raw-directory", "proc/self", true, oDirectory, 0, "ENOENT"},
		{"raw-creat-trunc", "proc/self/mem", true, oCreat | oTrunc, 0, "ENOENT"},
		{"raw-creat-excl", "proc/self/mem", true, oCreat | oExcl, 0, "ENOENT"},
		{"raw-append-sync", "proc/self/mem", true, 0, fdAppend | fdSync, "ENOENT"},
		{"raw-trailing-slash", "dev/.nebula/", true, 0, 0, "ENOENT"},
		{"raw-nebula-creat", "dev/.nebula/nebula-host", true, oCreat | oTrunc, 0, "ENOENT"},
		{"raw-sys", "sys/kernel", true, oDirectory, 0, "ENOENT"},
		{"raw-cgroup-creat", "sys/fs/cgroup/nebula-x", true, oCreat, 0, "ENOENT"},
	} {
		report(o.route, fmt.Sprintf("path_open(follow=%v,oflags=%d,fdflags=%d)", o.follow, o.oflags, o.fdflags), o.path, o.want,
			rawOpen(rootFD, o.follow, o.path, o.oflags, o.fdflags), "")
	}
	for _, s := range []struct {
		path   string
		follow bool
	}{{"proc", true}, {"proc/self/mem", true}, {"proc/self/exe", false}, {"proc/self/exe", true}, {"dev/.nebula", false}, {"sys", false}} {
		report("raw-stat", fmt.Sprintf("path_filestat_get(follow=%v)", s.follow), s.path, "ENOENT", rawStat(rootFD, s.follow, s.path), "")
	}
	for _, p := range []string{"proc/self/exe", "proc/self/cwd", "proc/self/root", "proc/self/fd/0", "proc/1/exe"} {
		target, err := rawReadlink(rootFD, p)
		report("raw-readlink", "path_readlink", p, "ENOENT", err, target)
	}

	// Relative to another directory descriptor: "..", and a link the
	// guest made in that directory.
	tmp, err := openDir("tmp")
	if err != nil {
		report("raw-dirfd", "path_open(O_DIRECTORY)", "tmp", "ok", err, "")
	} else {
		os.Symlink("../proc/self/mem", "/tmp/raw-mem")
		report("raw-dirfd", "path_open", "../proc/self/mem", "EPERM", rawOpen(tmp, true, "../proc/self/mem", 0, 0), "")
		report("raw-dirfd", "path_open", "../../proc/self/mem", "EPERM", rawOpen(tmp, true, "../../proc/self/mem", 0, 0), "")
		report("raw-dirfd", "path_open", "raw-mem", "ENOENT", rawOpen(tmp, true, "raw-mem", 0, 0), "")
		os.Remove("/tmp/raw-mem")
		closeFD(tmp)
	}

	// No sockets: nothing to accept connections on (wazero reports EBADF
	// for a descriptor that is not a pre-opened socket).
	for fd := int32(0); fd < 8; fd++ {
		report("sock-accept", "sock_accept", fmt.Sprint(fd), "EBADF", rawAccept(fd), "")
	}
	// One pre-opened directory, "/".
	pre := preopens()
	var err2 error
	if len(pre) != 1 || pre[rootFD] != "/" {
		err2 = fmt.Errorf("pre-opens %v", pre)
	}
	if pre == nil {
		err2 = syscall.ENOSYS
	}
	report("preopens", "fd_prestat_get", "", "ok", err2, fmt.Sprint(pre))
}
