package wasmhost

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// DefaultHiddenPath is where the shim mounts Nebula's own files (the host
// binary, the module's compilation cache) inside a wasm task's container.
const DefaultHiddenPath = "/dev/.nebula"

// GuestFS is the guest's view of a host directory: a sys.FS (wazero's
// experimental writable file system) rooted at that directory, holding
// only what a guest may see. What a guest may open is decided by what a
// file is, on the opened handle, never by its name:
//
//   - regular files and directories, on any file system but the kernel's
//     pseudo file systems (proc, sysfs, devpts, cgroup, cgroup2, debugfs,
//     tracefs, securityfs, bpf, mqueue, hugetlbfs, configfs, pstore,
//     fusectl, binfmt_misc, efivarfs and the like, see specialFSMagic),
//     and not on a mount below one of those;
//   - the stateless character devices /dev/null, /dev/zero, /dev/full,
//     /dev/random and /dev/urandom (recognised by device number);
//   - symbolic links, which are followed inside the root and never through
//     the kernel's "magic links" (/proc/self/fd/N, /proc/self/exe, ...);
//   - nothing that NewGuestFS was asked to hide (Nebula's own files), by
//     device and inode, however it is named (hard links, renames).
//
// Anything else (other device nodes, sockets, FIFOs, anything under /proc
// or /sys) does not exist for the guest: every operation reports ENOENT,
// and listings omit it. Creating something where such an object is
// (mkdir /proc, symlink over /dev/tty) reports EACCES.
//
// Paths resolve with openat2(2) and RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS
// below a descriptor of the root, so neither ".." nor a symbolic link
// (absolute or relative) leads out of the root, whatever directory is the
// root. See docs/rationale.md for the reasons.
//
// # Notes
//
//   - Linux only (openat2 needs 5.6, mount IDs from statx 5.8). Files
//     are opened, and chmod and utimens applied, through the host's
//     /proc/self/fd; each open file holds two descriptors.
//   - Refused objects are not opened: checks are made on O_PATH
//     descriptors, so no device driver's open runs and no FIFO blocks. The
//     exception is a guest racing O_CREAT against its own symbolic links:
//     a device already in the container may then be opened (O_NONBLOCK,
//     O_NOCTTY) before it is refused and closed.
//   - A symbolic link itself is visible (lstat, readlink, listings) where
//     the guest may read its directory, also when following it leads to
//     something refused.
//   - Mounts below special file systems are known from the mount table
//     read by NewGuestFS; the file system type of every handle is checked
//     on each use. A device node bind-mounted from devtmpfs (containers in
//     a user namespace get /dev/null so) is refused.
//   - Objects created under a hidden directory after NewGuestFS are only
//     hidden by name. Nebula's hidden paths are read-only mounts.
//   - GuestFS is safe for concurrent use by any number of instances.
type GuestFS struct {
	root   string
	rootFD int // O_PATH descriptor of root

	ids    map[fileID]struct{}   // hidden objects
	names  map[dirEntry]struct{} // names listings omit: hidden, mount points
	prefix []string              // hidden paths relative to the root, cleaned
	mounts map[uint64]struct{}   // IDs of mounts the guest may not enter

	guard *fdGuard   // nil but in a copy from guarded
	files *openFiles // shared with the copies; nil: no limit
}

// openFiles counts the files open through a GuestFS and its copies.
type openFiles struct {
	n   atomic.Int64
	max int64
}

// LimitOpenFiles makes OpenFile fail with EAGAIN while n files opened
// through g are open, whichever instances opened them. Call it before g
// is used.
//
// # Notes
//
//   - Each open file holds two of the host's descriptors (the checked
//     O_PATH handle and the file), and the host process shares its
//     RLIMIT_NOFILE with its listeners: without a limit, one guest
//     opening files in a loop left none for accepting connections.
//   - EAGAIN, not EMFILE, which WASI has but wazero does not pass on.
func (g *GuestFS) LimitOpenFiles(n int) {
	g.files = &openFiles{max: int64(n)}
}

// fileID identifies a file system object.
type fileID struct{ dev, ino uint64 }

// dirEntry is a name in a directory: how a mount point is recognised in a
// listing, where it shows the inode it covers rather than the mounted one.
type dirEntry struct {
	dir  fileID
	name string
}

var _ experimentalsys.FS = (*GuestFS)(nil)

// resolveFlags confine path resolution to the root and never follow the
// kernel's magic links.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// maxSymlinks is how many symbolic links one resolution follows, as Linux.
const maxSymlinks = 40

// NewGuestFS returns the guest file system rooted at the host directory
// root, hiding the given guest paths (absolute, as the guest sees them, e.g.
// DefaultHiddenPath). A hidden path that does not exist is ignored: there is
// nothing to hide. The contents of hidden directories are walked once,
// here, and so is the mount table.
func NewGuestFS(root string, hidden ...string) (*GuestFS, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(root); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("guest root %s is not a directory", root)
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	g := &GuestFS{
		root:   root,
		rootFD: rootFD,
		ids:    map[fileID]struct{}{},
		names:  map[dirEntry]struct{}{},
	}
	if _, err := unix.Openat2(rootFD, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveFlags}); err != nil {
		g.Close()
		return nil, fmt.Errorf("guest root %s: openat2: %w (Linux 5.6 or later is needed)", root, err)
	}
	for _, h := range hidden {
		rel := cleanRel(h)
		if rel == "" {
			g.Close()
			return nil, fmt.Errorf("cannot hide the guest's root (%q)", h)
		}
		if exists, err := g.hide(rel); err != nil {
			g.Close()
			return nil, fmt.Errorf("hide %s: %w", h, err)
		} else if exists {
			g.prefix = append(g.prefix, rel)
		}
	}
	mounts, err := readMounts()
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("guest root %s: reading the mount table: %w", root, err)
	}
	var tops []mount
	g.mounts, tops = forbiddenMounts(mounts)
	for _, m := range tops {
		rel, err := filepath.Rel(root, m.point)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		if parent, err := os.Stat(filepath.Dir(m.point)); err == nil {
			g.names[dirEntry{idOf(parent), filepath.Base(m.point)}] = struct{}{}
		}
	}
	return g, nil
}

// Close releases the root's descriptor. The GuestFS must not be used
// after.
func (g *GuestFS) Close() error {
	if g.rootFD < 0 {
		return nil
	}
	err := unix.Close(g.rootFD)
	g.rootFD = -1
	return err
}

// Hidden returns how many file system objects are hidden by identity.
func (g *GuestFS) Hidden() int { return len(g.ids) }

// cleanRel turns a guest path into a clean path relative to the root.
func cleanRel(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// hide records the hidden path rel and, if it is a directory, everything
// below it. It reports whether rel exists.
func (g *GuestFS) hide(rel string) (exists bool, err error) {
	host := filepath.Join(g.root, filepath.FromSlash(rel))
	st, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	parent, err := os.Stat(filepath.Dir(host))
	if err != nil {
		return false, err
	}
	g.ids[idOf(st)] = struct{}{}
	g.names[dirEntry{idOf(parent), filepath.Base(host)}] = struct{}{}
	if st.IsDir() {
		return true, g.hideTree(host, idOf(st))
	}
	return true, nil
}

// hideTree records everything below the directory dir, including mount
// points and the roots of what is mounted on them.
func (g *GuestFS) hideTree(dir string, id fileID) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		} else if err != nil {
			return err
		}
		g.ids[idOf(st)] = struct{}{}
		g.names[dirEntry{id, e.Name()}] = struct{}{}
		if st.IsDir() {
			if err = g.hideTree(p, idOf(st)); err != nil {
				return err
			}
		}
	}
	return nil
}

func idOf(fi fs.FileInfo) fileID {
	st := fi.Sys().(*syscall.Stat_t)
	return fileID{uint64(st.Dev), st.Ino}
}

// hiddenName reports whether the path relative to the root is lexically a
// hidden path or below one: a cheap first check.
func (g *GuestFS) hiddenName(p string) bool {
	if len(g.prefix) == 0 {
		return false
	}
	p = cleanRel(p)
	for _, h := range g.prefix {
		if p == h || strings.HasPrefix(p, h) && p[len(h)] == '/' {
			return true
		}
	}
	return false
}

// openat2 resolves p (relative to the root) inside the root and opens it
// with flags, retrying when the kernel reports a concurrent rename.
func (g *GuestFS) openat2(p string, flags int, mode uint32) (int, error) {
	if p == "" {
		p = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveFlags}
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(g.rootFD, p, &how)
		if (err == unix.EAGAIN || err == unix.EINTR) && tries < 100 {
			continue
		}
		return fd, err
	}
}

// inspect describes the opened fd and reports ENOENT if the guest may not
// see it.
func (g *GuestFS) inspect(fd int) (unix.Statx_t, experimentalsys.Errno) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx); err != nil {
		return stx, experimentalsys.UnwrapOSError(err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return stx, experimentalsys.UnwrapOSError(err)
	}
	if !g.allowed(&stx, sfs.Type) {
		return stx, experimentalsys.ENOENT
	}
	return stx, 0
}

// allowed is the rule GuestFS documents, applied to what an open handle
// is: its type, its file system, its mount and its identity.
func (g *GuestFS) allowed(stx *unix.Statx_t, fsType int64) bool {
	if _, ok := specialFSMagic[fsType]; ok {
		return false
	}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		if _, ok := g.mounts[stx.Mnt_id]; ok {
			return false
		}
	}
	switch stx.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
	case unix.S_IFCHR:
		if !harmlessDevice(stx.Rdev_major, stx.Rdev_minor) {
			return false
		}
	default: // block devices, FIFOs, sockets
		return false
	}
	if len(g.ids) > 0 {
		if _, ok := g.ids[statxID(stx)]; ok {
			return false
		}
	}
	return true
}

func statxID(stx *unix.Statx_t) fileID {
	return fileID{unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Ino}
}

// refusal turns the error of resolving p into what the guest sees: ENOENT
// if resolution went through something the guest may not see (a magic
// link, a device, /proc), else the kernel's errno.
func (g *GuestFS) refusal(p string, err error, followLast bool) experimentalsys.Errno {
	errno := experimentalsys.UnwrapOSError(err)
	if errno == experimentalsys.ENOENT || errno == 0 {
		return errno
	}
	if g.reachesForbidden(p, followLast) {
		return experimentalsys.ENOENT
	}
	return errno
}

// reachesForbidden walks p one component at a time, following symbolic
// links itself, and reports whether the walk enters something the guest
// may not see. It runs only on errors, to make them consistent.
func (g *GuestFS) reachesForbidden(p string, followLast bool) bool {
	todo := components(p)
	cur := "."
	for hops := 0; len(todo) > 0; {
		next := cur + "/" + todo[0]
		todo = todo[1:]
		fd, err := g.openat2(next, unix.O_PATH|unix.O_NOFOLLOW, 0)
		if err != nil {
			return false
		}
		stx, errno := g.inspect(fd)
		if errno == experimentalsys.ENOENT {
			unix.Close(fd)
			return true
		}
		if errno == 0 && stx.Mode&unix.S_IFMT == unix.S_IFLNK && (len(todo) > 0 || followLast) {
			target, err := readlinkFD(fd)
			unix.Close(fd)
			if hops++; err != nil || hops > maxSymlinks {
				return false
			}
			if strings.HasPrefix(target, "/") {
				cur = "."
			}
			todo = append(components(target), todo...)
			continue
		}
		unix.Close(fd)
		cur = next
	}
	return false
}

// components splits p into its names, dropping empty ones and ".".
func components(p string) []string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, c := range parts {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func readlinkFD(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// openPath opens p with O_PATH (following a final symbolic link if
// follow) and checks it.
func (g *GuestFS) openPath(p string, follow bool) (int, unix.Statx_t, experimentalsys.Errno) {
	if g.hiddenName(p) {
		return -1, unix.Statx_t{}, experimentalsys.ENOENT
	}
	flags := unix.O_PATH
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := g.openat2(p, flags, 0)
	if err != nil {
		return -1, unix.Statx_t{}, g.refusal(p, err, follow)
	}
	stx, errno := g.inspect(fd)
	if errno != 0 {
		unix.Close(fd)
		return -1, stx, errno
	}
	return fd, stx, 0
}

// parent opens the directory holding p's last name, checked, and returns
// it with that name. A refused directory is ENOENT.
func (g *GuestFS) parent(p string) (int, string, experimentalsys.Errno) {
	p = strings.TrimRight(p, "/")
	dir, base := path.Split(p)
	if base == "" {
		base = "."
	}
	fd, _, errno := g.openPath(dir, true)
	return fd, base, errno
}

// entry reports whether the name base exists in the directory dirFD and
// whether it is something the guest may not see.
func (g *GuestFS) entry(dirFD int, base string) (exists, refused bool) {
	fd, err := unix.Openat(dirFD, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err != unix.ENOENT, false
	}
	defer unix.Close(fd)
	_, errno := g.inspect(fd)
	return true, errno == experimentalsys.ENOENT
}

// toOpenFlags maps wazero's open flags to Linux's.
func toOpenFlags(flag experimentalsys.Oflag) int {
	var f int
	switch flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY) {
	case experimentalsys.O_RDWR:
		f = unix.O_RDWR
	case experimentalsys.O_WRONLY:
		f = unix.O_WRONLY
	}
	for _, m := range []struct {
		wazero experimentalsys.Oflag
		linux  int
	}{
		{experimentalsys.O_APPEND, unix.O_APPEND}, {experimentalsys.O_CREAT, unix.O_CREAT},
		{experimentalsys.O_DIRECTORY, unix.O_DIRECTORY}, {experimentalsys.O_DSYNC, unix.O_DSYNC},
		{experimentalsys.O_EXCL, unix.O_EXCL}, {experimentalsys.O_NOFOLLOW, unix.O_NOFOLLOW},
		{experimentalsys.O_NONBLOCK, unix.O_NONBLOCK}, {experimentalsys.O_RSYNC, unix.O_RSYNC},
		{experimentalsys.O_SYNC, unix.O_SYNC}, {experimentalsys.O_TRUNC, unix.O_TRUNC},
	} {
		if flag&m.wazero != 0 {
			f |= m.linux
		}
	}
	return f
}

// OpenFile implements the same method as documented on sys.FS. It
// resolves p to an O_PATH descriptor (which opens nothing: no device
// driver, no FIFO is touched), checks what that is, and only then opens it
// for the guest through the host's /proc/self/fd, which reaches exactly
// the object checked. O_CREAT creates the file in a checked directory
// first; O_TRUNC is applied after the check.
func (g *GuestFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	c := g.files
	if c == nil {
		return g.openFile(p, flag, perm)
	}
	if c.n.Add(1) > c.max {
		c.n.Add(-1)
		return nil, experimentalsys.EAGAIN
	}
	f, errno := g.openFile(p, flag, perm)
	if errno != 0 {
		c.n.Add(-1)
		return nil, errno
	}
	f.counted = true
	return f, 0
}

// openFile opens p for OpenFile.
func (g *GuestFS) openFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (*guestFile, experimentalsys.Errno) {
	if g.hiddenName(p) {
		return nil, experimentalsys.ENOENT
	}
	flags := toOpenFlags(flag)
	follow := flags&unix.O_NOFOLLOW == 0
	pathFlags := unix.O_PATH | flags&(unix.O_NOFOLLOW|unix.O_DIRECTORY)
	var handle int
	var err error
	switch {
	case flags&unix.O_CREAT == 0:
		handle, err = g.openat2(p, pathFlags, 0)
	case flags&unix.O_EXCL == 0:
		if handle, err = g.openat2(p, pathFlags, 0); err == unix.ENOENT {
			handle, err = g.create(p, flags, perm)
		}
	default:
		handle, err = g.create(p, flags, perm)
	}
	if err != nil {
		return nil, g.refusal(p, err, follow)
	}
	stx, errno := g.inspect(handle)
	if errno == 0 && stx.Mode&unix.S_IFMT == unix.S_IFLNK {
		errno = experimentalsys.ELOOP // O_NOFOLLOW on a symbolic link
	}
	if errno != 0 {
		unix.Close(handle)
		return nil, errno
	}
	reopen := flag &^ (experimentalsys.O_CREAT | experimentalsys.O_EXCL | experimentalsys.O_TRUNC | experimentalsys.O_NOFOLLOW)
	f, errno := procSelfFD.OpenFile(fdPath(handle)[1:], reopen, 0)
	if errno != 0 {
		unix.Close(handle)
		return nil, errno
	}
	gf := &guestFile{File: f, g: g, handle: handle, id: statxID(&stx)}
	if st, errno := f.Stat(); errno != 0 || st.Dev != gf.id.dev || st.Ino != gf.id.ino {
		gf.Close()
		return nil, experimentalsys.ENOENT
	}
	if flag&experimentalsys.O_TRUNC != 0 && flags&(unix.O_WRONLY|unix.O_RDWR) != 0 && stx.Mode&unix.S_IFMT == unix.S_IFREG {
		if errno = f.Truncate(0); errno != 0 {
			gf.Close()
			return nil, errno
		}
	}
	if g.guard != nil {
		gf.guard, gf.event = g.guard, g.guard.event
		g.guard.open++
	}
	return gf, 0
}

// procSelfFD opens the host's /proc/self/fd/N, the only way Linux has to
// reopen an O_PATH descriptor with other flags.
var procSelfFD = sysfs.DirFS("/")

// create creates p with flags (which include O_CREAT) in a directory the
// guest may see and returns a descriptor of it. A final symbolic link that
// points nowhere is followed by hand (unless O_EXCL, which never follows),
// so that the file it names is created only where the guest may create
// files. Only the access mode and O_CREAT|O_EXCL of flags are used.
func (g *GuestFS) create(p string, flags int, perm fs.FileMode) (int, error) {
	if strings.HasSuffix(p, "/") {
		return -1, unix.EISDIR
	}
	for hops := 0; ; hops++ {
		if hops > maxSymlinks {
			return -1, unix.ELOOP
		}
		dirFD, base, errno := g.parent(p)
		if errno != 0 {
			return -1, errno
		}
		fd, err := unix.Openat(dirFD, base, flags&(unix.O_ACCMODE|unix.O_CREAT|unix.O_EXCL)|
			unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, uint32(perm.Perm()))
		if err != unix.ELOOP || flags&unix.O_EXCL != 0 || flags&unix.O_NOFOLLOW != 0 {
			unix.Close(dirFD)
			return fd, err
		}
		target, rerr := readlinkAt(dirFD, base)
		unix.Close(dirFD)
		if rerr != nil {
			return -1, err
		}
		if strings.HasPrefix(target, "/") {
			p = target[1:]
		} else {
			p = path.Dir(p) + "/" + target
		}
	}
}

func readlinkAt(dirFD int, name string) (string, error) {
	fd, err := unix.Openat(dirFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return readlinkFD(fd)
}

// Lstat implements the same method as documented on sys.FS
func (g *GuestFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	return g.stat(p, false)
}

// Stat implements the same method as documented on sys.FS
func (g *GuestFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	return g.stat(p, true)
}

func (g *GuestFS) stat(p string, follow bool) (sys.Stat_t, experimentalsys.Errno) {
	fd, stx, errno := g.openPath(p, follow)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	unix.Close(fd)
	return toStat(&stx), 0
}

// toStat converts statx's answer to wazero's Stat_t.
func toStat(stx *unix.Statx_t) sys.Stat_t {
	ts := func(t unix.StatxTimestamp) int64 { return t.Sec*1e9 + int64(t.Nsec) }
	return sys.Stat_t{
		Dev:   unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		Ino:   stx.Ino,
		Mode:  toFileMode(uint32(stx.Mode)),
		Nlink: uint64(stx.Nlink),
		Size:  int64(stx.Size),
		Atim:  ts(stx.Atime),
		Mtim:  ts(stx.Mtime),
		Ctim:  ts(stx.Ctime),
	}
}

// toFileMode converts a Linux st_mode to an fs.FileMode, as package os does.
func toFileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// Readlink implements the same method as documented on sys.FS
func (g *GuestFS) Readlink(p string) (string, experimentalsys.Errno) {
	fd, stx, errno := g.openPath(p, false)
	if errno != 0 {
		return "", errno
	}
	defer unix.Close(fd)
	if stx.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", experimentalsys.EINVAL
	}
	target, err := readlinkFD(fd)
	return target, experimentalsys.UnwrapOSError(err)
}

// createAt runs op on the parent of p and the name to create there:
// ENOENT if the guest may not see the parent, EACCES if the name is
// taken by something it may not see.
func (g *GuestFS) createAt(p string, op func(dirFD int, base string) error) experimentalsys.Errno {
	dirFD, base, errno := g.parent(p)
	if errno != 0 {
		return errno
	}
	defer unix.Close(dirFD)
	if _, refused := g.entry(dirFD, base); refused {
		return experimentalsys.EACCES
	}
	return experimentalsys.UnwrapOSError(op(dirFD, base))
}

// existingAt runs op on the parent of p and p's name there: ENOENT if the
// guest may not see either, or if the name does not exist (which the
// kernel may report otherwise, e.g. EXDEV for a rename across mounts).
func (g *GuestFS) existingAt(p string, op func(dirFD int, base string) error) experimentalsys.Errno {
	dirFD, base, errno := g.parent(p)
	if errno != 0 {
		return errno
	}
	defer unix.Close(dirFD)
	if exists, refused := g.entry(dirFD, base); !exists || refused || g.hiddenName(p) {
		return experimentalsys.ENOENT
	}
	return experimentalsys.UnwrapOSError(op(dirFD, base))
}

// Mkdir implements the same method as documented on sys.FS
func (g *GuestFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	errno := g.createAt(p, func(dirFD int, base string) error {
		return unix.Mkdirat(dirFD, base, uint32(perm.Perm()))
	})
	if errno == experimentalsys.ENOTDIR {
		errno = experimentalsys.ENOENT // as wazero's DirFS
	}
	return errno
}

// Symlink implements the same method as documented on sys.FS. As wazero's
// DirFS (and WASI), it refuses absolute targets with EPERM. The target is
// text, resolved when the link is followed, so it is not checked.
func (g *GuestFS) Symlink(target, link string) experimentalsys.Errno {
	if path.IsAbs(target) {
		return experimentalsys.EPERM
	}
	return g.createAt(link, func(dirFD int, base string) error {
		return unix.Symlinkat(target, dirFD, base)
	})
}

// Rmdir implements the same method as documented on sys.FS
func (g *GuestFS) Rmdir(p string) experimentalsys.Errno {
	return g.existingAt(p, func(dirFD int, base string) error {
		return unix.Unlinkat(dirFD, base, unix.AT_REMOVEDIR)
	})
}

// Unlink implements the same method as documented on sys.FS. As wazero's
// DirFS, a directory is EISDIR.
func (g *GuestFS) Unlink(p string) experimentalsys.Errno {
	errno := g.existingAt(p, func(dirFD int, base string) error {
		return unix.Unlinkat(dirFD, base, 0)
	})
	if errno == experimentalsys.EPERM {
		if st, e := g.Lstat(p); e == 0 && st.Mode.IsDir() {
			errno = experimentalsys.EISDIR
		}
	}
	return errno
}

// Rename implements the same method as documented on sys.FS
func (g *GuestFS) Rename(from, to string) experimentalsys.Errno {
	return g.twoNames(from, to, func(fromDir int, fromBase string, toDir int, toBase string) error {
		return unix.Renameat(fromDir, fromBase, toDir, toBase)
	})
}

// Link implements the same method as documented on sys.FS. The link is
// made to oldPath itself, not to what a symbolic link there points at.
func (g *GuestFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return g.twoNames(oldPath, newPath, func(oldDir int, oldBase string, newDir int, newBase string) error {
		return unix.Linkat(oldDir, oldBase, newDir, newBase, 0)
	})
}

// twoNames runs op on an existing name (from) and a name to create (to),
// checked as existingAt and createAt do.
func (g *GuestFS) twoNames(from, to string, op func(fromDir int, fromBase string, toDir int, toBase string) error) experimentalsys.Errno {
	fromDir, fromBase, errno := g.parent(from)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fromDir)
	if exists, refused := g.entry(fromDir, fromBase); !exists || refused || g.hiddenName(from) {
		return experimentalsys.ENOENT
	}
	return g.createAt(to, func(toDir int, toBase string) error {
		return op(fromDir, fromBase, toDir, toBase)
	})
}

// Chmod implements the same method as documented on sys.FS. It changes
// exactly the object it checked, through the host's /proc/self/fd.
func (g *GuestFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	fd, _, errno := g.openPath(p, true)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	return experimentalsys.UnwrapOSError(unix.Chmod(fdPath(fd), uint32(perm.Perm())))
}

// Utimens implements the same method as documented on sys.FS. It changes
// exactly the object it checked, through the host's /proc/self/fd.
func (g *GuestFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	fd, _, errno := g.openPath(p, true)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	times, ok := timespecs(atim, mtim)
	if !ok {
		return 0
	}
	return experimentalsys.UnwrapOSError(unix.UtimesNanoAt(unix.AT_FDCWD, fdPath(fd), times[:], 0))
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// timespecs converts wazero's times (UTIME_OMIT: leave alone) to
// utimensat's; ok is false when both are left alone.
func timespecs(atim, mtim int64) (ts [2]unix.Timespec, ok bool) {
	if atim == experimentalsys.UTIME_OMIT && mtim == experimentalsys.UTIME_OMIT {
		return ts, false
	}
	for i, t := range []int64{atim, mtim} {
		if t == experimentalsys.UTIME_OMIT {
			ts[i] = unix.Timespec{Nsec: unix.UTIME_OMIT}
		} else {
			ts[i] = unix.NsecToTimespec(t)
		}
	}
	return ts, true
}
