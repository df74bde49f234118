package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"nebula.dev/nebula/bench/internal/netns"
	"nebula.dev/nebula/bench/stats"
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
	netns   *netns.NS
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

// run starts the front doors, then runs Warmup+N rounds, each calling
// every cell once, in a new random order each round: drift of the machine
// hits every cell alike, and no cell always follows the same neighbour.
func (s *study) run(ctx context.Context) error {
	needNS := false
	for _, c := range s.cells {
		needNS = needNS || c.Runtime.Kind != KindContainer
	}
	if needNS {
		ns, err := netns.New()
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
	order := stats.NewRand(s.cfg.Seed ^ 0x6f72646572) // the schedule is reproducible too
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
