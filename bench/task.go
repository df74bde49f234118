package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/events"
	nboci "nebula.dev/nebula/oci"
)

// fnTask is a function-mode task the study started.
type fnTask struct {
	s      *study
	cont   containerd.Container
	task   containerd.Task
	exitCh <-chan containerd.ExitStatus
	url    string
	stderr *tailBuffer
	http   *http.Client
	// variant is the digest of the module variant planted, if any.
	variant    string
	cancelWait context.CancelFunc
}

// startTask starts c's image in function mode in the study's network
// namespace on port (events) and port+1 (metrics), and waits until its
// front door answers. For a cache-miss cell the module in the container's
// rootfs is first replaced by a variant never compiled before (outside the
// timed phases). The phases go to rec when it is not nil.
func (s *study) startTask(ctx context.Context, c *Cell, id string, port int, miss bool) (t *fnTask, pause time.Duration, err error) {
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	im := s.images[c.image()]
	specOpts := []oci.SpecOpts{
		oci.WithImageConfig(im.img),
		oci.WithEnv([]string{"PORT=" + strconv.Itoa(port), "K_SERVICE=" + id}),
		oci.WithAnnotations(map[string]string{
			nboci.AnnotationPrefix + "mode":         "function",
			nboci.AnnotationPrefix + "metrics-port": strconv.Itoa(port + 1),
		}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.netns.Path()}),
	}
	t = &fnTask{s: s, stderr: &tailBuffer{max: 8 << 10}, url: fmt.Sprintf("http://127.0.0.1:%d/", port)}
	t.http = &http.Client{
		Transport: &http.Transport{DialContext: s.netns.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true},
		Timeout:   callTimeout,
	}

	t.cont, err = s.client.NewContainer(octx, id,
		containerd.WithImage(im.img),
		containerd.WithNewSnapshot(id, im.img),
		containerd.WithRuntime(c.Runtime.Shim, nil),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		return nil, 0, fmt.Errorf("creating container: %w", err)
	}
	defer func() {
		if err != nil {
			s.forceDelete(ctx, t.cont)
		}
	}()
	if miss {
		p0 := time.Now()
		if t.variant, err = s.plantVariant(octx, t.cont, im.module); err != nil {
			return nil, 0, fmt.Errorf("planting a module variant: %w", err)
		}
		pause = time.Since(p0)
	}
	t.task, err = t.cont.NewTask(octx, cio.NewCreator(cio.WithStreams(nil, io.Discard, t.stderr)))
	if err != nil {
		return nil, 0, fmt.Errorf("creating task: %w", err)
	}
	// Wait's channel lives as long as its context: the task's lifetime.
	wctx, wcancel := context.WithCancel(namespaces.WithNamespace(context.WithoutCancel(ctx), s.cfg.Namespace))
	t.cancelWait = wcancel
	if t.exitCh, err = t.task.Wait(wctx); err != nil {
		wcancel()
		return nil, 0, fmt.Errorf("waiting for task: %w", err)
	}
	return t, pause, nil
}

// startAndWait starts t's task and waits for its front door; it returns
// when Start returned and when /healthz first answered 200.
func (t *fnTask) startAndWait(ctx context.Context) (started, ready time.Time, err error) {
	octx, cancel := t.s.opContext(ctx, readyTimeout)
	defer cancel()
	if err := t.task.Start(octx); err != nil {
		return started, ready, fmt.Errorf("starting task: %w", err)
	}
	started = time.Now()
	probe := &http.Client{Transport: &http.Transport{DialContext: t.s.netns.DialContext, DisableKeepAlives: true}, Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(octx, http.MethodGet, t.url+"healthz", nil)
		resp, err := probe.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return started, time.Now(), nil
			}
		}
		select {
		case st := <-t.exitCh:
			code, _, _ := st.Result()
			return started, ready, fmt.Errorf("the function task exited with status %d before serving: %s", code, t.stderr.String())
		case <-octx.Done():
			return started, ready, fmt.Errorf("the front door did not answer /healthz within %v (last error: %v): %s", readyTimeout, err, t.stderr.String())
		case <-time.After(500 * time.Microsecond):
		}
	}
}

// stop sends SIGTERM (the function drains and exits 0), SIGKILL after
// stopGrace, and deletes the task and the container.
func (t *fnTask) stop(ctx context.Context) error {
	t.http.CloseIdleConnections()
	defer t.cancelWait()
	octx, cancel := t.s.opContext(ctx, callTimeout)
	defer cancel()
	if err := t.task.Kill(octx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-t.exitCh:
	case <-time.After(stopGrace):
		t.task.Kill(octx, syscall.SIGKILL)
		<-t.exitCh
	}
	if _, err := t.task.Delete(octx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("deleting task: %w", err)
	}
	if err := t.cont.Delete(octx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("deleting container: %w", err)
	}
	return nil
}

// abort kills and deletes the task whatever its state.
func (t *fnTask) abort(ctx context.Context) {
	if t.cancelWait != nil {
		t.cancelWait()
	}
	t.s.forceDelete(ctx, t.cont)
}

// taskStart measures the start of a function task until it serves, then
// stops it.
func (s *study) taskStart(ctx context.Context, c *Cell, id string, rec *Record) error {
	t0 := time.Now()
	t, pause, err := s.startTask(ctx, c, id, taskStartPort, c.Runtime.Miss)
	if err != nil {
		return err
	}
	t1 := time.Now()
	started, ready, err := t.startAndWait(ctx)
	if err != nil {
		t.abort(ctx)
		s.removeVariant(t.variant)
		return err
	}
	t3 := time.Now()
	if err := t.stop(ctx); err != nil {
		t.abort(ctx)
		return fmt.Errorf("stopping the function task: %w", err)
	}
	t4 := time.Now()
	if c.Runtime.Miss {
		s.removeVariant(t.variant)
	}
	create := t1.Sub(t0) - pause
	v := &rec.Values
	v[PhaseCreate] = create.Seconds()
	v[PhaseStartup] = (create + started.Sub(t1)).Seconds()
	v[PhaseReady] = ready.Sub(started).Seconds()
	v[PhaseTeardown] = t4.Sub(t3).Seconds()
	v[PhaseTotal] = (create + ready.Sub(t1)).Seconds()
	return nil
}

// invoke sends one binary-mode CloudEvent to the front door.
func (t *fnTask) invoke(ctx context.Context, f *Function, id string, rec *Record) error {
	octx, cancel := t.s.opContext(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(octx, http.MethodPost, t.url, bytes.NewReader(f.Data))
	if err != nil {
		return err
	}
	h := req.Header
	h["Ce-Specversion"] = []string{"1.0"}
	h["Ce-Id"] = []string{id}
	h["Ce-Source"] = []string{"/nebula/bench"}
	h["Ce-Type"] = []string{f.EventType}
	h["Content-Type"] = []string{f.ContentType}
	t0 := time.Now()
	resp, err := t.http.Do(req)
	if err != nil {
		return fmt.Errorf("sending the event: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	total := time.Since(t0)
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("the front door answered %s: %s (task stderr: %s)", resp.Status, bytes.TrimSpace(body), t.stderr.String())
	}
	if f.Echo && !bytes.Equal(body, f.Data) {
		return fmt.Errorf("the function replied %q, want %q", body, f.Data)
	}
	timing, err := parseServerTiming(resp.Header.Get("Server-Timing"))
	if err != nil {
		return err
	}
	v := &rec.Values
	v[PhaseQueue] = timing["queue"]
	v[PhaseStartup] = timing[events.TimingStart]
	v[PhaseExec] = timing[events.TimingExec]
	v[PhaseServer] = timing[events.TimingTotal]
	v[PhaseTotal] = total.Seconds()
	return nil
}

// parseServerTiming returns the durations of a Server-Timing header in
// seconds by metric name, requiring queue, start, exec and total.
func parseServerTiming(h string) (map[string]float64, error) {
	metrics, err := events.ParseServerTiming(h)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range metrics {
		out[m.Name] = m.Millis / 1e3
	}
	for _, want := range []string{events.TimingQueue, events.TimingStart, events.TimingExec, events.TimingTotal} {
		if _, ok := out[want]; !ok {
			return nil, fmt.Errorf("Server-Timing %q: no %s;dur", h, want)
		}
	}
	return out, nil
}
