package wasmhost

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// DefaultHiddenPath is where the shim mounts Nebula's own files (the host
// binary, the module's compilation cache) inside a wasm task's container.
const DefaultHiddenPath = "/dev/.nebula"

// GuestFS is the guest's view of a host directory: a sys.FS (wazero's
// experimental writable file system) rooted at that directory, with some
// paths hidden. Hidden paths and everything below them do not exist for the
// guest: opening them, stat'ing them and listing their parent behave as if
// they were absent, however the guest names them (symbolic links it creates,
// "..", hard links).
//
// Hiding is by identity, not by name: NewGuestFS records the device and
// inode of every hidden object, and GuestFS checks the identity of what the
// kernel actually opened (fstat after open), which is race-free. Names are
// also compared lexically, as a cheap first check. See doc.go.
//
// # Notes
//
//   - Objects created under a hidden directory after NewGuestFS are only
//     hidden by name. Nebula's hidden paths are read-only mounts.
//   - GuestFS does not confine path resolution to the root: symbolic links
//     resolve as the kernel resolves them. Nebula's host runs inside the
//     container, with root "/", where the kernel already cannot leave the
//     container's root. Tests may use any directory as the root.
//   - GuestFS is safe for concurrent use by any number of instances.
type GuestFS struct {
	inner  experimentalsys.FS
	root   string
	ids    map[fileID]struct{}
	names  map[dirEntry]struct{}
	prefix []string // hidden paths relative to the root, cleaned
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

// NewGuestFS returns the guest file system rooted at the host directory
// root, hiding the given guest paths (absolute, as the guest sees them, e.g.
// DefaultHiddenPath). A hidden path that does not exist is ignored: there is
// nothing to hide. The
// contents of hidden directories are walked once, here.
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
	g := &GuestFS{
		inner: sysfs.DirFS(root),
		root:  root,
		ids:   map[fileID]struct{}{},
		names: map[dirEntry]struct{}{},
	}
	for _, h := range hidden {
		rel := cleanRel(h)
		if rel == "" {
			return nil, fmt.Errorf("cannot hide the guest's root (%q)", h)
		}
		if exists, err := g.hide(rel); err != nil {
			return nil, fmt.Errorf("hide %s: %w", h, err)
		} else if exists {
			g.prefix = append(g.prefix, rel)
		}
	}
	return g, nil
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

// hiddenName reports whether the path relative to the root names a hidden
// path or something below one, lexically.
func (g *GuestFS) hiddenName(p string) bool {
	exact, below := g.hiddenNameAt(p)
	return exact || below
}

// hiddenNameAt reports whether the path relative to the root is lexically a
// hidden path (exact) or below one (below).
func (g *GuestFS) hiddenNameAt(p string) (exact, below bool) {
	if len(g.prefix) == 0 {
		return false, false
	}
	p = cleanRel(p)
	for _, h := range g.prefix {
		if p == h {
			return true, false
		} else if strings.HasPrefix(p, h) && p[len(h)] == '/' {
			return false, true
		}
	}
	return false, false
}

func (g *GuestFS) hiddenStat(st *sys.Stat_t) bool {
	_, ok := g.ids[fileID{st.Dev, st.Ino}]
	return ok
}

// checkExisting returns ENOENT if path names a hidden object, following a
// final symbolic link if follow is set.
func (g *GuestFS) checkExisting(p string, follow bool) experimentalsys.Errno {
	if len(g.ids) == 0 {
		return 0
	}
	if g.hiddenName(p) {
		return experimentalsys.ENOENT
	}
	var st sys.Stat_t
	var errno experimentalsys.Errno
	if follow {
		st, errno = g.inner.Stat(p)
	} else {
		st, errno = g.inner.Lstat(p)
	}
	if errno == 0 && g.hiddenStat(&st) {
		return experimentalsys.ENOENT
	}
	return 0 // let the operation itself report other errors
}

// checkCreate refuses to create p in a hidden directory (ENOENT: the
// directory does not exist for the guest) or over a hidden object (EACCES).
func (g *GuestFS) checkCreate(p string) experimentalsys.Errno {
	if len(g.ids) == 0 {
		return 0
	}
	if exact, below := g.hiddenNameAt(p); below {
		return experimentalsys.ENOENT
	} else if exact {
		return experimentalsys.EACCES
	}
	if st, errno := g.inner.Stat(path.Dir(cleanRel(p))); errno == 0 && g.hiddenStat(&st) {
		return experimentalsys.ENOENT
	}
	if st, errno := g.inner.Lstat(p); errno == 0 && g.hiddenStat(&st) {
		return experimentalsys.EACCES
	}
	return 0
}

// OpenFile implements the same method as documented on sys.FS. It opens
// first and checks the identity of the opened file after, so no rename or
// symbolic link swapped in between can reveal a hidden file. O_TRUNC is
// applied after that check.
func (g *GuestFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if len(g.ids) == 0 {
		return g.inner.OpenFile(p, flag, perm)
	}
	if g.hiddenName(p) {
		return nil, experimentalsys.ENOENT
	}
	if flag&experimentalsys.O_CREAT != 0 {
		if errno := g.checkCreate(p); errno != 0 {
			return nil, errno
		}
	}
	trunc := flag&experimentalsys.O_TRUNC != 0
	f, errno := g.inner.OpenFile(p, flag&^experimentalsys.O_TRUNC, perm)
	if errno != 0 {
		return nil, errno
	}
	st, errno := f.Stat()
	if errno != 0 {
		f.Close()
		return nil, errno
	}
	if g.hiddenStat(&st) {
		f.Close()
		return nil, experimentalsys.ENOENT
	}
	if trunc && flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR) != 0 && st.Mode.IsRegular() {
		if errno = f.Truncate(0); errno != 0 {
			f.Close()
			return nil, errno
		}
	}
	if st.Mode.IsDir() {
		return &guestDir{File: f, g: g, id: fileID{st.Dev, st.Ino}}, 0
	}
	return f, 0
}

// Lstat implements the same method as documented on sys.FS
func (g *GuestFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if g.hiddenName(p) {
		return sys.Stat_t{}, experimentalsys.ENOENT
	}
	st, errno := g.inner.Lstat(p)
	if errno == 0 && g.hiddenStat(&st) {
		return sys.Stat_t{}, experimentalsys.ENOENT
	}
	return st, errno
}

// Stat implements the same method as documented on sys.FS
func (g *GuestFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if g.hiddenName(p) {
		return sys.Stat_t{}, experimentalsys.ENOENT
	}
	st, errno := g.inner.Stat(p)
	if errno == 0 && g.hiddenStat(&st) {
		return sys.Stat_t{}, experimentalsys.ENOENT
	}
	return st, errno
}

// Mkdir implements the same method as documented on sys.FS
func (g *GuestFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	if errno := g.checkCreate(p); errno != 0 {
		return errno
	}
	return g.inner.Mkdir(p, perm)
}

// Chmod implements the same method as documented on sys.FS
func (g *GuestFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	if errno := g.checkExisting(p, true); errno != 0 {
		return errno
	}
	return g.inner.Chmod(p, perm)
}

// Rename implements the same method as documented on sys.FS
func (g *GuestFS) Rename(from, to string) experimentalsys.Errno {
	if errno := g.checkExisting(from, false); errno != 0 {
		return errno
	}
	if errno := g.checkCreate(to); errno != 0 {
		return errno
	}
	return g.inner.Rename(from, to)
}

// Rmdir implements the same method as documented on sys.FS
func (g *GuestFS) Rmdir(p string) experimentalsys.Errno {
	if errno := g.checkExisting(p, false); errno != 0 {
		return errno
	}
	return g.inner.Rmdir(p)
}

// Unlink implements the same method as documented on sys.FS
func (g *GuestFS) Unlink(p string) experimentalsys.Errno {
	if errno := g.checkExisting(p, false); errno != 0 {
		return errno
	}
	return g.inner.Unlink(p)
}

// Link implements the same method as documented on sys.FS
func (g *GuestFS) Link(oldPath, newPath string) experimentalsys.Errno {
	if errno := g.checkExisting(oldPath, false); errno != 0 {
		return errno
	}
	if errno := g.checkCreate(newPath); errno != 0 {
		return errno
	}
	return g.inner.Link(oldPath, newPath)
}

// Symlink implements the same method as documented on sys.FS. The link's
// target is text, resolved when the link is followed, so it is not checked.
func (g *GuestFS) Symlink(oldPath, linkName string) experimentalsys.Errno {
	if errno := g.checkCreate(linkName); errno != 0 {
		return errno
	}
	return g.inner.Symlink(oldPath, linkName)
}

// Readlink implements the same method as documented on sys.FS
func (g *GuestFS) Readlink(p string) (string, experimentalsys.Errno) {
	if errno := g.checkExisting(p, false); errno != 0 {
		return "", errno
	}
	return g.inner.Readlink(p)
}

// Utimens implements the same method as documented on sys.FS
func (g *GuestFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	if errno := g.checkExisting(p, true); errno != 0 {
		return errno
	}
	return g.inner.Utimens(p, atim, mtim)
}

// guestDir is an open directory whose listing omits hidden entries.
type guestDir struct {
	experimentalsys.File
	g  *GuestFS
	id fileID
}

// Readdir implements the same method as documented on sys.File. wazero
// takes fewer entries than asked for as the end of the directory, so
// entries that are filtered out are replaced by reading further.
func (d *guestDir) Readdir(n int) (dirents []experimentalsys.Dirent, errno experimentalsys.Errno) {
	if n <= 0 {
		dirents, errno = d.File.Readdir(n)
		return d.filter(dirents), errno
	}
	for {
		want := n - len(dirents)
		got, errno := d.File.Readdir(want)
		if errno != 0 {
			return dirents, errno
		}
		count := len(got)
		if dirents == nil {
			dirents = d.filter(got)
		} else {
			dirents = append(dirents, d.filter(got)...)
		}
		if count < want || len(dirents) == n {
			return dirents, 0
		}
	}
}

// filter removes hidden entries from dirents, in place.
func (d *guestDir) filter(dirents []experimentalsys.Dirent) []experimentalsys.Dirent {
	kept := dirents[:0]
	for _, e := range dirents {
		if _, ok := d.g.ids[fileID{d.id.dev, e.Ino}]; ok && e.Ino != 0 {
			continue
		}
		if _, ok := d.g.names[dirEntry{d.id, e.Name}]; ok {
			continue
		}
		kept = append(kept, e)
	}
	return kept
}
