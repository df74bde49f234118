package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"nebula.dev/nebula/oci"
)

// service routes containerd's task API. It embeds containerd's runc task
// service, so every call it does not override behaves exactly as in
// containerd-shim-runc-v2.
type service struct {
	taskAPI.TTRPCTaskService
	// hostBinary is the host program mounted into wasm and function
	// containers: nebula-host, next to the shim's executable unless
	// NEBULA_HOST_BINARY says otherwise.
	hostBinary string
	// cacheRoot holds one compilation cache directory per module digest;
	// cacheMax bounds its size (0: no bound).
	cacheRoot string
	cacheMax  int64
	// containerd is the daemon's GRPC address, to notice a container
	// removed while its module compiles.
	containerd string

	mu sync.Mutex
	// creating holds the Creates compiling a module, by task id.
	creating map[string]*creation
	// execTargets holds the created tasks whose process is the host
	// program, by task id, for Exec.
	execTargets map[string]execTarget
}

// creation is a Create in progress.
type creation struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// DefaultCacheRoot is where the shim keeps compiled modules unless
// NEBULA_CACHE_DIR says otherwise (set it in containerd's shim manager env).
const DefaultCacheRoot = "/var/lib/nebula/cache"

// DefaultCacheMax bounds the module cache unless NEBULA_CACHE_MAX says
// otherwise: about 350 compiled Go modules of 3 MB.
const DefaultCacheMax = 4 << 30

// HostBinaryName is the host program's file name, expected next to the shim.
const HostBinaryName = "nebula-host"

// newService wraps runc, containerd's runc-v2 task service. containerd is
// the daemon's GRPC address.
func newService(runc taskAPI.TTRPCTaskService, containerd string) (*service, error) {
	host := os.Getenv("NEBULA_HOST_BINARY")
	if host == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating the shim's executable: %w", err)
		}
		host = filepath.Join(filepath.Dir(exe), HostBinaryName)
	}
	root := os.Getenv("NEBULA_CACHE_DIR")
	if root == "" {
		root = DefaultCacheRoot
	}
	max := int64(DefaultCacheMax)
	if v := os.Getenv("NEBULA_CACHE_MAX"); v != "" {
		n, err := oci.ParseSize(v)
		if err != nil || n > 1<<62 {
			return nil, fmt.Errorf("NEBULA_CACHE_MAX=%q: want bytes with an optional Ki, Mi, Gi or Ti suffix (0: no bound)", v)
		}
		max = int64(n)
	}
	return &service{TTRPCTaskService: runc, hostBinary: host, cacheRoot: root, cacheMax: max,
		containerd: containerd, creating: map[string]*creation{}, execTargets: map[string]execTarget{}}, nil
}

// RegisterTTRPC registers the router, not the runc service it wraps, as
// containerd.task.v3.Task.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create translates the runtime options runc cannot read, classifies the
// task and, for wasm and function tasks, rewrites its spec; then delegates.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	opts, err := runcOptions(r.Options)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: create %s: %w", r.ID, err))
	}
	r.Options = opts
	job, err := s.prepare(ctx, r)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: create %s: %w", r.ID, err))
	}
	if job == nil {
		resp, err := s.TTRPCTaskService.Create(ctx, r)
		if err == nil {
			s.trackExec(r)
		}
		return resp, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	c := &creation{cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.creating[r.ID] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.creating, r.ID)
		s.mu.Unlock()
		cancel(nil)
		close(c.done)
	}()
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		return nil, err
	}
	stopWatch := s.watchContainer(ctx, r.ID, cancel)
	res, err := s.compileInTask(ctx, job, resp.Pid)
	stopWatch()
	if err = s.finishCompile(ctx, job, res, err); err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Warn("nebula: create failed; deleting the task runc created")
		s.deleteCreated(ctx, r.ID)
		return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: create %s: %w", r.ID, err))
	}
	s.trackExec(r)
	return resp, nil
}

// deleteCreated deletes a task runc created but whose Create failed: its
// init process is killed first (runc's Delete would wait 10 s for the
// process's output to drain), then runc unmounts its rootfs and forgets it.
func (s *service) deleteCreated(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL)}); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("nebula: killing the task whose Create failed")
	}
	if _, err := s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Error("nebula: deleting the task whose Create failed")
	}
}

// Delete first stops a Create of the same task still compiling its module:
// containerd deletes a task whose Create it gave up on (its client went
// away), and runc would not find it yet. Then it delegates.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID == "" {
		s.mu.Lock()
		c := s.creating[r.ID]
		s.mu.Unlock()
		if c != nil {
			c.cancel(errTaskDeleted)
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, errgrpc.ToGRPC(ctx.Err())
			}
		}
		defer s.forgetExec(r.ID)
	}
	return s.TTRPCTaskService.Delete(ctx, r)
}

// invalidArgument marks err as the client's mistake (gRPC InvalidArgument)
// without adding words to its message.
func invalidArgument(err error) error { return invalidError{err} }

type invalidError struct{ error }

func (invalidError) InvalidParameter() {}

func (e invalidError) Unwrap() error { return e.error }
