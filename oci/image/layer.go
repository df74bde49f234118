package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one file or directory of the layer, keyed by its absolute path.
type entry struct {
	dir  bool
	mode int64 // permission bits plus setuid/setgid/sticky, as tar stores them
	data []byte
	what string // for error messages: where the entry came from
}

// tree is the layer's file system before it is written as a tar.
type tree map[string]*entry

// addDir adds dir and its missing parents with mode 0755. An existing
// directory is kept as it is (so /tmp keeps 1777).
func (t tree) addDir(dir, what string) error {
	for p := dir; p != "/"; p = path.Dir(p) {
		if e, ok := t[p]; ok {
			if !e.dir {
				return fmt.Errorf("%s is already a file (%s)", p, e.what)
			}
			continue
		}
		t[p] = &entry{dir: true, mode: 0o755, what: what}
	}
	return nil
}

// addFile adds a regular file at p, creating its parents.
func (t tree) addFile(p string, mode int64, data []byte, what string) error {
	if e, ok := t[p]; ok {
		return fmt.Errorf("%s is already taken by %s", p, e.what)
	}
	if err := t.addDir(path.Dir(p), what); err != nil {
		return err
	}
	t[p] = &entry{mode: mode, data: data, what: what}
	return nil
}

// newTree lays out the layer: /tmp, the input at its path, and the added
// files.
func newTree(in input, files []addedFile) (tree, error) {
	t := tree{"/tmp": {dir: true, mode: 0o1777, what: "the image's /tmp"}}
	if err := t.addFile(in.path, 0o755, in.data, "the entrypoint"); err != nil {
		return nil, fmt.Errorf("the entrypoint %s: %w", in.path, err)
	}
	for _, f := range files {
		if err := t.addHostFile(f); err != nil {
			return nil, &ConfigError{"WithFile", f.src + ":" + f.dst, err}
		}
	}
	return t, nil
}

// addHostFile adds the host file f.src at f.dst.
func (t tree) addHostFile(f addedFile) error {
	dst, err := addDest(f)
	if err != nil {
		return err
	}
	fi, err := os.Stat(f.src)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%v)", f.src, fi.Mode().Type())
	}
	data, err := os.ReadFile(f.src)
	if err != nil {
		return err
	}
	return t.addFile(dst, tarMode(fi.Mode()), data, "the added file "+f.src)
}

// addDest resolves the destination of an added file.
func addDest(f addedFile) (string, error) {
	if f.src == "" {
		return "", fmt.Errorf("empty source path")
	}
	if !strings.HasPrefix(f.dst, "/") {
		return "", fmt.Errorf("destination %q is not an absolute path", f.dst)
	}
	dst := f.dst
	if strings.HasSuffix(dst, "/") {
		dst += path.Base(f.src)
	}
	dst = path.Clean(dst)
	if dst == "/" {
		return "", fmt.Errorf("destination %q names the root directory", f.dst)
	}
	return dst, nil
}

func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// tarball writes the tree as an uncompressed tar: entries sorted by path,
// owned by root, every time set to mtime, so the bytes depend only on the
// contents.
func (t tree) tarball(mtime time.Time) ([]byte, error) {
	paths := make([]string, 0, len(t))
	for p := range t {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := t[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    e.mode,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newLayer wraps an uncompressed layer tar as a gzip-compressed OCI layer.
func newLayer(tarData []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarData)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
