package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nebula.dev/nebula/test/harness"
)

// TestGoReactorExample builds examples/greet as its doc says a user does —
// go build -buildmode=c-shared, nebula build --function, ctr images
// import, ctr run — and sends it a CloudEvent and a plain HTTP request.
func TestGoReactorExample(t *testing.T) {
	d := startWithProbe(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wasm, archive := filepath.Join(dir, "greet.wasm"), filepath.Join(dir, "greet.tar")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", wasm, ".")
	build.Dir = filepath.Join(root, "examples/greet")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(d.BinDir, "nebula"), "build", wasm, "--function",
		"-t", "localhost/nebula/greet:v1", "-o", archive).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reactor:") || strings.Contains(string(out), "warning") {
		t.Fatalf("nebula build: %v\n%s", err, out)
	}
	d.MustCtr(t, "images", "import", archive)
	f := startFunction(t, d, "localhost/nebula/greet:v1", "greet")

	h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "ev-1", "Ce-Source": "/e2e", "Ce-Type": "greet.hello",
		"Content-Type": "application/json"}
	r := send(t, "POST", f.URL, h, []byte(`{"name":"Ada","lang":"fr"}`))
	var got map[string]string
	if r.status != 200 || json.Unmarshal(r.body, &got) != nil || got["greeting"] != "Bonjour, Ada!" || got["event"] != "ev-1" {
		t.Fatalf("CloudEvent: %d %q", r.status, r.body)
	}
	if r.header.Get("Ce-Type") != "greet.hello.reply" {
		t.Errorf("reply type %q", r.header.Get("Ce-Type"))
	}
	// The next event sees its own id, not the previous one's.
	h["Ce-Id"] = "ev-2"
	r = send(t, "POST", f.URL, h, []byte(`{"name":"Grace"}`))
	if got = nil; r.status != 200 || json.Unmarshal(r.body, &got) != nil || got["greeting"] != "Hello, Grace!" || got["event"] != "ev-2" {
		t.Errorf("second CloudEvent: %d %q", r.status, r.body)
	}
	// The handler's error is a 500, and the function keeps serving.
	if r = send(t, "POST", f.URL, h, []byte(`Ada`)); r.status != 500 {
		t.Errorf("invalid data: %d %q, want 500", r.status, r.body)
	}
	r = send(t, "POST", f.URL, map[string]string{"Content-Type": "application/json"}, []byte(`{"name":"Ada"}`))
	if r.status != 201 || r.header.Get("Content-Type") != "application/json" || string(r.body) != `{"greeting":"Hello, Ada!"}` {
		t.Errorf("plain HTTP: %d %s %q, want 201 application/json", r.status, r.header.Get("Content-Type"), r.body)
	}
}
