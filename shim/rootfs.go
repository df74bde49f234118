package shim

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
)

// rootfsFiles reads files of a task's root filesystem before runc has
// mounted it, straight from the snapshot's layers, so that Create can look
// at the entrypoint without mounting anything.
//
// # Notes
//
//   - Each layer is opened with openat2(RESOLVE_IN_ROOT): a symlink in the
//     image resolves inside that layer and can never reach a host file.
//   - overlay: the upper dir, then each lower dir in order; a whiteout of
//     the path itself hides lower layers. Whiteouts or opaque markers on
//     parent directories are not considered, nor symlinks that cross
//     layers; the worst outcome is a module that is then not found, which
//     fails Create with a clear error.
type rootfsFiles struct {
	layers []string
}

// newRootfsFiles returns a reader for the rootfs that mounts (from the
// Create request) or the spec's root path (ctr run --rootfs DIR) describe.
func newRootfsFiles(mounts []*types.Mount, rootPath, bundle string) (*rootfsFiles, error) {
	if len(mounts) == 0 {
		if rootPath == "" {
			return nil, errors.New("spec has no root path")
		}
		if !filepath.IsAbs(rootPath) {
			rootPath = filepath.Join(bundle, rootPath)
		}
		return &rootfsFiles{layers: []string{rootPath}}, nil
	}
	if len(mounts) > 1 {
		return nil, fmt.Errorf("%d rootfs mounts: only a single overlay or bind mount can be read", len(mounts))
	}
	m := mounts[0]
	switch m.Type {
	case "bind", "rbind":
		return &rootfsFiles{layers: []string{m.Source}}, nil
	case "overlay":
		var upper string
		var lower []string
		for _, o := range m.Options {
			switch k, v, _ := strings.Cut(o, "="); k {
			case "upperdir":
				upper = v
			case "lowerdir":
				lower = strings.Split(v, ":")
			}
		}
		layers := lower
		if upper != "" {
			layers = append([]string{upper}, lower...)
		}
		if len(layers) == 0 {
			return nil, errors.New("overlay rootfs mount without layers")
		}
		return &rootfsFiles{layers: layers}, nil
	}
	return nil, fmt.Errorf("rootfs mount of type %q cannot be read", m.Type)
}

// open opens the regular file at the absolute container path p.
func (r *rootfsFiles) open(p string) (*os.File, error) {
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	for _, layer := range r.layers {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(layer, rel), &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			break // an overlay whiteout: deleted in this layer
		}
		f, err := openInRoot(layer, rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return nil, errNotRegular
		}
		return f, nil
	}
	return nil, fmt.Errorf("no such file in the container's root filesystem: %w", fs.ErrNotExist)
}

// header returns up to the first 8 bytes of the file at p.
func (r *rootfsFiles) header(p string) ([]byte, error) {
	f, err := r.open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 8)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

// readFile reads the file at p, refusing files over max bytes.
//
// # Notes
//
//   - The buffer is sized from the file's size, as os.ReadFile does, and
//     read into in one go: growing it as io.ReadAll does copied a 3 MB
//     module about 20 times and set off several collections in the shim,
//     which runs with GOGC=40 (containerd's pkg/shim): 6 to 16 ms of each
//     wasm task's Create.
func (r *rootfsFiles) readFile(p string, max int64) ([]byte, error) {
	f, err := r.open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	// One byte more than the size tells a file that grew since Stat.
	b := make([]byte, 0, fi.Size()+1)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			return nil, fmt.Errorf("larger than %d bytes", max)
		}
		if errors.Is(err, io.EOF) {
			return b, nil
		} else if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // it grew: let append choose the room
		}
	}
}

// errNotRegular refuses a path that is not a regular file.
var errNotRegular = errors.New("not a regular file")

// openInRoot opens the regular file rel under root for reading. It looks
// at what rel is before opening it: the layers are host directories, and
// opening a device node there would open the host's device (see
// TestRootfsDevicesNotOpened), so rel is resolved to an O_PATH handle,
// which opens nothing, and only a regular file is reopened through it.
func openInRoot(root, rel string) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	name := filepath.Join(root, rel)
	path, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(path)
	var st unix.Stat_t
	if err := unix.Fstat(path, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errNotRegular
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(path), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// lazyRootfs opens the task's root file system on first use: most tasks
// are classified without reading a file.
type lazyRootfs struct {
	rootfs   []*types.Mount
	rootPath string
	bundle   string
	files    *rootfsFiles
}

func (l *lazyRootfs) open() (*rootfsFiles, error) {
	if l.files == nil {
		f, err := newRootfsFiles(l.rootfs, l.rootPath, l.bundle)
		if err != nil {
			return nil, err
		}
		l.files = f
	}
	return l.files, nil
}

// header reads the first bytes of the file at p, for oci.Classify.
func (l *lazyRootfs) header(p string) ([]byte, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	return f.header(p)
}
