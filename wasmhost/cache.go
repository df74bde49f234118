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
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ManifestName is the file CompileToCache writes in a cache directory: the
// SHA-256 of each of wazero's entries, in sha256sum(1) format, so that
// `sha256sum -c nebula-cache.sha256` checks a directory by hand.
const ManifestName = "nebula-cache.sha256"

// ErrCache is wrapped by CompileToCache when the cache directory, not the
// module, is the problem: a full file system, an I/O error, permissions.
// The module compiled (in memory) and is valid; a caller may run it without
// the cache.
var ErrCache = errors.New("module cache unusable")

// CompileToCache compiles wasm to native code into the cache directory dir,
// creating it if needed, for a Host configured WithCacheDir(dir) (possibly
// read-only, possibly in another process) to load without compiling. It
// checks wasm as Compile does with cfg (its cache
// directory is ignored), and compiling validates it fully, so a caller that
// compiles at task Create need not call Check as well.
//
// It reports whether dir already held a verified entry for wasm (hit) and
// how long it took. dir should hold one module's cache and nothing else: an
// entry that fails verification is removed and compiled again. Concurrent
// calls for the same dir, from any process, are serialised with flock(2).
//
// Errors wrap ErrCache when the directory failed (wasm was then compiled in
// memory and is valid), one of Check's errors when the module is at fault,
// or the context's error.
//
// Besides wazero's entry, dir gets the module as the host rewrites it before
// compiling, so that a Host loading the entry need not rewrite it again.
//
// Entries are native code that the host loads and runs: dir must be
// writable by the shim only (see docs/rationale.md).
func CompileToCache(ctx context.Context, wasm []byte, dir string, cfg Config) (hit bool, dur time.Duration, err error) {
	start := time.Now()
	info, err := preflight(wasm, cfg)
	if err != nil {
		return false, time.Since(start), err
	}
	input := wasm // what Compile finalizes
	if info.isReactor() {
		input = planReactor(wasm, info).module()
	}
	final, instrumented := finalize(input)
	hit, err = compileToCache(ctx, sha256.Sum256(wasm), final, instrumented, dir)
	if err != nil && errors.Is(err, ErrCache) && ctx.Err() == nil {
		// Tell a broken directory from a broken module: compile in memory.
		r, _, _, cerr := compileFinal(ctx, final, instrumented, "")
		if cerr != nil {
			err = fmt.Errorf("%w: %v", ErrInvalid, cerr)
		} else {
			r.Close(ctx)
		}
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("compiling: %w", context.Cause(ctx))
	}
	return hit, time.Since(start), err
}

// compileToCache fills dir with wazero's entry for final and the prepared
// file recording that the module whose SHA-256 is sum finalizes to final,
// and the manifest of both.
func compileToCache(ctx context.Context, sum [sha256.Size]byte, final []byte, instrumented bool, dir string) (hit bool, err error) {
	cacheErr := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrCache, dir, err) }
	if err = os.MkdirAll(dir, 0o700); err != nil {
		return false, cacheErr(err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return false, cacheErr(err)
	}
	defer unlock()

	entry := lookupEntry(dir, sum, false)
	verified := entry.verified
	if !verified {
		if err = clearDir(dir); err != nil {
			return false, cacheErr(err)
		}
	}
	before, err := listEntries(dir)
	if err != nil {
		return false, cacheErr(err)
	}
	prepared := entry.vouches()
	compiled := verified && hasEntryFor(before, wazeroCacheSubdir())
	if compiled && prepared {
		// Verified bytes of this wazero's entry: loading them here as well
		// would only repeat, outside the container, what the host does.
		return true, nil
	}
	after := before
	if !compiled {
		if verified, err = fillEntry(ctx, final, instrumented, dir, verified); err != nil {
			return false, cacheErr(err)
		}
		if after, err = listEntries(dir); err != nil {
			return false, cacheErr(err)
		}
	}
	hit = verified && len(after) == len(before)
	if hit && prepared {
		return true, nil
	}
	// An entry written before the prepared file existed, or by other code,
	// gets a current one.
	if err = writeRecords(dir, sum, final, instrumented); err != nil {
		clearDir(dir)
		return false, cacheErr(err)
	}
	return hit, nil
}

// fillEntry has wazero write its entry for final into dir; verified tells
// whether dir held an intact entry, which is cleared and written afresh if
// wazero refuses it. It returns whether dir's entry is still the verified
// one; on an error, dir is left empty.
func fillEntry(ctx context.Context, final []byte, instrumented bool, dir string, verified bool) (stillVerified bool, err error) {
	r, cc, _, err := compileFinal(ctx, final, instrumented, dir)
	if err != nil && verified {
		// The entry was intact but wazero refused it: start afresh.
		verified = false
		if err = clearDir(dir); err == nil {
			r, cc, _, err = compileFinal(ctx, final, instrumented, dir)
		}
	}
	if err != nil {
		// Either the module or the directory: CompileToCache tells which.
		clearDir(dir)
		return false, err
	}
	r.Close(ctx)
	cc.Close(ctx)
	return verified, nil
}

// writeRecords writes dir's prepared file for the module whose SHA-256 is
// sum and then the manifest of all of dir's entries.
func writeRecords(dir string, sum [sha256.Size]byte, final []byte, instrumented bool) error {
	if err := writePrepared(dir, sum, final, instrumented); err != nil {
		return err
	}
	after, err := listEntries(dir)
	if err != nil {
		return err
	}
	return writeManifest(dir, after)
}

// ClearCacheEntry empties dir, waiting for a CompileToCache in progress.
func ClearCacheEntry(dir string) error {
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	return clearDir(dir)
}

// HoldCacheEntry marks the entry in dir as in use until release is called
// (or the process exits): PruneCache leaves it alone. It takes a shared
// flock(2) on the entry's manifest, which works on a read-only mount; it
// does not conflict with CompileToCache, which locks the directory. An
// entry without a manifest is not worth holding: the error says so.
func HoldCacheEntry(dir string) (release func(), err error) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	if err = flock(f, syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// PruneResult is what PruneCache did.
type PruneResult struct {
	Removed []string // entry directories (or stray files) removed
	Kept    int64    // bytes left in the cache
}

// PruneCache bounds a cache root holding one entry directory per module
// (as the shim lays it out). It removes, oldest first by modification time
// (callers touch an entry each time they use it), entries until the
// entries' total size is at most max bytes (max <= 0: no bound), and in any
// case the leftovers of compiles that did not finish: entries with no
// manifest, and stray files. It never removes keep, an entry touched less
// than grace ago, one held by HoldCacheEntry (a running task), or one being
// compiled.
func PruneCache(root string, max int64, keep string, grace time.Duration) (PruneResult, error) {
	var res PruneResult
	dirents, err := os.ReadDir(root)
	if err != nil {
		return res, err
	}
	type entry struct {
		path     string
		size     int64
		used     time.Time
		complete bool
	}
	var entries []entry
	var errs []error
	now := time.Now()
	for _, d := range dirents {
		p := filepath.Join(root, d.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			if now.Sub(fi.ModTime()) > grace && os.Remove(p) == nil {
				res.Removed = append(res.Removed, p)
			}
			continue
		}
		e := entry{path: p, used: fi.ModTime(), size: dirSize(p)}
		_, err = os.Stat(filepath.Join(p, ManifestName))
		e.complete = err == nil
		entries = append(entries, e)
		res.Kept += e.size
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].used.Before(entries[j].used) })
	for _, e := range entries {
		if e.complete && (max <= 0 || res.Kept <= max) {
			continue
		}
		if e.path == filepath.Clean(keep) || now.Sub(e.used) < grace {
			continue
		}
		removed, err := removeIdleEntry(e.path)
		if err != nil {
			errs = append(errs, err)
		}
		if removed {
			res.Removed = append(res.Removed, e.path)
			res.Kept -= e.size
		}
	}
	return res, errors.Join(errs...)
}

// removeIdleEntry removes an entry directory unless it is being compiled
// (its directory is locked) or held (its manifest is locked).
func removeIdleEntry(dir string) (bool, error) {
	d, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	if flock(d, syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false, nil // being compiled
	}
	if m, err := os.Open(filepath.Join(dir, ManifestName)); err == nil {
		held := flock(m, syscall.LOCK_EX|syscall.LOCK_NB) != nil
		m.Close()
		if held {
			return false, nil
		}
	}
	// Remove the manifest first: a half-removed entry does not verify.
	if err := clearDir(dir); err != nil {
		return false, err
	}
	return true, os.Remove(dir)
}

// dirSize is the disk space the files below dir take.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				} else {
					n += fi.Size()
				}
			}
		}
		return nil
	})
	return n
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// lockDir takes an exclusive flock(2) on the directory itself.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err = flock(f, syscall.LOCK_EX); err != nil {
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
	return writeFileAtomic(dir, ManifestName, b.Bytes())
}

// writeFileAtomic writes data to dir/name through a temporary file that
// listEntries ignores, synced, then renamed.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, name+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	return err
}

// verifyCache reports whether dir holds a manifest whose entries all exist
// with the recorded SHA-256, and no other entry, and if not why. wazero checks only a CRC of
// the native code it loads: a corrupt header or function offset table is
// loaded as is (see docs/rationale.md), hence a checksum of whole files.
func verifyCache(dir string) (ok bool, detail string) {
	v := verifyEntry(dir, false)
	return v.ok, v.detail
}

// verified is what verifyEntry found.
type verified struct {
	ok      bool
	detail  string   // why not, or "verified"
	entries []string // listEntries(dir), when ok
	// prepared is the content of the prepared file, when the manifest
	// lists it: the very bytes whose SHA-256 was checked; only its first
	// preparedHeadSize bytes unless verifyEntry was asked for all.
	prepared []byte
}

// verifyEntry is verifyCache, which it returns with the entries it listed
// and the prepared file it read (all of it if whole), so that nothing is
// read twice.
func verifyEntry(dir string, whole bool) verified {
	fail := func(detail string) verified { return verified{detail: detail} }
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return fail("no entry")
	} else if err != nil {
		return fail("unreadable manifest: " + err.Error())
	}
	defer f.Close()
	type line struct {
		text, sum, name string
		ok              bool
		// what hashing the file found
		got     string
		content []byte
		err     error
	}
	var lines []*line
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := &line{text: s.Text()}
		l.sum, l.name, l.ok = strings.Cut(l.text, "  ")
		l.ok = l.ok && filepath.IsLocal(l.name)
		lines = append(lines, l)
	}
	if err := s.Err(); err != nil {
		return fail("unreadable manifest: " + err.Error())
	}
	// The entries are hashed at once, on up to GOMAXPROCS threads: wazero's
	// 12 MB and the prepared file's 3 MB for a Go module, 8 ms in a row.
	hash := func(l *line) {
		path := filepath.Join(dir, filepath.FromSlash(l.name))
		switch {
		case l.name == preparedName && whole:
			if l.content, l.err = os.ReadFile(path); l.err == nil {
				h := sha256.Sum256(l.content)
				l.got = hex.EncodeToString(h[:])
			}
		case l.name == preparedName:
			l.got, l.content, l.err = hashFileHead(path, preparedHeadSize)
		default:
			l.got, l.err = hashFile(path)
		}
	}
	next := make(chan *line)
	var wg sync.WaitGroup
	for range min(len(lines), runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for l := range next {
				hash(l)
			}
		})
	}
	for _, l := range lines {
		if l.ok {
			next <- l
		}
	}
	close(next)
	wg.Wait()

	var v verified
	listed := map[string]bool{}
	for _, l := range lines {
		switch {
		case !l.ok:
			return fail(fmt.Sprintf("corrupt manifest line %q", l.text))
		case errors.Is(l.err, fs.ErrNotExist):
			return fail("missing entry " + l.name)
		case l.err != nil:
			return fail("unreadable entry: " + l.err.Error())
		case l.got != l.sum:
			return fail("corrupt entry " + l.name + " (SHA-256 mismatch)")
		}
		if l.name == preparedName {
			v.prepared = l.content
		}
		listed[l.name] = true
	}
	if len(listed) == 0 {
		return fail("empty manifest")
	}
	// wazero must not find an entry that was not verified.
	if v.entries, err = listEntries(dir); err != nil {
		return fail("unreadable directory: " + err.Error())
	}
	for _, e := range v.entries {
		if !listed[e] {
			return fail("unverified entry " + e)
		}
	}
	v.ok, v.detail = true, "verified"
	return v
}

func hashFile(name string) (string, error) {
	sum, _, err := hashFileHead(name, 0)
	return sum, err
}

// hashFileHead is hashFile, which also returns the file's first n bytes
// (fewer if it is shorter), read in the same pass.
func hashFileHead(name string, n int) (sum string, head []byte, err error) {
	f, err := os.Open(name)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	head = make([]byte, n)
	k, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", nil, err
	}
	head = head[:k]
	h := sha256.New()
	h.Write(head)
	if _, err = io.Copy(h, f); err != nil {
		return "", nil, err
	}
	return hex.EncodeToString(h.Sum(nil)), head, nil
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
