// Command probe is Nebula's test guest. The same source is built twice, as a
// WebAssembly module (GOOS=wasip1 GOARCH=wasm, probe.wasm) and as a static
// native executable (CGO_ENABLED=0, probe), so that tests and benchmarks can
// compare the two runtimes on identical behaviour.
//
// The first argument selects what it does:
//
//	hello            print "hello from probe"
//	echo             copy stdin to stdout
//	exit N           exit with status N
//	args             print each argument (os.Args) on its own line
//	env              print the environment, one KEY=VALUE a line
//	pwd              print the working directory
//	cat PATH         print the file at PATH
//	ls PATH          print the names in directory PATH, one a line, sorted
//	stat PATH        print "name size mode" of PATH (following links)
//	symlink OLD NEW  create the symbolic link NEW pointing at OLD
//	writetmp         write /tmp/probe-file, read it back and print it
//	loop             spin forever
//	sleep DUR        sleep for DUR (Go syntax: 1h, 300ms), then print "slept"
//	counter          increment a global variable and print it
//	membomb          allocate (and touch) 1 MiB blocks until it dies
//	flood            write to stdout forever
//	fib N            print the N-th Fibonacci number, computed recursively
//	empty            print nothing
//	stderr           write two lines to stderr
//	ce               function mode: run the command the CloudEvent names,
//	                 type "probe.COMMAND", arguments from the subject
//
// Several commands can be chained with a "+" argument, e.g.
// "symlink ../etc/hostname /tmp/x + cat /tmp/x"; the first failure prints
// "probe: ..." on stderr and exits 1.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// counter is global state: a fresh instance (or process) always prints 1.
var counter int

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fail("usage: probe COMMAND [ARGS...] [+ COMMAND [ARGS...]]...")
	}
	for len(args) > 0 {
		cmd := args
		rest := []string(nil)
		if i := slices.Index(args, "+"); i >= 0 {
			cmd, rest = args[:i], args[i+1:]
		}
		if len(cmd) == 0 {
			fail("empty command")
		}
		if err := run(cmd[0], cmd[1:]); err != nil {
			fail(err.Error())
		}
		args = rest
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "probe:", msg)
	os.Exit(1)
}

func need(args []string, n int, usage string) error {
	if len(args) != n {
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

func run(cmd string, args []string) error {
	out := os.Stdout
	switch cmd {
	case "hello":
		_, err := fmt.Fprintln(out, "hello from probe")
		return err
	case "echo":
		_, err := io.Copy(out, os.Stdin)
		return err
	case "exit":
		if err := need(args, 1, "exit N"); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		os.Exit(n)
	case "args":
		for _, a := range os.Args {
			fmt.Fprintln(out, a)
		}
	case "env":
		for _, kv := range os.Environ() {
			fmt.Fprintln(out, kv)
		}
	case "pwd":
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		fmt.Fprintln(out, wd)
	case "cat":
		if err := need(args, 1, "cat PATH"); err != nil {
			return err
		}
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(out, f)
		return err
	case "ls":
		if err := need(args, 1, "ls PATH"); err != nil {
			return err
		}
		entries, err := os.ReadDir(args[0])
		if err != nil {
			return err
		}
		for _, e := range entries { // os.ReadDir sorts by name
			fmt.Fprintln(out, e.Name())
		}
	case "stat":
		if err := need(args, 1, "stat PATH"); err != nil {
			return err
		}
		fi, err := os.Stat(args[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(out, fi.Name(), fi.Size(), fi.Mode())
	case "symlink":
		if err := need(args, 2, "symlink OLD NEW"); err != nil {
			return err
		}
		return os.Symlink(args[0], args[1])
	case "writetmp":
		const name = "/tmp/probe-file"
		if err := os.WriteFile(name, []byte("written by probe\n"), 0o644); err != nil {
			return err
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	case "loop":
		for i := 0; ; i++ {
			if i < 0 { // never true; keeps the loop from being optimised away
				fmt.Fprintln(out, i)
			}
		}
	case "sleep":
		if err := need(args, 1, "sleep DUR"); err != nil {
			return err
		}
		d, err := time.ParseDuration(args[0])
		if err != nil {
			return err
		}
		time.Sleep(d)
		fmt.Fprintln(out, "slept")
	case "counter":
		counter++
		fmt.Fprintln(out, counter)
	case "membomb":
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "flood":
		w := bufio.NewWriterSize(out, 64<<10)
		line := []byte("flood flood flood flood flood flood flood flood flood flood\n")
		for {
			if _, err := w.Write(line); err != nil {
				return err
			}
		}
	case "ce":
		// Function mode: the event picks the command. Type "probe.CMD",
		// arguments from the subject, e.g. type probe.exit, subject "3".
		typ := os.Getenv("CE_TYPE")
		if !strings.HasPrefix(typ, "probe.") || typ == "probe.ce" {
			return fmt.Errorf("ce: want an event type probe.COMMAND, got %q", typ)
		}
		return run(strings.TrimPrefix(typ, "probe."), strings.Fields(os.Getenv("CE_SUBJECT")))
	case "empty":
		// Prints nothing: a function with no reply.
	case "stderr":
		fmt.Fprintln(os.Stderr, "line one to stderr")
		fmt.Fprintln(os.Stderr, "line two to stderr")
	case "fib":
		if err := need(args, 1, "fib N"); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(out, fib(n))
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}
