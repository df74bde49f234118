// Package spawn runs each invocation of a function in a freshly spawned
// process: Nebula's `process` runtime, an abi.Invoker for images whose
// entrypoint is a native program.
//
// Every Invoke starts the entrypoint anew, CGI-style: stdin is the event's
// data, the environment is the task's plus the invocation's CE_* variables,
// stdout (capped) is the reply, stderr goes to the request's writer. The
// process leads its own process group, and the whole group is killed when
// the leader exits, when the invocation's context is done, or when stdout
// passes the cap: nothing the function started outlives its invocation.
//
// # Notes
//
// The process runs inside the task's container already, so plain fork/exec
// is all it takes. If the host process is PID 1 of its container, orphans
// that a killed group leaves behind are re-parented to it; they are killed
// with the group, but reaping their zombies is the host program's concern.
package spawn

import (
	"context"
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
// after the group was killed: a process that escaped the group (setsid)
// may hold them open.
const pipeGrace = 100 * time.Millisecond

// Config is the immutable configuration of an Invoker; the zero value is
// the default. Chain the WithXxx methods, each of which returns a copy.
type Config struct {
	maxOutput int64
	dir       string
}

// NewConfig returns the default Config: stdout capped at DefaultMaxOutput,
// the host's working directory.
func NewConfig() Config { return Config{} }

// WithMaxOutput caps a process's stdout at n bytes. A process writing more
// is killed and Invoke returns abi.ErrOutputLimit. Zero means
// DefaultMaxOutput.
func (c Config) WithMaxOutput(n int64) Config { c.maxOutput = n; return c }

// WithDir sets the working directory of the processes (the spec's cwd).
func (c Config) WithDir(dir string) Config { c.dir = dir; return c }

type invoker struct {
	path      string
	argv      []string
	env       []string
	envKeys   map[string]struct{}
	maxOutput int64
	dir       string

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
		path:      path,
		argv:      append([]string{path}, args...),
		env:       append([]string(nil), env...),
		envKeys:   make(map[string]struct{}, len(env)),
		maxOutput: cfg.maxOutput,
		dir:       cfg.dir,
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

// Invoke runs req in a new process.
func (inv *invoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	resp := &abi.Response{}
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

	// The child's ends of the pipes are closed as soon as it started: EOF on
	// ours then means every process holding them is gone.
	var files [3]*os.File
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

	t0 := time.Now()
	p, err := os.StartProcess(inv.path, inv.argv, &os.ProcAttr{
		Dir:   inv.dir,
		Env:   inv.environ(req.Env),
		Files: files[:],
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	started := time.Now()
	resp.Startup = started.Sub(t0)
	if err != nil {
		return resp, err
	}
	pid := p.Pid
	// Close the child's ends now.
	for _, f := range files {
		if f != null {
			f.Close()
		}
	}

	var killed atomic.Int32 // why the group was killed
	const (
		byContext = 1 + iota
		byOutput
	)
	kill := func(why int32) {
		if killed.CompareAndSwap(0, why) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
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

	// Wait for the leader to exit without reaping it, so that its pid (the
	// group's id) cannot be reused while the rest of the group is killed.
	var info unix.Siginfo
	for {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	resp.Execution = time.Since(started)
	stopWatch()
	_ = syscall.Kill(-pid, syscall.SIGKILL) // whatever the function left behind
	state, werr := p.Wait()
	if err == nil {
		err = werr
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
	if err != nil {
		return resp, err
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return resp, fmt.Errorf("%w: killed by signal %v", abi.ErrTrap, ws.Signal())
	case ws.ExitStatus() != 0:
		return resp, &abi.ExitError{Code: ws.ExitStatus()}
	}
	return resp, nil
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
