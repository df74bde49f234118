package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/internal/hostargs"
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// compileJob is a module to compile once runc has created the task's
// container.
type compileJob struct {
	id     string // the task's
	module string // its path in the container, for messages
	wasm   []byte
	// dir is the module's cache entry directory, "" to only validate.
	dir string
	// memoryLimit is the wasm memory limit the task runs with (0: none).
	memoryLimit uint64
	timeout     time.Duration
	maxMemory   uint64
	// timeoutSource and memorySource say where the bounds came from.
	timeoutSource, memorySource string
	// cgroupMemory is the container's memory limit (0: none), for messages.
	cgroupMemory int64
	// fewPids: the container has a small pids limit; the compile runs on
	// one P.
	fewPids bool
}

// compileHeapEighths is the part of a container's memory limit, in eighths,
// that the compile's Go heap aims to stay under (its GOMEMLIMIT): the rest
// is its program's pages and the compiled code's executable mappings (11 MB
// for the 3 MB Go probe), charged to the same cgroup. Measured in a 64 MiB
// cgroup v1 with that probe (peak RSS 77 MB unbounded): 48 MiB was
// OOM-killed, 40 MiB compiled with 54 MB of anonymous memory at its peak,
// too close under load; half leaves room.
const compileHeapEighths = 4

// errCacheFailed marks a compile that validated the module but could not
// write the cache: the task still runs, the host compiles at start.
type errCacheFailed struct{ error }

// compileInTask runs `nebula-host compile` for job in the cgroups of the
// task's init process (runc init, waiting to be started), so that its CPU
// and memory are the task's, bounded by job's timeout and memory and by
// ctx: cancelling ctx (the task is deleted, its container is gone) kills
// it.
func (s *service) compileInTask(ctx context.Context, job *compileJob, initPid uint32) (hostargs.CompileResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, job.timeout, errCompileTimeout)
	defer cancel()
	cmd, stdout, stderr := s.compileCommand(job)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return hostargs.CompileResult{}, err
	}
	finished, err := startPinned(cmd)
	if err != nil {
		return hostargs.CompileResult{}, fmt.Errorf("starting %s compile: %w", s.hostBinary, err)
	}
	if err := joinCgroups(int(initPid), cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Warn("nebula: compiling outside the task's cgroups")
	}
	go func() {
		stdin.Write(job.wasm)
		stdin.Close()
	}()
	var waitErr error
	select {
	case waitErr = <-finished:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-finished
		return hostargs.CompileResult{}, s.compileStopped(job, context.Cause(ctx))
	}
	return s.compileOutcome(job, waitErr, stdout.Bytes(), bytes.TrimSpace(stderr.Bytes()))
}

// compileCommand is `nebula-host compile` for job: a minimal environment,
// its Go runtime sized to the task's pids and memory limits, stderr
// capped, and a network namespace of its own, empty (it needs no
// network).
func (s *service) compileCommand(job *compileJob) (cmd *exec.Cmd, stdout, stderr *bytes.Buffer) {
	args := hostargs.Compile{CacheDir: job.dir, MemoryLimit: job.memoryLimit, MaxMemory: job.maxMemory}.Argv()
	cmd = exec.Command(s.hostBinary, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if job.fewPids {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	if job.cgroupMemory > 0 {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+strconv.FormatInt(job.cgroupMemory/8*compileHeapEighths, 10))
	}
	stdout, stderr = new(bytes.Buffer), new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = stdout, &limitedWriter{w: stderr, n: 64 << 10}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Cloneflags: syscall.CLONE_NEWNET}
	return cmd, stdout, stderr
}

// startPinned starts cmd from a thread locked for the child's life:
// Pdeathsig belongs to the thread that forks, so a shim that dies takes
// its compile along. finished receives cmd.Wait's result.
func startPinned(cmd *exec.Cmd) (finished <-chan error, err error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	return done, <-started
}

// compileOutcome reads the result of a compile that exited (waitErr), or
// turns its exit code and stderr (msg) into the error Create returns.
func (s *service) compileOutcome(job *compileJob, waitErr error, stdout, msg []byte) (hostargs.CompileResult, error) {
	var res hostargs.CompileResult
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
		if err := json.Unmarshal(stdout, &res); err != nil {
			return res, fmt.Errorf("reading %s compile's result %q: %w", s.hostBinary, stdout, err)
		}
		return res, nil
	case !errors.As(waitErr, &ee):
		return res, fmt.Errorf("%s compile: %w", s.hostBinary, waitErr)
	case ee.ExitCode() == hostargs.ExitCompileInvalid:
		return res, invalidArgument(fmt.Errorf("module %s: %s", job.module, msg))
	case ee.ExitCode() == hostargs.ExitCompileCache:
		return res, errCacheFailed{errors.New(string(msg))}
	case ee.ExitCode() == hostargs.ExitCompileMemory, bytes.Contains(msg, []byte("out of memory")):
		return res, invalidArgument(fmt.Errorf("module %s: compiling needed more than %d bytes, the compile-memory limit (%s)",
			job.module, job.maxMemory, job.memorySource))
	case ee.ExitCode() == -1: // killed by a signal, the kernel's OOM killer most likely
		if job.cgroupMemory > 0 {
			return res, invalidArgument(fmt.Errorf("module %s: the compile was killed (%v): compiling it needs more than the container's memory limit of %d bytes allows",
				job.module, waitErr, job.cgroupMemory))
		}
		return res, fmt.Errorf("module %s: the compile was killed (%v)", job.module, waitErr)
	default:
		return res, fmt.Errorf("module %s: %s compile: %v: %s", job.module, s.hostBinary, waitErr, msg)
	}
}

var (
	errCompileTimeout = errors.New("compile timeout")
	// errTaskDeleted: containerd deleted the task while it was being
	// created (its client went away).
	errTaskDeleted = errors.New("the task was deleted while its module compiled")
	// errContainerGone: the container's record disappeared from containerd
	// (`ctr c rm`) while its module compiled.
	errContainerGone = errors.New("the container was removed while its module compiled")
)

// compileStopped explains why a compile was killed.
func (s *service) compileStopped(job *compileJob, cause error) error {
	if errors.Is(cause, errCompileTimeout) {
		return invalidArgument(fmt.Errorf("module %s: compiling took longer than the compile-timeout of %v (%s)",
			job.module, job.timeout, job.timeoutSource))
	}
	return fmt.Errorf("module %s: compile stopped: %w", job.module, cause)
}

// joinCgroups moves pid into the cgroups of member: every v1 hierarchy, or
// the v2 group.
func joinCgroups(member, pid int) error {
	if cgroups.Mode() == cgroups.Unified {
		group, err := cgroup2.PidGroupPath(member)
		if err != nil {
			return err
		}
		m, err := cgroup2.Load(group)
		if err != nil {
			return err
		}
		return m.AddProc(uint64(pid))
	}
	cg, err := cgroup1.Load(cgroup1.PidPath(member))
	if err != nil {
		return err
	}
	return cg.Add(cgroup1.Process{Pid: pid})
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// knobSource says where a knob's value came from, or that it is the
// default.
func knobSource(spec *specs.Spec, name, def string) string {
	if _, source, ok := oci.LookupKnob(spec, name); ok {
		return "knob " + name + ", " + source
	}
	return "knob " + name + ", default " + def
}

// newCompileJob is the compile of module into the cache entry dir, with
// the knobs' limits (or their defaults) and the container's memory and
// pids limits.
func newCompileJob(spec *specs.Spec, knobs oci.Knobs, id, module string, wasm []byte, dir string) *compileJob {
	job := &compileJob{
		id:            id,
		module:        module,
		wasm:          wasm,
		dir:           dir,
		memoryLimit:   knobs.MemoryLimit,
		timeout:       knobs.CompileTimeout,
		maxMemory:     knobs.CompileMemory,
		timeoutSource: knobSource(spec, "compile-timeout", oci.DefaultCompileTimeout.String()),
		memorySource:  knobSource(spec, "compile-memory", "2Gi"),
	}
	if job.timeout == 0 {
		job.timeout = oci.DefaultCompileTimeout
	}
	if job.maxMemory == 0 {
		job.maxMemory = oci.DefaultCompileMemory
	}
	if l := spec.Linux; l != nil && l.Resources != nil {
		if m := l.Resources.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
			job.cgroupMemory = *m.Limit
		}
		if p := l.Resources.Pids; p != nil && p.Limit != nil && *p.Limit > 0 && *p.Limit < 32 {
			job.fewPids = true
		}
	}
	return job
}

// finishCompile records a compile's outcome: a filled entry is made
// readable by the container's user and the cache pruned; an unusable cache
// is emptied, and the task runs without it.
func (s *service) finishCompile(ctx context.Context, job *compileJob, res hostargs.CompileResult, err error) error {
	logger := log.G(ctx).WithField("id", job.id).WithField("module", job.module)
	var cacheErr errCacheFailed
	switch {
	case errors.As(err, &cacheErr):
		logger.WithError(cacheErr.error).Warn("nebula: module cache unusable; the host compiles at start")
		if cerr := wasmhost.ClearCacheEntry(job.dir); cerr != nil {
			logger.WithError(cerr).Warn("nebula: clearing the cache entry")
		}
		return nil
	case err != nil:
		return err
	case job.dir == "":
		logger.WithField("seconds", res.Seconds).Info("nebula: validated module; the host compiles at start")
		return nil
	}
	if err := shareReadOnly(job.dir); err != nil {
		return fmt.Errorf("module %s: cache %s: %w", job.module, job.dir, err)
	}
	touch(job.dir)
	cache := "miss"
	if res.Hit {
		cache = "hit"
	}
	logger.WithField("digest", "sha256:"+filepath.Base(job.dir)).WithField("cache", cache).
		WithField("seconds", res.Seconds).Info("nebula: compiled module")
	pruned, err := wasmhost.PruneCache(s.cacheRoot, s.cacheMax, job.dir, pruneGrace)
	if len(pruned.Removed) > 0 || err != nil {
		logger.WithError(err).WithField("removed", pruned.Removed).WithField("bytes", pruned.Kept).Info("nebula: pruned the module cache")
	}
	return nil
}

// pruneGrace protects cache entries used this recently from PruneCache:
// one may be about to be mounted by a task being created.
const pruneGrace = 10 * time.Minute

// shareReadOnly makes a module's cache directory readable by the container's
// user, whoever that is: the directory is bind-mounted read-only, and the
// cache root above it stays private to root.
func shareReadOnly(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
}
