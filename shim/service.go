package shim

import (
	"context"
	"fmt"
	"os"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// service routes containerd's task API. It embeds containerd's runc task
// service, so every call it does not override behaves exactly as in
// containerd-shim-runc-v2.
type service struct {
	taskAPI.TTRPCTaskService
	// hostBinary is the host program mounted into wasm and function
	// containers: this very executable, which becomes the host when
	// invoked as nebula-host.
	hostBinary string
	// cacheRoot holds one compilation cache directory per module digest.
	cacheRoot string
}

// DefaultCacheRoot is where the shim keeps compiled modules unless
// NEBULA_CACHE_DIR says otherwise (set it in containerd's shim manager env).
const DefaultCacheRoot = "/var/lib/nebula/cache"

// newService wraps runc, containerd's runc-v2 task service.
func newService(runc taskAPI.TTRPCTaskService) (*service, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating the shim's executable: %w", err)
	}
	root := os.Getenv("NEBULA_CACHE_DIR")
	if root == "" {
		root = DefaultCacheRoot
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating the module cache %s: %w", root, err)
	}
	return &service{TTRPCTaskService: runc, hostBinary: exe, cacheRoot: root}, nil
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
	if err := s.prepare(ctx, r); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: create %s: %w", r.ID, err))
	}
	return s.TTRPCTaskService.Create(ctx, r)
}

// invalidArgument marks err as the client's mistake (gRPC InvalidArgument)
// without adding words to its message.
func invalidArgument(err error) error { return invalidError{err} }

type invalidError struct{ error }

func (invalidError) InvalidParameter() {}

func (e invalidError) Unwrap() error { return e.error }
