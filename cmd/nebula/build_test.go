package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nebula.dev/nebula/oci/image"
)

var minimalWasm = []byte("\x00asm\x01\x00\x00\x00")

// run executes `nebula args...` and returns its stdout, stderr and error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func writeWasm(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hello.wasm")
	if err := os.WriteFile(p, minimalWasm, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarFile returns the named entry of a tar stream.
func tarFile(t *testing.T, r io.Reader, name string) []byte {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the archive: %v", name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func TestBuildCommand(t *testing.T) {
	wasm := writeWasm(t)
	extra := filepath.Join(t.TempDir(), "extra.txt")
	if err := os.WriteFile(extra, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "hello.tar")
	stdout, _, err := run(t, "build", wasm, "-o", out, "-t", "localhost/nebula/hello:v1",
		"--function", "--env", "A=1,2", "--arg", "a,b", "--arg", "c", "--label", "k=v",
		"--add", extra+":/etc/", "--platform", "linux/arm64,linux/amd64")
	if err != nil {
		t.Fatalf("nebula build: %v", err)
	}
	for _, want := range []string{
		"wrote " + out + ": localhost/nebula/hello:v1 (wasm; wasi/wasm, linux/arm64, linux/amd64)",
		"ctr images import " + out,
		"ctr run --rm --runtime io.containerd.nebula.v1 localhost/nebula/hello:v1 ID",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output %q lacks %q", stdout, want)
		}
	}

	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(tarFile(t, f, "index.json"), &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != "localhost/nebula/hello:v1" {
		t.Errorf("index.json %+v", index)
	}
	// No temporary file is left next to the output.
	entries, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("output directory holds %d entries, want only the archive", len(entries))
	}
}

// The flags reach the image config: --arg and --env keep commas (they are
// not lists), --function sets NEBULA_MODE.
func TestBuildCommandConfig(t *testing.T) {
	cfg, err := buildOptions{
		tag: "x/y", env: []string{"A=1,2", "B="}, args: []string{"a,b", "c"},
		labels: []string{"k=v=w"}, user: "65532:65532", function: true,
	}.config()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Build(context.Background(), writeWasm(t), cfg, &buf); err != nil {
		t.Fatal(err)
	}
	var m []struct{ Config string }
	raw := buf.Bytes()
	if err := json.Unmarshal(tarFile(t, bytes.NewReader(raw), "manifest.json"), &m); err != nil || len(m) != 1 {
		t.Fatalf("manifest.json: %v %+v", err, m)
	}
	var config struct {
		Config struct {
			Env    []string
			Cmd    []string
			Labels map[string]string
			User   string
		} `json:"config"`
	}
	if err := json.Unmarshal(tarFile(t, bytes.NewReader(raw), m[0].Config), &config); err != nil {
		t.Fatal(err)
	}
	c := config.Config
	if strings.Join(c.Env, " ") != "NEBULA_MODE=function A=1,2 B=" || strings.Join(c.Cmd, "|") != "a,b|c" || c.Labels["k"] != "v=w" || c.User != "65532:65532" {
		t.Errorf("config env %q cmd %q labels %v user %q", c.Env, c.Cmd, c.Labels, c.User)
	}
}

func TestBuildCommandToStdout(t *testing.T) {
	stdout, stderr, err := run(t, "build", writeWasm(t), "-o", "-", "-t", "nebula/s")
	if err != nil {
		t.Fatal(err)
	}
	if b := tarFile(t, strings.NewReader(stdout), "oci-layout"); !bytes.Contains(b, []byte("imageLayoutVersion")) {
		t.Errorf("oci-layout %q", b)
	}
	// A short name is stored as given, with the default tag, and that is the
	// name printed for ctr.
	for _, want := range []string{"wrote -: nebula/s:latest (wasm;", "ctr run --rm --runtime io.containerd.nebula.v1 nebula/s:latest ID"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("summary on stderr %q lacks %q", stderr, want)
		}
	}
	var m []struct{ RepoTags []string }
	if err := json.Unmarshal(tarFile(t, strings.NewReader(stdout), "manifest.json"), &m); err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "nebula/s:latest" {
		t.Errorf("manifest.json %+v (%v), want RepoTags [nebula/s:latest]", m, err)
	}
}

func TestBuildCommandErrors(t *testing.T) {
	wasm := writeWasm(t)
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	base := []string{"build", wasm, "-o", out, "-t", "nebula/x"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"env without =", append(base, "--env", "FOO"), []string{`--env "FOO"`, "K=V"}},
		{"env with empty key", append(base, "--env", "=v"), []string{`--env "=v"`}},
		{"label without =", append(base, "--label", "k"), []string{`--label "k"`, "K=V"}},
		{"label with empty key", append(base, "--label", "=v"), []string{`--label "=v"`}},
		{"add without DST", append(base, "--add", "file"), []string{`--add "file"`, "SRC:DST"}},
		{"add with relative DST", append(base, "--add", "a:b"), []string{`--add "a:b"`}},
		{"add of a missing file", append(base, "--add", "/no/such:/x"), []string{`--add "/no/such:/x"`, "no such file"}},
		{"user name", append(base, "--user", "nobody"), []string{`--user "nobody"`, "UID or UID:GID"}},
		{"bad platform", append(base, "--platform", "windows/amd64"), []string{`--platform "windows/amd64"`}},
		{"bad name", []string{"build", wasm, "-o", out, "-t", "Nebula/X"}, []string{`--tag "Nebula/X"`}},
		{"no name", []string{"build", wasm, "-o", out}, []string{"tag"}},
		{"no output", []string{"build", wasm, "-t", "a/b"}, []string{"output"}},
		{"no file", []string{"build", "-o", out, "-t", "a/b"}, []string{"accepts 1 arg"}},
		{"unknown flag", append(base, "--nope"), []string{"unknown flag: --nope", "nebula build --help"}},
		{"garbage input", []string{"build", garbage, "-o", out, "-t", "a/b"}, []string{garbage, "neither a WebAssembly module nor an ELF executable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.args...)
			if err == nil {
				t.Fatal("nebula build succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			// A failed build leaves nothing behind.
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("failed build left %d files in the output directory", len(entries))
			}
		})
	}
}

// reactorWasm is the smallest reactor: it exports nebula_handle () -> i32.
var reactorWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
	0x03, 0x02, 0x01, 0x00, // func 0 of type 0
	0x07, 0x11, 0x01, 0x0d, 'n', 'e', 'b', 'u', 'l', 'a', '_', 'h', 'a', 'n', 'd', 'l', 'e', 0x00, 0x00,
	0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b, // i32.const 0
}

// A reactor is named as one, and without function mode the build warns
// that it only serves events; a command module gets neither.
func TestBuildCommandReactor(t *testing.T) {
	reactor := filepath.Join(t.TempDir(), "fn.wasm")
	if err := os.WriteFile(reactor, reactorWasm, 0o600); err != nil {
		t.Fatal(err)
	}
	const note, warning = "reactor:", "it only serves events"
	for _, tc := range []struct {
		name, file    string
		flags         []string
		note, warning bool
	}{
		{"reactor --function", reactor, []string{"--function"}, true, false},
		{"reactor --env NEBULA_MODE=function", reactor, []string{"--env", "NEBULA_MODE=function"}, true, false},
		{"reactor run mode", reactor, nil, true, true},
		{"command", writeWasm(t), nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "fn.tar")
			stdout, stderr, err := run(t, append([]string{"build", tc.file, "-o", out, "-t", "localhost/nebula/fn:v1"}, tc.flags...)...)
			if err != nil {
				t.Fatalf("nebula build: %v", err)
			}
			if strings.Contains(stdout, note) != tc.note || strings.Contains(stderr, warning) != tc.warning {
				t.Errorf("stdout %q, stderr %q: want note %v, warning %v", stdout, stderr, tc.note, tc.warning)
			}
		})
	}
}
