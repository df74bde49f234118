package wasmhost

import (
	"io/fs"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"golang.org/x/sys/unix"
)

// guestFile is a file or directory GuestFS opened: wazero's own file,
// opened through the checked O_PATH descriptor handle (see OpenFile), which
// stays open as long as the file, so that wazero's reopening by name (to
// rewind a directory, to change O_APPEND) reaches the same object.
// Directory listings are filtered as GuestFS documents.
type guestFile struct {
	experimentalsys.File
	g      *GuestFS
	handle int
	id     fileID

	guard *fdGuard // nil unless opened through a guarded GuestFS
	event uint64   // guard's event when opened
	// counted: the file counts towards g's limit (LimitOpenFiles).
	counted bool
}

// Readdir implements the same method as documented on sys.File. It omits
// hidden objects, the mount points of file systems the guest may not
// enter, and every device, FIFO and socket the guest may not open.
// wazero takes fewer entries than asked for as the end of the directory,
// so entries that are filtered out are replaced by reading further.
func (f *guestFile) Readdir(n int) (dirents []experimentalsys.Dirent, errno experimentalsys.Errno) {
	f.touch()
	if n <= 0 {
		dirents, errno = f.File.Readdir(n)
		return f.filter(dirents), errno
	}
	for {
		want := n - len(dirents)
		got, errno := f.File.Readdir(want)
		if errno != 0 {
			return dirents, errno
		}
		count := len(got)
		if dirents == nil {
			dirents = f.filter(got)
		} else {
			dirents = append(dirents, f.filter(got)...)
		}
		if count < want || len(dirents) == n {
			return dirents, 0
		}
	}
}

// filter removes what the guest may not see from dirents, in place.
func (f *guestFile) filter(dirents []experimentalsys.Dirent) []experimentalsys.Dirent {
	kept := dirents[:0]
	for _, e := range dirents {
		if f.visible(e) {
			kept = append(kept, e)
		}
	}
	return kept
}

func (f *guestFile) visible(e experimentalsys.Dirent) bool {
	g := f.g
	if _, ok := g.names[dirEntry{f.id, e.Name}]; ok {
		return false
	}
	if _, ok := g.ids[fileID{f.id.dev, e.Ino}]; ok && e.Ino != 0 {
		return false
	}
	switch e.Type & (fs.ModeDevice | fs.ModeCharDevice | fs.ModeNamedPipe | fs.ModeSocket | fs.ModeIrregular) {
	case 0:
		return true
	case fs.ModeDevice | fs.ModeCharDevice:
		var st unix.Stat_t
		return unix.Fstatat(f.handle, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			st.Mode&unix.S_IFMT == unix.S_IFCHR && harmlessDevice(unix.Major(st.Rdev), unix.Minor(st.Rdev))
	default:
		return false
	}
}

// Close implements the same method as documented on sys.File
// A failed close leaves the file in the guest's descriptor table: the
// guard counts it as a change.
func (f *guestFile) Close() experimentalsys.Errno {
	errno := f.File.Close()
	if g := f.guard; g != nil {
		if f.event == g.event && errno == 0 {
			g.open--
		} else {
			g.touched = true
		}
		f.guard = nil
	}
	if f.handle >= 0 {
		unix.Close(f.handle)
		f.handle = -1
	}
	if f.counted {
		f.counted = false
		f.g.files.n.Add(-1)
	}
	return errno
}

// SetAppend implements the same method as documented on sys.File.
func (f *guestFile) SetAppend(enable bool) experimentalsys.Errno {
	f.touch()
	return f.File.SetAppend(enable)
}

// touch tells the guard, if any, that the guest changed the state of a
// file opened before the current event (a directory's position, a flag).
func (f *guestFile) touch() {
	if g := f.guard; g != nil && f.event != g.event {
		g.touched = true
	}
}
