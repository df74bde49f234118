package wasmhost

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"

	"nebula.dev/nebula/test/functions"
)

// TestHiddenFromGuest: whatever path the guest uses, Nebula's files under
// /dev/.nebula do not exist for it.
func TestHiddenFromGuest(t *testing.T) {
	ctx := context.Background()
	probe := compile(t, Config{}, functions.Probe)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string // a substring
	}{
		{"cat", []string{"cat", "/dev/.nebula/nebula-host"}, 1, "", "No such file or directory"},
		{"cat cache", []string{"cat", "/dev/.nebula/cache/wazero/key"}, 1, "", "No such file or directory"},
		{"stat file", []string{"stat", "/dev/.nebula/nebula-host"}, 1, "", "No such file or directory"},
		{"stat dir", []string{"stat", "/dev/.nebula"}, 1, "", "No such file or directory"},
		{"ls dir", []string{"ls", "/dev/.nebula"}, 1, "", "No such file or directory"},
		{"ls parent", []string{"ls", "/dev"}, 0, "null\n", ""},
		{"dot-dot", []string{"cat", "/tmp/../dev/.nebula/nebula-host"}, 1, "", "No such file or directory"},
		{"relative dot-dot", []string{"cat", "../dev/.nebula/nebula-host"}, 1, "", "No such file or directory"},
		{"symlink to file", []string{"symlink", "../dev/.nebula/nebula-host", "/tmp/x", "+", "cat", "/tmp/x"},
			1, "", "No such file or directory"},
		{"symlink to dir", []string{"symlink", "../dev/.nebula", "/tmp/n", "+", "cat", "/tmp/n/nebula-host"},
			1, "", "No such file or directory"},
		{"symlink to parent", []string{"symlink", "../dev", "/tmp/d", "+", "cat", "/tmp/d/.nebula/nebula-host"},
			1, "", "No such file or directory"},
		{"stat via symlink", []string{"symlink", "../dev/.nebula/nebula-host", "/tmp/s", "+", "stat", "/tmp/s"},
			1, "", "No such file or directory"},
		{"ls via symlink", []string{"symlink", "../dev", "/tmp/l", "+", "ls", "/tmp/l"}, 0, "null\n", ""},
		{"symlink chain", []string{"symlink", "../dev/.nebula", "/tmp/c1", "+", "symlink", "c1/cache", "/tmp/c2",
			"+", "cat", "/tmp/c2/wazero/key"}, 1, "", "No such file or directory"},
		// WASI has no permission bits: Go's wasip1 port shows 0600.
		{"visible sibling", []string{"stat", "/dev/null"}, 0, "null 0 -rw-------\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, fsys := guestRoot(t)
			r := run(t, ctx, probe, RunConfig{FS: fsys, Dir: "/tmp"}, tc.args...)
			if r.code != tc.code || r.stdout != tc.stdout || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, "SECRET") {
				t.Fatal("leaked a hidden file's contents")
			}
		})
	}
}

// TestGuestFS exercises GuestFS directly, including what the probe cannot.
func TestGuestFS(t *testing.T) {
	root, g := guestRoot(t)
	secret := filepath.Join(root, "dev/.nebula/nebula-host")
	if err := os.Symlink("../dev/.nebula/nebula-host", filepath.Join(root, "tmp/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, filepath.Join(root, "tmp/hardlink")); err != nil {
		t.Fatal(err)
	}
	enoent := func(name string, errno experimentalsys.Errno) {
		t.Helper()
		if errno != experimentalsys.ENOENT {
			t.Errorf("%s: errno %v, want ENOENT", name, errno)
		}
	}
	for _, p := range []string{"dev/.nebula", "dev/.nebula/nebula-host", "tmp/link", "tmp/hardlink", "dev/../dev/.nebula", "dev/.nebula/"} {
		_, errno := g.OpenFile(p, experimentalsys.O_RDONLY, 0)
		enoent("open "+p, errno)
		_, errno = g.Stat(p)
		enoent("stat "+p, errno)
	}
	_, errno := g.Lstat("dev/.nebula")
	enoent("lstat dev/.nebula", errno)
	if _, errno = g.Lstat("tmp/link"); errno != 0 {
		t.Errorf("lstat of the guest's own link: %v", errno) // the link itself is the guest's
	}

	// Opening for writing with O_TRUNC must not truncate a hidden file
	// before the identity check refuses it.
	_, errno = g.OpenFile("tmp/hardlink", experimentalsys.O_WRONLY|experimentalsys.O_TRUNC, 0)
	enoent("open O_TRUNC", errno)
	if b, _ := os.ReadFile(secret); string(b) != "SECRET host binary\n" {
		t.Errorf("hidden file truncated: %q", b)
	}
	// O_TRUNC still works on the guest's own files.
	os.WriteFile(filepath.Join(root, "tmp/mine"), []byte("old"), 0o644)
	if f, errno := g.OpenFile("tmp/mine", experimentalsys.O_WRONLY|experimentalsys.O_TRUNC, 0); errno != 0 {
		t.Errorf("open own file O_TRUNC: %v", errno)
	} else {
		f.Close()
		if b, _ := os.ReadFile(filepath.Join(root, "tmp/mine")); len(b) != 0 {
			t.Errorf("own file not truncated: %q", b)
		}
	}

	// Creating in or over hidden paths.
	enoent("mkdir in hidden", g.Mkdir("dev/.nebula/x", 0o755))
	if errno = g.Mkdir("dev/.nebula", 0o755); errno != experimentalsys.EACCES {
		t.Errorf("mkdir over hidden: %v, want EACCES", errno)
	}
	_, errno = g.OpenFile("dev/.nebula/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644)
	enoent("create in hidden", errno)
	enoent("unlink hidden", g.Unlink("dev/.nebula/nebula-host"))
	enoent("unlink hard link", g.Unlink("tmp/hardlink"))
	enoent("rename hidden", g.Rename("dev/.nebula", "tmp/stolen"))
	enoent("link hidden", g.Link("dev/.nebula/nebula-host", "tmp/l2"))
	enoent("chmod via link", g.Chmod("tmp/link", 0o777))
	_, errno = g.Readlink("dev/.nebula/nebula-host")
	enoent("readlink", errno)
	if _, err := os.Stat(filepath.Join(root, "dev/.nebula/x")); err == nil {
		t.Error("mkdir in a hidden directory happened")
	}

	// Listings omit hidden entries, also when read a few at a time.
	for _, n := range []int{-1, 1, 2, 100} {
		d, errno := g.OpenFile("dev", experimentalsys.O_RDONLY, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		var names []string
		for {
			ents, errno := d.Readdir(n)
			if errno != 0 {
				t.Fatal(errno)
			}
			for _, e := range ents {
				names = append(names, e.Name)
			}
			if n <= 0 || len(ents) < n {
				break
			}
		}
		d.Close()
		if strings.Join(names, ",") != "null" {
			t.Errorf("readdir(%d) of dev: %v", n, names)
		}
	}
	d, _ := g.OpenFile("tmp", experimentalsys.O_RDONLY, 0)
	ents, _ := d.Readdir(-1)
	d.Close()
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "link,mine" { // not the hard link
		t.Errorf("readdir of tmp: %v", names)
	}

	// Nothing to hide: a missing hidden path is ignored.
	g2, err := NewGuestFS(root, "/does/not/exist")
	if err != nil || g2.Hidden() != 0 {
		t.Fatalf("NewGuestFS: %v, %d hidden", err, g2.Hidden())
	}
	if _, err := NewGuestFS(root, "/"); err == nil {
		t.Error("hiding the root: no error")
	}
}
