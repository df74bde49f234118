package image

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// tarDir writes the OCI layout in dir to out as a tar. Entries come in
// lexical order (fs.WalkDir's), with fixed owners, modes and times, so the
// archive's bytes depend only on the layout's contents.
func tarDir(dir string, out io.Writer, mtime time.Time) error {
	tw := tar.NewWriter(out)
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		h := &tar.Header{Name: p, ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, p+"/", 0o755
			return tw.WriteHeader(h)
		case d.Type().IsRegular():
			f, err := os.Open(filepath.Join(dir, filepath.FromSlash(p)))
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, fi.Size()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			return err
		default:
			return &fs.PathError{Op: "tar", Path: p, Err: fs.ErrInvalid}
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
