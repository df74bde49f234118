package spawn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// SuperviseArg is the argument that, given first, makes a program that
// dispatches on it run Supervise (see Config.WithSupervisor).
const SuperviseArg = "supervise"

// controlFD is the supervisor's end of its control socket.
const controlFD = 3

// The control protocol. Host to supervisor: msgRun with a sequence number
// and, as SCM_RIGHTS, the invocation's stdin, stdout and stderr, then the
// request frame (appendRequest); msgKill with the sequence number of the
// invocation to kill. Supervisor to host, per invocation: msgStarted or
// msgFailed, then msgExited. EOF either way ends the supervisor.
const (
	msgRun     = 'r' // 4-byte sequence number
	msgKill    = 'k' // 4-byte sequence number
	msgStarted = 's' // no payload
	msgFailed  = 'f' // a 4-byte length and the error's text
	msgExited  = 'x' // the entrypoint's 4-byte wait status
)

// maxRequest bounds the request frame (program, argv, environment) the
// supervisor accepts: Linux's own limit on arguments plus environment is
// a quarter of the stack limit, 2 MiB by default.
const maxRequest = 16 << 20

// Supervise is the supervisor of the process runtime: a process that runs
// invocations one at a time, each in a process tree of its own, and makes
// sure nothing an invocation started outlives it. Call it from main when
// the program's first argument is SuperviseArg; it returns the exit code
// for os.Exit. Invoke starts supervisors and talks to them over a control
// socket on fd 3.
//
// It makes itself a child subreaper, so that every descendant of an
// entrypoint that is orphaned — by setsid, a double fork, or its parent's
// death — is re-parented to it rather than to the container's init, and so
// stays attributable to the invocation. For each request (program, argv,
// environment and stdio; the working directory is its own) it starts the
// entrypoint with Setpgid, reports "started", and waits for it, reaping
// any orphan that exits meanwhile. When the entrypoint has exited, or the
// host asks for a kill, it kills every remaining descendant with SIGKILL,
// reaps them all, and only then reports the entrypoint's wait status and
// takes the next request. EOF on the control socket (the host is gone)
// kills the current invocation; the supervisor then exits.
//
// # Notes
//
// The supervisor runs with an empty environment (a request carries the
// function's), so a function's GODEBUG or GOMAXPROCS does not reach it.
// It catches every signal it can and ignores it, so that a function
// signalling its process group or its parent does not stop it; exec gives
// the entrypoint default dispositions all the same. SIGKILL and SIGSTOP
// cannot be caught: a function that sends SIGKILL to its
// supervisor escapes it (docs/rationale.md); one that stops it is undone
// by the host's SIGCONT when it asks for the kill.
func Supervise(args []string) int {
	usage := func() int {
		fmt.Fprintf(os.Stderr, "nebula: supervise: takes no arguments and a control socket on fd %d\n", controlFD)
		return 2
	}
	if len(args) != 0 {
		return usage()
	}
	// Non-blocking, the control socket is read through the runtime's
	// poller, not by a thread of its own.
	var st syscall.Stat_t
	if syscall.Fstat(controlFD, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return usage()
	}
	syscall.CloseOnExec(controlFD)
	if syscall.SetNonblock(controlFD, true) != nil {
		return usage()
	}
	ctrl := os.NewFile(controlFD, "control")
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "nebula: supervise: becoming a subreaper: %v\n", err)
		return 1
	}
	// Caught, not ignored: an ignored signal would stay ignored in the
	// entrypoints, a caught one is reset to its default by exec.
	ignored := make(chan os.Signal, 64)
	signal.Notify(ignored)
	go func() {
		for range ignored {
		}
	}()
	cur := current{pidfd: -1}
	reqs := make(chan *request, 1)
	go readControl(ctrl, &cur, reqs)
	for req := range reqs {
		status, err := cur.run(ctrl, req)
		if err != nil {
			if report(ctrl, msgFailed, err) != nil {
				return 1
			}
			continue
		}
		if report(ctrl, msgExited, status) != nil {
			return 1
		}
	}
	return 0
}

// request is one invocation as the supervisor receives it.
type request struct {
	seq   uint32
	stdio [3]int
	path  string
	argv  []string
	env   []string
	err   error // a malformed request
}

// current is the invocation in progress, shared between the control
// reader (kills) and the main loop.
type current struct {
	mu     sync.Mutex
	seq    uint32
	killed bool
	pidfd  int // of the running entrypoint, or -1
	pid    int // when there is no pidfd (Linux < 5.3): until reaped
}

func (c *current) begin(seq uint32) {
	c.mu.Lock()
	c.seq, c.killed, c.pidfd, c.pid = seq, false, -1, 0
	c.mu.Unlock()
}

// kill kills the entrypoint of invocation seq, now or as soon as it starts.
func (c *current) kill(seq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq != c.seq {
		return // one that ended already
	}
	c.killed = true
	c.signal()
}

func (c *current) killAny() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killed = true
	c.signal()
}

func (c *current) signal() {
	if c.pidfd >= 0 {
		_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	} else if c.pid > 0 {
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
	}
}

// run runs one request to the end of its sweep.
func (c *current) run(ctrl *os.File, req *request) (syscall.WaitStatus, error) {
	defer func() {
		for _, fd := range req.stdio {
			syscall.Close(fd)
		}
	}()
	if req.err != nil {
		return 0, req.err
	}
	pidfd := -1
	pid, err := syscall.ForkExec(req.path, req.argv, &syscall.ProcAttr{
		Env:   req.env,
		Files: []uintptr{uintptr(req.stdio[0]), uintptr(req.stdio[1]), uintptr(req.stdio[2])},
		Sys:   &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
	})
	if err != nil {
		return 0, &os.PathError{Op: "fork/exec", Path: req.path, Err: err}
	}
	// Only the function's processes hold its stdio now.
	for i, fd := range req.stdio {
		syscall.Close(fd)
		req.stdio[i] = -1
	}
	c.mu.Lock()
	c.pidfd, c.pid = pidfd, pid
	if c.killed {
		c.signal()
	}
	c.mu.Unlock()
	if err := report(ctrl, msgStarted, nil); err != nil {
		c.killAny()
	}

	var status syscall.WaitStatus
	for {
		var ws syscall.WaitStatus
		exited, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: cannot happen before the entrypoint is reaped
			return 0, fmt.Errorf("waiting for %s: %w", req.path, err)
		}
		if exited == pid {
			status = ws
			break
		}
	}
	c.mu.Lock()
	c.pidfd, c.pid = -1, 0
	c.mu.Unlock()
	if pidfd >= 0 {
		syscall.Close(pidfd)
	}
	sweep()
	return status, nil
}

// readControl reads the host's messages: requests go to reqs, kills to
// cur. At EOF it kills the current invocation and closes reqs.
func readControl(ctrl *os.File, cur *current, reqs chan<- *request) {
	defer close(reqs)
	defer cur.killAny()
	rc, err := ctrl.SyscallConn()
	if err != nil {
		return
	}
	for {
		var tag [1]byte
		oob := make([]byte, unix.CmsgSpace(3*4))
		var n, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), tag[:], oob, unix.MSG_CMSG_CLOEXEC)
			return rerr != unix.EAGAIN
		})
		if err != nil || rerr != nil || n == 0 {
			return
		}
		fds := parseRights(oob[:oobn])
		var seq [4]byte
		if _, err := io.ReadFull(ctrl, seq[:]); err != nil {
			closeAll(fds)
			return
		}
		switch tag[0] {
		case msgKill:
			closeAll(fds)
			cur.kill(binary.BigEndian.Uint32(seq[:]))
		case msgRun:
			req := &request{seq: binary.BigEndian.Uint32(seq[:]), stdio: [3]int{-1, -1, -1}}
			if len(fds) == 3 {
				copy(req.stdio[:], fds)
			} else {
				closeAll(fds)
				req.err = fmt.Errorf("request with %d descriptors, want 3", len(fds))
			}
			var rerr error
			req.path, req.argv, req.env, rerr = readRequest(ctrl)
			if rerr != nil {
				if req.err == nil {
					req.err = fmt.Errorf("reading the request: %w", rerr)
				}
				reqs <- req
				return
			}
			cur.begin(req.seq)
			reqs <- req
		default:
			closeAll(fds)
			return
		}
	}
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if rights, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, rights...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
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

// report writes a message to the host.
func report(ctrl *os.File, tag byte, v any) error {
	msg := []byte{tag}
	switch v := v.(type) {
	case syscall.WaitStatus:
		msg = binary.BigEndian.AppendUint32(msg, uint32(v))
	case error:
		text := v.Error()
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(text)))
		msg = append(msg, text...)
	}
	_, err := ctrl.Write(msg)
	return err
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
