package shim

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// service routes containerd's task API. It embeds containerd's runc task
// service, so every call it does not override behaves exactly as in
// containerd-shim-runc-v2.
type service struct {
	taskAPI.TTRPCTaskService
}

// newService wraps runc, containerd's runc-v2 task service.
func newService(runc taskAPI.TTRPCTaskService) *service {
	return &service{TTRPCTaskService: runc}
}

// RegisterTTRPC registers the router, not the runc service it wraps, as
// containerd.task.v3.Task.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create translates the runtime options runc cannot read, then delegates.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	opts, err := runcOptions(r.Options)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: create %s: %w", r.ID, err))
	}
	r.Options = opts
	return s.TTRPCTaskService.Create(ctx, r)
}
