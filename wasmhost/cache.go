package wasmhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ManifestName is the file CompileToCache writes in a cache directory: the
// SHA-256 of each of wazero's entries, in sha256sum(1) format, so that
// `sha256sum -c nebula-cache.sha256` checks a directory by hand.
const ManifestName = "nebula-cache.sha256"

// CompileToCache compiles wasm to native code into the cache directory dir,
// creating it if needed, for a Host configured WithCacheDir(dir) (possibly
// read-only, possibly in another process) to load without compiling. It
// checks wasm as Compile does with cfg (nil means NewConfig(); its cache
// directory is ignored), and compiling validates it fully, so a caller that
// compiles at task Create need not call Check as well.
//
// It reports whether dir already held a verified entry for wasm (hit) and
// how long it took. dir should hold one module's cache and nothing else: an
// entry that fails verification is removed and compiled again. Concurrent
// calls for the same dir, from any process, are serialised with flock(2).
//
// Entries are native code that the host loads and runs: dir must be
// writable by the shim only (see doc.go).
func CompileToCache(ctx context.Context, wasm []byte, dir string, cfg Config) (hit bool, dur time.Duration, err error) {
	start := time.Now()
	if _, err = preflight(wasm, toConfig(cfg)); err != nil {
		return false, time.Since(start), err
	}
	if err = os.MkdirAll(dir, 0o700); err != nil {
		return false, time.Since(start), err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return false, time.Since(start), err
	}
	defer unlock()

	verified, _ := verifyCache(dir)
	if !verified {
		if err = clearDir(dir); err != nil {
			return false, time.Since(start), err
		}
	}
	before, err := listEntries(dir)
	if err != nil {
		return false, time.Since(start), err
	}
	if verified && hasEntryFor(before, wazeroCacheSubdir()) {
		// Verified bytes of this wazero's entry: loading them here as well
		// would only repeat, outside the container, what the host does.
		return true, time.Since(start), nil
	}
	r, cc, _, err := compileIn(ctx, wasm, dir)
	if err != nil && verified {
		// The entry was intact but wazero refused it: start afresh.
		verified = false
		if err = clearDir(dir); err == nil {
			r, cc, _, err = compileIn(ctx, wasm, dir)
		}
	}
	if err != nil {
		return false, time.Since(start), fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	r.Close(ctx)
	cc.Close(ctx)
	after, err := listEntries(dir)
	if err != nil {
		return false, time.Since(start), err
	}
	hit = verified && len(after) == len(before)
	if !hit {
		err = writeManifest(dir, after)
	}
	return hit, time.Since(start), err
}

// lockDir takes an exclusive flock(2) on the directory itself.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// clearDir removes everything in dir, the manifest first so that a crash
// midway leaves a directory that does not verify.
func clearDir(dir string) error {
	if err := os.Remove(filepath.Join(dir, ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err = os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// listEntries returns the slash-separated paths, relative to dir, of the
// cache entries below it: every regular file except the manifest and
// wazero's temporary files.
func listEntries(dir string) ([]string, error) {
	var ret []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".tmp") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); rel != ManifestName {
			ret = append(ret, rel)
		}
		return nil
	})
	return ret, err
}

// writeManifest records the SHA-256 of each entry, atomically.
func writeManifest(dir string, entries []string) error {
	var b bytes.Buffer
	for _, e := range entries {
		sum, err := hashFile(filepath.Join(dir, filepath.FromSlash(e)))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, e)
	}
	f, err := os.CreateTemp(dir, ManifestName+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	if _, err = f.Write(b.Bytes()); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, ManifestName))
	}
	return err
}

// verifyCache reports whether dir holds a manifest whose entries all exist
// with the recorded SHA-256, and no other entry, and if not why. wazero checks only a CRC of
// the native code it loads: a corrupt header or function offset table is
// loaded as is (see doc.go), hence a checksum of whole files.
func verifyCache(dir string) (ok bool, detail string) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, "no entry"
	} else if err != nil {
		return false, "unreadable manifest: " + err.Error()
	}
	defer f.Close()
	listed := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		sum, name, found := strings.Cut(s.Text(), "  ")
		if !found || !filepath.IsLocal(name) {
			return false, fmt.Sprintf("corrupt manifest line %q", s.Text())
		}
		got, err := hashFile(filepath.Join(dir, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			return false, "missing entry " + name
		} else if err != nil {
			return false, "unreadable entry: " + err.Error()
		} else if got != sum {
			return false, "corrupt entry " + name + " (SHA-256 mismatch)"
		}
		listed[name] = true
	}
	if err := s.Err(); err != nil {
		return false, "unreadable manifest: " + err.Error()
	}
	if len(listed) == 0 {
		return false, "empty manifest"
	}
	// wazero must not find an entry that was not verified.
	entries, err := listEntries(dir)
	if err != nil {
		return false, "unreadable directory: " + err.Error()
	}
	for _, e := range entries {
		if !listed[e] {
			return false, "unverified entry " + e
		}
	}
	return true, "verified"
}

func hashFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err = io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// wazeroCacheSubdir is the directory wazero's file cache keeps its entries
// in, below the cache directory: "wazero-<version>-<arch>-<os>", the version
// found exactly as wazero's internal/version finds it (the required wazero
// module's version, else the main module's, else "dev" — test binaries).
// Should the two ever disagree, the fast path is merely never taken.
var wazeroCacheSubdir = sync.OnceValue(func() string {
	missing := func(v string) bool { return v == "" || v == "(devel)" }
	v := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if strings.Contains(d.Path, "github.com/tetratelabs/wazero") {
				v = d.Version
			}
		}
		if missing(v) {
			v = info.Main.Version
		}
	}
	if missing(v) {
		v = "dev"
	}
	return "wazero-" + v + "-" + runtime.GOARCH + "-" + runtime.GOOS
})

// hasEntryFor reports whether entries holds a file in subdir.
func hasEntryFor(entries []string, subdir string) bool {
	for _, e := range entries {
		if strings.HasPrefix(e, subdir+"/") {
			return true
		}
	}
	return false
}
