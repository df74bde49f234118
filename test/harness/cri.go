package harness

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
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

// DefaultCrictlVersion is the crictl tests use unless NEBULA_CRICTL_VERSION
// says otherwise (hack/install-tools.sh builds it into /var/cache/nebula/tools).
const DefaultCrictlVersion = "1.34.0"

// CNIBinDir is where Debian's containernetworking-plugins installs the CNI
// plugins.
const CNIBinDir = "/usr/lib/cni"

// CRIConfig configures containerd's CRI plugins for WithCRI.
type CRIConfig struct {
	// CNIConfDir is the directory the CRI plugin loads CNI network
	// configurations from (the test's own: CNINetwork.ConfDir).
	CNIConfDir string
	// SandboxImage is the pause image, pinned as "sandbox" (default
	// PauseImage). It must be imported before the first pod runs.
	SandboxImage string
}

// toml renders c for containerd version: the shipped drop-in
// deploy/containerd/nebula.toml (the runtime handler "nebula"), plus what
// a test daemon needs on this host: restrict_oom_score_adj (no
// CAP_SYS_RESOURCE, so the sandbox's -998 would fail runc), network
// namespaces under the daemon's state dir, Debian's CNI plugins and the
// local pause image.
func (c *CRIConfig) toml(t T, version string) string {
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
	sandbox := c.SandboxImage
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
`, sandbox, binDirs, c.CNIConfDir, handler.String())
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

// CrictlVersion is the crictl under test (NEBULA_CRICTL_VERSION, default
// DefaultCrictlVersion).
func CrictlVersion() string {
	if v := os.Getenv("NEBULA_CRICTL_VERSION"); v != "" {
		return v
	}
	return DefaultCrictlVersion
}

// CrictlTool returns the path of the pinned crictl, failing t if it is not
// installed.
func CrictlTool(t T) string {
	t.Helper()
	dir, err := ToolsDir()
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := filepath.Join(dir, "crictl-"+CrictlVersion(), "bin", "crictl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("crictl %s is not installed (%v): run `make tools`", CrictlVersion(), err)
	}
	return p
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
	d := Start(t, append(opts, WithCRI(CRIConfig{CNIConfDir: n.ConfDir}))...)
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

// Crictl runs crictl against the daemon as a user types it (`crictl
// --runtime-endpoint unix://SOCK --image-endpoint unix://SOCK --timeout 2m
// args...`), with stdin from /dev/null. The timeout is the kubelet's
// runtime-request-timeout: crictl's default of 2 s is shorter than a
// wasm container's first start (the module is compiled at Create) on a
// busy two-core machine.
func (c *CRI) Crictl(t T, args ...string) Result {
	t.Helper()
	ep := "unix://" + c.Address
	return runTool(t, nil, c.crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "2m"}, args...)...)
}

// MustCrictl runs crictl and fails t unless it exits 0; it returns stdout.
func (c *CRI) MustCrictl(t T, args ...string) string {
	t.Helper()
	r := c.Crictl(t, args...)
	if r.ExitCode != 0 {
		t.Fatalf("crictl %s: exit %d\nstdout: %s\nstderr: %s\n%s", strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr, c.LogTail(40))
	}
	return r.Stdout
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

// PodSpec is what RunPod puts in crictl's pod sandbox config.
type PodSpec struct {
	Name        string
	Annotations map[string]string
	Labels      map[string]string
}

// Pod is a running pod sandbox.
type Pod struct {
	ID   string
	Name string
	// IP is the pod's address on the test's bridge.
	IP string
	// ConfigPath is the pod sandbox config given to `crictl runp`, which
	// `crictl create` takes again.
	ConfigPath string
	// LogDir is the pod's log_directory.
	LogDir string
}

// RunPod runs a pod with the nebula runtime handler (`crictl runp
// --runtime nebula pod.json`) and returns it once it has an IP on the
// test's bridge.
func (c *CRI) RunPod(t T, spec PodSpec) *Pod {
	t.Helper()
	dir := filepath.Join(c.Dir, "cri-configs")
	logDir := filepath.Join(c.Dir, "pod-logs", spec.Name)
	for _, d := range []string{dir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	config := map[string]any{
		"metadata": map[string]any{
			"name": spec.Name, "namespace": "nebula-e2e", "uid": "uid-" + spec.Name + "-" + randomHex(4), "attempt": 0,
		},
		"hostname":      spec.Name,
		"log_directory": logDir,
		"annotations":   spec.Annotations,
		"labels":        spec.Labels,
		"linux": map[string]any{
			"cgroup_parent": c.CgroupParent,
		},
	}
	path := filepath.Join(dir, "pod-"+spec.Name+".json")
	writeJSON(t, path, config)
	id := strings.TrimSpace(c.MustCrictl(t, "runp", "--runtime", RuntimeHandler, path))
	p := &Pod{ID: id, Name: spec.Name, ConfigPath: path, LogDir: logDir}
	p.IP = c.InspectPod(t, id).Status.Network.IP
	if !c.Net.Contains(p.IP) {
		t.Fatalf("pod %s got IP %q, not on the test's network %s", spec.Name, p.IP, c.Net.Subnet)
	}
	return p
}

// ContainerSpec is what CreateContainer puts in crictl's container config.
type ContainerSpec struct {
	Name        string
	Image       string
	Command     []string
	Args        []string
	Env         map[string]string
	Annotations map[string]string
}

// CreateContainer creates a container in pod (`crictl create POD
// container.json pod.json`) and returns its ID; it is not started.
func (c *CRI) CreateContainer(t T, pod *Pod, spec ContainerSpec) string {
	t.Helper()
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envs := make([]map[string]string, 0, len(keys))
	for _, k := range keys {
		envs = append(envs, map[string]string{"key": k, "value": spec.Env[k]})
	}
	config := map[string]any{
		"metadata":    map[string]any{"name": spec.Name, "attempt": 0},
		"image":       map[string]any{"image": spec.Image},
		"command":     spec.Command,
		"args":        spec.Args,
		"envs":        envs,
		"annotations": spec.Annotations,
		"log_path":    spec.Name + ".log",
		"linux":       map[string]any{},
	}
	path := filepath.Join(c.Dir, "cri-configs", "ctr-"+pod.Name+"-"+spec.Name+".json")
	writeJSON(t, path, config)
	return strings.TrimSpace(c.MustCrictl(t, "create", pod.ID, path, pod.ConfigPath))
}

// PodInspect is the part of `crictl inspectp -o json` tests look at.
type PodInspect struct {
	Status struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Network struct {
			IP string `json:"ip"`
		} `json:"network"`
		RuntimeHandler string `json:"runtimeHandler"`
	} `json:"status"`
	Info struct {
		Pid         int    `json:"pid"`
		RuntimeType string `json:"runtimeType"`
		Image       string `json:"image"`
	} `json:"info"`
}

// InspectPod runs `crictl inspectp -o json ID`.
func (c *CRI) InspectPod(t T, id string) PodInspect {
	t.Helper()
	var p PodInspect
	out := c.MustCrictl(t, "inspectp", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("crictl inspectp: %v\n%s", err, out)
	}
	return p
}

// ContainerInspect is the part of `crictl inspect -o json` tests look at.
type ContainerInspect struct {
	Status struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		LogPath  string `json:"logPath"`
	} `json:"status"`
	Info struct {
		Pid         int    `json:"pid"`
		SandboxID   string `json:"sandboxID"`
		RuntimeType string `json:"runtimeType"`
	} `json:"info"`
}

// InspectContainer runs `crictl inspect -o json ID`.
func (c *CRI) InspectContainer(t T, id string) ContainerInspect {
	t.Helper()
	var ci ContainerInspect
	out := c.MustCrictl(t, "inspect", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &ci); err != nil {
		t.Fatalf("crictl inspect: %v\n%s", err, out)
	}
	return ci
}

// RemovePod stops and removes a pod with its containers (`crictl stopp`,
// `crictl rmp`), as the kubelet does.
func (c *CRI) RemovePod(t T, id string) {
	t.Helper()
	c.MustCrictl(t, "stopp", id)
	c.MustCrictl(t, "rmp", id)
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

// CNINetwork is a CNI bridge network of one test: a conflist in a conf dir
// of its own, a bridge link and a private /24 nobody else routes.
type CNINetwork struct {
	// Name is the network's and the bridge link's name.
	Name string
	// Subnet is the pods' subnet; Gateway the bridge's address in it.
	Subnet  *net.IPNet
	Gateway net.IP
	// ConfDir holds the network's conflist (CRIConfig.CNIConfDir).
	ConfDir string

	createdDirs []string
}

// Where libcni and host-local keep state by default.
const (
	cniStateDir   = "/var/lib/cni"
	cniNetworks   = "/var/lib/cni/networks"
	cniResultsDir = "/var/lib/cni/results"
)

var ipForward struct {
	sync.Mutex
	users int
	orig  []byte
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// NewCNIBridge writes a bridge conflist (host-local IPAM on a random
// private /24 that no route on the host covers; no masquerading: pods talk
// only to the host and to each other) into a new conf dir, and arranges
// for the bridge link, CNI's state for the network and net.ipv4.ip_forward
// (which the bridge plugin turns on) to be restored when t ends, failing t
// if a veth, an allocated IP, a CNI result or an iptables rule is left.
func NewCNIBridge(t T) *CNINetwork {
	t.Helper()
	n := &CNINetwork{Name: "nbcni-" + randomHex(3)}
	for _, d := range []string{cniStateDir, cniNetworks, cniResultsDir} {
		if _, err := os.Stat(d); err != nil {
			n.createdDirs = append(n.createdDirs, d)
		}
	}
	routes := hostRoutes(t)
	for i := 0; n.Subnet == nil; i++ {
		if i == 100 {
			t.Fatalf("no free private /24 in 10.200.0.0/13 after 100 tries")
		}
		cand := &net.IPNet{IP: net.IPv4(10, byte(200+rand.IntN(8)), byte(rand.IntN(256)), 0).To4(), Mask: net.CIDRMask(24, 32)}
		free := true
		for _, r := range routes {
			if r.Contains(cand.IP) || cand.Contains(r.IP) {
				free = false
				break
			}
		}
		if free && !linkExists(n.Name) {
			n.Subnet = cand
		}
	}
	n.Gateway = net.IPv4(n.Subnet.IP[0], n.Subnet.IP[1], n.Subnet.IP[2], 1).To4()
	dir, err := os.MkdirTemp("", "nbcni-conf-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	n.ConfDir = dir

	ipForward.Lock()
	if ipForward.users == 0 {
		ipForward.orig, _ = os.ReadFile(ipForwardPath)
	}
	ipForward.users++
	ipForward.Unlock()
	t.Cleanup(func() { n.teardown(t) })

	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      n.Name,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.Subnet.String(), "gateway": n.Gateway.String()}}},
				},
			},
		},
	}
	writeJSON(t, filepath.Join(dir, "10-"+n.Name+".conflist"), conf)
	return n
}

// Contains reports whether ip is a pod address on the network.
func (n *CNINetwork) Contains(ip string) bool {
	p := net.ParseIP(ip)
	return p != nil && n.Subnet.Contains(p) && !p.Equal(n.Gateway)
}

// leftovers lists what pods left on the network: veths on the bridge,
// allocated IPs, cached CNI results, iptables rules naming the network or
// its subnet.
func (n *CNINetwork) leftovers() []string {
	var left []string
	for _, ifc := range listDir(filepath.Join("/sys/class/net", n.Name, "brif")) {
		left = append(left, "veth "+ifc+" on bridge "+n.Name)
	}
	for _, f := range listDir(filepath.Join(cniNetworks, n.Name)) {
		if f != "lock" && !strings.HasPrefix(f, "last_reserved_ip") {
			left = append(left, "IP allocation "+filepath.Join(cniNetworks, n.Name, f))
		}
	}
	for _, f := range listDir(cniResultsDir) {
		if strings.HasPrefix(f, n.Name+"-") {
			left = append(left, "CNI result "+filepath.Join(cniResultsDir, f))
		}
	}
	for _, r := range n.iptablesRules() {
		left = append(left, "iptables rule -t "+r.table+" "+strings.Join(r.args, " "))
	}
	return left
}

func (n *CNINetwork) teardown(t T) {
	for _, l := range n.leftovers() {
		t.Errorf("leak: %s", l)
	}
	for _, r := range n.iptablesRules() {
		args := append([]string{"-t", r.table, "-D"}, r.args[1:]...)
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			t.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if r.chain != "" {
			exec.Command("iptables", "-t", r.table, "-F", r.chain).Run()
			exec.Command("iptables", "-t", r.table, "-X", r.chain).Run()
		}
	}
	for _, ifc := range listDir(filepath.Join("/sys/class/net", n.Name, "brif")) {
		exec.Command("ip", "link", "del", ifc).Run()
	}
	if linkExists(n.Name) {
		if out, err := exec.Command("ip", "link", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("removing bridge %s: %v: %s", n.Name, err, out)
		}
	}
	os.RemoveAll(filepath.Join(cniNetworks, n.Name))
	for _, f := range listDir(cniResultsDir) {
		if strings.HasPrefix(f, n.Name+"-") {
			os.Remove(filepath.Join(cniResultsDir, f))
		}
	}
	for i := len(n.createdDirs) - 1; i >= 0; i-- {
		os.Remove(n.createdDirs[i]) // only if empty: another network may use it
	}
	os.RemoveAll(n.ConfDir)

	ipForward.Lock()
	ipForward.users--
	if ipForward.users == 0 && ipForward.orig != nil {
		if cur, _ := os.ReadFile(ipForwardPath); !bytes.Equal(cur, ipForward.orig) {
			if err := os.WriteFile(ipForwardPath, ipForward.orig, 0o644); err != nil {
				t.Errorf("restoring %s: %v", ipForwardPath, err)
			}
		}
	}
	ipForward.Unlock()

	if linkExists(n.Name) {
		t.Errorf("leak: bridge %s still exists", n.Name)
	}
}

type iptablesRule struct {
	table string
	args  []string // as iptables-save prints them, from "-A"
	chain string   // a CNI- chain the rule jumps to
}

// iptablesRules lists the rules, in every table, that name the network or
// its subnet (the bridge plugin tags its rules with a comment holding the
// network's name).
func (n *CNINetwork) iptablesRules() []iptablesRule {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return []iptablesRule{{table: "?", args: []string{"iptables-save failed: " + err.Error()}}}
	}
	prefix := strings.Join(strings.Split(n.Subnet.IP.String(), ".")[:3], ".") + "."
	var rules []iptablesRule
	table := ""
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, "-A ") && (strings.Contains(line, `\"`+n.Name+`\"`) || strings.Contains(line, prefix) || strings.Contains(line, n.Name)):
			r := iptablesRule{table: table, args: splitQuoted(line)}
			for i, a := range r.args {
				if a == "-j" && i+1 < len(r.args) && strings.HasPrefix(r.args[i+1], "CNI-") {
					r.chain = r.args[i+1]
				}
			}
			rules = append(rules, r)
		}
	}
	return rules
}

// splitQuoted splits an iptables-save rule into arguments: words separated
// by spaces, double quotes grouping, backslash escaping the next character.
func splitQuoted(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case ch == '"':
			inQuote = !inQuote
			inWord = true
		case ch == ' ' && !inQuote:
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args
}

// hostRoutes returns the destinations of the host's IPv4 routes (main
// table) but the default route.
func hostRoutes(t T) []*net.IPNet {
	t.Helper()
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Fatalf("%v", err)
	}
	var routes []*net.IPNet
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		ip, m := make(net.IP, 4), make(net.IPMask, 4)
		binary.LittleEndian.PutUint32(ip, uint32(dst))
		binary.LittleEndian.PutUint32(m, uint32(mask))
		routes = append(routes, &net.IPNet{IP: ip, Mask: m})
	}
	return routes
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// listDir returns the names in dir, none if it does not exist.
func listDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func writeJSON(t T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}
