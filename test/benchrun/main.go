// Command benchrun is `make bench`: it starts a private containerd with
// Nebula's shim (package harness), imports the fixture images, and runs
// `nebula bench` against it, writing the report to out/bench (or -out).
// Arguments after the flags are passed to `nebula bench`, e.g.
//
//	go run ./test/benchrun -- -n 40 --warmup 5
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"nebula.dev/nebula/test/harness"
)

func main() {
	out := flag.String("out", "", "output directory (default out/bench under the repository)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: benchrun [-out DIR] [-- nebula bench flags...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchrun:", err)
			os.Exit(1)
		}
		*out = filepath.Join(root, "out", "bench")
	}

	t := harness.NewProgramT("benchrun")
	fmt.Println("building Nebula, the example functions and their images...")
	d := harness.Start(t)
	d.ImportFixtures(t)
	fmt.Printf("private containerd %s at %s\n", d.Version, d.Address)

	// Ctrl-C reaches nebula bench too (same process group): it stops,
	// writes what it measured and exits; then the daemon is torn down.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	args := append([]string{"bench",
		"--address", d.Address, "--namespace", d.Namespace,
		"--cache-dir", d.CacheDir(), "--out", *out}, flag.Args()...)
	cmd := exec.Command(filepath.Join(d.BinDir, "nebula"), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	t.RunCleanups()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun: nebula bench:", err)
		os.Exit(1)
	}
	if t.Failed() {
		os.Exit(1)
	}
}
