// Command soakrun is `make soak`: it starts a private containerd with
// Nebula's shim (package harness), starts the tiny WAT echo and the Go probe
// as wasm functions, and drives each at saturation with `nebula soak`,
// which fails if an event is not answered 2xx or if the host's resident
// memory, open file descriptors or goroutines drift after warm-up.
//
//	go run ./test/soakrun -tiny 1000000 -go 50000
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"nebula.dev/nebula/test/harness"
)

func main() {
	tiny := flag.Int("tiny", 1000000, "events for the tiny WAT echo")
	goEvents := flag.Int("go", 50000, "events for the Go probe")
	conc := flag.Int("concurrency", 4, "connections per soak")
	flag.Parse()

	t := harness.NewProgramT("soakrun")
	fmt.Println("building Nebula, the example functions and their images...")
	d := harness.Start(t)
	d.ImportFixtures(t)
	fmt.Printf("private containerd %s at %s\n", d.Version, d.Address)

	nebula := filepath.Join(d.BinDir, "nebula")
	failed := false
	for _, fn := range []struct {
		label, image, eventType string
		count                   int
	}{
		{"tiny-wasm", harness.EchoFnWasmImage, "probe.echo", *tiny},
		{"go-wasm", harness.ProbeFnWasmImage, "probe.echo", *goEvents},
	} {
		if fn.count == 0 {
			continue
		}
		f := harness.StartFunction(t, d, fn.image, "soak-"+fn.label)
		fmt.Printf("\n$ nebula soak %s --metrics %s --count %d --concurrency %d   # %s\n", f.URL, f.Metrics, fn.count, *conc, fn.label)
		cmd := exec.Command(nebula, "soak", f.URL, "--metrics", f.Metrics, "--type", fn.eventType,
			"--count", strconv.Itoa(fn.count), "--concurrency", strconv.Itoa(*conc), "--interval", "2s")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "soakrun: %s: %v\n", fn.label, err)
			failed = true
		}
	}
	t.RunCleanups() // the daemon's teardown checks that nothing is left
	if failed || t.Failed() {
		os.Exit(1)
	}
}
