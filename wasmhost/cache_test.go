package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"nebula.dev/nebula/test/functions"
)

// entryPath returns the only wazero entry in a cache directory.
func entryPath(tb testing.TB, dir string) string {
	tb.Helper()
	all, err := listEntries(dir)
	var entries []string
	for _, e := range all {
		if strings.HasPrefix(e, wazeroCacheSubdir()+"/") {
			entries = append(entries, e)
		}
	}
	if err != nil || len(entries) != 1 {
		tb.Fatalf("entries in %s: %v, %v; want one of wazero's", dir, all, err)
	}
	return filepath.Join(dir, entries[0])
}

// runHello runs a compiled hello.wasm and checks what it printed.
func runHello(tb testing.TB, mod *Module) {
	tb.Helper()
	var out bytes.Buffer
	code, err := mod.Run(context.Background(), RunConfig{Args: []string{"hello"}, Stdout: &out})
	if err != nil || code != 0 || out.String() != "hello from wasm\n" {
		tb.Fatalf("run: code %d, err %v, stdout %q", code, err, out.String())
	}
}

func TestCompileToCache(t *testing.T) {
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	dir := filepath.Join(t.TempDir(), "cache")

	hit, _, err := CompileToCache(ctx, hello, dir, Config{})
	if err != nil || hit {
		t.Fatalf("first CompileToCache: hit %v, err %v; want a miss", hit, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ManifestName)); err != nil || !strings.Contains(string(b), "wazero-") {
		t.Fatalf("manifest: %q, %v", b, err)
	}
	// The hit is recognised without loading the entry: it is in the
	// directory this wazero keeps its entries in.
	if entries, err := listEntries(dir); err != nil || !hasEntryFor(entries, wazeroCacheSubdir()) {
		t.Fatalf("entries %v (%v) hold none in %q", entries, err, wazeroCacheSubdir())
	}
	hit, _, err = CompileToCache(ctx, hello, dir, Config{})
	if err != nil || !hit {
		t.Fatalf("second CompileToCache: hit %v, err %v; want a hit", hit, err)
	}
	mod, err := newHost(t, NewConfig().WithCacheDir(dir)).Compile(ctx, hello)
	if err != nil {
		t.Fatal(err)
	}
	if !mod.CacheHit() || mod.CacheDetail() != "hit" || mod.CompileTime() <= 0 {
		t.Fatalf("Compile: hit %v (%s) in %v; want a hit", mod.CacheHit(), mod.CacheDetail(), mod.CompileTime())
	}
	runHello(t, mod)

	// The Go probe: the shared cache was filled by a miss.
	probe := wasmFile(t, functions.Probe)
	hit, dur, err := CompileToCache(ctx, probe, sharedProbeCache(t), Config{})
	if err != nil || !hit {
		t.Fatalf("CompileToCache(probe): hit %v, err %v; want a hit", hit, err)
	}
	t.Logf("probe.wasm: cache hit in %v", dur)

	// Errors name the reason.
	if _, _, err = CompileToCache(ctx, wasmFile(t, functions.BadImport), filepath.Join(t.TempDir(), "c"), Config{}); err == nil ||
		!strings.Contains(err.Error(), "env.nope") {
		t.Fatalf("CompileToCache(badimport): %v", err)
	}
}

func TestCacheCorrupt(t *testing.T) {
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir, entry string)
		detail string
	}{
		{"truncated entry", func(t *testing.T, dir, entry string) {
			st, _ := os.Stat(entry)
			os.Truncate(entry, st.Size()/2)
		}, "SHA-256 mismatch"},
		{"empty entry", func(t *testing.T, dir, entry string) { os.Truncate(entry, 0) }, "SHA-256 mismatch"},
		{"flipped code byte", func(t *testing.T, dir, entry string) {
			flipByte(t, entry, -10) // inside the native code, before the CRC
		}, "SHA-256 mismatch"},
		{"flipped offset byte", func(t *testing.T, dir, entry string) {
			flipByte(t, entry, offsetTable(t, entry))
		}, "SHA-256 mismatch"},
		{"missing entry", func(t *testing.T, dir, entry string) { os.Remove(entry) }, "missing entry"},
		{"flipped prepared byte", func(t *testing.T, dir, entry string) {
			flipByte(t, filepath.Join(dir, preparedName), -10) // in the finalized module
		}, "SHA-256 mismatch"},
		{"missing prepared file", func(t *testing.T, dir, entry string) { os.Remove(filepath.Join(dir, preparedName)) }, "missing entry " + preparedName},
		{"missing manifest", func(t *testing.T, dir, entry string) { os.Remove(filepath.Join(dir, ManifestName)) }, "no entry"},
		{"garbage manifest", func(t *testing.T, dir, entry string) {
			os.WriteFile(filepath.Join(dir, ManifestName), []byte("xyz\n"), 0o600)
		}, "corrupt manifest line"},
		{"unlisted entry", func(t *testing.T, dir, entry string) {
			b, _ := os.ReadFile(entry)
			os.WriteFile(filepath.Join(filepath.Dir(entry), "0123abcd"), b, 0o600)
		}, "unverified entry"},
		{"escaping manifest", func(t *testing.T, dir, entry string) {
			os.WriteFile(filepath.Join(dir, ManifestName), []byte("00  ../../etc/passwd\n"), 0o600)
		}, "corrupt manifest line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			if _, _, err := CompileToCache(ctx, hello, dir, Config{}); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, dir, entryPath(t, dir))

			mod, err := newHost(t, NewConfig().WithCacheDir(dir)).Compile(ctx, hello)
			if err != nil {
				t.Fatalf("Compile must fall back to compiling: %v", err)
			}
			if mod.CacheHit() || !strings.Contains(mod.CacheDetail(), tc.detail) {
				t.Fatalf("Compile: hit %v (%s); want a miss with %q", mod.CacheHit(), mod.CacheDetail(), tc.detail)
			}
			runHello(t, mod)

			// CompileToCache repairs the directory.
			if hit, _, err := CompileToCache(ctx, hello, dir, Config{}); err != nil || hit {
				t.Fatalf("CompileToCache after corruption: hit %v, err %v; want a miss", hit, err)
			}
			if hit, _, err := CompileToCache(ctx, hello, dir, Config{}); err != nil || !hit {
				t.Fatalf("CompileToCache after repair: hit %v, err %v; want a hit", hit, err)
			}
		})
	}
}

// offsetTable returns the offset in a wazero v1.11.0 cache entry of its
// function offset table: magic (6), version length (1), version, function
// count (4).
func offsetTable(tb testing.TB, entry string) int {
	b, err := os.ReadFile(entry)
	if err != nil || len(b) < 7 || string(b[:6]) != "WAZEVO" {
		tb.Fatalf("not a wazero entry: %v", err)
	}
	return 6 + 1 + int(b[6]) + 4
}

// flipByte inverts the byte at off (from the end if negative).
func flipByte(tb testing.TB, name string, off int) {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0xff
	if err = os.WriteFile(name, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestWazeroCacheFacts pins down what wazero itself does with a corrupt
// file cache entry, which is why wasmhost verifies entries (docs/rationale.md).
func TestWazeroCacheFacts(t *testing.T) {
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	compileRaw := func(dir string) error {
		cc, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			return err
		}
		defer cc.Close(ctx)
		r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cc))
		defer r.Close(ctx)
		_, err = r.CompileModule(ctx, hello)
		return err
	}
	dir := t.TempDir()
	if err := compileRaw(dir); err != nil {
		t.Fatal(err)
	}
	entry := entryPath(t, dir)
	good, _ := os.ReadFile(entry)

	flipByte(t, entry, -10)
	if err := compileRaw(dir); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("corrupt code: wazero returned %v; the doc says it fails with a checksum mismatch", err)
	}
	os.WriteFile(entry, good, 0o600)
	flipByte(t, entry, offsetTable(t, entry))
	if err := compileRaw(dir); err != nil {
		t.Errorf("corrupt offset table: wazero returned %v; the doc says it loads it silently", err)
	}
}

// roChildEnv names the cache directories that the child process of
// TestCacheReadOnly mounts read-only, then runs TestCacheReadOnlyChild.
const (
	roChildEnv = "WASMHOST_TEST_RO_DIR"
	fnDirEnv   = "WASMHOST_TEST_FN_DIR"
)

// TestCacheReadOnly: a host reading a read-only cache directory (as inside
// the container) loads a verified entry and compiles without one, never
// failing, whatever state the directory is in. The checks run in a child
// process that sees the directory through a read-only bind mount (as root,
// in a mount namespace of its own) or without write permission.
func TestCacheReadOnly(t *testing.T) {
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	ro := filepath.Join(t.TempDir(), "ro")
	for _, d := range []string{"hit", "empty", "missing", "corrupt"} {
		if err := os.MkdirAll(filepath.Join(ro, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if d != "empty" {
			if _, _, err := CompileToCache(ctx, hello, filepath.Join(ro, d), Config{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	os.Remove(entryPath(t, filepath.Join(ro, "missing")))
	flipByte(t, entryPath(t, filepath.Join(ro, "corrupt")), -10)

	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheReadOnlyChild$", "-test.v")
	cmd.Env = append(os.Environ(), roChildEnv+"="+ro, fnDirEnv+"="+fnDir)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	} else {
		filepath.Walk(ro, func(p string, info os.FileInfo, err error) error {
			if err == nil {
				os.Chmod(p, info.Mode()&^0o222)
			}
			return nil
		})
		t.Cleanup(func() {
			filepath.Walk(ro, func(p string, info os.FileInfo, err error) error {
				if err == nil {
					os.Chmod(p, info.Mode()|0o200)
				}
				return nil
			})
		})
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestCacheReadOnlyChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// roChild is the child process's TestMain: it makes the directory
// read-only and runs the tests.
func roChild(m *testing.M) int {
	ro := os.Getenv(roChildEnv)
	fnDir = os.Getenv(fnDirEnv)
	if os.Geteuid() == 0 {
		if err := syscall.Mount(ro, ro, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			println("bind mount:", err.Error())
			return 1
		}
		if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			println("read-only remount:", err.Error())
			return 1
		}
	}
	return m.Run()
}

func TestCacheReadOnlyChild(t *testing.T) {
	ro := os.Getenv(roChildEnv)
	if ro == "" {
		t.Fatal("run only by TestCacheReadOnly, in a child process")
	}
	ctx := context.Background()
	hello := wasmFile(t, functions.Hello)
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o600); err == nil {
		t.Fatal("the directory is writable")
	} else {
		t.Logf("writing: %v", err)
	}

	// What wazero itself does.
	if _, err := wazero.NewCompilationCacheWithDir(filepath.Join(ro, "empty")); err == nil {
		t.Error("wazero: a cache in an empty read-only directory: no error; the doc says it fails")
	} else {
		t.Logf("wazero, empty read-only directory: %v", err)
	}
	cc, err := wazero.NewCompilationCacheWithDir(filepath.Join(ro, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cc))
	if _, err = r.CompileModule(ctx, hello); err == nil {
		t.Error("wazero: a missing entry in a read-only directory: no error; the doc says it fails")
	} else {
		t.Logf("wazero, missing entry, read-only directory: %v", err)
	}
	r.Close(ctx)
	cc.Close(ctx)

	// What wasmhost does.
	for _, tc := range []struct {
		dir    string
		hit    bool
		detail string
	}{
		{"hit", true, "hit"},
		{"empty", false, "no entry"},
		{"missing", false, "missing entry"},
		{"corrupt", false, "SHA-256 mismatch"},
		{"absent", false, "no entry"},
	} {
		mod, err := newHost(t, NewConfig().WithCacheDir(filepath.Join(ro, tc.dir))).Compile(ctx, hello)
		if err != nil {
			t.Errorf("%s: Compile: %v", tc.dir, err)
			continue
		}
		if mod.CacheHit() != tc.hit || !strings.Contains(mod.CacheDetail(), tc.detail) {
			t.Errorf("%s: hit %v (%s), want %v (%s)", tc.dir, mod.CacheHit(), mod.CacheDetail(), tc.hit, tc.detail)
		}
		runHello(t, mod)
	}
}

// TestCompileToCacheErrors: a directory that cannot be written is reported
// as ErrCache (the module compiled in memory and is valid), never as an
// invalid module; an invalid module is reported as such whatever the
// directory.
func TestCompileToCacheErrors(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(file, "cache") // below a regular file: ENOTDIR
	_, _, err := CompileToCache(ctx, wasmFile(t, functions.Hello), bad, Config{})
	if !errors.Is(err, ErrCache) || errors.Is(err, ErrInvalid) || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("valid module, unusable directory: %v; want ErrCache wrapping ENOTDIR", err)
	}
	invalidBody := wat(t, `(module (func (export "_start") i32.add))`)
	if _, _, err = CompileToCache(ctx, invalidBody, bad, Config{}); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrCache) {
		t.Fatalf("invalid module, unusable directory: %v; want ErrInvalid", err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if _, _, err = CompileToCache(ctx, invalidBody, dir, Config{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid module: %v; want ErrInvalid", err)
	}
	if entries, _ := listEntries(dir); len(entries) != 0 {
		t.Fatalf("an invalid module left entries: %v", entries)
	}
}

// TestPruneCache: least recently used entries go first, until the cache
// fits; held entries, entries being compiled, recent ones and keep stay;
// leftovers of killed compiles go whatever the bound.
func TestPruneCache(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	fill := func(name, fn string, age time.Duration) string {
		dir := filepath.Join(root, name)
		if _, _, err := CompileToCache(ctx, wasmFile(t, fn), dir, Config{}); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		os.Chtimes(dir, when, when)
		return dir
	}
	held := fill("held", functions.Hello, 4*time.Hour)
	oldest := fill("oldest", functions.Exit7, 3*time.Hour)
	older := fill("older", functions.Echo, 2*time.Hour)
	recent := fill("recent", functions.Trap, time.Second)
	compiling := fill("compiling", functions.Scratch, 5*time.Hour)
	leftover := filepath.Join(root, "leftover")
	os.MkdirAll(filepath.Join(leftover, "wazero-x"), 0o700)
	os.WriteFile(filepath.Join(leftover, "wazero-x", "e.tmp"), []byte("partial"), 0o600)
	stray := filepath.Join(root, "stray.tmp")
	os.WriteFile(stray, nil, 0o600)
	hourAgo := time.Now().Add(-time.Hour)
	os.Chtimes(leftover, hourAgo, hourAgo)
	os.Chtimes(stray, hourAgo, hourAgo)

	release, err := HoldCacheEntry(held)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDir(compiling)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	one := dirSize(older)
	// Room for all but about one entry: only the oldest idle one goes.
	var total int64
	for _, d := range []string{held, oldest, older, recent, compiling} {
		total += dirSize(d)
	}
	res, err := PruneCache(root, total-one/2, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	for p, want := range map[string]bool{held: true, oldest: false, older: true, recent: true, compiling: true, leftover: false, stray: false} {
		if exists(p) != want {
			t.Errorf("after pruning to %d bytes: %s exists %v, want %v (removed %v)", total-one/2, filepath.Base(p), exists(p), want, res.Removed)
		}
	}
	// No room at all: everything idle and old goes, keep stays.
	release()
	if _, err = PruneCache(root, 1, older, time.Minute); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{held: false, older: true, recent: true, compiling: true} {
		if exists(p) != want {
			t.Errorf("after pruning to 1 byte: %s exists %v, want %v", filepath.Base(p), exists(p), want)
		}
	}
}
