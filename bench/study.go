package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/events"
	nboci "nebula.dev/nebula/oci"
	nbimage "nebula.dev/nebula/oci/image"
)

// Timeouts of one call; a study that hits one stops with an error.
const (
	callTimeout    = 2 * time.Minute
	readyTimeout   = 30 * time.Second
	stopGrace      = 10 * time.Second
	connectTimeout = 5 * time.Second
)

// settle is the pause before each call, so that the previous call's
// aftermath (a shim exiting, containerd collecting a snapshot) is over.
const settle = 25 * time.Millisecond

// Ports in the study's own network namespace: task-start tasks (one at a
// time) use the first pair, front-door tasks the following ones.
const (
	taskStartPort = 18080
	frontDoorPort = 18090
)

// study is one run of Run: a containerd client, the functions' images, the
// front-door tasks it started and what it measured.
type study struct {
	cfg     Config
	client  *containerd.Client
	version containerd.Version
	prefix  string
	cells   []*Cell
	images  map[string]*image
	netns   *netNS
	fronts  map[*Cell]*fnTask

	mu        sync.Mutex
	records   []Record
	rounds    int
	leftovers []string
	machine   Machine
	started   time.Time
	seq       int
	userImage string // imported by the study, removed at the end
	progress  *progress
}

// image is an image a cell runs, resolved once.
type image struct {
	ref    string
	img    containerd.Image
	module string // a wasm image's module path in its rootfs
}

func newStudy(ctx context.Context, cfg Config) (*study, error) {
	s := &study{cfg: cfg, images: map[string]*image{}, fronts: map[*Cell]*fnTask{}, started: time.Now()}
	s.prefix = "nebula-bench-" + randomHex(4)
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	fns, err := s.functions(ctx)
	if err != nil {
		return nil, err
	}
	s.cells = selectCells(fns, cfg.Cells)
	if len(s.cells) == 0 {
		return nil, fmt.Errorf("--cells %s × --functions %s: no combination can run (the tiny function has no native build)",
			strings.Join(cfg.Cells, ","), strings.Join(cfg.Functions, ","))
	}
	for _, c := range s.cells {
		if err := s.resolve(ctx, c); err != nil {
			return nil, err
		}
	}
	s.machine = collectMachine(ctx, s.version, cfg)
	ok = true
	return s, nil
}

// connect dials containerd and asks for its version, so that a wrong
// socket is reported before anything else.
func (s *study) connect(ctx context.Context) error {
	addr := strings.TrimPrefix(s.cfg.Address, "unix://")
	if fi, err := os.Stat(addr); err != nil {
		return fmt.Errorf("--address %s: cannot reach containerd: %w", s.cfg.Address, err)
	} else if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("--address %s: cannot reach containerd: not a socket", s.cfg.Address)
	}
	client, err := containerd.New(s.cfg.Address, containerd.WithDefaultNamespace(s.cfg.Namespace), containerd.WithTimeout(connectTimeout))
	if err != nil {
		return fmt.Errorf("--address %s: cannot reach containerd: %w", s.cfg.Address, err)
	}
	vctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	v, err := client.Version(vctx)
	if err != nil {
		client.Close()
		return fmt.Errorf("--address %s: cannot reach containerd: %w", s.cfg.Address, err)
	}
	s.client, s.version = client, v
	return nil
}

// opContext is the context of containerd operations: not cancelled by
// Ctrl-C (an operation is finished, or undone, rather than abandoned
// halfway), bounded in time.
func (s *study) opContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(context.WithoutCancel(ctx), s.cfg.Namespace), d)
}

// functions returns the functions of the study, importing the user's
// module as an image when given one.
func (s *study) functions(ctx context.Context) ([]*Function, error) {
	var fns []*Function
	for _, name := range FunctionNames {
		if !slices.Contains(s.cfg.Functions, name) {
			continue
		}
		if f := builtinFunction(name); f != nil {
			fns = append(fns, f)
			continue
		}
		f, err := s.userFunction(ctx)
		if err != nil {
			return nil, err
		}
		fns = append(fns, f)
	}
	return fns, nil
}

func (s *study) userFunction(ctx context.Context) (*Function, error) {
	f := &Function{Name: "user", EventType: "dev.nebula.bench", ContentType: "application/json", Data: benchData}
	if s.cfg.WasmFile != "" {
		ref, err := s.importModule(ctx, s.cfg.WasmFile)
		if err != nil {
			return nil, err
		}
		f.WasmImage = ref
		f.Description = "module " + s.cfg.WasmFile
		return f, nil
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	img, err := s.client.GetImage(octx, s.cfg.Image)
	if err != nil {
		return nil, imageError(s.cfg.Image, s.cfg.Namespace, err)
	}
	spec, err := img.Spec(octx)
	if err != nil {
		return nil, fmt.Errorf("--image %s: reading its config: %w", s.cfg.Image, err)
	}
	args := append(slices.Clone(spec.Config.Entrypoint), spec.Config.Cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("--image %s: the image has neither entrypoint nor cmd", s.cfg.Image)
	}
	if strings.HasSuffix(args[0], ".wasm") {
		f.WasmImage = s.cfg.Image
	} else {
		f.NativeImage = s.cfg.Image
	}
	f.Description = "image " + s.cfg.Image
	return f, nil
}

func imageError(ref, ns string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("image %s is not in namespace %s: import it first (`nebula build … -o F.tar && ctr -n %s images import F.tar`; `make bench` imports the default ones)", ref, ns, ns)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// resolve looks up (and unpacks, if needed) the image of c.
func (s *study) resolve(ctx context.Context, c *Cell) error {
	ref := c.image()
	if _, ok := s.images[ref]; ok {
		return nil
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	img, err := s.client.GetImage(octx, ref)
	if err != nil {
		return imageError(ref, s.cfg.Namespace, err)
	}
	unpacked, err := img.IsUnpacked(octx, "")
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if !unpacked {
		if err := img.Unpack(octx, ""); err != nil {
			return fmt.Errorf("image %s: unpacking: %w", ref, err)
		}
	}
	im := &image{ref: ref, img: img}
	if c.Runtime.Wasm {
		spec, err := img.Spec(octx)
		if err != nil {
			return fmt.Errorf("image %s: reading its config: %w", ref, err)
		}
		args := append(slices.Clone(spec.Config.Entrypoint), spec.Config.Cmd...)
		if len(args) == 0 || !filepath.IsAbs(args[0]) {
			return fmt.Errorf("image %s: the entrypoint must be the module's absolute path, got %q", ref, args)
		}
		im.module = filepath.Clean(args[0])
	}
	s.images[ref] = im
	return nil
}

// run starts the front doors, then runs Warmup+N rounds, each calling
// every cell once, in a new random order each round: drift of the machine
// hits every cell alike, and no cell always follows the same neighbour.
func (s *study) run(ctx context.Context) error {
	needNS := false
	for _, c := range s.cells {
		needNS = needNS || c.Runtime.Kind != KindContainer
	}
	if needNS {
		ns, err := newNetNS()
		if err != nil {
			return err
		}
		s.netns = ns
	}
	port := frontDoorPort
	for _, c := range s.cells {
		if c.Runtime.Kind != KindFrontDoor {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w while starting the function tasks", ErrInterrupted)
		}
		t, _, err := s.startTask(ctx, c, s.newID(c, "fd"), port, false)
		if err != nil {
			return fmt.Errorf("%s: starting the function task: %w", c.Name(), err)
		}
		s.fronts[c] = t
		if _, _, err := t.startAndWait(ctx); err != nil {
			return fmt.Errorf("%s: starting the function task: %w", c.Name(), err)
		}
		port += 2
	}
	rounds := s.cfg.Warmup + s.cfg.N
	s.progress = newProgress(s.cfg.Progress, s.cfg.ProgressTTY, rounds, len(s.cells), s.cfg.Warmup)
	defer s.progress.done()
	order := newRand(s.cfg.Seed ^ 0x6f72646572) // the schedule is reproducible too
	for r := range rounds {
		warm := r < s.cfg.Warmup
		for _, k := range order.Perm(len(s.cells)) {
			c := s.cells[k]
			if ctx.Err() != nil {
				return fmt.Errorf("%w (Ctrl-C)", ErrInterrupted)
			}
			s.progress.step(r, c.Name())
			// Let the previous call's aftermath (a shim exiting, containerd
			// collecting a snapshot) pass before the next one starts.
			time.Sleep(settle)
			recs, err := s.call(ctx, c, r-s.cfg.Warmup, warm)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", c.Name(), r+1, err)
			}
			if !warm {
				s.mu.Lock()
				s.records = append(s.records, recs...)
				s.mu.Unlock()
			}
		}
		if !warm {
			s.rounds++
		}
	}
	return nil
}

func (s *study) newID(c *Cell, what string) string {
	s.seq++
	return fmt.Sprintf("%s-%s-%s-%d", s.prefix, strings.ReplaceAll(c.Name(), "/", "-"), what, s.seq)
}

// call runs iteration iter of c: one call, or for a front door Primers
// unmeasured events then Events measured ones.
func (s *study) call(ctx context.Context, c *Cell, iter int, warm bool) ([]Record, error) {
	what := "m"
	if warm {
		what = "w"
	}
	rec := newRecord(c, iter)
	switch c.Runtime.Kind {
	case KindContainer:
		return []Record{rec}, s.containerCall(ctx, c, s.newID(c, what), &rec)
	case KindTaskStart:
		return []Record{rec}, s.taskStart(ctx, c, s.newID(c, what), &rec)
	}
	for i := range s.cfg.Primers {
		var discard Record
		if err := s.fronts[c].invoke(ctx, c.Function, s.newID(c, "p"+strconv.Itoa(i)), &discard); err != nil {
			return nil, err
		}
	}
	recs := make([]Record, s.cfg.Events)
	for j := range recs {
		recs[j] = newRecord(c, iter*s.cfg.Events+j)
		if err := s.fronts[c].invoke(ctx, c.Function, s.newID(c, what), &recs[j]); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

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
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.netns.path}),
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

// plantVariant replaces the module at module in cont's rootfs snapshot by
// the same module with a custom section holding a random nonce: the same
// code under a digest the shim has never compiled.
func (s *study) plantVariant(ctx context.Context, cont containerd.Container, module string) (digest string, err error) {
	info, err := cont.Info(ctx)
	if err != nil {
		return "", err
	}
	mounts, err := s.client.SnapshotService(info.Snapshotter).Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "nebula-bench-rootfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return "", fmt.Errorf("mounting the snapshot: %w", err)
	}
	werr := func() error {
		p := filepath.Join(dir, module)
		wasm, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		variant, err := moduleVariant(wasm)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, variant, 0o755); err != nil {
			return err
		}
		sum := sha256.Sum256(variant)
		digest = hex.EncodeToString(sum[:])
		return nil
	}()
	if err := mount.UnmountAll(dir, 0); err != nil && werr == nil {
		werr = fmt.Errorf("unmounting the snapshot: %w", err)
	}
	return digest, werr
}

// removeVariant removes the shim's cache entry of a variant, or records it
// as left over.
func (s *study) removeVariant(digest string) {
	if digest == "" {
		return
	}
	if s.cfg.CacheDir != "" {
		p := filepath.Join(s.cfg.CacheDir, digest)
		if _, err := os.Stat(p); err == nil && os.RemoveAll(p) == nil {
			return
		}
	}
	s.mu.Lock()
	s.leftovers = append(s.leftovers, digest)
	s.mu.Unlock()
}

// moduleVariant appends a custom section ("nebula-bench-variant", 16
// random bytes) to a WebAssembly module. Custom sections do not change
// what a module does; they do change its digest.
func moduleVariant(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || !bytes.HasPrefix(wasm, nboci.WasmMagic) {
		return nil, errors.New("not a WebAssembly module")
	}
	name := "nebula-bench-variant"
	nonce := make([]byte, 16)
	rand.Read(nonce)
	var payload []byte
	payload = appendULEB(payload, uint64(len(name)))
	payload = append(payload, name...)
	payload = append(payload, nonce...)
	out := slices.Clip(slices.Clone(wasm))
	out = append(out, 0) // custom section id
	out = appendULEB(out, uint64(len(payload)))
	return append(out, payload...), nil
}

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

// close stops the front doors, removes the network namespace and the
// user's imported image, and closes the client.
func (s *study) close() error {
	var errs []error
	ctx := context.Background()
	for c, t := range s.fronts {
		if err := t.stop(ctx); err != nil {
			t.abort(ctx)
			errs = append(errs, fmt.Errorf("%s: stopping the function task: %w", c.Name(), err))
		}
		delete(s.fronts, c)
	}
	if s.netns != nil {
		if err := s.netns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("removing the network namespace: %w", err))
		}
		s.netns = nil
	}
	if s.userImage != "" && s.client != nil {
		octx, cancel := s.opContext(ctx, callTimeout)
		if err := s.client.ImageService().Delete(octx, s.userImage); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing image %s: %w", s.userImage, err))
		}
		cancel()
		s.userImage = ""
	}
	if s.client != nil {
		s.client.Close()
		s.client = nil
	}
	return errors.Join(errs...)
}

func (s *study) result() *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.machine.Finished = time.Now().UTC().Format(time.RFC3339)
	return &Result{
		Cells: s.cells, Records: slices.Clone(s.records), Machine: s.machine, Rounds: s.rounds,
		Leftovers: slices.Clone(s.leftovers), Started: s.started, Elapsed: time.Since(s.started),
	}
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// importModule packages the user's module as `nebula build` would, under a
// name of the study's own, and imports it; close removes it.
func (s *study) importModule(ctx context.Context, file string) (string, error) {
	ref := "localhost/nebula/bench-user:" + s.prefix
	var archive bytes.Buffer
	if _, err := nbimage.Build(ctx, file, nbimage.NewConfig().WithName(ref), &archive); err != nil {
		return "", fmt.Errorf("--wasm %s: packaging the module: %w", file, err)
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	imgs, err := s.client.Import(octx, &archive)
	if err != nil {
		return "", fmt.Errorf("--wasm %s: importing the module's image: %w", file, err)
	}
	s.userImage = ref
	for _, img := range imgs {
		if img.Name == ref {
			return ref, nil
		}
	}
	return "", fmt.Errorf("--wasm %s: the imported archive did not hold %s", file, ref)
}
