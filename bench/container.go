package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	nboci "nebula.dev/nebula/oci"
)

// ceEnv is the event as CE_* variables, for a container per event.
func ceEnv(f *Function, id string) []string {
	return []string{
		"CE_SPECVERSION=1.0", "CE_ID=" + id, "CE_SOURCE=/nebula/bench",
		"CE_TYPE=" + f.EventType, "CE_DATACONTENTTYPE=" + f.ContentType,
	}
}

// containerCall runs one event in a fresh container: create, start, wait,
// delete, with the event's data on stdin and the reply on stdout.
func (s *study) containerCall(ctx context.Context, c *Cell, id string, rec *Record) (err error) {
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	im := s.images[c.image()]
	specOpts := []oci.SpecOpts{oci.WithImageConfig(im.img), oci.WithEnv(ceEnv(c.Function, id))}
	if c.Runtime.Shim == NebulaShim {
		specOpts = append(specOpts, oci.WithAnnotations(map[string]string{nboci.AnnotationPrefix + "mode": "run"}))
	}
	var stdout, stderr tailBuffer
	stdout.max, stderr.max = 1<<20, 8<<10

	t0 := time.Now()
	cont, err := s.client.NewContainer(octx, id,
		containerd.WithImage(im.img),
		containerd.WithNewSnapshot(id, im.img),
		containerd.WithRuntime(c.Runtime.Shim, nil),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		return fmt.Errorf("creating container: %w", err)
	}
	defer func() {
		if err != nil {
			s.forceDelete(ctx, cont)
		}
	}()
	stdin := &stdinCloser{r: bytes.NewReader(c.Function.Data), ctx: octx, task: make(chan containerd.Task, 1)}
	task, err := cont.NewTask(octx, cio.NewCreator(cio.WithStreams(stdin, &stdout, &stderr)))
	if err != nil {
		close(stdin.task)
		return fmt.Errorf("creating task: %w", err)
	}
	stdin.task <- task
	t1 := time.Now()
	exitCh, err := task.Wait(octx)
	if err != nil {
		return fmt.Errorf("waiting for task: %w", err)
	}
	if err := task.Start(octx); err != nil {
		return fmt.Errorf("starting task: %w", err)
	}
	t2 := time.Now()
	var st containerd.ExitStatus
	select {
	case st = <-exitCh:
	case <-octx.Done():
		return fmt.Errorf("the task did not exit within %v", callTimeout)
	}
	task.IO().Wait()
	t3 := time.Now()
	if _, err := task.Delete(octx); err != nil {
		return fmt.Errorf("deleting task: %w", err)
	}
	if err := cont.Delete(octx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("deleting container: %w", err)
	}
	t4 := time.Now()
	if code, _, _ := st.Result(); code != 0 {
		return fmt.Errorf("the function exited with status %d: %s", code, stderr.String())
	}
	if c.Function.Echo && !bytes.Equal(stdout.Bytes(), c.Function.Data) {
		return fmt.Errorf("the function replied %q, want %q (stderr: %s)", stdout.Bytes(), c.Function.Data, stderr.String())
	}
	v := &rec.Values
	v[PhaseCreate] = t1.Sub(t0).Seconds()
	v[PhaseStartup] = t2.Sub(t0).Seconds()
	v[PhaseExec] = t3.Sub(t2).Seconds()
	v[PhaseTeardown] = t4.Sub(t3).Seconds()
	v[PhaseTotal] = t4.Sub(t0).Seconds()
	return nil
}

// stdinCloser is a task's stdin: at its end it closes the task's stdin
// (CloseIO), as ctr does — the shim holds the stdin fifo open until then,
// so a function reading to EOF would wait for ever. The copy can reach
// the end before NewTask returns: it waits for the task on a channel.
type stdinCloser struct {
	r    io.Reader
	ctx  context.Context
	task chan containerd.Task
	done bool
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF && !s.done {
		s.done = true
		select {
		case t, ok := <-s.task:
			if ok {
				t.CloseIO(s.ctx, containerd.WithStdinCloser)
			}
		case <-s.ctx.Done():
		}
	}
	return n, err
}

// forceDelete removes a container whose call failed, and its task.
func (s *study) forceDelete(ctx context.Context, cont containerd.Container) {
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	if task, err := cont.Task(octx, nil); err == nil {
		if ch, err := task.Wait(octx); err == nil {
			if err := task.Kill(octx, syscall.SIGKILL); err == nil {
				select {
				case <-ch:
				case <-octx.Done():
				}
			}
		}
		task.Delete(octx)
	}
	cont.Delete(octx, containerd.WithSnapshotCleanup)
}

// tailBuffer keeps the first max bytes written to it (stdout) — or, for
// diagnostics, whatever fits — safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *tailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}

func (b *tailBuffer) String() string {
	s := strings.TrimSpace(string(b.Bytes()))
	if s == "" {
		return "(nothing on stderr)"
	}
	return s
}
