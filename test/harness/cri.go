package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
)

// CRI-level testing: containerd's CRI plugin driven by crictl, exactly what
// the kubelet calls, with pods on a CNI bridge network of the test's own.
//
//	c := harness.StartCRI(t)              // daemon + CRI + bridge + images
//	pod := c.RunPod(t, harness.PodSpec{Name: "fn"})
//	id := c.CreateContainer(t, pod, harness.ContainerSpec{Name: "fn", Image: harness.ProbeFnWasmImage})
//	c.MustCrictl(t, "start", id)
//	... traffic to pod.IP ...
//
// When the test ends every pod is stopped and removed through CRI, then the
// test fails if a pod sandbox, container, task, network namespace, mount,
// shim, container cgroup, veth, allocated IP, CNI result or iptables rule is
// left; the bridge link and CNI's state for the network are removed.

// CRINamespace is the containerd namespace CRI keeps pods and images in.
const CRINamespace = "k8s.io"

// RuntimeHandler is the CRI runtime handler (RuntimeClass.handler) that
// deploy/containerd/nebula.toml registers.
const RuntimeHandler = "nebula"

// CRIConfig configures containerd's CRI plugins for WithCRI. Start from
// NewCRIConfig and chain the WithXxx methods; each returns a modified copy.
type CRIConfig struct {
	cniConfDir   string
	sandboxImage string
}

// NewCRIConfig returns a CRIConfig with no CNI conf dir and the default
// sandbox image.
func NewCRIConfig() CRIConfig { return CRIConfig{} }

// WithCNIConfDir sets the directory the CRI plugin loads CNI network
// configurations from (the test's own: CNINetwork.ConfDir).
func (c CRIConfig) WithCNIConfDir(dir string) CRIConfig { c.cniConfDir = dir; return c }

// WithSandboxImage sets the pause image, pinned as "sandbox" (default
// PauseImage). It must be imported before the first pod runs.
func (c CRIConfig) WithSandboxImage(ref string) CRIConfig { c.sandboxImage = ref; return c }

// toml renders c for containerd version: the shipped drop-in
// deploy/containerd/nebula.toml (the runtime handler "nebula"), plus what
// a test daemon needs on this host: restrict_oom_score_adj (no
// CAP_SYS_RESOURCE, so the sandbox's -998 would fail runc), network
// namespaces under the daemon's state dir, Debian's CNI plugins and the
// local pause image.
func (c CRIConfig) toml(t T, version string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("%v", err)
	}
	dropIn, err := os.ReadFile(filepath.Join(root, "deploy/containerd/nebula.toml"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	var handler strings.Builder
	for _, l := range strings.SplitAfter(string(dropIn), "\n") {
		// The drop-in is a file of its own (version = 3); here it is
		// part of the daemon's config, which has its version already.
		if f := strings.Fields(l); len(f) > 0 && f[0] == "version" {
			continue
		}
		handler.WriteString(l)
	}
	sandbox := c.sandboxImage
	if sandbox == "" {
		sandbox = PauseImage
	}
	// containerd 2.0 knows only the single bin_dir; 2.1 added bin_dirs and
	// 2.4 dropped bin_dir.
	binDirs := fmt.Sprintf("bin_dirs = [%q]", CNIBinDir)
	if olderThan(version, 2, 1) {
		binDirs = fmt.Sprintf("bin_dir = %q", CNIBinDir)
	}
	return fmt.Sprintf(`
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %[1]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  %[2]s
  conf_dir = %[3]q
  max_conf_num = 1

# deploy/containerd/nebula.toml
%[4]s
`, sandbox, binDirs, c.cniConfDir, handler.String())
}

// olderThan reports whether version (e.g. "2.0.14") is older than
// major.minor.
func olderThan(version string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(parts[1])
	return ma < major || ma == major && mi < minor
}

// CRI is a private containerd with its CRI plugin serving on the daemon's
// socket, pods on the bridge network Net.
type CRI struct {
	*Daemon
	// Net is the test's own CNI bridge network.
	Net *CNINetwork
	// CgroupParent is every pod's cgroup_parent: /<Daemon.Namespace>, so
	// that the daemon's teardown finds leftover container cgroups.
	CgroupParent string

	crictl string
	ctr    string
}

// StartCRI starts a private containerd with CRI enabled (WithCRI) on a new
// CNI bridge network (NewCNIBridge), imports every fixture image, the
// pause image included, into CRI's namespace, and waits until CRI reports
// the runtime and the network ready.
func StartCRI(t T, opts ...Option) *CRI {
	t.Helper()
	for _, tool := range []string{"ip", "iptables-save", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("CRI tests need %s on PATH: %v", tool, err)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, plugin)); err != nil {
			t.Fatalf("CNI plugin %s missing (apt-get install containernetworking-plugins): %v", plugin, err)
		}
	}
	crictl := CrictlTool(t)
	n := NewCNIBridge(t)
	hostNetns := listDir("/var/run/netns")
	d := Start(t, append(opts, WithCRI(NewCRIConfig().WithCNIConfDir(n.ConfDir)))...)
	c := &CRI{Daemon: d, Net: n, CgroupParent: "/" + d.Namespace, crictl: crictl, ctr: Tool(t, d.Version, "ctr")}
	// Registered after the daemon's teardown, so it runs before it.
	t.Cleanup(func() { c.teardown(t, hostNetns) })

	for _, a := range fixtureArchives(t) {
		c.mustCtrCRI(t, "images", "import", a)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		var info struct {
			Status struct {
				Conditions []struct {
					Type    string `json:"type"`
					Status  bool   `json:"status"`
					Reason  string `json:"reason"`
					Message string `json:"message"`
				} `json:"conditions"`
			} `json:"status"`
		}
		out := c.MustCrictl(t, "info", "-o", "json")
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("crictl info: %v\n%s", err, out)
		}
		ready := 0
		for _, cond := range info.Status.Conditions {
			if (cond.Type == "RuntimeReady" || cond.Type == "NetworkReady") && cond.Status {
				ready++
			}
		}
		if ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRI not ready after 30s: %+v", info.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// ctrCRI runs ctr in CRI's namespace.
func (c *CRI) ctrCRI(t T, args ...string) Result {
	t.Helper()
	return runTool(t, nil, c.ctr, append([]string{"-a", c.Address, "-n", CRINamespace}, args...)...)
}

func (c *CRI) mustCtrCRI(t T, args ...string) string {
	t.Helper()
	r := c.ctrCRI(t, args...)
	if r.ExitCode != 0 {
		t.Fatalf("ctr -n %s %s: exit %d\n%s%s", CRINamespace, strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// NetNSDir is where CRI mounts this daemon's pod network namespaces
// (netns_mounts_under_state_dir).
func (c *CRI) NetNSDir() string {
	return filepath.Join(c.Dir, "state", "io.containerd.grpc.v1.cri", "netns")
}

// Leftovers lists what is left of pods once every pod has been removed:
// pods, containers and tasks known to CRI or containerd, network
// namespaces, veths on the bridge, allocated IPs, CNI results, iptables
// rules naming the network and container cgroups. Shim processes exit
// asynchronously; they are waited for up to 10 s.
func (c *CRI) Leftovers(t T) []string {
	t.Helper()
	var left []string
	for _, what := range [][]string{{"pods", "-q"}, {"ps", "-a", "-q"}} {
		if out := strings.TrimSpace(c.MustCrictl(t, what...)); out != "" {
			left = append(left, "crictl "+what[0]+": "+strings.Join(strings.Fields(out), " "))
		}
	}
	for _, what := range []string{"containers", "tasks"} {
		r := c.ctrCRI(t, what, "ls", "-q")
		if r.ExitCode != 0 {
			left = append(left, fmt.Sprintf("ctr %s ls: exit %d: %s", what, r.ExitCode, r.Stderr))
		} else if out := strings.TrimSpace(r.Stdout); out != "" {
			left = append(left, "containerd "+what+": "+strings.Join(strings.Fields(out), " "))
		}
	}
	for _, ns := range listDir(c.NetNSDir()) {
		left = append(left, "network namespace "+filepath.Join(c.NetNSDir(), ns))
	}
	for _, m := range MountsUnder(c.NetNSDir()) {
		left = append(left, "mount "+m)
	}
	for _, m := range MountsUnder(filepath.Join(c.Dir, "state")) {
		left = append(left, "mount "+m)
	}
	left = append(left, c.Net.leftovers()...)
	deadline := time.Now().Add(10 * time.Second)
	for len(c.ShimPIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range c.ShimPIDs() {
		left = append(left, fmt.Sprintf("shim process %d", pid))
	}
	for _, cg := range CgroupsUnder(strings.TrimPrefix(c.CgroupParent, "/")) {
		left = append(left, "cgroup "+cg)
	}
	return left
}

// teardown removes every pod through CRI, then fails t if anything of
// them is left. The daemon's own teardown (shims, mounts, cgroups) and the
// network's (bridge, CNI state) run after it.
func (c *CRI) teardown(t T, hostNetns []string) {
	if c.cmd == nil || c.Client == nil {
		return // the daemon is gone: its teardown reports what is left
	}
	if out := strings.Fields(c.Crictl(t, "pods", "-q").Stdout); len(out) > 0 {
		if !t.Failed() {
			t.Errorf("the test left pods %v running; removing them", out)
		}
		for _, id := range out {
			c.Crictl(t, "stopp", id)
			c.Crictl(t, "rmp", "-f", id)
		}
	}
	for _, l := range c.Leftovers(t) {
		t.Errorf("leak: %s", l)
	}
	for _, ns := range listDir(c.NetNSDir()) {
		p := filepath.Join(c.NetNSDir(), ns)
		mount.UnmountAll(p, 0)
		os.Remove(p)
	}
	before := map[string]bool{}
	for _, ns := range hostNetns {
		before[ns] = true
	}
	for _, ns := range listDir("/var/run/netns") {
		if !before[ns] && strings.HasPrefix(ns, "cni-") {
			t.Errorf("leak: network namespace /var/run/netns/%s appeared during the test (CRI should use %s)", ns, c.NetNSDir())
		}
	}
}
