package main

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// node is a fake node: its root under a temp dir, the installer's image
// files in another, and a restart counter instead of systemd.
type node struct {
	t        *testing.T
	in       *Installer
	restarts int
	failNext int // restarts that fail
}

func newNode(t *testing.T) *node {
	t.Helper()
	root, image := t.TempDir(), t.TempDir()
	n := &node{t: t}
	n.in = &Installer{
		HostRoot:         root,
		BinDir:           "/usr/local/bin",
		ConfigDir:        "/etc/containerd/conf.d",
		ContainerdConfig: "/etc/containerd/config.toml",
		BinSource:        filepath.Join(image, "bin"),
		SnippetSource:    filepath.Join(image, SnippetName),
		Log:              &bytes.Buffer{},
	}
	n.in.Restart = func(context.Context) error {
		n.restarts++
		if n.failNext > 0 {
			n.failNext--
			return errors.New("containerd did not come back")
		}
		return nil
	}
	n.image("shim v1", readSnippet(t))
	return n
}

// readSnippet is the drop-in the installer's image ships.
func readSnippet(t *testing.T) string {
	b, err := os.ReadFile("../../deploy/containerd/nebula.toml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// image writes the installer image's files: the shim and nebula-host
// (whose content is the shim's with " host" appended), and the drop-in.
func (n *node) image(shim, snippet string) {
	n.t.Helper()
	if err := os.MkdirAll(n.in.BinSource, 0o755); err != nil {
		n.t.Fatal(err)
	}
	for name, data := range map[string]string{"containerd-shim-nebula-v1": shim, "nebula-host": shim + " host"} {
		if err := os.WriteFile(filepath.Join(n.in.BinSource, name), []byte(data), 0o755); err != nil {
			n.t.Fatal(err)
		}
	}
	if err := os.WriteFile(n.in.SnippetSource, []byte(snippet), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) path(p string) string { return filepath.Join(n.in.HostRoot, p) }

func (n *node) read(p string) string {
	n.t.Helper()
	b, err := os.ReadFile(n.path(p))
	if err != nil {
		n.t.Fatal(err)
	}
	return string(b)
}

func (n *node) write(p, data string) {
	n.t.Helper()
	if err := os.MkdirAll(filepath.Dir(n.path(p)), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(n.path(p), []byte(data), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) exists(p string) bool {
	_, err := os.Stat(n.path(p))
	return err == nil
}

func (n *node) install() Changes {
	n.t.Helper()
	ch, err := n.in.Install(context.Background())
	if err != nil {
		n.t.Fatalf("install: %v", err)
	}
	return ch
}

func (n *node) uninstall() Changes {
	n.t.Helper()
	ch, err := n.in.Uninstall(context.Background())
	if err != nil {
		n.t.Fatalf("uninstall: %v", err)
	}
	return ch
}

// files lists every file under the node's root with its content, so that
// tests can compare the whole node before and after.
func (n *node) files() map[string]string {
	n.t.Helper()
	m := map[string]string{}
	filepath.WalkDir(n.in.HostRoot, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			m[strings.TrimPrefix(p, n.in.HostRoot)] = string(b)
		}
		return nil
	})
	return m
}

// imports decodes containerd's config as containerd does (strictly for
// the keys it has) and returns its imports.
func imports(t *testing.T, data string) []string {
	t.Helper()
	var cfg struct {
		Version int                       `toml:"version"`
		Imports []string                  `toml:"imports"`
		Plugins map[string]map[string]any `toml:"plugins"`
		Root    string                    `toml:"root"`
	}
	dec := toml.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("containerd config does not decode: %v\n%s", err, data)
	}
	return cfg.Imports
}

const (
	shimPath    = "/usr/local/bin/containerd-shim-nebula-v1"
	hostPath    = "/usr/local/bin/nebula-host"
	snippetPath = "/etc/containerd/conf.d/nebula.toml"
	configPath  = "/etc/containerd/config.toml"
)

func TestInstallFreshNode(t *testing.T) {
	n := newNode(t)
	ch := n.install()
	if !ch.Binaries || !ch.Snippet || !ch.Imports || !ch.Restarted || n.restarts != 1 {
		t.Errorf("first install: %+v, %d restarts; want everything written and one restart", ch, n.restarts)
	}
	if n.read(shimPath) != "shim v1" || n.read(hostPath) != "shim v1 host" || n.read(snippetPath) != readSnippet(t) {
		t.Errorf("installed files differ from the image's")
	}
	for _, p := range []string{shimPath, hostPath} {
		if fi, err := os.Stat(n.path(p)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, %v; want 0755", p, fi.Mode(), err)
		}
	}
	if got := imports(t, n.read(configPath)); len(got) != 1 || got[0] != "/etc/containerd/conf.d/*.toml" {
		t.Errorf("config imports %q", got)
	}
	if err := n.in.Check(); err != nil {
		t.Errorf("check after install: %v", err)
	}

	// Idempotent: nothing written, no restart.
	before := n.files()
	if ch := n.install(); ch != (Changes{}) || n.restarts != 1 {
		t.Errorf("second install: %+v, %d restarts; want no change and no restart", ch, n.restarts)
	}
	if after := n.files(); !maps.Equal(before, after) {
		t.Errorf("second install changed files:\n%v\n%v", before, after)
	}

	// A new shim alone: replaced, containerd not restarted (it runs the
	// binary anew for every pod).
	n.image("shim v2", readSnippet(t))
	if err := n.in.Check(); err == nil {
		t.Errorf("check passes with an outdated shim")
	}
	if ch := n.install(); !ch.Binaries || ch.Snippet || ch.Imports || ch.Restarted || n.restarts != 1 {
		t.Errorf("new shim: %+v, %d restarts; want the shim replaced, no restart", ch, n.restarts)
	}
	// A new drop-in: restart.
	n.image("shim v2", readSnippet(t)+"\n# v2\n")
	if n.read(hostPath) != "shim v2 host" {
		t.Errorf("nebula-host not updated with the shim")
	}
	if ch := n.install(); ch.Binaries || !ch.Snippet || ch.Imports || !ch.Restarted || n.restarts != 2 {
		t.Errorf("new drop-in: %+v, %d restarts; want it written and one more restart", ch, n.restarts)
	}

	// Uninstall takes the node back to nothing, and restarts once.
	if ch := n.uninstall(); !ch.Binaries || !ch.Snippet || !ch.Imports || !ch.Restarted || n.restarts != 3 {
		t.Errorf("uninstall: %+v, %d restarts", ch, n.restarts)
	}
	if files := n.files(); len(files) != 0 {
		t.Errorf("uninstall left %v", files)
	}
	if ch := n.uninstall(); ch != (Changes{}) || n.restarts != 3 {
		t.Errorf("second uninstall: %+v, %d restarts; want nothing", ch, n.restarts)
	}
}

func TestInstallExistingConfig(t *testing.T) {
	const config = `# the node's own config
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
`
	n := newNode(t)
	n.write(configPath, config)
	if ch := n.install(); !ch.Imports || !ch.Restarted {
		t.Errorf("install: %+v", ch)
	}
	got := n.read(configPath)
	if imp := imports(t, got); len(imp) != 1 || imp[0] != "/etc/containerd/conf.d/*.toml" {
		t.Errorf("imports %q in\n%s", imp, got)
	}
	if !strings.HasPrefix(got, "# the node's own config\nversion = 2\n"+importMarker+"\nimports = ") || !strings.HasSuffix(got, config[strings.Index(config, "root"):]) {
		t.Errorf("the import was not added right after the version line, the rest untouched:\n%s", got)
	}
	if fi, _ := os.Stat(n.path(configPath)); fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode changed to %v", fi.Mode())
	}
	n.uninstall()
	if got := n.read(configPath); got != config {
		t.Errorf("uninstall did not restore the config:\n%s", got)
	}
}

func TestInstallConfigWithoutVersion(t *testing.T) {
	const config = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"localhost/pause:v1\"\n"
	n := newNode(t)
	n.write(configPath, config)
	n.install()
	got := n.read(configPath)
	if !strings.HasPrefix(got, importMarker+"\nimports = ") || !strings.HasSuffix(got, config) {
		t.Errorf("want the import on top:\n%s", got)
	}
	imports(t, got)
	n.uninstall()
	if got := n.read(configPath); got != config {
		t.Errorf("uninstall did not restore the config:\n%s", got)
	}
}

func TestInstallConfigAlreadyImports(t *testing.T) {
	for _, imp := range []string{`"/etc/containerd/conf.d/*.toml"`, `"conf.d/nebula.toml"`, `"/etc/containerd/conf.d/nebula.toml", "/x.toml"`} {
		n := newNode(t)
		config := "version = 3\nimports = [" + imp + "]\n"
		n.write(configPath, config)
		if ch := n.install(); ch.Imports {
			t.Errorf("imports = [%s]: config changed, want it left alone", imp)
		}
		if n.read(configPath) != config {
			t.Errorf("imports = [%s]: config rewritten", imp)
		}
		n.uninstall()
		if n.read(configPath) != config {
			t.Errorf("imports = [%s]: uninstall changed the config", imp)
		}
	}
}

// A config whose imports do not cover the drop-in is someone else's list:
// refuse, change nothing, do not restart.
func TestInstallConfigOtherImports(t *testing.T) {
	n := newNode(t)
	config := "version = 3\nimports = [\"/etc/containerd/other.toml\"]\n"
	n.write(configPath, config)
	before := n.files()
	_, err := n.in.Install(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/etc/containerd/conf.d/*.toml") {
		t.Errorf("install: %v, want an error naming the import to add", err)
	}
	if after := n.files(); !maps.Equal(before, after) || n.restarts != 0 {
		t.Errorf("a refused install changed files or restarted containerd (%d)", n.restarts)
	}
}

func TestInstallBadInput(t *testing.T) {
	n := newNode(t)
	n.write(configPath, "version = [\n")
	if _, err := n.in.Install(context.Background()); err == nil {
		t.Errorf("install over an unparsable config succeeded")
	}
	if n.exists(shimPath) || n.exists(hostPath) || n.exists(snippetPath) || n.restarts != 0 {
		t.Errorf("a failed install left files or restarted containerd")
	}

	n = newNode(t)
	os.Remove(filepath.Join(n.in.BinSource, "containerd-shim-nebula-v1"))
	if _, err := n.in.Install(context.Background()); err == nil || len(n.files()) != 0 {
		t.Errorf("install without a shim in the image: %v, files %v", err, n.files())
	}

	n = newNode(t)
	n.image("shim", "this is not toml = = \n")
	if _, err := n.in.Install(context.Background()); err == nil || len(n.files()) != 0 {
		t.Errorf("install of a bad drop-in: %v, files %v", err, n.files())
	}
}

// If containerd does not come back, the previous files are restored and
// containerd restarted again with them.
func TestInstallRestartFails(t *testing.T) {
	n := newNode(t)
	n.install()
	before := n.files()
	n.image("shim v2", readSnippet(t)+"\n# broken for this node\n")
	n.failNext = 1
	_, err := n.in.Install(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not come back") {
		t.Errorf("install: %v, want the restart error", err)
	}
	if after := n.files(); !maps.Equal(before, after) {
		t.Errorf("files not restored:\nbefore %v\nafter %v", before, after)
	}
	if n.restarts != 3 { // install, failed restart, restart with the old files
		t.Errorf("%d restarts, want 3", n.restarts)
	}
}

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
		t.Errorf("no args: %d %q", code, errb.String())
	}
	if code := run([]string{"install", "-restart", "maybe"}, &out, &errb); code != 2 {
		t.Errorf("bad -restart: %d", code)
	}
	n := newNode(t)
	args := []string{"-host-root", n.in.HostRoot, "-bin-source", n.in.BinSource, "-snippet", n.in.SnippetSource, "-restart", "none"}
	if code := run(append([]string{"check"}, args...), &out, &errb); code != 1 {
		t.Errorf("check before install: %d, want 1", code)
	}
	if code := run(append([]string{"install"}, args...), &out, &errb); code != 0 {
		t.Errorf("install: %d\n%s", code, errb.String())
	}
	if code := run(append([]string{"check"}, args...), &out, &errb); code != 0 {
		t.Errorf("check after install: %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "restart containerd to apply it") {
		t.Errorf("-restart none does not say that containerd needs a restart:\n%s", out.String())
	}
}

func TestSameContent(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 5 chunks, the last partial
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", big)
	same := write("same", big)
	last := append(bytes.Clone(big[:len(big)-1]), 'X')
	for _, tc := range []struct {
		b    string
		want bool
	}{
		{same, true},
		{write("last", last), false},
		{write("short", big[:len(big)-1]), false},
		{write("exact", big[:4*64<<10]), false},
		{filepath.Join(dir, "missing"), false},
	} {
		if got, err := sameContent(a, tc.b); got != tc.want || err != nil {
			t.Errorf("sameContent(a, %s) = %v, %v; want %v", filepath.Base(tc.b), got, err, tc.want)
		}
	}
	exact := big[:4*64<<10]
	if got, err := sameContent(write("e1", exact), write("e2", exact)); !got || err != nil {
		t.Errorf("files of whole chunks: %v %v", got, err)
	}
}
