package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// benchResult is what one `nebula bench` run did.
type benchResult struct {
	stdout, stderr string
	code           int
}

// runBench runs `nebula bench` (the freshly built binary) against d as a
// user types it, with the daemon's module cache as --cache-dir.
func runBench(t *testing.T, d *harness.Daemon, args ...string) benchResult {
	t.Helper()
	cmd := benchCommand(t, d, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := benchResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("nebula bench: %v", err)
	}
	return r
}

func benchCommand(t *testing.T, d *harness.Daemon, args ...string) *exec.Cmd {
	bin := filepath.Join(harness.Binaries(t), "nebula")
	full := []string{"bench"}
	if d != nil {
		full = append(full, "--address", d.Address, "--namespace", d.Namespace, "--cache-dir", d.CacheDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, bin, append(full, args...)...)
}

// TestBenchCLI runs the default study with two rounds and checks every
// output file, then that nothing is left running or mounted.
func TestBenchCLI(t *testing.T) {
	d := startWithProbe(t)
	out := filepath.Join(t.TempDir(), "out")
	r := runBench(t, d, "-n", "2", "--warmup", "1", "--events", "3", "--primers", "2", "--out", out)
	if r.code != 0 {
		t.Fatalf("nebula bench: exit %d\nstdout:\n%s\nstderr:\n%s\n%s", r.code, r.stdout, r.stderr, d.LogTail(40))
	}
	// Not a terminal: one progress line per round.
	if !strings.Contains(r.stderr, "round 1/3 (warm-up)") || !strings.Contains(r.stderr, "round 3/3 (measuring)") {
		t.Errorf("progress lines:\n%s", r.stderr)
	}
	for _, want := range []string{"median 95% CI", "container-runc/go", "wasm/tiny", "ratio of medians", "container-runc/go ÷ wasm/go"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the table lacks %q:\n%s", want, r.stdout)
		}
	}
	// Two iterations per cell; a per-event cell's iteration is 3 events.
	rows := map[string]int{}
	for _, c := range []string{"container-runc/go", "container-nebula/go", "container-wasm/tiny", "container-wasm/go",
		"start-native/go", "start-wasm/tiny", "start-wasm/go", "start-wasm-miss/tiny", "start-wasm-miss/go",
		"start-snapshot/tiny", "start-snapshot/go"} {
		rows[c] = 2
	}
	for _, c := range []string{"process/go", "wasm/tiny", "wasm/go", "snapshot/tiny", "snapshot/go"} {
		rows[c] = 2 * 3
	}
	checkBenchOutput(t, d, out, rows)
	benchNothingLeft(t, d)
}

// checkBenchOutput checks raw.csv (the given rows per cell, positive
// phases), summary.md, machine.json and that every plot decodes.
func checkBenchOutput(t *testing.T, d *harness.Daemon, out string, cells map[string]int) {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "raw.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatalf("raw.csv: %v", err)
	}
	header := rows[0]
	want := 0
	for _, n := range cells {
		want += n
	}
	if len(rows)-1 != want {
		t.Errorf("raw.csv has %d rows, want %d", len(rows)-1, want)
	}
	perCell := map[string]int{}
	for _, row := range rows[1:] {
		perCell[row[0]]++
		if it, err := strconv.Atoi(row[4]); err != nil || it < 0 || it >= cells[row[0]] {
			t.Errorf("row %v: iteration %q", row, row[4])
		}
		set := 0
		for i := 5; i < len(row); i++ {
			if row[i] == "" {
				continue
			}
			v, err := strconv.ParseFloat(row[i], 64)
			switch {
			case err != nil:
				t.Errorf("%s %s = %q: %v", row[0], header[i], row[i], err)
			case header[i] == "queue_s" && v < 0, header[i] != "queue_s" && v <= 0:
				t.Errorf("%s %s = %v, want positive", row[0], header[i], v)
			}
			set++
		}
		if set < 4 {
			t.Errorf("row %v: only %d phases", row, set)
		}
	}
	for c, n := range cells {
		if perCell[c] != n {
			t.Errorf("cell %s: %d rows, want %d", c, perCell[c], n)
		}
	}

	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Findings", "## Every phase", "## Method", "300 ms"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("summary.md lacks %q", want)
		}
	}

	var m struct {
		CPUModel   string `json:"cpu_model"`
		Cores      int    `json:"cores"`
		Kernel     string `json:"kernel"`
		Cgroup     string `json:"cgroup"`
		Containerd struct {
			Version string `json:"version"`
		} `json:"containerd"`
		Runc, Wazero, Go string
	}
	b, err := os.ReadFile(filepath.Join(out, "machine.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("machine.json: %v", err)
	}
	if m.CPUModel == "" || m.Cores < 1 || m.Kernel == "" || m.Cgroup == "" || m.Containerd.Version != "v"+d.Version ||
		!strings.Contains(m.Runc, "runc version") || !strings.HasPrefix(m.Wazero, "v1.") || !strings.HasPrefix(m.Go, "go1.") {
		t.Errorf("machine.json: %s", b)
	}

	plots := 0
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		p := filepath.Join(out, e.Name())
		switch filepath.Ext(p) {
		case ".png":
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := png.Decode(f); err != nil {
				t.Errorf("%s: %v", e.Name(), err)
			}
			f.Close()
			plots++
		case ".svg":
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			dec := xml.NewDecoder(f)
			for {
				if _, err := dec.Token(); err == io.EOF {
					break
				} else if err != nil {
					t.Errorf("%s: %v", e.Name(), err)
					break
				}
			}
			f.Close()
			plots++
		}
	}
	if plots != 12 {
		t.Errorf("%d plots, want 12 (startup, exec, total × ECDF, box × SVG, PNG)", plots)
	}
}

// benchNothingLeft checks that the study removed what it made: containers,
// shims, its network namespace, the cache-miss modules, a user image.
func benchNothingLeft(t *testing.T, d *harness.Daemon) {
	t.Helper()
	ctx := d.Context()
	if cs, err := d.Client.Containers(ctx); err != nil || len(cs) != 0 {
		t.Errorf("containers left: %d (%v)", len(cs), err)
	}
	imgs, err := d.Client.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if strings.Contains(img.Name(), "bench-user") {
			t.Errorf("image left: %s", img.Name())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(d.ShimPIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := d.ShimPIDs(); len(pids) > 0 {
		t.Errorf("shims left: %v", pids)
	}
	if cg := harness.CgroupsUnder(d.Namespace); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	if m := harness.MountsUnder(filepath.Join(d.Dir, "state")); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	sc := bufio.NewScanner(bytes.NewReader(mi))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "nebula-bench-") {
			t.Errorf("mount left: %s", sc.Text())
		}
	}
	// The cache keeps one entry per real module (echo.wasm, probe.wasm and
	// their reactor builds), none of the cache-miss variants.
	if entries, _ := os.ReadDir(d.CacheDir()); len(entries) > 4 {
		t.Errorf("%d module cache entries left, want at most 4", len(entries))
	}
}

// TestBenchCLIUserModule studies a module given as a file: bench packages
// and imports it, and removes the image afterwards.
func TestBenchCLIUserModule(t *testing.T) {
	d := startWithProbe(t)
	out := filepath.Join(t.TempDir(), "out")
	module := filepath.Join(fixtures(t), "echo.wasm")
	r := runBench(t, d, "-n", "2", "--warmup", "0", "--events", "1", "--out", out, "--no-progress",
		"--wasm", module, "--functions", "user", "--cells", "wasm,container-wasm,start-wasm-miss")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("--no-progress printed %q", r.stderr)
	}
	b, _ := os.ReadFile(filepath.Join(out, "raw.csv"))
	if n := strings.Count(string(b), "\n"); n != 1+3*2 {
		t.Errorf("raw.csv has %d lines, want 7:\n%s", n, b)
	}
	for _, c := range []string{"wasm/user,", "container-wasm/user,", "start-wasm-miss/user,"} {
		if !strings.Contains(string(b), c) {
			t.Errorf("raw.csv lacks %s", c)
		}
	}
	benchNothingLeft(t, d)
}

// TestBenchCLIInterrupt: Ctrl-C stops the study, which still writes what
// it measured and removes what it started.
func TestBenchCLIInterrupt(t *testing.T) {
	d := startWithProbe(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := benchCommand(t, d, "-n", "200", "--warmup", "0", "--events", "1", "--out", out, "--functions", "go", "--cells", "container-runc,wasm,start-native")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "round 3/200") {
			cmd.Process.Signal(syscall.SIGINT)
			break
		}
	}
	rest, _ := io.ReadAll(stderr)
	log.Write(rest)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("after Ctrl-C: %v, want exit status 1\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "interrupted") {
		t.Errorf("stderr does not say it was interrupted:\n%s", log.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "raw.csv"))
	if err != nil {
		t.Fatalf("no raw.csv after Ctrl-C: %v", err)
	}
	if n := strings.Count(string(b), "\n") - 1; n < 6 || n > 9 {
		t.Errorf("raw.csv has %d rows after 2 rounds of 3 cells and a bit", n)
	}
	md, _ := os.ReadFile(filepath.Join(out, "summary.md"))
	if !bytes.Contains(md, []byte("Incomplete study")) {
		t.Errorf("summary.md does not say the study is incomplete")
	}
	benchNothingLeft(t, d)
}

// TestBenchCLIBadInput: each mistake gets a clear error and exit status 1,
// before anything runs.
func TestBenchCLIBadInput(t *testing.T) {
	d := harness.Start(t) // no images imported
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name   string
		daemon *harness.Daemon
		args   []string
		want   string
	}{
		{"unknown function", d, []string{"--out", out, "--functions", "tiny,rust"}, `--functions: unknown "rust" (want one or more of tiny, go, user)`},
		{"unknown cell", d, []string{"--out", out, "--cells", "docker"}, `--cells: unknown "docker"`},
		{"N=0", d, []string{"--out", out, "-n", "0"}, "-n 0: must be at least 1"},
		{"events=0", d, []string{"--out", out, "--events", "0"}, "--events 0: must be at least 1"},
		{"unwritable out", d, []string{"--out", filepath.Join(file, "out")}, "--out"},
		{"unreachable socket", nil, []string{"--out", out, "--address", filepath.Join(dir, "none.sock")}, "cannot reach containerd"},
		{"missing image", d, []string{"--out", out, "--functions", "tiny"}, "image localhost/nebula/echo-fn-wasm:latest is not in namespace " + d.Namespace},
		{"not a module", d, []string{"--out", out, "--wasm", file}, "is not a WebAssembly module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBench(t, tc.daemon, tc.args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed start left %s behind", out)
			}
		})
	}
}
