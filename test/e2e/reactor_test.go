package e2e

import (
	"bytes"
	encbinary "encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nebula.dev/nebula/test/functions"
	"nebula.dev/nebula/test/harness"
)

// Reactor images, built by buildReactorImages from test/functions.
const (
	reactorFnImage      = "localhost/nebula/reactor-fn:latest"
	reactorStateFnImage = "localhost/nebula/reactorstate-fn:latest"
	reactorRunImage     = "localhost/nebula/reactor-wasm:latest"
	goReactorFnImage    = "localhost/nebula/goreactor-fn:latest"
)

// buildReactorImages builds the reactor images with `nebula build` and
// imports them into d.
func buildReactorImages(t *testing.T, d *harness.Daemon) {
	t.Helper()
	dir, bin, out := fixtures(t), harness.Binaries(t), t.TempDir()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goReactor := filepath.Join(out, "goreactor.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", goReactor, "./wasmhost/testdata/goreactor")
	build.Dir, build.Env = root, append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build wasmhost/testdata/goreactor: %v\n%s", err, b)
	}
	for _, img := range []struct {
		module string
		args   []string
	}{
		{goReactor, []string{"--function", "-t", goReactorFnImage}},
		{functions.Reactor, []string{"--function", "-t", reactorFnImage}},
		{functions.ReactorState, []string{"--function", "-t", reactorStateFnImage}},
		{functions.Reactor, []string{"-t", reactorRunImage}},
	} {
		archive := filepath.Join(out, strings.NewReplacer("/", "_", ":", "_").Replace(img.args[len(img.args)-1])+".tar")
		module := img.module
		if !filepath.IsAbs(module) {
			module = filepath.Join(dir, module)
		}
		args := append(append([]string{"build", module}, img.args...), "-o", archive)
		if b, err := exec.Command(filepath.Join(bin, "nebula"), args...).CombinedOutput(); err != nil {
			t.Fatalf("nebula %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		d.MustCtr(t, "images", "import", archive)
	}
}

// TestReactor serves events with reactors through containerd: each event
// in a fresh instance restored from the snapshot taken at task start. A
// trap, a non-zero status and a handler looping past the timeout get 500,
// 500 and 504, and the next event is served; no event sees another's
// memory, globals, files or variables; run mode refuses a reactor.
func TestReactor(t *testing.T) {
	d := harness.Start(t)
	buildReactorImages(t, d)

	t.Run("echo", func(t *testing.T) {
		f := startFunction(t, d, reactorFnImage, "fn-reactor", "--annotation", "nebula.dev/timeout=1s")
		for _, id := range []string{"one", "two"} {
			r := send(t, "POST", f.URL, map[string]string{
				"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/e2e", "Ce-Type": "reactor.echo",
				"Content-Type": "text/plain",
			}, []byte("data "+id))
			if r.status != 200 || !bytes.HasPrefix(r.body, []byte("ready data "+id+"\x00")) ||
				!bytes.Contains(r.body, []byte("\x00CE_ID="+id+"\x00")) {
				t.Errorf("event %s: %d %q", id, r.status, r.body)
			}
			if bytes.Contains(r.body, []byte("FOO=bar")) {
				t.Errorf("event %s: the task's environment is among the event's variables: %q", id, r.body)
			}
		}
		for _, c := range []struct {
			data   string
			status int
		}{{"!", 500}, {"#", 500}, {"$", 500}, {"%", 500}, {"@", 504}} {
			r := send(t, "POST", f.URL, map[string]string{"Content-Type": "text/plain"}, []byte(c.data))
			if r.status != c.status {
				t.Errorf("event %q: status %d (%q), want %d", c.data, r.status, r.body, c.status)
			}
			if r := send(t, "POST", f.URL, map[string]string{"Content-Type": "text/plain"}, []byte("after")); r.status != 200 ||
				!bytes.HasPrefix(r.body, []byte("ready after\x00")) {
				t.Errorf("event after %q: %d %q, want 200", c.data, r.status, r.body)
			}
		}
	})

	t.Run("fresh state", func(t *testing.T) {
		f := startFunction(t, d, reactorStateFnImage, "fn-reactorstate")
		var first []byte
		var randoms [][]byte
		for i, id := range []string{"a", "bb", "ccc"} {
			r := send(t, "POST", f.URL, map[string]string{
				"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/e2e", "Ce-Type": "reactor.state",
			}, nil)
			if r.status != 200 || len(r.body) < 60 {
				t.Fatalf("event %s: %d %q", id, r.status, r.body)
			}
			report, vars := r.body[:60], string(r.body[60:])
			if !strings.Contains(vars, "CE_ID="+id+"\x00") || strings.Contains(vars, "FOO=") {
				t.Errorf("event %s: variables %q", id, vars)
			}
			randoms = append(randoms, bytes.Clone(report[32:48]))
			// Everything but the variables' size and the random bytes
			// must be what the first event saw.
			masked := bytes.Clone(report)
			copy(masked[28:48], make([]byte, 20))
			if i == 0 {
				first = masked
				// words: marker at 4096, past the snapshot, fd 4's errno,
				// the variables' buffer before this event wrote it.
				u32 := func(off int) uint32 { return encbinary.LittleEndian.Uint32(report[off:]) }
				if u32(48) != 0 || u32(24) != 8 || u32(56) != 0 || u32(52) != 0 {
					t.Errorf("first event: past the snapshot %#x (want 0), fd 4 errno %d (want 8), variables' buffer %#x (want 0), path_open errno %d",
						u32(48), u32(24), u32(56), u32(52))
				}
			} else if !bytes.Equal(masked, first) {
				t.Errorf("event %s saw % x, the first saw % x: state leaked between events", id, masked, first)
			}
		}
		if bytes.Equal(randoms[0], randoms[1]) || bytes.Equal(randoms[1], randoms[2]) {
			t.Errorf("random_get repeated between events: % x", randoms)
		}
	})

	// A Go reactor (wasmhost/testdata/goreactor): its 3 MB snapshot is
	// mapped, and the pages an event writes are found with PAGEMAP_SCAN
	// inside the container and copied back.
	t.Run("go", func(t *testing.T) {
		logFile := filepath.Join(t.TempDir(), "task.log")
		f := startFunction(t, d, goReactorFnImage, "fn-goreactor", "--log-uri", "file://"+logFile)
		r := send(t, "POST", f.URL, map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": "g1", "Ce-Source": "/e2e", "Ce-Type": "reactor.go",
			"Content-Type": "application/json",
		}, []byte(`{"a":1}`))
		if want := `{"data":{"a":1},"env":[`; r.status != 200 || !strings.HasPrefix(string(r.body), want) ||
			!strings.Contains(string(r.body), `"CE_ID=g1"`) || strings.Contains(string(r.body), "FOO=") {
			t.Errorf("event: %d %q, want 200 starting %q with CE_ID=g1 and not the task's FOO", r.status, r.body, want)
		}
		for i := range 3 {
			if r := send(t, "POST", f.URL, map[string]string{"Content-Type": "text/plain"}, []byte("counter")); r.status != 200 || string(r.body) != "1\n" {
				t.Errorf("counter %d: %d %q, want 200 \"1\\n\": an event saw an earlier one's memory", i, r.status, r.body)
			}
		}
		log, _ := os.ReadFile(logFile)
		if !strings.Contains(string(log), "memory restored by mapped, written pages copied back") {
			t.Errorf("task log %q: want the snapshot restored with PAGEMAP_SCAN", log)
		}
	})

	// A reactor whose state a snapshot could not restore: Create fails
	// with the reason, and nothing is left behind.
	t.Run("refused at Create", func(t *testing.T) {
		dir := t.TempDir()
		src, wasm, archive := filepath.Join(dir, "m.wat"), filepath.Join(dir, "passive.wasm"), filepath.Join(dir, "passive.tar")
		os.WriteFile(src, []byte(`(module (memory 1) (data "x")
			(func (export "nebula_handle") (result i32) (i32.const 0)))`), 0o644)
		if b, err := exec.Command("wat2wasm", src, "-o", wasm).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm: %v\n%s", err, b)
		}
		const image = "localhost/nebula/passive-fn:latest"
		if b, err := exec.Command(filepath.Join(harness.Binaries(t), "nebula"), "build", wasm, "--function", "-t", image, "-o", archive).CombinedOutput(); err != nil {
			t.Fatalf("nebula build: %v\n%s", err, b)
		}
		d.MustCtr(t, "images", "import", archive)
		r := d.Ctr(t, "run", "--rm", "--runtime", nebula, "--net-host", image, "passive")
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, "reactor cannot be snapshotted: data segment 0 is passive") {
			t.Errorf("ctr run: exit %d, stderr %q; want a failed Create naming the passive segment", r.ExitCode, r.Stderr)
		}
		d.Ctr(t, "container", "rm", "passive")
	})

	t.Run("run mode refused", func(t *testing.T) {
		r := d.Ctr(t, "run", "--rm", "--runtime", nebula, reactorRunImage, "run-reactor")
		if r.ExitCode != 126 || !strings.Contains(r.Stdout+r.Stderr, "it handles events and runs only in function mode") {
			t.Errorf("ctr run: exit %d, stdout %q, stderr %q; want 126 and the reason", r.ExitCode, r.Stdout, r.Stderr)
		}
	})
}
