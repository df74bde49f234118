package shim

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
)

func TestRootfsFiles(t *testing.T) {
	base := t.TempDir()
	upper, lower1, lower2 := filepath.Join(base, "upper"), filepath.Join(base, "l1"), filepath.Join(base, "l2")
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(lower2, "fn.wasm"), "\x00asm-lower2")
	write(filepath.Join(lower1, "fn.wasm"), "\x00asm-lower1")
	write(filepath.Join(lower2, "deleted"), "gone")
	write(filepath.Join(lower2, "app/real"), "real")
	os.MkdirAll(upper, 0o755)
	if err := unix.Mknod(filepath.Join(upper, "deleted"), unix.S_IFCHR, 0); err != nil {
		t.Fatalf("mknod whiteout: %v", err)
	}
	os.MkdirAll(filepath.Join(lower1, "app"), 0o755)
	os.Symlink("/app/real", filepath.Join(lower2, "link-in-layer"))
	os.Symlink("/etc/hostname", filepath.Join(lower2, "escape"))
	os.Symlink("../../../../../../etc/hostname", filepath.Join(lower2, "escape-rel"))
	os.MkdirAll(filepath.Join(lower2, "dir"), 0o755)

	r, err := newRootfsFiles([]*types.Mount{{Type: "overlay", Source: "overlay",
		Options: []string{"index=off", "workdir=" + base + "/work", "upperdir=" + upper, "lowerdir=" + lower1 + ":" + lower2}}}, "rootfs", "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := r.readFile("/fn.wasm", 100); err != nil || string(b) != "\x00asm-lower1" {
		t.Errorf("upper layers must shadow lower ones: %q, %v", b, err)
	}
	if _, err := r.header("/deleted"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a whiteout must hide the lower file, got %v", err)
	}
	if b, err := r.readFile("/link-in-layer", 100); err != nil || string(b) != "real" {
		t.Errorf("absolute symlink inside the layer: %q, %v", b, err)
	}
	for _, p := range []string{"/escape", "/escape-rel", "/../../etc/hostname"} {
		if b, err := r.readFile(p, 100); err == nil {
			t.Errorf("%s escaped the layer and read %q", p, b)
		}
	}
	if _, err := r.header("/dir"); err == nil {
		t.Error("a directory is not a module")
	}
	if _, err := r.readFile("/fn.wasm", 4); err == nil {
		t.Error("size limit not enforced")
	}
	if h, err := r.header("/fn.wasm"); err != nil || string(h) != "\x00asm-low" {
		t.Errorf("header = %q, %v", h, err)
	}

	// ctr run --rootfs DIR: no mounts, the spec's root path.
	r, err = newRootfsFiles(nil, lower2, "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := r.readFile("/deleted", 100); err != nil || string(b) != "gone" {
		t.Errorf("root path reader: %q, %v", b, err)
	}
	if _, err := newRootfsFiles([]*types.Mount{{Type: "zfs"}}, "", ""); err == nil {
		t.Error("unknown mount types must be refused")
	}
}

// TestRootfsReadFileOneBuffer: a module is read into one buffer of its
// size, not grown from 512 bytes (io.ReadAll: each buffer copied into the
// next, more than twice the file's size allocated), and a file at the limit
// is read whole while one byte more is refused.
func TestRootfsReadFileOneBuffer(t *testing.T) {
	dir := t.TempDir()
	const size = 2 << 20
	if err := os.WriteFile(filepath.Join(dir, "fn.wasm"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &rootfsFiles{layers: []string{dir}}
	const runs = 5
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if b, err := r.readFile("/fn.wasm", size); err != nil || len(b) != size {
			t.Fatalf("readFile: %d bytes, %v", len(b), err)
		}
	}
	runtime.ReadMemStats(&after)
	// Opening adds a few small allocations (paths, the *os.File, Stat).
	if perRead := (after.TotalAlloc - before.TotalAlloc) / runs; perRead > size+64<<10 {
		t.Errorf("readFile of %d bytes allocated %d bytes; want one buffer of the file's size", size, perRead)
	}
	if _, err := r.readFile("/fn.wasm", size-1); err == nil {
		t.Error("a file one byte over the limit was read")
	}
}

// TestRootfsDevicesNotOpened: an image's entrypoint that is a device node
// is refused without being opened. The layers are host directories, so
// opening a node there opens the host's device, as root and outside the
// container's device cgroup (a watchdog arms when opened); an image can
// ship nodes, and a container with CAP_MKNOD can make one in its upper
// layer before a `ctr task exec`. The test's nodes have a major number no
// driver has (240, local use): opening one fails with ENXIO, which is how
// the test tells that it was opened.
func TestRootfsDevicesNotOpened(t *testing.T) {
	layer := t.TempDir()
	dev := int(unix.Mkdev(240, 0))
	for name, mode := range map[string]uint32{"char.wasm": unix.S_IFCHR, "block.wasm": unix.S_IFBLK, "fifo.wasm": unix.S_IFIFO} {
		if err := unix.Mknod(filepath.Join(layer, name), mode|0o644, dev); err != nil {
			t.Fatalf("mknod %s: %v", name, err)
		}
	}
	os.Symlink("/char.wasm", filepath.Join(layer, "link.wasm"))
	r := &rootfsFiles{layers: []string{layer}}
	for _, p := range []string{"/char.wasm", "/block.wasm", "/fifo.wasm", "/link.wasm"} {
		_, err := r.header(p)
		if errors.Is(err, unix.ENXIO) {
			t.Errorf("%s: the device was opened: %v", p, err)
		} else if err == nil || err.Error() != "not a regular file" {
			t.Errorf("%s: %v, want not a regular file", p, err)
		}
		if _, err := r.readFile(p, 100); err == nil || errors.Is(err, unix.ENXIO) {
			t.Errorf("readFile %s: %v, want not a regular file", p, err)
		}
	}
}
