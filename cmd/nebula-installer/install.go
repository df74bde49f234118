package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// SnippetName is the drop-in's name in the node's ConfigDir.
const SnippetName = "nebula.toml"

// importMarker precedes the imports line the installer adds to
// containerd's config, so that uninstall removes exactly that line.
const importMarker = "# added by nebula-installer (removed by `nebula-installer uninstall`)"

// Installer installs Nebula's binaries (the shim, and nebula-host, which
// the shim expects next to itself) and containerd's CRI config drop-in on a
// node whose root file system is mounted at HostRoot. Paths other than
// the sources are the node's (absolute, without HostRoot).
type Installer struct {
	HostRoot string
	// BinDir receives the binaries; it must be on containerd's PATH.
	BinDir string
	// ConfigDir receives the drop-in nebula.toml.
	ConfigDir string
	// ContainerdConfig is containerd's main config file; it must import
	// ConfigDir/*.toml, and does after Install.
	ContainerdConfig string
	// BinSource is the directory of binaries to install, SnippetSource the
	// drop-in (both in the installer's image).
	BinSource, SnippetSource string
	// Restart restarts containerd and returns once it serves again, or
	// fails. Called only when containerd's configuration changed.
	Restart func(context.Context) error
	// Log receives one line per action.
	Log io.Writer
}

// Changes says what Install or Uninstall changed on the node.
type Changes struct {
	// Binaries: a binary was written or removed.
	Binaries, Snippet, Imports bool
	// Restarted: containerd was restarted (its configuration changed).
	Restarted bool
}

func (in *Installer) host(p string) string { return filepath.Join(in.HostRoot, p) }

func (in *Installer) snippetPath() string { return in.host(filepath.Join(in.ConfigDir, SnippetName)) }

// binaries lists the names in BinSource, shims last: a shim expects the
// rest (nebula-host) in place when containerd first runs it.
func (in *Installer) binaries() ([]string, error) {
	entries, err := os.ReadDir(in.BinSource)
	if err != nil {
		return nil, err
	}
	var names, shims []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(e.Name(), "containerd-shim-") {
			shims = append(shims, e.Name())
		} else {
			names = append(names, e.Name())
		}
	}
	if len(shims) == 0 {
		return nil, fmt.Errorf("%s holds no containerd-shim-* binary", in.BinSource)
	}
	return append(names, shims...), nil
}

// targets are the node's paths Install writes: the binaries, the drop-in
// and containerd's config.
func (in *Installer) targets(names []string) []string {
	var paths []string
	for _, n := range names {
		paths = append(paths, in.host(filepath.Join(in.BinDir, n)))
	}
	return append(paths, in.snippetPath(), in.host(in.ContainerdConfig))
}

// importGlob is what containerd's config imports: every drop-in of
// ConfigDir. A glob rather than the file, because containerd refuses to
// start when a plain import is missing, and a glob matching nothing is
// fine: uninstall can remove the drop-in first.
func (in *Installer) importGlob() string { return filepath.Join(in.ConfigDir, "*.toml") }

func (in *Installer) logf(format string, args ...any) {
	if in.Log != nil {
		fmt.Fprintf(in.Log, format+"\n", args...)
	}
}

// Install copies the binaries and the drop-in onto the node, makes
// containerd's config import the drop-in, and restarts containerd if its
// configuration changed. It is idempotent: a second run changes nothing
// and does not restart containerd. If the restart fails, the previous
// files are put back and containerd restarted again.
func (in *Installer) Install(ctx context.Context) (Changes, error) {
	var ch Changes
	names, err := in.binaries()
	if err != nil {
		return ch, err
	}
	snippet, err := os.ReadFile(in.SnippetSource)
	if err != nil {
		return ch, err
	}
	if err := checkSnippet(snippet); err != nil {
		return ch, fmt.Errorf("%s: %w", in.SnippetSource, err)
	}
	saved, err := snapshot(in.targets(names)...)
	if err != nil {
		return ch, err
	}
	fail := func(err error) (Changes, error) {
		if rerr := restore(saved); rerr != nil {
			return ch, fmt.Errorf("%w; restoring the previous files: %v", err, rerr)
		}
		return ch, err
	}
	for _, n := range names {
		dst := in.host(filepath.Join(in.BinDir, n))
		written, err := copyIfChanged(filepath.Join(in.BinSource, n), dst, 0o755)
		if err != nil {
			return fail(err)
		}
		ch.Binaries = ch.Binaries || written
		in.logf("%s: %s", dst, changed(written))
	}
	if ch.Snippet, err = writeIfChanged(in.snippetPath(), snippet, 0o644); err != nil {
		return fail(err)
	}
	in.logf("%s: %s", in.snippetPath(), changed(ch.Snippet))
	if ch.Imports, err = in.ensureImport(); err != nil {
		return fail(err)
	}
	in.logf("%s: %s", in.host(in.ContainerdConfig), changed(ch.Imports))
	if !ch.Snippet && !ch.Imports {
		in.logf("containerd's configuration is unchanged: not restarting it")
		return ch, nil
	}
	return in.restart(ctx, ch, saved)
}

// Uninstall removes the drop-in, the import Install added and the binaries,
// and restarts containerd if its configuration changed. Pods using the
// runtime class should be gone first: containerd runs the shim binary to
// clean up after a task.
func (in *Installer) Uninstall(ctx context.Context) (Changes, error) {
	var ch Changes
	names, err := in.binaries()
	if err != nil {
		return ch, err
	}
	saved, err := snapshot(in.targets(names)...)
	if err != nil {
		return ch, err
	}
	if ch.Snippet, err = removeIfExists(in.snippetPath()); err != nil {
		return ch, err
	}
	in.logf("%s: %s", in.snippetPath(), removed(ch.Snippet))
	if ch.Imports, err = in.removeImport(); err != nil {
		restore(saved)
		return ch, err
	}
	in.logf("%s: %s", in.host(in.ContainerdConfig), changed(ch.Imports))
	for i := len(names) - 1; i >= 0; i-- { // shims first
		dst := in.host(filepath.Join(in.BinDir, names[i]))
		gone, err := removeIfExists(dst)
		if err != nil {
			restore(saved)
			return ch, err
		}
		ch.Binaries = ch.Binaries || gone
		in.logf("%s: %s", dst, removed(gone))
	}
	if !ch.Snippet && !ch.Imports {
		return ch, nil
	}
	return in.restart(ctx, ch, saved)
}

// restart restarts containerd; if that fails, it restores saved and
// restarts containerd once more with the previous configuration.
func (in *Installer) restart(ctx context.Context, ch Changes, saved []savedFile) (Changes, error) {
	if in.Restart == nil {
		in.logf("containerd's configuration changed: restart containerd to apply it")
		return ch, nil
	}
	in.logf("containerd's configuration changed: restarting containerd")
	err := in.Restart(ctx)
	if err == nil {
		ch.Restarted = true
		in.logf("containerd restarted")
		return ch, nil
	}
	err = fmt.Errorf("restarting containerd: %w", err)
	if rerr := restore(saved); rerr != nil {
		return ch, fmt.Errorf("%w; restoring the previous files: %v", err, rerr)
	}
	in.logf("%v: previous files restored, restarting containerd again", err)
	if rerr := in.Restart(ctx); rerr != nil {
		return ch, fmt.Errorf("%w; restarting with the previous files: %v", err, rerr)
	}
	return ch, err
}

// Check reports whether the node has this installer's binaries and
// drop-in, and containerd's config imports the drop-in.
func (in *Installer) Check() error {
	names, err := in.binaries()
	if err != nil {
		return err
	}
	files := []struct{ src, dst string }{{in.SnippetSource, in.snippetPath()}}
	for _, n := range names {
		files = append(files, struct{ src, dst string }{filepath.Join(in.BinSource, n), in.host(filepath.Join(in.BinDir, n))})
	}
	for _, f := range files {
		same, err := sameContent(f.src, f.dst)
		if err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("%s differs from %s", f.dst, f.src)
		}
	}
	data, err := os.ReadFile(in.host(in.ContainerdConfig))
	if err != nil {
		return err
	}
	ok, _, err := in.imported(data)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s does not import %s", in.host(in.ContainerdConfig), in.importGlob())
	}
	return nil
}

// checkSnippet checks that the drop-in is a containerd config of
// version 3 (containerd 2.x) that configures something.
func checkSnippet(b []byte) error {
	var cfg struct {
		Version int            `toml:"version"`
		Plugins map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(b, &cfg); err != nil {
		return err
	}
	if cfg.Version != 3 || len(cfg.Plugins) == 0 {
		return fmt.Errorf("want a containerd config of version 3 with plugins, got version %d, %d plugins", cfg.Version, len(cfg.Plugins))
	}
	return nil
}

// imported reports whether containerd's config data imports the drop-in;
// has says whether it has an imports key at all.
func (in *Installer) imported(data []byte) (ok, has bool, err error) {
	var cfg map[string]any
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return false, false, fmt.Errorf("%s: %w", in.host(in.ContainerdConfig), err)
	}
	raw, has := cfg["imports"]
	if !has {
		return false, false, nil
	}
	list, _ := raw.([]any)
	target := filepath.Join(in.ConfigDir, SnippetName)
	for _, v := range list {
		p, _ := v.(string)
		if p == "" {
			continue
		}
		// As containerd resolves them: relative to the config's directory.
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(in.ContainerdConfig), p)
		}
		p = filepath.Clean(p)
		if p == target {
			return true, true, nil
		}
		if strings.Contains(p, "*") {
			if m, _ := filepath.Match(p, target); m {
				return true, true, nil
			}
		}
	}
	return false, true, nil
}

// createdConfig is containerd's config as Install writes it when the node
// has none (containerd then runs on its defaults, which this keeps).
func (in *Installer) createdConfig() []byte {
	return []byte(fmt.Sprintf("version = 3\n%s\nimports = [%q]\n", importMarker, in.importGlob()))
}

// ensureImport makes containerd's config import the drop-in: it creates
// the config if there is none, or adds an imports line after the version
// line (top-level keys come before any table). A config that has imports
// which do not cover the drop-in is left alone: rewriting a list someone
// else maintains is for them to do.
func (in *Installer) ensureImport() (bool, error) {
	path := in.host(in.ContainerdConfig)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, writeFile(path, in.createdConfig(), 0o644)
	}
	if err != nil {
		return false, err
	}
	ok, has, err := in.imported(data)
	if err != nil || ok {
		return false, err
	}
	if has {
		return false, fmt.Errorf("%s has an imports list without %s: add %q to it and run the installer again",
			path, filepath.Join(in.ConfigDir, SnippetName), in.importGlob())
	}
	lines := strings.SplitAfter(string(data), "\n")
	at := 0
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			break
		}
		if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == "version" {
			at = i + 1
			break
		}
	}
	if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
		lines[at-1] += "\n"
	}
	add := fmt.Sprintf("%s\nimports = [%q]\n", importMarker, in.importGlob())
	out := strings.Join(lines[:at], "") + add + strings.Join(lines[at:], "")
	if ok, _, err := in.imported([]byte(out)); err != nil || !ok {
		return false, fmt.Errorf("adding the import to %s did not work (%v); add %q to its imports yourself", path, err, in.importGlob())
	}
	return true, writeFile(path, []byte(out), modeOf(path, 0o644))
}

// removeImport undoes ensureImport: it removes the config it created, or
// the marked imports line it added.
func (in *Installer) removeImport() (bool, error) {
	path := in.host(in.ContainerdConfig)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if bytes.Equal(data, in.createdConfig()) {
		return true, os.Remove(path)
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == importMarker && i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "imports") {
			out := strings.Join(lines[:i], "") + strings.Join(lines[i+2:], "")
			return true, writeFile(path, []byte(out), modeOf(path, 0o644))
		}
	}
	return false, nil
}

// writeIfChanged writes data to path unless it holds data already.
func writeIfChanged(path string, data []byte, mode fs.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	}
	return true, writeFile(path, data, mode)
}

// copyIfChanged copies src to dst unless dst has its content and mode
// already. Binaries are compared and copied in chunks: the installer's
// memory stays small whatever their size.
func copyIfChanged(src, dst string, mode fs.FileMode) (bool, error) {
	if same, err := sameContent(src, dst); err == nil && same {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	return true, writeFrom(dst, in, mode)
}

// sameContent reports whether files a and b have the same bytes; a
// missing b is a difference, not an error.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ia, err := fa.Stat()
	if err != nil {
		return false, err
	}
	ib, err := fb.Stat()
	if err != nil {
		return false, err
	}
	if ia.Size() != ib.Size() {
		return false, nil
	}
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

// writeFile replaces path atomically: a temporary file in the same
// directory, synced, then renamed over path. A running shim keeps its old
// binary; the next one starts the new.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	return writeFrom(path, bytes.NewReader(data), mode)
}

func writeFrom(path string, r io.Reader, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".nebula-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func removeIfExists(path string) (bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func modeOf(path string, def fs.FileMode) fs.FileMode {
	if fi, err := os.Stat(path); err == nil {
		return fi.Mode().Perm()
	}
	return def
}

type savedFile struct {
	path   string
	data   []byte
	mode   fs.FileMode
	exists bool
}

func snapshot(paths ...string) ([]savedFile, error) {
	var s []savedFile
	for _, p := range paths {
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			s = append(s, savedFile{path: p})
		case err != nil:
			return nil, err
		default:
			s = append(s, savedFile{path: p, data: data, mode: modeOf(p, 0o644), exists: true})
		}
	}
	return s, nil
}

func restore(saved []savedFile) error {
	var errs []error
	for _, f := range saved {
		if f.exists {
			if old, err := os.ReadFile(f.path); err != nil || !bytes.Equal(old, f.data) {
				errs = append(errs, writeFile(f.path, f.data, f.mode))
			}
		} else if _, err := removeIfExists(f.path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func changed(b bool) string {
	if b {
		return "written"
	}
	return "up to date"
}

func removed(b bool) string {
	if b {
		return "removed"
	}
	return "absent"
}
