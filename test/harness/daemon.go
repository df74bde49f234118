package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Daemon is a private containerd: its own root, state and sockets under Dir,
// Nebula's shim and the matching containerd-shim-runc-v2 on its PATH.
type Daemon struct {
	Version   string
	Dir       string
	Address   string
	Namespace string
	// Client is a containerd Go client connected to the daemon, with
	// Namespace as its default namespace.
	Client *containerd.Client
	// BinDir holds Nebula's freshly built binaries.
	BinDir string

	ctr     string
	daemon  string
	env     []string
	config  string
	logPath string
	cmd     *exec.Cmd
	waitErr chan error
}

// Option configures Start.
type Option func(*daemonConfig)

type daemonConfig struct {
	version string
	extra   string
	cri     *CRIConfig
	env     []string
}

// WithVersion selects the containerd version (default ContainerdVersion()).
func WithVersion(v string) Option { return func(c *daemonConfig) { c.version = v } }

// WithConfig appends TOML to the daemon's config file.
func WithConfig(toml string) Option { return func(c *daemonConfig) { c.extra += "\n" + toml } }

// WithEnv adds KEY=VALUE entries to the daemon's environment, which its
// shims inherit (NEBULA_CACHE_MAX, for instance).
func WithEnv(kv ...string) Option { return func(c *daemonConfig) { c.env = append(c.env, kv...) } }

// WithCRI keeps containerd's CRI plugins enabled (Start disables them
// otherwise) and configures them as CRIConfig says; see cri.go.
func WithCRI(c CRIConfig) Option { return func(cfg *daemonConfig) { cfg.cri = &c } }

// Start starts a private containerd for t and arranges for it to be torn
// down, and checked for leftovers, when t ends.
func Start(t T, opts ...Option) *Daemon {
	t.Helper()
	cfg := daemonConfig{version: ContainerdVersion()}
	for _, o := range opts {
		o(&cfg)
	}
	d := &Daemon{
		Version: cfg.version,
		BinDir:  Binaries(t),
		daemon:  Tool(t, cfg.version, "containerd"),
		ctr:     Tool(t, cfg.version, "ctr"),
		env:     cfg.env,
	}
	Tool(t, cfg.version, "containerd-shim-runc-v2")
	dir, err := os.MkdirTemp("", "nbe2e-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	d.Dir = dir
	d.Address = filepath.Join(dir, "c.sock")
	d.Namespace = "nbe2e-" + randomHex(4)
	d.logPath = filepath.Join(dir, "containerd.log")
	d.config = filepath.Join(dir, "config.toml")
	disabled := `"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.nri.v1.nri"`
	if cfg.cri != nil {
		disabled = `"io.containerd.nri.v1.nri"`
		cfg.extra += "\n" + cfg.cri.toml(t, cfg.version)
	}
	conf := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = [%[6]s]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "debug"
%[5]s
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.Address, d.Address+".ttrpc", cfg.extra, disabled)
	if err := os.WriteFile(d.config, []byte(conf), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { d.teardown(t) })
	d.start(t)
	return d
}

func (d *Daemon) start(t T) {
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.daemon, "--config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(),
		"PATH="+d.BinDir+":"+filepath.Dir(d.daemon)+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		// Shims inherit the daemon's environment: a private module cache.
		"NEBULA_CACHE_DIR="+d.CacheDir())
	cmd.Env = append(cmd.Env, d.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting containerd %s: %v", d.Version, err)
	}
	d.cmd = cmd
	d.waitErr = make(chan error, 1)
	go func() { d.waitErr <- cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		client, err := containerd.New(d.Address, containerd.WithDefaultNamespace(d.Namespace), containerd.WithTimeout(time.Second))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			serving, serr := client.IsServing(ctx)
			cancel()
			if serr == nil && serving {
				d.Client = client
				return
			}
			client.Close()
		}
		select {
		case err := <-d.waitErr:
			t.Fatalf("containerd %s exited: %v\n%s", d.Version, err, d.LogTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd %s did not serve within 30s\n%s", d.Version, d.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the daemon (SIGTERM, then SIGKILL after 10 s). Shims and the
// containers they run keep running, as with a real containerd restart.
func (d *Daemon) Stop(t T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	if d.Client != nil {
		d.Client.Close()
		d.Client = nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.waitErr:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.waitErr
	}
	d.cmd = nil
}

// Restart stops and starts the daemon with the same root and state.
func (d *Daemon) Restart(t T) {
	t.Helper()
	d.Stop(t)
	d.start(t)
}

// CacheDir is where this daemon's Nebula shims keep compiled modules.
func (d *Daemon) CacheDir() string { return filepath.Join(d.Dir, "nebula-cache") }

// Context returns a context in the daemon's namespace.
func (d *Daemon) Context() context.Context {
	return namespaces.WithNamespace(context.Background(), d.Namespace)
}

// Result is what one ctr command did.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Ctr runs ctr against the daemon as a user types it (`ctr -a SOCK -n NS
// args...`), with stdin from /dev/null.
func (d *Daemon) Ctr(t T, args ...string) Result {
	t.Helper()
	return d.CtrWith(t, nil, args...)
}

// CtrWith is Ctr with a caller-configured command (stdin, env, ...).
func (d *Daemon) CtrWith(t T, setup func(*exec.Cmd), args ...string) Result {
	t.Helper()
	return runTool(t, setup, d.ctr, append([]string{"-a", d.Address, "-n", d.Namespace}, args...)...)
}

// runTool runs a command-line tool (ctr, crictl) with stdin from /dev/null,
// a two-minute limit and ctr's own warnings removed from its stderr. A
// non-zero exit is a Result, not a failure; not running at all fails t.
func runTool(t T, setup func(*exec.Cmd), path string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if setup != nil {
		setup(cmd)
	}
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: StripCtrWarnings(stderr.String())}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.ExitCode = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v", filepath.Base(path), strings.Join(args, " "), err)
	}
	return r
}

// StripCtrWarnings removes the deprecation warnings ctr logs itself (since
// containerd 2.2 it warns on every command on a cgroup v1 host), leaving
// what the container wrote.
func StripCtrWarnings(s string) string {
	if !strings.Contains(s, "DEPRECATION") {
		return s
	}
	lines := strings.SplitAfter(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.Contains(l, "DEPRECATION") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

// CtrCommand returns, unstarted, the ctr command Ctr would run, for a
// caller that must act while it runs.
func (d *Daemon) CtrCommand(args ...string) *exec.Cmd {
	return exec.Command(d.ctr, append([]string{"-a", d.Address, "-n", d.Namespace}, args...)...)
}

// MustCtr runs ctr and fails t unless it exits 0; it returns stdout.
func (d *Daemon) MustCtr(t T, args ...string) string {
	t.Helper()
	r := d.Ctr(t, args...)
	if r.ExitCode != 0 {
		t.Fatalf("ctr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// LogTail returns the last n lines of the daemon's log (shims log there too).
func (d *Daemon) LogTail(n int) string {
	b, _ := os.ReadFile(d.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns the daemon's whole log.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// ShimPIDs returns the pids of the shim processes (any runtime) serving
// this daemon, found by the -address flag containerd gives them.
func (d *Daemon) ShimPIDs() []int {
	var pids []int
	for _, pid := range PIDs() {
		args, ok := Argv(pid)
		if !ok || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == d.Address {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func (d *Daemon) teardown(t T) {
	if t.Failed() {
		t.Logf("containerd %s log (tail):\n%s", d.Version, d.LogTail(60))
	}
	if d.cmd != nil && d.Client != nil {
		d.removeAll(t)
	}
	d.Stop(t)

	// Shims exit once their last task is deleted; give them a moment.
	deadline := time.Now().Add(10 * time.Second)
	for len(d.ShimPIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range d.ShimPIDs() {
		t.Errorf("leak: shim process %d still running after teardown", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range MountsUnder(d.Dir) {
		t.Errorf("leak: mount %s still mounted after teardown", m)
	}
	if err := mount.UnmountRecursive(d.Dir, 0); err != nil {
		t.Errorf("unmounting %s: %v", d.Dir, err)
	}
	for _, cg := range CgroupsUnder(d.Namespace) {
		t.Errorf("leak: cgroup %s left after teardown", cg)
	}
	RemoveCgroups(d.Namespace)
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("removing %s: %v", d.Dir, err)
	}
}

// removeAll kills and deletes every task and container of the namespace,
// as a careful user would before stopping containerd.
func (d *Daemon) removeAll(t T) {
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	containers, err := d.Client.Containers(ctx)
	if err != nil {
		t.Errorf("listing containers: %v", err)
		return
	}
	for _, c := range containers {
		if task, err := c.Task(ctx, nil); err == nil {
			if ch, err := task.Wait(ctx); err == nil {
				if err := task.Kill(ctx, syscall.SIGKILL); err == nil {
					<-ch
				}
			}
			if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
				t.Errorf("deleting task %s: %v", c.ID(), err)
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("deleting container %s: %v", c.ID(), err)
		}
	}
}

// MountsUnder lists the mount points at or below dir.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

// cgroupRoots returns the mount points of the cgroup hierarchies.
func cgroupRoots() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var roots []string
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		after := strings.Fields(line[i+3:])
		fields := strings.Fields(line[:i])
		if len(after) > 0 && len(fields) > 4 && (after[0] == "cgroup" || after[0] == "cgroup2") {
			roots = append(roots, fields[4])
		}
	}
	return roots
}

// CgroupsUnder lists container cgroups left in namespace ns (ctr places a
// container in /<ns>/<id> of every hierarchy).
func CgroupsUnder(ns string) []string {
	var out []string
	for _, root := range cgroupRoots() {
		entries, _ := os.ReadDir(filepath.Join(root, ns))
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(root, ns, e.Name()))
			}
		}
	}
	return out
}

// RemoveCgroups removes the (empty) per-namespace parents /<ns> that runc
// leaves behind, as it does under runc.v2 too.
func RemoveCgroups(ns string) {
	for _, root := range cgroupRoots() {
		p := filepath.Join(root, ns)
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			if e.IsDir() {
				syscall.Rmdir(filepath.Join(p, e.Name()))
			}
		}
		syscall.Rmdir(p)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
