package shim

import (
	"context"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// containerPoll is how often a Create compiling a module asks containerd
// whether its container still exists.
const containerPoll = time.Second

// watchContainer cancels ctx with errContainerGone once containerd no
// longer has container id, until stop is called. `ctr c rm` during a
// Create removes the container's record without telling the shim: all
// that reaches it is a State call for a task it has not created yet.
// Without an address or a namespace it watches nothing.
func (s *service) watchContainer(ctx context.Context, id string, cancel context.CancelCauseFunc) (stop func()) {
	ns, ok := namespaces.Namespace(ctx)
	if s.containerd == "" || !ok {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		conn, err := grpc.NewClient("unix://"+s.containerd, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.G(ctx).WithError(err).Warn("nebula: cannot watch the container while its module compiles")
			return
		}
		defer conn.Close()
		client := containersapi.NewContainersClient(conn)
		t := time.NewTicker(containerPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			gctx, gcancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 5*time.Second)
			_, err := client.Get(gctx, &containersapi.GetContainerRequest{ID: id})
			gcancel()
			if status.Code(err) == codes.NotFound {
				cancel(errContainerGone)
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}
