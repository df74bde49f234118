// Command probe is Nebula's test guest. The same source is built three
// times, as a WebAssembly command (GOOS=wasip1 GOARCH=wasm, probe.wasm), as
// a static native executable (CGO_ENABLED=0, probe) and as a reactor
// (reactor.go, probe-reactor.wasm), so that tests and benchmarks can compare
// the runtimes on identical behaviour.
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
//	post URL BODY [NAME:VALUE]...
//	                 send BODY to URL (http://IPV4-OR-localhost[:PORT]/PATH)
//	                 in an HTTP/1.1 POST with the given headers and print
//	                 the raw response; native only (raw sockets, so that
//	                 neither build links package net), ENOSYS under wasip1
//	ce               function mode: run the command the CloudEvent names,
//	                 type "probe.COMMAND", arguments from the subject; for a
//	                 plain HTTP request the path names it, /COMMAND/ARG...
//	                 ("/" echoes)
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
	"syscall"
	"time"
)

// The invocation's data and per-event variables: the process's own stdin
// and environment, or in the reactor build the event's data and the task's
// environment plus the event's variables (reactor.go).
var (
	stdin   io.Reader = os.Stdin
	getenv            = os.Getenv
	environ           = os.Environ
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

// run runs the probe's command cmd. Long on purpose: a table of small
// commands, one case each.
func run(cmd string, args []string) error {
	out := os.Stdout
	switch cmd {
	case "hello":
		_, err := fmt.Fprintln(out, "hello from probe")
		return err
	case "echo":
		_, err := io.Copy(out, stdin)
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
		for _, kv := range environ() {
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
		typ := getenv("CE_TYPE")
		if typ == "" && getenv("REQUEST_METHOD") != "" {
			// A plain HTTP invocation: the path names the command,
			// /COMMAND/ARG/..., and "/" echoes.
			f := strings.FieldsFunc(getenv("PATH_INFO"), func(r rune) bool { return r == '/' })
			if len(f) == 0 || f[0] == "ce" {
				f = []string{"echo"}
			}
			return run(f[0], f[1:])
		}
		if !strings.HasPrefix(typ, "probe.") || typ == "probe.ce" {
			return fmt.Errorf("ce: want an event type probe.COMMAND, got %q", typ)
		}
		return run(strings.TrimPrefix(typ, "probe."), strings.Fields(getenv("CE_SUBJECT")))
	case "empty":
		// Prints nothing: a function with no reply.
	case "stderr":
		fmt.Fprintln(os.Stderr, "line one to stderr")
		fmt.Fprintln(os.Stderr, "line two to stderr")
	case "post":
		if len(args) < 2 {
			return fmt.Errorf("usage: post URL BODY [NAME:VALUE]...")
		}
		return post(args[0], args[1], args[2:])
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

// parseURL reads http://HOST[:PORT]/PATH, HOST an IPv4 address or
// localhost (127.0.0.1), and returns HOST[:PORT] as given too.
func parseURL(url string) (addr [4]byte, port int, hostport, path string, err error) {
	rest, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return addr, 0, "", "", fmt.Errorf("post: want http://HOST[:PORT]/PATH, got %q", url)
	}
	hostport, path, _ = strings.Cut(rest, "/")
	host, portText, hasPort := strings.Cut(hostport, ":")
	port = 80
	if hasPort {
		if port, err = strconv.Atoi(portText); err != nil || port <= 0 || port > 65535 {
			return addr, 0, "", "", fmt.Errorf("post: bad port in %q", url)
		}
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return addr, 0, "", "", fmt.Errorf("post: want an IPv4 address or localhost, got %q", host)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 {
			return addr, 0, "", "", fmt.Errorf("post: want an IPv4 address or localhost, got %q", host)
		}
		addr[i] = byte(n)
	}
	return addr, port, hostport, path, nil
}

// post sends an HTTP/1.1 POST with raw syscalls and copies the response to
// stdout. Package net would add a megabyte to probe.wasm and init work to
// every instance and process the benchmarks time; syscall is linked anyway.
func post(url, body string, headers []string) error {
	addr, port, hostport, path, err := parseURL(url)
	if err != nil {
		return err
	}
	var req strings.Builder
	fmt.Fprintf(&req, "POST /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n", path, hostport, len(body))
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || name == "" {
			return fmt.Errorf("post: want a header NAME:VALUE, got %q", h)
		}
		fmt.Fprintf(&req, "%s: %s\r\n", name, value)
	}
	req.WriteString("\r\n" + body)

	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return fmt.Errorf("post: socket: %v", err)
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{Port: port, Addr: addr}
	err = syscall.Connect(fd, sa)
	for err == syscall.EINTR || err == syscall.EALREADY { // interrupted; still connecting
		time.Sleep(time.Millisecond)
		err = syscall.Connect(fd, sa)
	}
	if err != nil && err != syscall.EISCONN {
		return fmt.Errorf("post: connect %s: %v", hostport, err)
	}
	for b := []byte(req.String()); len(b) > 0; {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("post: write: %v", err)
		}
		b = b[n:]
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("post: read: %v", err)
		}
		if n == 0 {
			return nil
		}
		if _, err := os.Stdout.Write(buf[:n]); err != nil {
			return err
		}
	}
}
