package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"nebula.dev/nebula/oci/image"
)

// minimalWasm is the smallest valid WebAssembly module: magic and version.
var minimalWasm = []byte("\x00asm\x01\x00\x00\x00")

var (
	fixtureDir string // removed by TestMain

	staticOnce sync.Once
	staticPath string
	staticErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nebula-image-test-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// staticBinary builds (once per test binary) a tiny statically linked Go
// program with CGO_ENABLED=0.
func staticBinary(t *testing.T) string {
	t.Helper()
	staticOnce.Do(func() {
		src := filepath.Join(fixtureDir, "src")
		if staticErr = os.MkdirAll(src, 0o755); staticErr != nil {
			return
		}
		files := map[string]string{
			"go.mod":  "module hello\n\ngo 1.21\n",
			"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from nebula\") }\n",
		}
		for name, text := range files {
			if staticErr = os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); staticErr != nil {
				return
			}
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			staticErr = err
			return
		}
		staticPath = filepath.Join(fixtureDir, "hello")
		cmd := exec.Command(goBin, "build", "-o", staticPath, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatalf("building the static test binary: %v", staticErr)
	}
	return staticPath
}

// dynamicBinary builds a small dynamically linked C program with gcc. Without
// gcc the test is skipped, except in CI (CI=true), where it fails.
func dynamicBinary(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gcc is required in CI to build a dynamically linked test program: %v", err)
		}
		t.Skipf("gcc not found (%v); install gcc to run this test", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "dyn.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\nint main(void) { puts(\"dynamic\"); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dyn")
	if out, err := exec.Command(gcc, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// writeFile writes data to a new file name in a test's temp dir.
func writeFile(t *testing.T, name string, data []byte, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return p
}

// archive is a built image archive, read back with go-containerregistry.
type archive struct {
	raw      []byte
	names    []string // outer tar entries, in order
	top      *v1.IndexManifest
	nested   *v1.IndexManifest
	manifest *v1.Manifest
	config   *v1.ConfigFile
	img      v1.Image
	layer    []layerEntry
	files    map[string]layerEntry
}

type layerEntry struct {
	hdr  *tar.Header
	data []byte
}

func build(t *testing.T, file string, cfg image.Config) (image.Result, *archive) {
	t.Helper()
	var buf bytes.Buffer
	res, err := image.Build(context.Background(), file, cfg, &buf)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res, readArchive(t, buf.Bytes())
}

// readArchive untars an archive and opens it with go-containerregistry's
// layout reader.
func readArchive(t *testing.T, raw []byte) *archive {
	t.Helper()
	a := &archive{raw: raw, files: map[string]layerEntry{}}
	dir := t.TempDir()
	var headers []*tar.Header
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the archive: %v", err)
		}
		a.names = append(a.names, h.Name)
		headers = append(headers, h)
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("archive entry %s has type %c", h.Name, h.Typeflag)
		}
	}
	if !slices.IsSorted(a.names) {
		t.Errorf("archive entries not sorted: %q", a.names)
	}

	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("layout.ImageIndexFromPath: %v", err)
	}
	if a.top, err = idx.IndexManifest(); err != nil {
		t.Fatal(err)
	}
	if len(a.top.Manifests) != 1 {
		t.Fatalf("index.json has %d descriptors, want 1", len(a.top.Manifests))
	}
	if mt := a.top.Manifests[0].MediaType; mt != types.OCIImageIndex {
		t.Fatalf("index.json descriptor media type %s, want %s", mt, types.OCIImageIndex)
	}
	nested, err := idx.ImageIndex(a.top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if a.nested, err = nested.IndexManifest(); err != nil {
		t.Fatal(err)
	}
	if len(a.nested.Manifests) == 0 {
		t.Fatal("nested index lists no manifest")
	}
	for _, d := range a.nested.Manifests {
		if d.Digest != a.nested.Manifests[0].Digest {
			t.Errorf("nested index lists different manifests %s and %s, want one", d.Digest, a.nested.Manifests[0].Digest)
		}
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("manifest media type %s, want %s", d.MediaType, types.OCIManifestSchema1)
		}
	}
	if a.img, err = nested.Image(a.nested.Manifests[0].Digest); err != nil {
		t.Fatal(err)
	}
	if a.manifest, err = a.img.Manifest(); err != nil {
		t.Fatal(err)
	}
	if a.config, err = a.img.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(a.config.Created.Time) {
			t.Errorf("archive entry %s: uid %d gid %d mtime %v, want root and the image's time %v", h.Name, h.Uid, h.Gid, h.ModTime, a.config.Created)
		}
	}
	layers, err := a.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lr := tar.NewReader(rc)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the layer: %v", err)
		}
		b, err := io.ReadAll(lr)
		if err != nil {
			t.Fatal(err)
		}
		e := layerEntry{hdr: h, data: b}
		a.layer = append(a.layer, e)
		a.files[strings.TrimSuffix(h.Name, "/")] = e
	}
	// The layer matches the config's DiffID (what containerd checks on unpack).
	diffID, err := layers[0].DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.config.RootFS.DiffIDs) != 1 || a.config.RootFS.DiffIDs[0] != diffID {
		t.Errorf("config diff_ids %v, want [%v]", a.config.RootFS.DiffIDs, diffID)
	}
	return a
}

func (a *archive) platforms() []string {
	var ps []string
	for _, d := range a.nested.Manifests {
		ps = append(ps, d.Platform.String())
	}
	return ps
}

func (a *archive) layerNames() []string {
	var ns []string
	for _, e := range a.layer {
		ns = append(ns, e.hdr.Name)
	}
	return ns
}

func TestBuild(t *testing.T) {
	hostLinux := "linux/" + runtime.GOARCH
	greeting := writeFile(t, "greeting.txt", []byte("hello\n"), 0o640)
	tool := writeFile(t, "tool", []byte("#!/bin/sh\n"), 0o755|fs.ModeSetuid)

	tests := []struct {
		name  string
		file  func(t *testing.T) string
		cfg   image.Config
		check func(t *testing.T, res image.Result, a *archive)
	}{
		{
			name: "wasm module",
			file: func(t *testing.T) string { return writeFile(t, "hello.wasm", minimalWasm, 0o644) },
			cfg:  image.NewConfig().WithName("nebula/hello"),
			check: func(t *testing.T, res image.Result, a *archive) {
				wantResult(t, res, image.Result{
					Name: "nebula/hello:latest", Tag: "latest",
					Kind: image.KindWasm, Entrypoint: []string{"/hello.wasm"},
					Platforms: []string{"wasi/wasm", hostLinux},
				})
				wantStrings(t, "platforms", a.platforms(), []string{"wasi/wasm", hostLinux})
				wantStrings(t, "entrypoint", a.config.Config.Entrypoint, []string{"/hello.wasm"})
				if got := a.manifest.Annotations[image.AnnotationWasmVariant]; got != "compat" {
					t.Errorf("manifest annotation %s = %q, want compat", image.AnnotationWasmVariant, got)
				}
				if a.config.OS != "linux" || a.config.Architecture != runtime.GOARCH {
					t.Errorf("config platform %s/%s, want %s", a.config.OS, a.config.Architecture, hostLinux)
				}
				wantStrings(t, "layer", a.layerNames(), []string{"hello.wasm", "tmp/"})
				wantFile(t, a, "hello.wasm", 0o755, minimalWasm)
				wantDir(t, a, "tmp", 0o1777)
				if len(a.config.Config.Env) != 0 || len(a.config.Config.Cmd) != 0 || len(a.config.Config.Labels) != 0 || a.config.Config.User != "" {
					t.Errorf("config has env %q, cmd %q, labels %v, user %q; want none", a.config.Config.Env, a.config.Config.Cmd, a.config.Config.Labels, a.config.Config.User)
				}
			},
		},
		{
			name: "wasm module without the .wasm suffix",
			file: func(t *testing.T) string { return writeFile(t, "module", minimalWasm, 0o644) },
			cfg:  image.NewConfig().WithName("localhost/nebula/module:v1"),
			check: func(t *testing.T, res image.Result, a *archive) {
				wantStrings(t, "entrypoint", a.config.Config.Entrypoint, []string{"/module.wasm"})
				wantStrings(t, "result entrypoint", res.Entrypoint, []string{"/module.wasm"})
				wantFile(t, a, "module.wasm", 0o755, minimalWasm)
				if res.Tag != "v1" || res.Name != "localhost/nebula/module:v1" {
					t.Errorf("name %q tag %q, want localhost/nebula/module:v1 and v1", res.Name, res.Tag)
				}
			},
		},
		{
			name: "wasm module with env, args, labels, files and function mode",
			file: func(t *testing.T) string { return writeFile(t, "fn.wasm", minimalWasm, 0o644) },
			cfg: image.NewConfig().WithName("nebula/fn").
				WithEnv("NEBULA_MODE", "function").
				WithEnv("GREETING", "hi").
				WithEnv("EMPTY", "").
				WithEnv("GREETING", "hello=world"). // replaces, keeps position
				WithArgs("--flag", "two words").
				WithArgs("last").
				WithLabel("org.opencontainers.image.title", "fn").
				WithLabel("team", "a").
				WithLabel("team", "b").
				WithUser("1000").
				WithUser("65532:65532"). // replaces
				WithFile(greeting, "/etc/nebula/greeting.txt").
				WithFile(greeting, "/srv/").
				WithFile(greeting, "/").
				WithFile(tool, "/tmp/bin/tool"),
			check: func(t *testing.T, res image.Result, a *archive) {
				wantStrings(t, "env", a.config.Config.Env, []string{"NEBULA_MODE=function", "GREETING=hello=world", "EMPTY="})
				wantStrings(t, "cmd", a.config.Config.Cmd, []string{"--flag", "two words", "last"})
				wantStrings(t, "entrypoint", a.config.Config.Entrypoint, []string{"/fn.wasm"})
				if a.config.Config.User != "65532:65532" {
					t.Errorf("user %q, want 65532:65532", a.config.Config.User)
				}
				if want := map[string]string{"org.opencontainers.image.title": "fn", "team": "b"}; !maps.Equal(a.config.Config.Labels, want) {
					t.Errorf("labels %v, want %v", a.config.Config.Labels, want)
				}
				wantStrings(t, "layer", a.layerNames(), []string{
					"etc/", "etc/nebula/", "etc/nebula/greeting.txt", "fn.wasm", "greeting.txt",
					"srv/", "srv/greeting.txt", "tmp/", "tmp/bin/", "tmp/bin/tool",
				})
				wantDir(t, a, "etc", 0o755)
				wantDir(t, a, "etc/nebula", 0o755)
				wantFile(t, a, "etc/nebula/greeting.txt", 0o640, []byte("hello\n"))
				wantFile(t, a, "srv/greeting.txt", 0o640, []byte("hello\n"))
				wantFile(t, a, "greeting.txt", 0o640, []byte("hello\n"))
				wantDir(t, a, "tmp", 0o1777) // an added file's parent keeps its mode
				wantFile(t, a, "tmp/bin/tool", 0o4755, []byte("#!/bin/sh\n"))
			},
		},
		{
			name: "wasm module listed for chosen platforms",
			file: func(t *testing.T) string { return writeFile(t, "p.wasm", minimalWasm, 0o644) },
			cfg:  image.NewConfig().WithName("nebula/p").WithPlatforms("linux/riscv64").WithPlatforms("linux/arm64", "amd64", "linux/arm/v7", "arm64"),
			check: func(t *testing.T, res image.Result, a *archive) {
				want := []string{"wasi/wasm", "linux/arm64", "linux/amd64", "linux/arm/v7"}
				wantStrings(t, "platforms", a.platforms(), want)
				wantStrings(t, "result platforms", res.Platforms, want)
				if a.config.OS != "linux" || a.config.Architecture != "arm64" {
					t.Errorf("config platform %s/%s, want the first linux one, linux/arm64", a.config.OS, a.config.Architecture)
				}
			},
		},
		{
			name: "static native executable",
			file: staticBinary,
			cfg:  image.NewConfig().WithName("localhost/nebula/native").WithArgs("x").WithPlatforms(hostLinux),
			check: func(t *testing.T, res image.Result, a *archive) {
				bin, err := os.ReadFile(staticBinary(t))
				if err != nil {
					t.Fatal(err)
				}
				wantResult(t, res, image.Result{
					Name: "localhost/nebula/native:latest", Tag: "latest",
					Kind: image.KindNative, Entrypoint: []string{"/hello"}, Platforms: []string{hostLinux},
				})
				wantStrings(t, "platforms", a.platforms(), []string{hostLinux})
				wantStrings(t, "entrypoint", a.config.Config.Entrypoint, []string{"/hello"})
				wantStrings(t, "cmd", a.config.Config.Cmd, []string{"x"})
				if a.config.OS != "linux" || a.config.Architecture != runtime.GOARCH {
					t.Errorf("config platform %s/%s, want %s", a.config.OS, a.config.Architecture, hostLinux)
				}
				if _, ok := a.manifest.Annotations[image.AnnotationWasmVariant]; ok {
					t.Errorf("native manifest has the annotation %s", image.AnnotationWasmVariant)
				}
				wantStrings(t, "layer", a.layerNames(), []string{"hello", "tmp/"})
				wantFile(t, a, "hello", 0o755, bin)
				wantDir(t, a, "tmp", 0o1777)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, a := build(t, tc.file(t), tc.cfg)

			// What every image has: the names on index.json, the digests
			// reported, and a docker-save manifest.json over the same blobs.
			ann := a.top.Manifests[0].Annotations
			if ann[image.AnnotationImageName] != res.Name || ann["org.opencontainers.image.ref.name"] != res.Tag {
				t.Errorf("index.json annotations %v, want name %q and ref.name %q", ann, res.Name, res.Tag)
			}
			if got := a.top.Manifests[0].Digest.String(); got != string(res.Digest) {
				t.Errorf("index.json points to %s, Result.Digest is %s", got, res.Digest)
			}
			if got := a.nested.Manifests[0].Digest.String(); got != string(res.ManifestDigest) {
				t.Errorf("nested index points to %s, Result.ManifestDigest is %s", got, res.ManifestDigest)
			}
			wantStrings(t, "archive entries", a.names[len(a.names)-3:], []string{"index.json", "manifest.json", "oci-layout"})
			wantDockerManifest(t, a, res.Name)

			for _, e := range a.layer {
				if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" {
					t.Errorf("layer entry %s owned by %d:%d (%q:%q), want 0:0", e.hdr.Name, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname)
				}
				if !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
					t.Errorf("layer entry %s mtime %v, want the epoch", e.hdr.Name, e.hdr.ModTime)
				}
			}
			if !slices.IsSorted(a.layerNames()) {
				t.Errorf("layer entries not sorted: %q", a.layerNames())
			}
			if !a.config.Created.Equal(time.Unix(0, 0)) {
				t.Errorf("config created %v, want the epoch", a.config.Created)
			}
			tc.check(t, res, a)
		})
	}
}

// The archive names the image as the user did, plus ":latest" when there is
// no tag: no registry is added, so `ctr run` takes exactly that name. Both
// places that carry the name, index.json's annotation (read by containerd)
// and manifest.json's RepoTags (read by docker's classic store), agree.
func TestBuildNames(t *testing.T) {
	src := writeFile(t, "n.wasm", minimalWasm, 0o644)
	tests := []struct {
		given, want, tag string
	}{
		{"nebula/hello", "nebula/hello:latest", "latest"},
		{"nebula/hello:v1", "nebula/hello:v1", "v1"},
		{"hello", "hello:latest", "latest"},
		{"localhost/nebula/hello", "localhost/nebula/hello:latest", "latest"},
		{"localhost/nebula/hello:v1", "localhost/nebula/hello:v1", "v1"},
		{"localhost/hello", "localhost/hello:latest", "latest"},
		{"localhost:5000/nebula/hello", "localhost:5000/nebula/hello:latest", "latest"},
		{"registry.example:5000/team/app:v2", "registry.example:5000/team/app:v2", "v2"},
		{"registry.example/a/b/c:1.0-rc.1", "registry.example/a/b/c:1.0-rc.1", "1.0-rc.1"},
		{"nebula/hello:latest", "nebula/hello:latest", "latest"},
		// The familiar form drops the "library/" of a single-component
		// name, as docker prints it.
		{"library/hello", "hello:latest", "latest"},
	}
	for _, tc := range tests {
		t.Run(tc.given, func(t *testing.T) {
			res, a := build(t, src, image.NewConfig().WithName(tc.given))
			if res.Name != tc.want || res.Tag != tc.tag {
				t.Errorf("result name %q tag %q, want %q and %q", res.Name, res.Tag, tc.want, tc.tag)
			}
			ann := a.top.Manifests[0].Annotations
			if ann[image.AnnotationImageName] != tc.want || ann["org.opencontainers.image.ref.name"] != tc.tag {
				t.Errorf("index.json annotations %v, want name %q and ref.name %q", ann, tc.want, tc.tag)
			}
			wantDockerManifest(t, a, tc.want)
		})
	}
}

// wantDockerManifest reads the archive as `docker load` does, through
// manifest.json, and checks it is the same image as the OCI layout's.
func wantDockerManifest(t *testing.T, a *archive, repoTag string) {
	t.Helper()
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(a.raw)), nil }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{repoTag}) {
		t.Fatalf("manifest.json %+v, want one image tagged %q", m, repoTag)
	}
	img, err := tarball.Image(opener, nil)
	if err != nil {
		t.Fatalf("reading through manifest.json: %v", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if cfgName != a.manifest.Config.Digest {
		t.Errorf("manifest.json config %s, OCI manifest config %s", cfgName, a.manifest.Config.Digest)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("manifest.json lists %d layers, want 1", len(layers))
	}
	if d, _ := layers[0].Digest(); d != a.manifest.Layers[0].Digest {
		t.Errorf("manifest.json layer %s, OCI manifest layer %s", d, a.manifest.Layers[0].Digest)
	}
}

func wantResult(t *testing.T, got, want image.Result) {
	t.Helper()
	if got.Name != want.Name || got.Tag != want.Tag || got.Kind != want.Kind ||
		!slices.Equal(got.Entrypoint, want.Entrypoint) || !slices.Equal(got.Platforms, want.Platforms) {
		t.Errorf("result %+v, want %+v", got, want)
	}
	if !strings.HasPrefix(string(got.Digest), "sha256:") || !strings.HasPrefix(string(got.ManifestDigest), "sha256:") {
		t.Errorf("result digests %q, %q", got.Digest, got.ManifestDigest)
	}
}

func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func wantFile(t *testing.T, a *archive, name string, mode int64, data []byte) {
	t.Helper()
	e, ok := a.files[name]
	if !ok {
		t.Errorf("layer has no %s", name)
		return
	}
	if e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode != mode || !bytes.Equal(e.data, data) {
		t.Errorf("layer %s: type %c mode %o, %d bytes; want a file, mode %o, %d bytes", name, e.hdr.Typeflag, e.hdr.Mode, len(e.data), mode, len(data))
	}
}

func wantDir(t *testing.T, a *archive, name string, mode int64) {
	t.Helper()
	e, ok := a.files[name]
	if !ok {
		t.Errorf("layer has no %s/", name)
		return
	}
	if e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode != mode {
		t.Errorf("layer %s: type %c mode %o; want a directory, mode %o", name, e.hdr.Typeflag, e.hdr.Mode, mode)
	}
}

func TestBuildErrors(t *testing.T) {
	wasm := writeFile(t, "ok.wasm", minimalWasm, 0o644)
	named := image.NewConfig().WithName("nebula/x")
	dir := t.TempDir()

	tests := []struct {
		name       string
		file       func(t *testing.T) string
		cfg        image.Config
		want       []string // substrings of the error
		wantMethod string   // the ConfigError's Method, if any
	}{
		{
			name: "garbage",
			file: func(t *testing.T) string { return writeFile(t, "garbage.wasm", []byte("hello, world\n"), 0o644) },
			cfg:  named,
			want: []string{"garbage.wasm", "neither a WebAssembly module nor an ELF executable"},
		},
		{
			name: "empty file",
			file: func(t *testing.T) string { return writeFile(t, "empty", nil, 0o644) },
			cfg:  named,
			want: []string{"empty", "neither a WebAssembly module nor an ELF executable"},
		},
		{
			name: "shell script",
			file: func(t *testing.T) string { return writeFile(t, "run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755) },
			cfg:  named,
			want: []string{"run.sh", "neither a WebAssembly module nor an ELF executable"},
		},
		{
			name: "wasm component",
			file: func(t *testing.T) string {
				return writeFile(t, "component.wasm", []byte("\x00asm\x0d\x00\x01\x00"), 0o644)
			},
			cfg:  named,
			want: []string{"component.wasm", "not a core module"},
		},
		{
			name: "dynamically linked executable",
			file: dynamicBinary,
			cfg:  named,
			want: []string{"dyn", "dynamically linked", "needs the interpreter /"},
		},
		{
			name: "missing input",
			file: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.wasm") },
			cfg:  named,
			want: []string{"nope.wasm", "no such file"},
		},
		{name: "no name", cfg: image.NewConfig(), want: []string{"WithName", "required"}, wantMethod: "WithName"},
		{name: "upper-case name", cfg: image.NewConfig().WithName("Nebula/X"), want: []string{`"Nebula/X"`, "lowercase"}, wantMethod: "WithName"},
		{
			name:       "digest name",
			cfg:        image.NewConfig().WithName("nebula/x@sha256:" + strings.Repeat("a", 64)),
			want:       []string{"nebula/x@sha256:", "digest"},
			wantMethod: "WithName",
		},
		{name: "empty env key", cfg: named.WithEnv("", "v"), want: []string{`"=v"`, "non-empty"}, wantMethod: "WithEnv"},
		{name: "env key with =", cfg: named.WithEnv("A=B", "v"), want: []string{`"A=B=v"`}, wantMethod: "WithEnv"},
		{name: "empty label key", cfg: named.WithLabel("", "v"), want: []string{`"=v"`, "non-empty"}, wantMethod: "WithLabel"},
		{name: "user name", cfg: named.WithUser("nobody"), want: []string{`"nobody"`, "UID or UID:GID"}, wantMethod: "WithUser"},
		{name: "user with empty gid", cfg: named.WithUser("1000:"), want: []string{`"1000:"`}, wantMethod: "WithUser"},
		{name: "negative uid", cfg: named.WithUser("-1"), want: []string{`"-1"`}, wantMethod: "WithUser"},
		{name: "uid beyond 32 bits", cfg: named.WithUser("4294967296"), want: []string{`"4294967296"`}, wantMethod: "WithUser"},
		{name: "relative destination", cfg: named.WithFile(wasm, "etc/x"), want: []string{"etc/x", "not an absolute path"}, wantMethod: "WithFile"},
		{name: "root destination", cfg: named.WithFile(wasm, "/.."), want: []string{"root directory"}, wantMethod: "WithFile"},
		{name: "missing source", cfg: named.WithFile(filepath.Join(dir, "missing"), "/x"), want: []string{"missing", "no such file"}, wantMethod: "WithFile"},
		{name: "directory source", cfg: named.WithFile(dir, "/x"), want: []string{"not a regular file"}, wantMethod: "WithFile"},
		{name: "onto the entrypoint", cfg: named.WithFile(wasm, "/in.wasm"), want: []string{"/in.wasm", "taken by the entrypoint"}, wantMethod: "WithFile"},
		{name: "onto /tmp", cfg: named.WithFile(wasm, "/tmp"), want: []string{"/tmp", "taken by the image's /tmp"}, wantMethod: "WithFile"},
		{name: "under a file", cfg: named.WithFile(wasm, "/in.wasm/x"), want: []string{"/in.wasm is already a file"}, wantMethod: "WithFile"},
		{name: "twice", cfg: named.WithFile(wasm, "/a").WithFile(wasm, "/a"), want: []string{"/a", "already taken"}, wantMethod: "WithFile"},
		{name: "non-linux platform", cfg: named.WithPlatforms("windows/amd64"), want: []string{"windows/amd64", "linux/ARCH"}, wantMethod: "WithPlatforms"},
		{name: "bad platform", cfg: named.WithPlatforms("linux/amd64/v1/x"), want: []string{"linux/amd64/v1/x"}, wantMethod: "WithPlatforms"},
		{
			name:       "platform of a native executable",
			file:       staticBinary,
			cfg:        named.WithPlatforms("linux/riscv64"),
			want:       []string{"linux/riscv64", "from its ELF header"},
			wantMethod: "WithPlatforms",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "in.wasm")
			if tc.file != nil {
				file = tc.file(t)
			} else if err := os.WriteFile(file, minimalWasm, 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			_, err := image.Build(context.Background(), file, tc.cfg, &out)
			if err == nil {
				t.Fatal("Build succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var ce *image.ConfigError
			if errors.As(err, &ce) != (tc.wantMethod != "") || (ce != nil && ce.Method != tc.wantMethod) {
				t.Errorf("error %q: ConfigError %+v, want method %q", err, ce, tc.wantMethod)
			}
			if out.Len() != 0 {
				t.Errorf("Build wrote %d bytes before failing", out.Len())
			}
		})
	}
}

// The dynamic-ELF error names the interpreter the program really needs.
func TestBuildDynamicNamesInterpreter(t *testing.T) {
	bin := dynamicBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		t.Fatal("gcc made a program without PT_INTERP")
	}
	_, err = image.Build(context.Background(), bin, image.NewConfig().WithName("x/y"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), bin) || !strings.Contains(err.Error(), interp) {
		t.Fatalf("error %v, want it to name %s and %s", err, bin, interp)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func buildBytes(t *testing.T, file string, cfg image.Config) (image.Result, []byte) {
	t.Helper()
	var buf bytes.Buffer
	res, err := image.Build(context.Background(), file, cfg, &buf)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res, buf.Bytes()
}

func TestBuildDeterministic(t *testing.T) {
	inputs := map[string]func(t *testing.T) string{
		"wasm":   func(t *testing.T) string { return writeFile(t, "d.wasm", minimalWasm, 0o644) },
		"native": staticBinary,
	}
	extra := writeFile(t, "extra.txt", []byte("x"), 0o644)
	for name, file := range inputs {
		t.Run(name, func(t *testing.T) {
			src := file(t)
			cfg := image.NewConfig().WithName("nebula/d").WithEnv("A", "1").WithLabel("l", "v").WithArgs("a").WithFile(extra, "/etc/extra.txt")
			res1, b1 := buildBytes(t, src, cfg)
			time.Sleep(1100 * time.Millisecond) // a second later: the clock must not matter

			// The same content under the same name elsewhere, with other times.
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			src2 := writeFile(t, filepath.Base(src), data, 0o700)
			if err := os.Chtimes(src2, time.Now(), time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(extra, time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			res2, b2 := buildBytes(t, src2, cfg)
			if sha(b1) != sha(b2) || res1.Digest != res2.Digest {
				t.Fatalf("two builds differ: archives %s and %s, index digests %s and %s", sha(b1), sha(b2), res1.Digest, res2.Digest)
			}

			// Any change of content changes the digest.
			res3, _ := buildBytes(t, src, cfg.WithEnv("A", "2"))
			if res3.Digest == res1.Digest {
				t.Errorf("changing the env kept the digest %s", res1.Digest)
			}
		})
	}
}

func TestBuildSourceDateEpoch(t *testing.T) {
	src := writeFile(t, "e.wasm", minimalWasm, 0o644)
	cfg := image.NewConfig().WithName("nebula/e")
	res0, _ := buildBytes(t, src, cfg)

	t.Setenv(image.SourceDateEpochEnv, "1700000000")
	want := time.Unix(1700000000, 0).UTC()
	res1, a := build(t, src, cfg)
	if res1.Digest == res0.Digest {
		t.Errorf("SOURCE_DATE_EPOCH did not change the digest")
	}
	if !a.config.Created.Equal(want) || !a.config.History[0].Created.Equal(want) {
		t.Errorf("created %v, history %v; want %v", a.config.Created, a.config.History[0].Created, want)
	}
	for _, e := range a.layer {
		if !e.hdr.ModTime.Equal(want) {
			t.Errorf("layer entry %s mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, want)
		}
	}

	// WithCreated wins over the environment.
	explicit := time.Date(2024, 5, 6, 7, 8, 9, 500, time.FixedZone("X", 3600))
	_, a = build(t, src, cfg.WithCreated(explicit))
	if want := time.Date(2024, 5, 6, 6, 8, 9, 0, time.UTC); !a.config.Created.Equal(want) {
		t.Errorf("created %v, want %v", a.config.Created, want)
	}

	t.Setenv(image.SourceDateEpochEnv, "yesterday")
	if _, err := image.Build(context.Background(), src, cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") || !strings.Contains(err.Error(), "yesterday") {
		t.Errorf("error %v, want it to name SOURCE_DATE_EPOCH and its value", err)
	}
}

// Config values are immutable: deriving from a base never changes the base
// or a sibling.
func TestConfigImmutable(t *testing.T) {
	src := writeFile(t, "i.wasm", minimalWasm, 0o644)
	base := image.NewConfig().WithName("nebula/i").WithEnv("BASE", "1").WithArgs("base").WithLabel("base", "1")
	a := base.WithEnv("BASE", "a").WithEnv("A", "1").WithArgs("a").WithLabel("base", "a")
	b := base.WithEnv("B", "1").WithArgs("b").WithName("nebula/b")

	_, got := build(t, src, base)
	wantStrings(t, "base env", got.config.Config.Env, []string{"BASE=1"})
	wantStrings(t, "base cmd", got.config.Config.Cmd, []string{"base"})
	if got.config.Config.Labels["base"] != "1" {
		t.Errorf("base labels %v", got.config.Config.Labels)
	}
	_, got = build(t, src, a)
	wantStrings(t, "a env", got.config.Config.Env, []string{"BASE=a", "A=1"})
	wantStrings(t, "a cmd", got.config.Config.Cmd, []string{"base", "a"})
	resB, got := build(t, src, b)
	wantStrings(t, "b env", got.config.Config.Env, []string{"BASE=1", "B=1"})
	wantStrings(t, "b cmd", got.config.Config.Cmd, []string{"base", "b"})
	if resB.Name != "nebula/b:latest" {
		t.Errorf("b name %q", resB.Name)
	}
}

func TestBuildCanceled(t *testing.T) {
	src := writeFile(t, "c.wasm", minimalWasm, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if _, err := image.Build(ctx, src, image.NewConfig().WithName("nebula/c"), &out); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if out.Len() != 0 {
		t.Errorf("wrote %d bytes", out.Len())
	}
}
