package spawn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// SuperviseArg is the argument that, given first, makes a program that
// dispatches on it run Supervise (see Config.WithSupervisor).
const SuperviseArg = "supervise"

// controlFD is the supervisor's end of its control socket: the host writes
// the request on it, then any byte or EOF means "kill now"; the supervisor
// writes "started" or "failed", then the entrypoint's wait status.
const controlFD = 3

// Messages from the supervisor to the host, each a tag byte and a payload.
const (
	msgStarted = 's' // no payload
	msgFailed  = 'f' // a 4-byte length and the error's text
	msgExited  = 'x' // the entrypoint's 4-byte wait status
)

// maxRequest bounds the request frame (program, argv, environment) the
// supervisor accepts: Linux's own limit on arguments plus environment is
// a quarter of the stack limit, 2 MiB by default.
const maxRequest = 16 << 20

// Supervise is the per-invocation supervisor: the process Invoke starts for
// every event, which starts the entrypoint and makes sure nothing it
// started outlives it. Call it from main when the program's first argument
// is SuperviseArg; it returns the exit code for os.Exit.
//
// It makes itself a child subreaper, so that every descendant of the
// entrypoint that is orphaned — by setsid, a double fork, or its parent's
// death — is re-parented to it rather than to the container's init, and
// therefore stays attributable to this invocation. It reads the request
// (program, argv, environment; the working directory and stdio are its
// own) from its control socket on fd 3, starts the entrypoint with
// Setpgid, reports "started", and waits for the entrypoint, reaping any
// orphan that exits meanwhile. When the entrypoint has exited, or the host
// asks for a kill (a byte or EOF on the control socket), it kills every
// remaining descendant with SIGKILL, reaps them all, and reports the
// entrypoint's wait status.
//
// # Notes
//
// The supervisor runs with an empty environment (the request carries the
// function's), so a function's GODEBUG or GOMAXPROCS does not reach it. It
// catches every catchable signal and ignores it, so that a function
// signalling its process group or parent cannot stop it by accident; the
// entrypoint still starts with default dispositions. SIGKILL and SIGSTOP
// cannot be caught: a function that sends them to its own supervisor
// escapes it (docs/rationale.md).
func Supervise(args []string) int {
	ctrl := os.NewFile(controlFD, "control")
	if ctrl == nil || len(args) != 0 {
		fmt.Fprintf(os.Stderr, "nebula: supervise: takes no arguments and a control socket on fd %d\n", controlFD)
		return 2
	}
	syscall.CloseOnExec(controlFD)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return report(ctrl, msgFailed, fmt.Errorf("becoming a subreaper: %w", err))
	}
	ignored := make(chan os.Signal, 16)
	signal.Notify(ignored)
	go func() {
		for range ignored {
		}
	}()

	path, argv, env, err := readRequest(ctrl)
	if err != nil {
		return report(ctrl, msgFailed, fmt.Errorf("reading the request: %w", err))
	}
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return report(ctrl, msgFailed, err)
	}
	// Only the function's processes hold its stdio now.
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for fd := range 3 {
			_ = unix.Dup2(int(null.Fd()), fd)
		}
		null.Close()
	}
	if _, err := ctrl.Write([]byte{msgStarted}); err != nil {
		_ = p.Kill()
	}

	// A byte or EOF from the host: kill the entrypoint; the sweep below
	// takes the rest. p.Kill signals through a pidfd, so it cannot hit a
	// recycled pid once the entrypoint is reaped.
	go func() {
		var b [1]byte
		_, _ = ctrl.Read(b[:])
		_ = p.Kill()
	}()

	var status syscall.WaitStatus
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: cannot happen before the entrypoint is reaped
			return report(ctrl, msgFailed, fmt.Errorf("waiting for %s: %w", path, err))
		}
		if pid == p.Pid {
			status = ws
			break
		}
	}
	sweep()
	return report(ctrl, msgExited, status)
}

// readRequest reads the request frame: a 4-byte length, then NUL-separated
// fields: program, argc, argv..., env....
func readRequest(r io.Reader) (path string, argv, env []string, err error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", nil, nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxRequest {
		return "", nil, nil, fmt.Errorf("request of %d bytes", size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", nil, nil, err
	}
	fields := splitNUL(buf)
	if len(fields) < 2 {
		return "", nil, nil, errors.New("malformed request")
	}
	argc, err := strconv.Atoi(fields[1])
	if err != nil || argc < 1 || argc > len(fields)-2 {
		return "", nil, nil, errors.New("malformed request")
	}
	return fields[0], fields[2 : 2+argc], fields[2+argc:], nil
}

// appendRequest appends the request frame for readRequest.
func appendRequest(b []byte, path string, argv, env []string) []byte {
	b = append(b, 0, 0, 0, 0)
	b = append(append(b, path...), 0)
	b = append(strconv.AppendInt(b, int64(len(argv)), 10), 0)
	for _, a := range argv {
		b = append(append(b, a...), 0)
	}
	for _, kv := range env {
		b = append(append(b, kv...), 0)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

func splitNUL(b []byte) []string {
	var fields []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		fields = append(fields, string(b[:i]))
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return fields
}

// report writes the final message and returns the supervisor's exit code.
func report(ctrl *os.File, tag byte, v any) int {
	msg := []byte{tag}
	switch v := v.(type) {
	case syscall.WaitStatus:
		msg = binary.BigEndian.AppendUint32(msg, uint32(v))
	case error:
		text := v.Error()
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(text)))
		msg = append(msg, text...)
	}
	if _, err := ctrl.Write(msg); err != nil || tag != msgExited {
		return 1
	}
	return 0
}

// sweep kills every descendant of this process with SIGKILL and reaps
// them all, until it has no child left.
//
// Each pass walks the tree from this process down, killing a process
// before listing its children: a process with SIGKILL pending can neither
// fork again nor reap its children, so the children it lists are its own
// and stay so until it is gone, when they are re-parented here. A pass
// misses only processes re-parented here after this process's own list was
// read; the next pass takes them. A pass that killed a child of this
// process can block for it; one that found none must not, as a missed
// child may be alive.
func sweep() {
	self := os.Getpid()
	for {
		flags := 0
		if killDescendants(self) == 0 {
			flags = syscall.WNOHANG
		}
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, flags, nil)
		if err == syscall.ECHILD {
			return
		}
		for err == nil { // reap whatever else is dead, without blocking
			var pid int
			if pid, err = syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}

// killDescendants kills every descendant of pid it finds, each before
// listing its children, and returns how many children pid had.
func killDescendants(pid int) int {
	kids := children(pid)
	for _, c := range kids {
		_ = syscall.Kill(c, syscall.SIGKILL)
		killDescendants(c)
	}
	return len(kids)
}
