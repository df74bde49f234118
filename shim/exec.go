package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"nebula.dev/nebula/oci"
)

// execTarget is what Exec needs of a task whose process Nebula rewrote:
// the host program's args and where the shim sees the container's root
// filesystem.
type execTarget struct {
	args   []string
	rootfs string
}

// Exec runs a process exec'd into a wasm task that names a WebAssembly
// module under the host program, as oci.RewriteExec decides; any other
// process is runc's, unchanged.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	target, ok := s.execTargets[r.ID]
	s.mu.Unlock()
	if ok && r.Spec != nil {
		var p specs.Process
		if err := json.Unmarshal(r.Spec.GetValue(), &p); err == nil {
			files := &rootfsFiles{layers: []string{target.rootfs}}
			changed, err := oci.RewriteExec(&p, target.args, files.header)
			if err != nil {
				return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: exec %s in %s: %w", r.ExecID, r.ID, err))
			}
			if changed {
				b, err := json.Marshal(&p)
				if err != nil {
					return nil, errgrpc.ToGRPC(fmt.Errorf("nebula: exec %s in %s: %w", r.ExecID, r.ID, err))
				}
				r.Spec = &anypb.Any{TypeUrl: r.Spec.GetTypeUrl(), Value: b}
				log.G(ctx).WithField("id", r.ID).WithField("exec", r.ExecID).WithField("args", p.Args).
					Info("nebula: exec runs a wasm module under the host program")
			}
		}
	}
	return s.TTRPCTaskService.Exec(ctx, r)
}

// trackExec remembers a created task whose process is the host program,
// for Exec; its rewritten config.json says so.
func (s *service) trackExec(r *taskAPI.CreateTaskRequest) {
	raw, err := os.ReadFile(filepath.Join(r.Bundle, "config.json"))
	if err != nil {
		return
	}
	var spec specs.Spec
	if json.Unmarshal(raw, &spec) != nil || spec.Process == nil || len(spec.Process.Args) == 0 || spec.Process.Args[0] != oci.HostBinary {
		return
	}
	// runc's shim mounts the rootfs mounts at the bundle's rootfs;
	// without any, the spec's root path is the rootfs (ctr run --rootfs).
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) == 0 && spec.Root != nil {
		rootfs = spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(r.Bundle, rootfs)
		}
	}
	s.mu.Lock()
	s.execTargets[r.ID] = execTarget{args: spec.Process.Args, rootfs: rootfs}
	s.mu.Unlock()
}

// forgetExec forgets a deleted task.
func (s *service) forgetExec(id string) {
	s.mu.Lock()
	delete(s.execTargets, id)
	s.mu.Unlock()
}
