package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// RuntimeName is the runtime type users select: `ctr run --runtime
// io.containerd.nebula.v1`, `runtime_type` in containerd's CRI config.
const RuntimeName = "io.containerd.nebula.v1"

// NewManager returns the shim manager containerd drives through the shim
// binary's `start`, `delete` and `-info` actions: containerd's runc-v2
// manager, with runtime options translated for Info.
func NewManager() shim.Manager {
	return nebulaManager{Manager: manager.NewShimManager(RuntimeName)}
}

type nebulaManager struct {
	shim.Manager
}

// Info reports runc's features. containerd passes the runtime's options on
// stdin; CRI's runtimeoptions are translated first, as in Create.
func (m nebulaManager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	data, err := io.ReadAll(optionsR)
	if err != nil {
		return nil, fmt.Errorf("reading runtime options: %w", err)
	}
	if len(data) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("decoding runtime options: %w", err)
		}
		opts, err := runcOptions(&a)
		if err != nil {
			return nil, err
		}
		data = nil
		if opts != nil {
			if data, err = proto.Marshal(opts); err != nil {
				return nil, err
			}
		}
	}
	return m.Manager.Info(ctx, bytes.NewReader(data))
}
