// Package spawn runs each invocation of a function in a freshly spawned
// process: Nebula's `process` runtime, an abi.Invoker for images whose
// entrypoint is a native program.
//
// Every Invoke starts the entrypoint anew, CGI-style: stdin is the event's
// data, the environment is the task's plus the invocation's CE_* variables,
// stdout (capped) is the reply, stderr goes to the request's writer.
//
// No process outlives its invocation, and none is left a zombie: each
// entrypoint runs under a supervisor (Supervise) that serves no other
// invocation meanwhile, a child subreaper that inherits every orphan the
// function makes — by setsid, a double fork, or its parent's death — and
// that, when the entrypoint exits, when the invocation's context is done,
// or when stdout passes the cap, kills and reaps every remaining
// descendant before it reports the entrypoint's exact wait status.
// Invocations are independent: a supervisor touches only its own
// descendants.
//
// # Notes
//
// A supervisor is a separate program (see Config.WithSupervisor), started
// when an invocation finds none idle and kept for later ones, so that its
// start-up is not paid per event (docs/rationale.md). A host that is its
// container's init must also reap the orphans of processes it did not
// start (`ctr task exec` sessions): ReapOrphans does that without taking a
// supervisor's exit status.
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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"nebula.dev/nebula/abi"
)

// DefaultMaxOutput is the default cap on a process's stdout.
const DefaultMaxOutput = 10 << 20 // 10 MiB

// pipeGrace bounds how long Invoke waits for stdout and stderr to close
// once the supervisor reported: only a process that escaped it, by killing
// it, may still hold them open.
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
// A supervisor starts in the Config's working directory, with an empty
// environment, /dev/null for stdin and stdout, the host's stderr, and its
// control socket on fd 3; each invocation's stdio is passed to it.
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

// Invoker is the process runtime's abi.Invoker.
type Invoker struct {
	path        string
	argv        []string
	env         []string
	envKeys     map[string]struct{}
	maxOutput   int64
	dir         string
	supervisors *pool

	lookOnce sync.Once
	lookErr  error
}

// New returns an Invoker that runs the program at path with args (without
// argv[0], like exec.Command: argv[0] is path) and the base environment env
// (KEY=VALUE; the host's own environment is not inherited). A path without
// a slash is looked up on first use in env's PATH, as the entrypoint of a
// container is, or in the host's PATH when env has none.
//
// Supervisors are started as invocations need them and kept for the next
// ones: an Invoker holds as many as it ever ran invocations at once. Close
// stops them.
func New(path string, args []string, env []string, cfg Config) *Invoker {
	inv := &Invoker{
		path:      path,
		argv:      append([]string{path}, args...),
		env:       append([]string(nil), env...),
		envKeys:   make(map[string]struct{}, len(env)),
		maxOutput: cfg.maxOutput,
		dir:       cfg.dir,
	}
	inv.supervisors = &pool{argv: cfg.supervisor, dir: cfg.dir}
	// An Invoker dropped without Close would leave its supervisors to exit
	// at the finalizers of their sockets, and to stay unreaped zombies.
	runtime.AddCleanup(inv, (*pool).close, inv.supervisors)
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

// Close stops the idle supervisors, and each busy one when its invocation
// ends. Invoke fails after Close.
func (inv *Invoker) Close() error {
	inv.supervisors.close()
	return nil
}

// Runtime returns abi.RuntimeProcess.
func (inv *Invoker) Runtime() string { return abi.RuntimeProcess }

func (inv *Invoker) resolve() error {
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
func (inv *Invoker) environ(extra []string) []string {
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

// Invoke runs req in a new process, under a supervisor that serves no
// other invocation meanwhile.
func (inv *Invoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	resp := &abi.Response{}
	if len(inv.supervisors.argv) < 2 {
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
	p, err := newPipes(req, null)
	if err != nil {
		return resp, err
	}
	defer p.close()

	t0 := time.Now()
	frame := appendRequest(nil, inv.path, inv.argv, inv.environ(req.Env))
	sup, seq, err := inv.dispatch(p.child, frame)
	p.closeChild()
	if err != nil {
		resp.Startup = time.Since(t0)
		return resp, err
	}

	k := &killer{sup: sup, seq: seq}
	stopWatch := context.AfterFunc(ctx, func() { k.kill(byContext) })
	stdout := inv.copyStdio(p, req, func() { k.kill(byOutput) })
	status, failed, serr := await(sup, t0, resp)
	stopWatch()
	k.done()
	if serr != nil {
		// The supervisor died (killed by the function, or by killGrace)
		// or broke the protocol: it serves no more invocations.
		state, _ := sup.stop()
		if errors.Is(serr, io.EOF) || errors.Is(serr, io.ErrUnexpectedEOF) {
			serr = fmt.Errorf("spawn: supervisor exited mid-invocation: %v", state)
		}
	} else {
		inv.supervisors.put(sup)
	}

	// Every writer of the pipes is dead, bar escapees: bound the wait.
	p.setDeadline(time.Now().Add(pipeGrace))
	resp.Stdout = stdout()
	return resp, inv.outcome(ctx, k.why.Load(), serr, failed, status)
}

// pipes are an invocation's stdio. The child's ends are closed as soon as
// they are sent: EOF on ours then means every process holding them is
// gone.
type pipes struct {
	null   *os.File
	child  [3]*os.File // stdin, stdout, stderr as sent: pipes or null
	stdinW *os.File    // nil when stdin is null
	outR   *os.File
	errR   *os.File   // nil when stderr is null
	opened []*os.File // every end, closed by close
}

// newPipes opens a pipe for stdout, for stdin when req has data and for
// stderr when req takes it; the others are null.
func newPipes(req *abi.Request, null *os.File) (*pipes, error) {
	p := &pipes{null: null, child: [3]*os.File{null, nil, null}}
	var err error
	if len(req.Stdin) > 0 {
		p.child[0], p.stdinW, err = p.pipe()
	}
	if err == nil {
		p.outR, p.child[1], err = p.pipe()
	}
	if err == nil && req.Stderr != nil {
		p.errR, p.child[2], err = p.pipe()
	}
	if err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *pipes) pipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err == nil {
		p.opened = append(p.opened, r, w)
	}
	return
}

// closeChild closes the child's ends, once sent.
func (p *pipes) closeChild() {
	for _, f := range p.child {
		if f != p.null {
			f.Close()
		}
	}
}

// setDeadline bounds the reads of stdout and stderr and the write of stdin.
func (p *pipes) setDeadline(t time.Time) {
	_ = p.outR.SetReadDeadline(t)
	if p.errR != nil {
		_ = p.errR.SetReadDeadline(t)
	}
	if p.stdinW != nil {
		_ = p.stdinW.SetWriteDeadline(t)
	}
}

// close closes every end; a second Close of the child's ends is harmless.
func (p *pipes) close() {
	for _, f := range p.opened {
		f.Close()
	}
}

// dispatch sends the request to an idle supervisor, or to a fresh one
// when that fails (an idle one may have died meanwhile), and returns the
// supervisor and the invocation's sequence number.
func (inv *Invoker) dispatch(files [3]*os.File, frame []byte) (sup *supervisor, seq uint32, err error) {
	for fresh := false; ; fresh = true {
		if sup, err = inv.supervisors.get(fresh); err == nil {
			sup.seq++
			seq = sup.seq
			if err = sup.send(seq, files, frame); err != nil {
				_, _ = sup.stop()
			}
		}
		if err == nil || fresh {
			return sup, seq, err
		}
	}
}

// Why an invocation was killed.
const (
	byContext = 1 + iota
	byOutput
)

// killer kills one invocation: it asks the supervisor to kill it, and
// kills the supervisor itself if it has not answered within killGrace;
// never once the invocation is over, when the supervisor may serve
// another.
type killer struct {
	sup        *supervisor
	seq        uint32
	why        atomic.Int32 // byContext or byOutput, 0 while not killed
	mu         sync.Mutex
	over       bool
	lastResort *time.Timer
}

// kill kills the invocation, once, for the reason why.
func (k *killer) kill(why int32) {
	if !k.why.CompareAndSwap(0, why) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.over {
		k.sup.kill(k.seq)
		k.lastResort = time.AfterFunc(killGrace, func() { _ = k.sup.p.Kill() })
	}
}

// done marks the invocation over: kill does nothing from now on.
func (k *killer) done() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.over = true
	if k.lastResort != nil {
		k.lastResort.Stop()
	}
}

// copyStdio reads stdout (calling overLimit beyond maxOutput) and copies
// stderr to req.Stderr and req.Stdin to the process, concurrently; the
// function returned waits for all three and returns stdout.
func (inv *Invoker) copyStdio(p *pipes, req *abi.Request, overLimit func()) (stdout func() []byte) {
	var wg sync.WaitGroup
	var out []byte
	wg.Go(func() { out = readCapped(p.outR, inv.maxOutput, overLimit) })
	if p.errR != nil {
		wg.Go(func() { copyTo(req.Stderr, p.errR) })
	}
	if p.stdinW != nil {
		// A pipe takes at least one page without a reader: write that
		// much inline, anything larger concurrently with the child.
		if len(req.Stdin) <= 4096 {
			_, _ = p.stdinW.Write(req.Stdin)
			p.stdinW.Close()
		} else {
			wg.Go(func() { _, _ = p.stdinW.Write(req.Stdin); p.stdinW.Close() })
		}
	}
	return func() []byte { wg.Wait(); return out }
}

// await reads the supervisor's "started" (or why not: failed, the
// entrypoint could not start) and then the wait status, setting resp's
// Startup (from t0) and Execution. err is a broken supervisor.
func await(sup *supervisor, t0 time.Time, resp *abi.Response) (status syscall.WaitStatus, failed, err error) {
	tag, payload, err := readMessage(sup.ctrl)
	started := time.Now()
	resp.Startup = started.Sub(t0)
	switch {
	case err != nil:
		return 0, nil, err
	case tag == msgFailed:
		return 0, errors.New(string(payload)), nil
	case tag != msgStarted:
		return 0, nil, fmt.Errorf("supervisor: unexpected message %q", tag)
	}
	tag, payload, err = readMessage(sup.ctrl)
	resp.Execution = time.Since(started)
	switch {
	case err != nil:
		return 0, nil, err
	case tag != msgExited:
		return 0, nil, fmt.Errorf("supervisor: unexpected message %q", tag)
	}
	return syscall.WaitStatus(binary.BigEndian.Uint32(payload)), nil, nil
}

// outcome is Invoke's error for an invocation that ended: killed (why),
// a broken supervisor (serr), an entrypoint that could not start
// (failed), or the process's wait status.
func (inv *Invoker) outcome(ctx context.Context, why int32, serr, failed error, status syscall.WaitStatus) error {
	switch why {
	case byOutput:
		return fmt.Errorf("%w: more than %d bytes", abi.ErrOutputLimit, inv.maxOutput)
	case byContext:
		return fmt.Errorf("%w: %w", abi.ErrTimeout, context.Cause(ctx))
	}
	switch {
	case serr != nil:
		return serr
	case failed != nil:
		return failed
	case status.Signaled():
		return fmt.Errorf("%w: killed by signal %v", abi.ErrTrap, status.Signal())
	case status.ExitStatus() != 0:
		return &abi.ExitError{Code: status.ExitStatus()}
	}
	return nil
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
