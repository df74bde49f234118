package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
)

// Kubernetes-level testing: a single-node cluster of the test's own, every
// component a host process built from source by hack/install-k8s.sh.
//
//	k := harness.StartKubernetes(t)   // etcd … kubelet, kube-proxy on a private containerd
//	k.MustKubectl(t, "apply", "-f", "deploy/kubernetes/runtimeclass.yaml")
//	... traffic to pod IPs and ClusterIPs ...
//
// The node's kubelet talks CRI to StartCRI's containerd (Nebula registered
// through deploy/containerd/nebula.toml, every fixture image imported into
// k8s.io), its pods are on StartCRI's CNI bridge, whose gateway is the
// node's IP: every component listens on that address only, so two
// clusters do not share a port. Services get a private /24 that no host
// route covers, routed onto the bridge; kube-proxy runs in iptables mode.
//
// When the test ends, workloads the test left are deleted through the API
// (and reported), the kubelet is given time to remove their pods, kube-proxy
// removes its rules (kube-proxy --cleanup), the components stop, and the test
// fails if a component process, pod sandbox, mount under the cluster's
// directory, pod cgroup, KUBE- iptables chain, service route or kubelet
// log symlink is left. Kernel tunables the kubelet and kube-proxy set are
// restored. StartCRI's and the daemon's own checks run after that.

// DefaultKubernetesVersion is the Kubernetes release tests use unless
// NEBULA_K8S_VERSION says otherwise.
const DefaultKubernetesVersion = "1.34.2"

// KubernetesVersion is the Kubernetes release under test
// (NEBULA_K8S_VERSION, default DefaultKubernetesVersion).
func KubernetesVersion() string {
	if v := os.Getenv("NEBULA_K8S_VERSION"); v != "" {
		return v
	}
	return DefaultKubernetesVersion
}

// KubernetesBinDir is where hack/install-k8s.sh put the cluster's binaries:
// $NEBULA_K8S_DIR/bin, by default /var/cache/nebula/k8s-VERSION/bin.
func KubernetesBinDir() string {
	dir := os.Getenv("NEBULA_K8S_DIR")
	if dir == "" {
		dir = "/var/cache/nebula/k8s-" + KubernetesVersion()
	}
	return filepath.Join(dir, "bin")
}

// kubernetesComponents are the binaries hack/install-k8s.sh builds.
var kubernetesComponents = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// Cluster is a running single-node Kubernetes on a private containerd.
type Cluster struct {
	*CRI
	// Version is the Kubernetes release.
	Version string
	// Dir holds the cluster's certificates, configs, etcd data, the
	// kubelet's root directory and the components' logs.
	Dir string
	// Kubeconfig is the cluster administrator's kubeconfig (group
	// system:masters).
	Kubeconfig string
	// NodeName is the only node's name; NodeIP its address (the CNI
	// bridge's gateway), where every component listens.
	NodeName string
	NodeIP   net.IP
	// ServiceCIDR is the cluster's service IP range, a private /24 routed
	// onto the bridge.
	ServiceCIDR *net.IPNet
	// APIServer is the API server's URL.
	APIServer string

	bin        string
	pki        *clusterPKI
	kubeletDir string
	procs      []*clusterProcess
	sysctls    map[string][]byte
	kubeChains map[string]bool
	hostFiles  map[string]bool
	hostDirs   []string
}

// Ports of the components, all on the node's own IP.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	apiServerPort  = 6443
	kubeletPort    = 10250
	kubeProxyPort  = 10256
	kubeProxyStats = 10249
)

// kernelTunables are the sysctls the kubelet (setupKernelTunables) and
// kube-proxy (conntrack, route_localnet) may set; the cluster's teardown
// puts back what was there.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/conf/all/route_localnet",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
}

// Host paths compiled into the kubelet, whatever its --root-dir: the
// links to every container's log and the device plugins' socket.
const (
	containerLogLinks = "/var/log/containers"
	devicePluginDir   = "/var/lib/kubelet/device-plugins"
	devicePluginSock  = devicePluginDir + "/kubelet.sock"
)

// StartKubernetes starts StartCRI's containerd (opts are its options) and
// on it a single-node cluster: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet and kube-proxy, the binaries hack/install-k8s.sh
// built. It returns once the node is Ready and the default service account
// exists, so that pods can be created.
func StartKubernetes(t T, opts ...Option) *Cluster {
	t.Helper()
	bin := KubernetesBinDir()
	for _, c := range kubernetesComponents {
		if _, err := os.Stat(filepath.Join(bin, c)); err != nil {
			t.Fatalf("%s %s is not installed (%v): run hack/install-k8s.sh", c, KubernetesVersion(), err)
		}
	}
	began := time.Now()
	cri := StartCRI(t, opts...)
	dir, err := os.MkdirTemp("", "nbk8s-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	k := &Cluster{
		CRI:        cri,
		Version:    KubernetesVersion(),
		Dir:        dir,
		NodeName:   "nebula-node-" + randomHex(3),
		NodeIP:     cri.Net.Gateway,
		bin:        bin,
		kubeletDir: filepath.Join(dir, "kubelet"),
		sysctls:    map[string][]byte{},
	}
	k.APIServer = "https://" + net.JoinHostPort(k.NodeIP.String(), fmt.Sprint(apiServerPort))
	k.recordHostState()
	// Registered after StartCRI's teardown, so it runs before it.
	t.Cleanup(func() { k.teardown(t) })

	k.setUpNetwork(t)
	k.setUpCgroupRoot(t)
	k.writeConfigs(t)
	k.startControlPlane(t)
	k.startNode(t)
	t.Logf("Kubernetes %s up in %v: node %s (%s), services %s", k.Version, time.Since(began).Round(time.Second), k.NodeName, k.NodeIP, k.ServiceCIDR)
	return k
}

// recordHostState notes what the teardown must find again on the host: the
// sysctls the kubelet sets, the KUBE- chains, the kubelet's host files.
func (k *Cluster) recordHostState() {
	for _, s := range kernelTunables {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			k.sysctls[s] = b
		}
	}
	k.kubeChains = kubeChains()
	k.hostFiles = map[string]bool{}
	for _, d := range []string{devicePluginDir, filepath.Dir(devicePluginDir), containerLogLinks} {
		if _, err := os.Stat(d); err != nil {
			k.hostDirs = append(k.hostDirs, d)
		}
		for _, f := range listDir(d) {
			k.hostFiles[filepath.Join(d, f)] = true
		}
	}
}

// startControlPlane starts etcd, the API server (waiting until it is
// ready), the controller manager and the scheduler.
func (k *Cluster) startControlPlane(t T) {
	t.Helper()
	dir := k.Dir
	k.start(t, "etcd",
		"--name", k.NodeName, "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", k.url("http", etcdClientPort), "--advertise-client-urls", k.url("http", etcdClientPort),
		"--listen-peer-urls", k.url("http", etcdPeerPort), "--initial-advertise-peer-urls", k.url("http", etcdPeerPort),
		"--initial-cluster", k.NodeName+"="+k.url("http", etcdPeerPort), "--listen-metrics-urls", "",
		"--log-level", "warn")
	p := k.pki.path
	k.start(t, "kube-apiserver",
		"--etcd-servers", k.url("http", etcdClientPort),
		"--bind-address", k.NodeIP.String(), "--advertise-address", k.NodeIP.String(), "--secure-port", fmt.Sprint(apiServerPort),
		"--cert-dir", filepath.Join(dir, "apiserver"),
		"--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--client-ca-file", p("ca.crt"),
		"--kubelet-client-certificate", p("apiserver-kubelet-client.crt"), "--kubelet-client-key", p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", p("ca.crt"), "--kubelet-preferred-address-types", "InternalIP",
		"--service-cluster-ip-range", k.ServiceCIDR.String(),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p("sa.pub"), "--service-account-signing-key-file", p("sa.key"),
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged", "--profiling=false", "-v", "1")
	k.waitFor(t, "the API server to be ready", 3*time.Minute, func() (bool, string) {
		r := k.Kubectl(t, "get", "--raw", "/readyz")
		return r.ExitCode == 0 && strings.TrimSpace(r.Stdout) == "ok", r.Stdout + r.Stderr
	})
	k.start(t, "kube-controller-manager",
		"--kubeconfig", filepath.Join(dir, "controller-manager.conf"),
		"--secure-port", "0", "--leader-elect=false",
		"--use-service-account-credentials", "--service-account-private-key-file", p("sa.key"),
		"--root-ca-file", p("ca.crt"), "--profiling=false", "-v", "1")
	k.start(t, "kube-scheduler",
		"--kubeconfig", filepath.Join(dir, "scheduler.conf"),
		"--secure-port", "0", "--leader-elect=false", "--profiling=false", "-v", "1")
}

// startNode starts the kubelet and kube-proxy and waits until the node is
// Ready and the default service account exists.
func (k *Cluster) startNode(t T) {
	t.Helper()
	dir := k.Dir
	k.start(t, "kubelet",
		"--config", filepath.Join(dir, "kubelet.yaml"), "--kubeconfig", filepath.Join(dir, "kubelet.conf"),
		"--root-dir", k.kubeletDir, "--hostname-override", k.NodeName, "--node-ip", k.NodeIP.String(), "-v", "2")
	k.start(t, "kube-proxy", "--config", filepath.Join(dir, "kube-proxy.yaml"), "-v", "2")

	k.waitFor(t, "node "+k.NodeName+" to be Ready", 3*time.Minute, func() (bool, string) {
		r := k.Kubectl(t, "get", "node", k.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return r.ExitCode == 0 && r.Stdout == "True", r.Stdout + r.Stderr
	})
	k.waitFor(t, "the default service account", 2*time.Minute, func() (bool, string) {
		r := k.Kubectl(t, "get", "serviceaccount", "default")
		return r.ExitCode == 0, r.Stderr
	})
}

// url is scheme://NodeIP:port.
func (k *Cluster) url(scheme string, port int) string {
	return scheme + "://" + net.JoinHostPort(k.NodeIP.String(), fmt.Sprint(port))
}

// setUpNetwork creates the CNI bridge with its gateway address up front
// (the bridge plugin adopts it on the first pod), so that the components
// can listen on the node's IP, and routes a free private /24, the service
// range, onto it, for the host and, through the gateway, for pods.
func (k *Cluster) setUpNetwork(t T) {
	t.Helper()
	n := k.Net
	ones, _ := n.Subnet.Mask.Size()
	for _, args := range [][]string{
		{"link", "add", n.Name, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", n.Gateway, ones), "dev", n.Name},
		{"link", "set", n.Name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	routes := hostRoutes(t)
	for i := 0; k.ServiceCIDR == nil; i++ {
		if i == 100 {
			t.Fatalf("no free private /24 in 10.216.0.0/13 for services after 100 tries")
		}
		cand := &net.IPNet{IP: net.IPv4(10, byte(216+rand.IntN(8)), byte(rand.IntN(256)), 0).To4(), Mask: net.CIDRMask(24, 32)}
		free := !cand.Contains(n.Subnet.IP)
		for _, r := range routes {
			if r.Contains(cand.IP) || cand.Contains(r.IP) {
				free = false
			}
		}
		if free {
			k.ServiceCIDR = cand
		}
	}
	if out, err := exec.Command("ip", "route", "add", k.ServiceCIDR.String(), "dev", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("routing %s onto %s: %v: %s", k.ServiceCIDR, n.Name, err, out)
	}
	// Pods have a route to their /24 only; give them one to the services
	// through the gateway, where kube-proxy's rules translate ClusterIPs.
	confs, _ := filepath.Glob(filepath.Join(n.ConfDir, "*.conflist"))
	if len(confs) != 1 {
		t.Fatalf("want one conflist in %s, found %v", n.ConfDir, confs)
	}
	b, err := os.ReadFile(confs[0])
	if err != nil {
		t.Fatalf("%v", err)
	}
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &conf); err != nil || json.Unmarshal(b, &raw) != nil || len(conf.Plugins) == 0 {
		t.Fatalf("%s: %v", confs[0], err)
	}
	ipam, ok := conf.Plugins[0]["ipam"].(map[string]any)
	if !ok {
		t.Fatalf("%s: no ipam in the bridge plugin", confs[0])
	}
	ipam["routes"] = []map[string]string{{"dst": k.ServiceCIDR.String()}}
	raw["plugins"] = conf.Plugins
	writeJSON(t, confs[0], raw)
}

// setUpCgroupRoot creates /<namespace> in every cgroup v1 hierarchy: the
// kubelet's cgroupRoot, under which it makes kubepods, so that the
// daemon's teardown finds whatever the cluster leaves.
func (k *Cluster) setUpCgroupRoot(t T) {
	t.Helper()
	for _, root := range cgroupRoots() {
		p := filepath.Join(root, k.Namespace)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatalf("cgroup root: %v", err)
		}
		// A new cpuset cgroup has no CPUs or memory nodes until given
		// its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(root, f)); err == nil {
				if err := os.WriteFile(filepath.Join(p, f), b, 0o644); err != nil {
					t.Fatalf("cgroup root %s: %v", f, err)
				}
			}
		}
	}
}

// writeConfigs writes the PKI, the kubeconfigs and the kubelet's and
// kube-proxy's configuration files.
func (k *Cluster) writeConfigs(t T) {
	t.Helper()
	k.issueCredentials(t)
	for _, d := range []string{k.kubeletDir, filepath.Join(k.Dir, "pod-logs"), filepath.Join(k.Dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	k.writeKubeletConfig(t)
	k.writeKubeProxyConfig(t)
}

// issueCredentials makes the cluster's CA, a certificate for each
// component and user, and their kubeconfigs.
func (k *Cluster) issueCredentials(t T) {
	t.Helper()
	pki, err := newClusterPKI(filepath.Join(k.Dir, "pki"))
	if err != nil {
		t.Fatalf("cluster PKI: %v", err)
	}
	k.pki = pki
	firstServiceIP := net.IPv4(k.ServiceCIDR.IP[0], k.ServiceCIDR.IP[1], k.ServiceCIDR.IP[2], 1)
	certs := []struct {
		name, cn string
		groups   []string
		ips      []net.IP
		dns      []string
	}{
		{"apiserver", "kube-apiserver", nil, []net.IP{k.NodeIP, firstServiceIP},
			[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
		{"admin", "kubernetes-admin", []string{"system:masters"}, nil, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil, nil},
		{"kube-proxy", "system:kube-proxy", nil, nil, nil},
		{"kubelet", "system:node:" + k.NodeName, []string{"system:nodes"}, []net.IP{k.NodeIP}, []string{k.NodeName}},
	}
	for _, c := range certs {
		if err := pki.issue(c.name, c.cn, c.groups, c.ips, c.dns); err != nil {
			t.Fatalf("cluster PKI: %v", err)
		}
	}
	k.Kubeconfig = filepath.Join(k.Dir, "admin.conf")
	for conf, user := range map[string]string{
		k.Kubeconfig: "admin", "controller-manager.conf": "controller-manager", "scheduler.conf": "scheduler",
		"kube-proxy.conf": "kube-proxy", "kubelet.conf": "kubelet",
	} {
		if !filepath.IsAbs(conf) {
			conf = filepath.Join(k.Dir, conf)
		}
		if err := pki.kubeconfig(conf, k.APIServer, user); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// writeKubeletConfig writes the kubelet's KubeletConfiguration.
func (k *Cluster) writeKubeletConfig(t T) {
	t.Helper()
	pki := k.pki
	// The kubelet on this cgroup v1 host: failCgroupV1 false, the cgroupfs
	// driver (containerd's runc default), pods under /<namespace>. No
	// iptables chains of its own (kube-proxy has them), no image garbage
	// collection (the fixtures are imported, never pulled), eviction only
	// when the host is nearly full (a shared CI disk must not taint the node).
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
failSwapOn: false
address: %[2]s
port: %[3]d
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %[4]s
tlsPrivateKeyFile: %[5]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[6]s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[7]s
imageServiceEndpoint: unix://%[7]s
runtimeRequestTimeout: 5m
podLogsDir: %[8]s
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
clusterDomain: cluster.local
staticPodPath: ""
`, k.Namespace, k.NodeIP, kubeletPort, pki.path("kubelet.crt"), pki.path("kubelet.key"), pki.path("ca.crt"),
		k.Address, filepath.Join(k.Dir, "pod-logs"))
	writeFile(t, filepath.Join(k.Dir, "kubelet.yaml"), kubelet)
}

// writeKubeProxyConfig writes kube-proxy's KubeProxyConfiguration.
func (k *Cluster) writeKubeProxyConfig(t T) {
	t.Helper()
	// kube-proxy in iptables mode, listening on the node's IP only, leaving
	// the host's conntrack and route_localnet sysctls alone (0 = as is).
	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]s
mode: iptables
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: %[3]s:%[4]d
metricsBindAddress: %[3]s:%[5]d
clusterCIDR: %[6]s
nodePortAddresses: [%[3]s/32]
iptables:
  localhostNodePorts: false
  minSyncPeriod: 0s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`, filepath.Join(k.Dir, "kube-proxy.conf"), k.NodeName, k.NodeIP, kubeProxyPort, kubeProxyStats, k.Net.Subnet)
	writeFile(t, filepath.Join(k.Dir, "kube-proxy.yaml"), proxy)
}

func writeFile(t T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
}

// clusterProcess is one running component.
type clusterProcess struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// start runs component name with args, its output in Dir/logs/NAME.log.
func (k *Cluster) start(t T, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(k.Dir, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(k.bin, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = k.Dir
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &clusterProcess{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	k.procs = append(k.procs, p)
}

// waitFor polls cond every 500 ms until it holds, failing t after timeout
// or as soon as a component exits.
func (k *Cluster) waitFor(t T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		for _, p := range k.procs {
			select {
			case <-p.done:
				t.Fatalf("%s exited (%v) while waiting for %s:\n%s", p.name, p.err, what, k.ComponentLog(p.name, 40))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, strings.TrimSpace(last))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// WaitFor polls cond every 500 ms until it holds, failing t after timeout
// or as soon as a component of the cluster exits; last describes the
// state cond saw, for the failure message.
func (k *Cluster) WaitFor(t T, what string, timeout time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	k.waitFor(t, what, timeout, cond)
}

// ComponentLog returns the last n lines of component's log ("kubelet",
// "kube-apiserver", ...).
func (k *Cluster) ComponentLog(component string, n int) string {
	b, _ := os.ReadFile(filepath.Join(k.Dir, "logs", component+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kubectl runs kubectl against the cluster as a user types it, with
// KUBECONFIG set to the administrator's kubeconfig and stdin from
// /dev/null.
func (k *Cluster) Kubectl(t T, args ...string) Result {
	t.Helper()
	return k.KubectlStdin(t, "", args...)
}

// KubectlStdin is Kubectl with stdin (for `kubectl apply -f -`).
func (k *Cluster) KubectlStdin(t T, stdin string, args ...string) Result {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return runTool(t, func(cmd *exec.Cmd) {
		cmd.Env = append(os.Environ(), "KUBECONFIG="+k.Kubeconfig)
		cmd.Dir = root
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
	}, filepath.Join(k.bin, "kubectl"), args...)
}

// MustKubectl runs kubectl and fails t unless it exits 0; it returns stdout.
func (k *Cluster) MustKubectl(t T, args ...string) string {
	t.Helper()
	return k.MustKubectlStdin(t, "", args...)
}

// MustKubectlStdin is MustKubectl with stdin.
func (k *Cluster) MustKubectlStdin(t T, stdin string, args ...string) string {
	t.Helper()
	r := k.KubectlStdin(t, stdin, args...)
	if r.ExitCode != 0 {
		t.Fatalf("kubectl %s: exit %d\nstdout: %s\nstderr: %s\nkubelet log (tail):\n%s", strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr, k.ComponentLog("kubelet", 20))
	}
	return r.Stdout
}

// teardown deletes what the test left through the API, lets the kubelet
// remove the pods, cleans up after kube-proxy and the kubelet, stops every
// component and fails t for whatever is left.
func (k *Cluster) teardown(t T) {
	if t.Failed() {
		for _, p := range k.procs {
			t.Logf("%s log (tail):\n%s", p.name, k.ComponentLog(p.name, 30))
		}
	}
	if k.running("kube-apiserver") && k.running("kubelet") {
		k.deleteWorkloads(t)
	}
	if k.running("kube-proxy") {
		k.stop(t, "kube-proxy")
		r := runTool(t, nil, filepath.Join(k.bin, "kube-proxy"), "--cleanup", "-v", "0")
		if r.ExitCode != 0 {
			t.Errorf("kube-proxy --cleanup: exit %d: %s%s", r.ExitCode, r.Stdout, r.Stderr)
		}
	}
	for i := len(k.procs) - 1; i >= 0; i-- {
		k.stop(t, k.procs[i].name)
	}
	k.checkProcesses(t)
	k.removeSandboxes(t)
	k.removeMounts(t)
	k.removeKubepods(t)
	k.removeKubeChains(t)
	if k.ServiceCIDR != nil {
		exec.Command("ip", "route", "del", k.ServiceCIDR.String(), "dev", k.Net.Name).Run()
		if out, _ := exec.Command("ip", "route", "show", k.ServiceCIDR.String()).Output(); len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("leak: route %s", out)
		}
	}
	k.removeHostFiles(t)
	k.restoreSysctls(t)
	if err := os.RemoveAll(k.Dir); err != nil {
		t.Errorf("removing %s: %v", k.Dir, err)
	}
}

// removeSandboxes fails t for a pod sandbox still ready and removes the
// stopped ones. Stopped sandboxes of deleted pods are the kubelet's
// garbage (its collector removes them within a minute or so, with their
// containers' log links); a ready one is a pod that was not deleted.
func (k *Cluster) removeSandboxes(t T) {
	if k.cmd != nil {
		if ready := strings.Fields(k.Crictl(t, "pods", "--state", "ready", "-q").Stdout); len(ready) > 0 {
			t.Errorf("leak: pod sandboxes %v still ready after the workloads were deleted", ready)
		}
		dead := strings.Fields(k.Crictl(t, "pods", "-q").Stdout)
		t.Logf("removing %d stopped pod sandboxes the kubelet had not collected", len(dead))
		for _, id := range dead {
			k.Crictl(t, "stopp", id)
			k.Crictl(t, "rmp", "-f", id)
		}
	}
}

// removeMounts fails t for a mount a pod left below the cluster's
// directory and unmounts everything there.
func (k *Cluster) removeMounts(t T) {
	for _, m := range MountsUnder(k.Dir) {
		// The kubelet bind-mounts its root directory onto itself to make
		// it rshared; anything below it is a pod's volume.
		if m != k.kubeletDir {
			t.Errorf("leak: mount %s left by the kubelet", m)
		}
	}
	if err := mount.UnmountRecursive(k.Dir, 0); err != nil {
		t.Errorf("unmounting %s: %v", k.Dir, err)
	}
}

// restoreSysctls puts back the kernel tunables the kubelet changed.
func (k *Cluster) restoreSysctls(t T) {
	for s, orig := range k.sysctls {
		p := filepath.Join("/proc/sys", s)
		if cur, err := os.ReadFile(p); err == nil && !bytes.Equal(cur, orig) {
			t.Logf("restoring %s: %s → %s", s, bytes.TrimSpace(cur), bytes.TrimSpace(orig))
			if err := os.WriteFile(p, orig, 0o644); err != nil {
				t.Errorf("restoring %s: %v", s, err)
			}
		}
	}
}

// removeHostFiles removes the kubelet's files outside its root directory
// (log links into the cluster's directory, its device plugin socket) and
// the directories it created for them, then fails t for anything new left
// there.
func (k *Cluster) removeHostFiles(t T) {
	for _, l := range listDir(containerLogLinks) {
		p := filepath.Join(containerLogLinks, l)
		if dst, err := os.Readlink(p); err == nil && !k.hostFiles[p] && strings.HasPrefix(dst, k.Dir) {
			os.Remove(p)
		}
	}
	if !k.hostFiles[devicePluginSock] {
		os.Remove(devicePluginSock)
	}
	for _, d := range k.hostDirs {
		os.Remove(d) // only if empty; deepest first
	}
	for _, d := range []string{devicePluginDir, filepath.Dir(devicePluginDir), containerLogLinks} {
		for _, f := range listDir(d) {
			if p := filepath.Join(d, f); !k.hostFiles[p] && !slices.Contains(k.hostDirs, p) {
				t.Errorf("leak: %s", p)
			}
		}
	}
	for _, d := range k.hostDirs {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("leak: %s", d)
		}
	}
}

// deleteWorkloads deletes, in every namespace but the system ones, what
// a test may have left (reported as a leak), then waits for the kubelet to
// stop every pod's sandbox.
func (k *Cluster) deleteWorkloads(t T) {
	left := strings.Fields(k.Kubectl(t, "get", "pods", "--all-namespaces", "--no-headers",
		"-o", "custom-columns=NS:.metadata.namespace,NAME:.metadata.name").Stdout)
	if len(left) > 0 {
		if !t.Failed() {
			t.Errorf("the test left pods %v; deleting them", left)
		}
		k.Kubectl(t, "delete", "deployments,replicasets,pods", "--all", "--all-namespaces", "--grace-period", "5", "--wait", "--timeout", "100s")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if len(strings.Fields(k.Crictl(t, "pods", "--state", "ready", "-q").Stdout)) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (k *Cluster) running(name string) bool {
	for _, p := range k.procs {
		if p.name == name {
			select {
			case <-p.done:
				return false
			default:
				return true
			}
		}
	}
	return false
}

// stop stops component name: SIGTERM, SIGKILL after 20 s.
func (k *Cluster) stop(t T, name string) {
	for _, p := range k.procs {
		if p.name != name {
			continue
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not exit within 20 s of SIGTERM; killing it", name)
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// checkProcesses fails t for any process still running one of the
// cluster's binaries, and kills it.
func (k *Cluster) checkProcesses(t T) {
	for _, pid := range PIDs() {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Dir(exe) != k.bin {
			continue
		}
		argv, _ := Argv(pid)
		cmdline := strings.Join(argv, " ")
		if strings.Contains(cmdline, k.Dir) || strings.Contains(cmdline, k.NodeName) {
			t.Errorf("leak: process %d %s still running after teardown", pid, cmdline)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeKubepods fails t for pod cgroups left under the kubelet's
// kubepods cgroups, then removes kubepods in every hierarchy.
func (k *Cluster) removeKubepods(t T) {
	for _, root := range cgroupRoots() {
		kubepods := filepath.Join(root, k.Namespace, "kubepods")
		for _, qos := range []string{"", "burstable", "besteffort"} {
			for _, e := range listDir(filepath.Join(kubepods, qos)) {
				if strings.HasPrefix(e, "pod") {
					t.Errorf("leak: pod cgroup %s", filepath.Join(kubepods, qos, e))
				}
			}
		}
		if err := removeCgroupTree(kubepods); err != nil {
			t.Errorf("removing %s: %v", kubepods, err)
		}
	}
}

// removeCgroupTree removes cgroup dir and its descendants, deepest first.
func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && err != syscall.ENOENT {
		return err
	}
	return nil
}

// iptablesCommands are the IPv4 and IPv6 front ends; kube-proxy programs
// both when the host has IPv6.
var iptablesCommands = [][2]string{{"iptables-save", "iptables"}, {"ip6tables-save", "ip6tables"}}

// kubeChains returns the KUBE- chains that exist, as "iptables -t TABLE
// CHAIN" (or ip6tables).
func kubeChains() map[string]bool {
	chains := map[string]bool{}
	for _, c := range iptablesCommands {
		out, err := exec.Command(c[0]).Output()
		if err != nil {
			continue
		}
		table := ""
		s := bufio.NewScanner(bytes.NewReader(out))
		for s.Scan() {
			line := s.Text()
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":KUBE-"):
				chains[c[1]+" -t "+table+" "+strings.Fields(line[1:])[0]] = true
			}
		}
	}
	return chains
}

// kubeletChains are the chains kube-proxy creates as duplicates of the
// kubelet's and, by design, does not remove on --cleanup; the cluster's
// teardown removes them.
var kubeletChains = map[string]bool{"filter KUBE-FIREWALL": true}

// removeKubeChains fails t for KUBE- chains that kube-proxy --cleanup
// left (but kubeletChains; the kubelet itself makes none, its
// makeIPTablesUtilChains is false), then removes every KUBE- chain the
// cluster made and the rules that jump to them.
func (k *Cluster) removeKubeChains(t T) {
	for c := range kubeChains() {
		if f := strings.Fields(c); !k.kubeChains[c] && !kubeletChains[f[2]+" "+f[3]] {
			t.Errorf("leak: %s after kube-proxy --cleanup", c)
		}
	}
	for _, c := range iptablesCommands {
		out, err := exec.Command(c[0]).Output()
		if err != nil {
			continue
		}
		table := ""
		var chains []string
		s := bufio.NewScanner(bytes.NewReader(out))
		for s.Scan() {
			line := s.Text()
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, "-A ") && strings.Contains(line, "-j KUBE-"):
				args := splitQuoted(line)
				if !strings.HasPrefix(args[1], "KUBE-") && !k.kubeChains[c[1]+" -t "+table+" "+args[len(args)-1]] {
					if out, err := exec.Command(c[1], append([]string{"-t", table, "-D"}, args[1:]...)...).CombinedOutput(); err != nil {
						t.Errorf("%s -t %s -D %s: %v: %s", c[1], table, strings.Join(args[1:], " "), err, out)
					}
				}
			case strings.HasPrefix(line, ":KUBE-"):
				name := strings.Fields(line[1:])[0]
				if !k.kubeChains[c[1]+" -t "+table+" "+name] {
					chains = append(chains, table+" "+name)
				}
			}
		}
		for _, op := range []string{"-F", "-X"} {
			for _, tc := range chains {
				f := strings.Fields(tc)
				if out, err := exec.Command(c[1], "-t", f[0], op, f[1]).CombinedOutput(); err != nil {
					t.Errorf("%s -t %s %s %s: %v: %s", c[1], f[0], op, f[1], err, out)
				}
			}
		}
	}
	for c := range kubeChains() {
		if !k.kubeChains[c] {
			t.Errorf("leak: %s still exists after teardown", c)
		}
	}
}
