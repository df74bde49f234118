// Command spawner is a function for the process runtime that leaves
// processes behind in every way a program can, for the end-to-end tests of
// containment. Built static (CGO_ENABLED=0), it needs nothing else in its
// image.
//
// As a function (no arguments) it dispatches on $CE_TYPE:
//
//   - spawn.leave: starts a child that sleeps, one in a session of its own
//     (setsid), one that double-forks a sleeper and exits, and one that
//     ignores SIGTERM and SIGHUP; prints "left" and exits with the status
//     in the event's data (0 when empty).
//   - spawn.signal: leaves the same children, then kills itself with
//     SIGKILL.
//
// With arguments, for `ctr task exec`:
//
//	spawner sleep SECONDS   sleeps
//	spawner orphan SECONDS  starts `spawner sleep SECONDS` in a session of
//	                        its own and exits at once, orphaning it
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(command(os.Args[1:]))
	}
	switch t := os.Getenv("CE_TYPE"); t {
	case "spawn.leave":
		leave()
		fmt.Println("left")
		data, _ := io.ReadAll(os.Stdin)
		code, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		os.Exit(code)
	case "spawn.signal":
		leave()
		fmt.Println("left")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	default:
		fmt.Fprintf(os.Stderr, "unknown event type %q\n", t)
		os.Exit(64)
	}
}

// leave starts the children that outlive this process unless something
// kills them.
func leave() {
	start(nil, "sleep", "3600")
	start(&syscall.SysProcAttr{Setsid: true}, "sleep", "3600")
	start(nil, "double")
	start(nil, "stubborn")
}

// start starts this program with args and does not wait for it.
func start(attr *syscall.SysProcAttr, args ...string) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		panic(err)
	}
	p, err := os.StartProcess("/proc/self/exe", append([]string{os.Args[0]}, args...), &os.ProcAttr{
		Files: []*os.File{null, null, null},
		Sys:   attr,
	})
	if err != nil {
		panic(err)
	}
	null.Close()
	p.Release()
}

func command(args []string) int {
	seconds := func() time.Duration {
		if len(args) < 2 {
			return time.Hour
		}
		n, _ := strconv.Atoi(args[1])
		return time.Duration(n) * time.Second
	}
	switch args[0] {
	case "sleep":
		time.Sleep(seconds())
	case "double":
		start(&syscall.SysProcAttr{Setsid: true}, "sleep", "3600")
	case "stubborn":
		signal.Ignore(syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
		time.Sleep(time.Hour)
	case "orphan":
		start(&syscall.SysProcAttr{Setsid: true}, "sleep", args[1])
	default:
		fmt.Fprintf(os.Stderr, "usage: spawner [sleep|orphan SECONDS]\n")
		return 2
	}
	return 0
}
