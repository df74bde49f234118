package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

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
	// containers: nebula-host, next to the shim's executable unless
	// NEBULA_HOST_BINARY says otherwise.
	hostBinary string
	// cacheRoot holds one compilation cache directory per module digest.
	cacheRoot string
}

// DefaultCacheRoot is where the shim keeps compiled modules unless
// NEBULA_CACHE_DIR says otherwise (set it in containerd's shim manager env).
const DefaultCacheRoot = "/var/lib/nebula/cache"

// HostBinaryName is the host program's file name, expected next to the shim.
const HostBinaryName = "nebula-host"

// newService wraps runc, containerd's runc-v2 task service.
func newService(runc taskAPI.TTRPCTaskService) (*service, error) {
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
	return &service{TTRPCTaskService: runc, hostBinary: host, cacheRoot: root}, nil
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
