// Package spawn runs each invocation of a function in a freshly spawned
// process: Nebula's `process` runtime, an abi.Invoker for images whose
// entrypoint is a native program.
//
// Every Invoke starts the entrypoint anew, CGI-style: stdin is the event's
// data, the environment is the task's plus the invocation's CE_* variables,
// stdout (capped) is the reply, stderr goes to the request's writer.
//
// No process outlives its invocation, and none is left a zombie: each
// entrypoint runs under a supervisor of its own (Supervise), a child
// subreaper that inherits every orphan the function makes — by setsid, a
// double fork, or its parent's death — and that, when the entrypoint exits,
// when the invocation's context is done, or when stdout passes the cap,
// kills and reaps every remaining descendant before it reports the
// entrypoint's exact wait status. Invocations are independent: each
// supervisor touches only its own descendants.
//
// # Notes
//
// The supervisor is a program the host re-executes for each event (see
// Config.WithSupervisor): an exec more per event, measured in the README
// and chosen over cheaper designs in docs/rationale.md. A host that is its
// container's init must also reap the orphans of processes it did not
// start (`ctr task exec` sessions): ReapOrphans does that without taking
// an invocation's exit status.
package spawn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"nebula.dev/nebula/abi"
)

// DefaultMaxOutput is the default cap on a process's stdout.
const DefaultMaxOutput = 10 << 20 // 10 MiB

// pipeGrace bounds how long Invoke waits for stdout and stderr to close
// after the supervisor exited: a process that escaped it (by killing it)
// may hold them open.
const pipeGrace = 100 * time.Millisecond

// killGrace is how long Invoke waits for a supervisor asked to kill its
// invocation before it kills the supervisor itself.
const killGrace = 5 * time.Second

// ErrNoSupervisor is returned by Invoke when the Config named no
// supervisor.
var ErrNoSupervisor = errors.New("spawn: no supervisor configured (Config.WithSupervisor)")

// Config is the immutable configuration of an Invoker; the zero value is
// the default. Chain the WithXxx methods, each of which returns a copy.
type Config struct {
	maxOutput  int64
	dir        string
	supervisor []string
}

// NewConfig returns the default Config: stdout capped at DefaultMaxOutput,
// the host's working directory, and no supervisor (which Invoke needs).
func NewConfig() Config { return Config{} }

// WithSupervisor sets the command line that runs Supervise: a program, its
// argv[0], and arguments, typically a program's own executable and
// SuperviseArg, for a main that dispatches on it:
//
//	cfg.WithSupervisor("/proc/self/exe", "nebula-host", spawn.SuperviseArg)
//
// The supervisor starts with the invocation's stdio and working
// directory, an empty environment, and its control socket on fd 3.
func (c Config) WithSupervisor(path string, argv ...string) Config {
	c.supervisor = append([]string{path}, argv...)
	return c
}

// WithMaxOutput caps a process's stdout at n bytes. A process writing more
// is killed and Invoke returns abi.ErrOutputLimit. Zero means
// DefaultMaxOutput.
func (c Config) WithMaxOutput(n int64) Config { c.maxOutput = n; return c }

// WithDir sets the working directory of the processes (the spec's cwd).
func (c Config) WithDir(dir string) Config { c.dir = dir; return c }

type invoker struct {
	path       string
	argv       []string
	env        []string
	envKeys    map[string]struct{}
	maxOutput  int64
	dir        string
	supervisor []string

	lookOnce sync.Once
	lookErr  error
}

// New returns an Invoker that runs the program at path with args (without
// argv[0], like exec.Command: argv[0] is path) and the base environment env
// (KEY=VALUE; the host's own environment is not inherited). A path without
// a slash is looked up on first use in env's PATH, as the entrypoint of a
// container is, or in the host's PATH when env has none.
func New(path string, args []string, env []string, cfg Config) abi.Invoker {
	inv := &invoker{
		path:       path,
		argv:       append([]string{path}, args...),
		env:        append([]string(nil), env...),
		envKeys:    make(map[string]struct{}, len(env)),
		maxOutput:  cfg.maxOutput,
		dir:        cfg.dir,
		supervisor: cfg.supervisor,
	}
	if inv.maxOutput <= 0 {
		inv.maxOutput = DefaultMaxOutput
	}
	for _, kv := range env {
		inv.envKeys[envKey(kv)] = struct{}{}
	}
	return inv
}

func envKey(kv string) string {
	if i := strings.IndexByte(kv, '='); i >= 0 {
		return kv[:i]
	}
	return kv
}

// Runtime returns abi.RuntimeProcess.
func (inv *invoker) Runtime() string { return abi.RuntimeProcess }

func (inv *invoker) resolve() error {
	inv.lookOnce.Do(func() {
		if !strings.ContainsRune(inv.path, '/') {
			inv.path, inv.lookErr = lookPath(inv.path, inv.env)
		}
	})
	return inv.lookErr
}

// lookPath finds file in the absolute directories of env's PATH.
func lookPath(file string, env []string) (string, error) {
	path, found := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path, found = v, true
		}
	}
	if !found {
		return exec.LookPath(file)
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// environ is the base environment plus extra, an extra variable replacing a
// base one of the same name.
func (inv *invoker) environ(extra []string) []string {
	env := make([]string, 0, len(inv.env)+len(extra))
	override := false
	for _, kv := range extra {
		if _, ok := inv.envKeys[envKey(kv)]; ok {
			override = true
			break
		}
	}
	if !override {
		return append(append(env, inv.env...), extra...)
	}
	drop := make(map[string]struct{}, len(extra))
	for _, kv := range extra {
		drop[envKey(kv)] = struct{}{}
	}
	for _, kv := range inv.env {
		if _, ok := drop[envKey(kv)]; !ok {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// Invoke runs req in a new process under a supervisor of its own.
func (inv *invoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	resp := &abi.Response{}
	if len(inv.supervisor) < 2 {
		return resp, ErrNoSupervisor
	}
	if err := inv.resolve(); err != nil {
		return resp, err
	}
	if err := ctx.Err(); err != nil {
		return resp, fmt.Errorf("%w: %w", abi.ErrTimeout, err)
	}
	null, err := devNull()
	if err != nil {
		return resp, err
	}

	// The supervisor's ends of the pipes are closed as soon as it started:
	// EOF on ours then means every process holding them is gone.
	var files [4]*os.File
	var closeAfterWait []*os.File
	defer func() {
		for _, f := range closeAfterWait {
			f.Close() // a second Close of the child's ends is harmless
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			closeAfterWait = append(closeAfterWait, r, w)
		}
		return
	}
	var stdinW *os.File
	files[0] = null
	if len(req.Stdin) > 0 {
		r, w, err := pipe()
		if err != nil {
			return resp, err
		}
		files[0], stdinW = r, w
	}
	outR, outW, err := pipe()
	if err != nil {
		return resp, err
	}
	files[1] = outW
	var errR *os.File
	files[2] = null
	if req.Stderr != nil {
		r, w, err := pipe()
		if err != nil {
			return resp, err
		}
		files[2], errR = w, r
	}
	ctrl, ctrlChild, err := controlPair()
	if err != nil {
		return resp, err
	}
	closeAfterWait = append(closeAfterWait, ctrl, ctrlChild)
	files[controlFD] = ctrlChild

	t0 := time.Now()
	p, err := startOwned(inv.supervisor[0], inv.supervisor[1:], &os.ProcAttr{
		Dir:   inv.dir,
		Env:   []string{},
		Files: files[:],
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		resp.Startup = time.Since(t0)
		return resp, fmt.Errorf("starting the supervisor: %w", err)
	}
	for _, f := range files {
		if f != null {
			f.Close()
		}
	}

	var killed atomic.Int32 // why the invocation was killed
	const (
		byContext = 1 + iota
		byOutput
	)
	var lastResort *time.Timer
	var lastResortMu sync.Mutex
	kill := func(why int32) {
		if !killed.CompareAndSwap(0, why) {
			return
		}
		_, _ = ctrl.Write([]byte{'k'})
		_ = p.Signal(syscall.SIGCONT) // a stopped supervisor could not act
		lastResortMu.Lock()
		lastResort = time.AfterFunc(killGrace, func() { _ = p.Kill() })
		lastResortMu.Unlock()
	}
	stopWatch := context.AfterFunc(ctx, func() { kill(byContext) })

	var wg sync.WaitGroup
	var stdout []byte
	wg.Go(func() { stdout = readCapped(outR, inv.maxOutput, func() { kill(byOutput) }) })
	if errR != nil {
		wg.Go(func() { copyTo(req.Stderr, errR) })
	}
	if stdinW != nil {
		// A pipe takes at least one page without a reader: write that
		// much inline, anything larger concurrently with the child.
		if len(req.Stdin) <= 4096 {
			_, _ = stdinW.Write(req.Stdin)
			stdinW.Close()
		} else {
			wg.Go(func() { _, _ = stdinW.Write(req.Stdin); stdinW.Close() })
		}
	}

	// The request, then "started" (or why not), then the wait status.
	var started time.Time
	status, serr := func() (syscall.WaitStatus, error) {
		if _, err := ctrl.Write(appendRequest(nil, inv.path, inv.argv, inv.environ(req.Env))); err != nil {
			return 0, fmt.Errorf("sending the request to the supervisor: %w", err)
		}
		tag, payload, err := readMessage(ctrl)
		started = time.Now()
		resp.Startup = started.Sub(t0)
		switch {
		case err != nil:
			return 0, err
		case tag == msgFailed:
			return 0, errors.New(string(payload))
		case tag != msgStarted:
			return 0, fmt.Errorf("supervisor: unexpected message %q", tag)
		}
		tag, payload, err = readMessage(ctrl)
		resp.Execution = time.Since(started)
		switch {
		case err != nil:
			return 0, err
		case tag == msgFailed:
			return 0, fmt.Errorf("supervisor: %s", payload)
		case tag != msgExited:
			return 0, fmt.Errorf("supervisor: unexpected message %q", tag)
		}
		return syscall.WaitStatus(binary.BigEndian.Uint32(payload)), nil
	}()
	stopWatch()
	state, werr := p.Wait()
	release(p.Pid)
	lastResortMu.Lock()
	if lastResort != nil {
		lastResort.Stop()
	}
	lastResortMu.Unlock()
	if werr != nil && serr == nil {
		serr = werr
	}
	if errors.Is(serr, io.EOF) || errors.Is(serr, io.ErrUnexpectedEOF) {
		serr = fmt.Errorf("supervisor exited without a status: %v", state)
	}

	// Every writer of the pipes is dead, bar escapees: bound the wait.
	deadline := time.Now().Add(pipeGrace)
	_ = outR.SetReadDeadline(deadline)
	if errR != nil {
		_ = errR.SetReadDeadline(deadline)
	}
	if stdinW != nil {
		_ = stdinW.SetWriteDeadline(deadline)
	}
	wg.Wait()
	resp.Stdout = stdout

	switch killed.Load() {
	case byOutput:
		return resp, fmt.Errorf("%w: more than %d bytes", abi.ErrOutputLimit, inv.maxOutput)
	case byContext:
		return resp, fmt.Errorf("%w: %w", abi.ErrTimeout, context.Cause(ctx))
	}
	if serr != nil {
		return resp, serr
	}
	switch {
	case status.Signaled():
		return resp, fmt.Errorf("%w: killed by signal %v", abi.ErrTrap, status.Signal())
	case status.ExitStatus() != 0:
		return resp, &abi.ExitError{Code: status.ExitStatus()}
	}
	return resp, nil
}

// controlPair returns the two ends of a supervisor's control socket.
func controlPair() (host, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	// The host's end goes to the runtime's poller; the supervisor's stays
	// blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control"), nil
}

// readMessage reads one message of the supervisor.
func readMessage(r io.Reader) (tag byte, payload []byte, err error) {
	var b [5]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return 0, nil, err
	}
	switch b[0] {
	case msgStarted:
		return b[0], nil, nil
	case msgExited:
		if _, err := io.ReadFull(r, b[1:5]); err != nil {
			return 0, nil, err
		}
		return b[0], b[1:5], nil
	case msgFailed:
		if _, err := io.ReadFull(r, b[1:5]); err != nil {
			return 0, nil, err
		}
		n := min(binary.BigEndian.Uint32(b[1:5]), 64<<10)
		payload = make([]byte, n)
		_, err = io.ReadFull(r, payload)
		return b[0], payload, err
	}
	return b[0], nil, nil
}

// readCapped reads r to EOF into a buffer, calling over, and stopping,
// when there is more than limit bytes.
func readCapped(r io.Reader, limit int64, over func()) []byte {
	var b []byte
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > limit {
				over()
				return b[:limit]
			}
			grow := min(max(512, int64(cap(b))), limit+1-int64(len(b)))
			b = append(b, make([]byte, grow)...)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if int64(len(b)) > limit {
				over()
				return b[:limit]
			}
			return b
		}
	}
}

var copyBufs = sync.Pool{New: func() any { return new([8192]byte) }}

// copyTo copies r to w with a pooled buffer (io.Copy would allocate one:
// *os.File's WriteTo falls back to it).
func copyTo(w io.Writer, r io.Reader) {
	buf := copyBufs.Get().(*[8192]byte)
	_, _ = io.CopyBuffer(w, struct{ io.Reader }{r}, buf[:])
	copyBufs.Put(buf)
}
