// Command demo is `make demo`: it starts a private containerd with Nebula's
// shim; runs the same program natively under runc.v2 and Nebula and as
// WebAssembly under Nebula, printing what each printed and how long each
// `ctr run --rm` took; then starts the same function in function mode as a
// wasm reactor (package guest), as a wasm command and as a process per
// event, sends each one event and a burst with
// `nebula invoke`, and shows the phases side by side and a few lines of
// /metrics.
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"nebula.dev/nebula/test/harness"
)

func main() {
	t := harness.NewProgramT("demo")
	defer t.RunCleanups()
	fmt.Println("building Nebula, the example functions and their images...")
	d := harness.Start(t)
	d.ImportFixtures(t)
	fmt.Printf("private containerd %s at %s\n\n", d.Version, d.Address)

	cells := []struct {
		label, runtime, image string
		args                  []string
	}{
		{"native, runc.v2", "io.containerd.runc.v2", harness.ProbeImage, []string{"/probe", "hello"}},
		{"native, Nebula", "io.containerd.nebula.v1", harness.ProbeImage, []string{"/probe", "hello"}},
		{"wasm (Go), Nebula", "io.containerd.nebula.v1", harness.ProbeWasmImage, []string{"/probe.wasm", "hello"}},
		{"wasm (WAT), Nebula", "io.containerd.nebula.v1", harness.HelloWasmImage, nil},
	}
	const runs = 5
	for i, c := range cells {
		var times []time.Duration
		var out string
		for r := 0; r < runs; r++ {
			id := fmt.Sprintf("demo-%d-%d", i, r)
			start := time.Now()
			res := d.Ctr(t, append([]string{"run", "--rm", "--runtime", c.runtime, c.image, id}, c.args...)...)
			times = append(times, time.Since(start))
			if res.ExitCode != 0 {
				t.Fatalf("%s: exit %d: %s", c.label, res.ExitCode, res.Stderr)
			}
			out = res.Stdout
		}
		slices.Sort(times)
		fmt.Printf("%-20s ctr run --rm --runtime %s %s\n", c.label, c.runtime, c.image)
		fmt.Printf("%-20s   printed %q; median of %d runs %v (the first run also compiles the module)\n", "", out, runs, times[runs/2].Round(time.Millisecond))
	}

	functionMode(t, d)
}

// functionMode shows the heart of Nebula: a CloudEvent per fresh instance.
func functionMode(t *harness.ProgramT, d *harness.Daemon) {
	invoke := filepath.Join(d.BinDir, "nebula")
	fmt.Println("\nfunction mode: the Go probe as a wasm reactor (package guest), as a wasm command and as a process per event, and a tiny WAT echo as wasm")
	fns := []struct {
		label, image string
	}{
		{"wasm-reactor", harness.ProbeReactorImage},
		{"wasm", harness.ProbeFnWasmImage},
		{"process", harness.ProbeFnImage},
		{"tiny-wasm", harness.EchoFnWasmImage},
	}
	for _, fn := range fns {
		f := harness.StartFunction(t, d, fn.image, "demo-fn-"+fn.label)
		fmt.Printf("\n$ nebula invoke %s --type probe.echo --data '{\"hello\":\"nebula\"}'   # %s\n", f.URL, fn.label)
		run(t, invoke, "invoke", f.URL, "--type", "probe.echo", "--data", `{"hello":"nebula"}`)
		fmt.Printf("$ nebula invoke %s --type probe.echo --data '{}' --count 300 --concurrency 2\n", f.URL)
		run(t, invoke, "invoke", f.URL, "--type", "probe.echo", "--data", "{}", "--count", "300", "--concurrency", "2")
		fmt.Printf("$ curl -s %s | grep -E '^nebula_(invocations_total|task_ready|module_compile_seconds_(sum|count))'\n", f.Metrics)
		resp, err := http.Get(f.Metrics)
		if err != nil {
			t.Fatalf("scraping %s: %v", f.Metrics, err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "nebula_invocations_total") && !strings.HasSuffix(line, " 0") ||
				strings.HasPrefix(line, "nebula_task_ready") || strings.HasPrefix(line, "nebula_module_compile_seconds_sum") ||
				strings.HasPrefix(line, "nebula_module_compile_seconds_count") {
				fmt.Println(line)
			}
		}
		resp.Body.Close()
	}
}

func run(t *harness.ProgramT, name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
}
